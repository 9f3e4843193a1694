//! The set of live instances of one service, and the channel that delivers it.
//!
//! Watches deliver whole snapshots, never deltas: a consumer that falls behind skips straight to
//! the latest state and so can never miss a removal. [`EndpointsWatch`] has the semantics of
//! [`tokio::sync::watch`]: it always holds the latest snapshot, and waking up for a change
//! means reading that latest snapshot, however many changes came in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Error, ServiceInfo};

/// Every current instance of one service, keyed by [`ServiceInfo::uri`], and the registry
/// revision the snapshot reflects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// The service name.
    pub service: String,
    /// The registry revision this snapshot reflects (etcd's revision; a counter elsewhere).
    pub revision: i64,
    /// The instances, keyed by `scheme://address`.
    pub instances: BTreeMap<String, ServiceInfo>,
}

impl Endpoints {
    /// An empty snapshot of `service` at `revision`.
    pub fn empty(service: impl Into<String>, revision: i64) -> Self {
        Self {
            service: service.into(),
            revision,
            instances: BTreeMap::new(),
        }
    }

    /// A snapshot holding `instances`.
    pub fn from_instances(
        service: impl Into<String>,
        revision: i64,
        instances: impl IntoIterator<Item = ServiceInfo>,
    ) -> Self {
        Self {
            service: service.into(),
            revision,
            instances: instances.into_iter().map(|i| (i.uri(), i)).collect(),
        }
    }

    /// How many instances the snapshot holds.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the service has no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The instance at `uri` (`scheme://address`).
    pub fn get(&self, uri: &str) -> Option<&ServiceInfo> {
        self.instances.get(uri)
    }

    /// The addresses of all instances, in key order.
    pub fn addresses(&self) -> Vec<&str> {
        self.instances.values().map(|i| i.address.as_str()).collect()
    }
}

/// A live view of one service's [`Endpoints`]: always holds the latest snapshot.
///
/// ```
/// # async fn demo(registry: &dyn jovian::Registry) -> Result<(), jovian::Error> {
/// let mut watch = registry.watch("greeter").await?;
/// println!("now: {:?}", watch.current().addresses());
/// let next = watch.changed().await?; // waits for the next change
/// println!("then: {:?}", next.addresses());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct EndpointsWatch {
    receiver: watch::Receiver<Arc<Endpoints>>,
}

/// The registry's side of an [`EndpointsWatch`].
#[derive(Debug)]
pub struct EndpointsPublisher {
    sender: watch::Sender<Arc<Endpoints>>,
}

impl EndpointsWatch {
    /// A publisher and the first watch on it, starting at `initial`.
    pub fn channel(initial: Endpoints) -> (EndpointsPublisher, EndpointsWatch) {
        let (sender, receiver) = watch::channel(Arc::new(initial));
        (EndpointsPublisher { sender }, EndpointsWatch { receiver })
    }

    /// The latest snapshot, marking it seen.
    pub fn current(&mut self) -> Arc<Endpoints> {
        self.receiver.borrow_and_update().clone()
    }

    /// The latest snapshot without marking it seen.
    pub fn peek(&self) -> Arc<Endpoints> {
        self.receiver.borrow().clone()
    }

    /// Waits until a snapshot newer than the last one seen arrives, and returns the latest.
    /// Fails with [`Error::Closed`] once the registry has stopped watching.
    pub async fn changed(&mut self) -> Result<Arc<Endpoints>, Error> {
        self.receiver.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.current())
    }

    /// Waits until the latest snapshot satisfies `condition` and returns it (at once if the
    /// current one does). Fails with [`Error::Closed`] if the watch ends first.
    pub async fn wait_for(&mut self, condition: impl FnMut(&Endpoints) -> bool) -> Result<Arc<Endpoints>, Error> {
        let mut condition = condition;
        let snapshot = self
            .receiver
            .wait_for(|e| condition(e))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(snapshot.clone())
    }
}

impl EndpointsPublisher {
    /// Publishes `next` if its instances differ from the current snapshot's; a change of
    /// revision alone wakes nobody. Returns whether watchers were notified.
    pub fn publish(&self, next: Endpoints) -> bool {
        self.sender.send_if_modified(|current| {
            if current.instances == next.instances && current.service == next.service {
                return false;
            }
            *current = Arc::new(next);
            true
        })
    }

    /// Another watch on this publisher, starting at the latest snapshot.
    pub fn subscribe(&self) -> EndpointsWatch {
        EndpointsWatch {
            receiver: self.sender.subscribe(),
        }
    }

    /// Completes once every watch on this publisher has been dropped, so the registry can stop
    /// the work behind it.
    pub async fn unwatched(&self) {
        self.sender.closed().await;
    }
}
