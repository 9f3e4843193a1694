//! The set of live instances of one service, and the channel that delivers it.
//!
//! Watches deliver whole snapshots, never deltas: a consumer that falls behind skips straight to
//! the latest state and so can never miss a removal. Snapshots share their entries
//! (`Arc<ServiceInfo>`) and most of their structure with the one before, so taking one is a
//! pointer copy, one change costs about the same at 10 instances as at 50,000, and
//! [`Instances::changes_since`] finds what changed between two snapshots without reading what
//! they share.
//!
//! [`InstancesWatch`] has the semantics of [`tokio::sync::watch`]: it always holds the latest
//! snapshot, and waking up for a change means reading that latest snapshot, however many
//! changes came in between.

mod map;

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Error, ServiceInfo};
use map::{Difference, InstanceMap};

/// Every current instance of one service, keyed by [`ServiceInfo::uri`], and the registry
/// revision the snapshot reflects.
///
/// Cheap to clone (a few pointer copies), and cheap to change: [`insert`](Instances::insert)
/// and [`remove`](Instances::remove) copy only a small part of the structure the clones share.
///
/// ```
/// use jovian::{Instances, ServiceInfo};
///
/// let mut endpoints = Instances::new("greeter", 7);
/// endpoints.insert(ServiceInfo::new("greeter", "10.0.0.1:50051"));
/// let before = endpoints.clone();
/// endpoints.insert(ServiceInfo::new("greeter", "10.0.0.2:50051"));
/// assert_eq!(endpoints.addresses(), ["10.0.0.1:50051", "10.0.0.2:50051"]);
/// let added: Vec<_> = endpoints.changes_since(&before).map(|c| c.info().address.clone()).collect();
/// assert_eq!(added, ["10.0.0.2:50051"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Instances {
    service: Arc<str>,
    revision: i64,
    instances: InstanceMap,
}

/// How one instance differs between two snapshots; see [`Instances::changes_since`].
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// In the newer snapshot only.
    Added(&'a Arc<ServiceInfo>),
    /// In the older snapshot only.
    Removed(&'a Arc<ServiceInfo>),
    /// In both, with a different entry.
    Updated {
        /// The entry in the older snapshot.
        old: &'a Arc<ServiceInfo>,
        /// The entry in the newer snapshot.
        new: &'a Arc<ServiceInfo>,
    },
}

impl<'a> Change<'a> {
    /// The entry as it is now, or as it was when it was removed.
    pub fn info(&self) -> &'a Arc<ServiceInfo> {
        match *self {
            Change::Added(info) | Change::Removed(info) => info,
            Change::Updated { new, .. } => new,
        }
    }
}

impl Instances {
    /// An empty snapshot of `service` at `revision`.
    pub fn new(service: impl Into<Arc<str>>, revision: i64) -> Self {
        Self {
            service: service.into(),
            revision,
            instances: InstanceMap::new(),
        }
    }

    /// A snapshot holding `instances` (a later entry with the same `scheme://address` replaces
    /// an earlier one).
    pub fn from_instances<I>(service: impl Into<Arc<str>>, revision: i64, instances: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Arc<ServiceInfo>>,
    {
        let mut endpoints = Self::new(service, revision);
        for info in instances {
            endpoints.insert(info);
        }
        endpoints
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The registry revision this snapshot reflects (etcd's revision; a counter elsewhere).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Sets the revision the snapshot reflects.
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    /// How many instances the snapshot holds.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether the service has no instance.
    pub fn is_empty(&self) -> bool {
        self.instances.len() == 0
    }

    /// The instance at `uri` (`scheme://address`).
    pub fn get(&self, uri: &str) -> Option<&Arc<ServiceInfo>> {
        self.instances.get(uri)
    }

    /// Whether an instance is at `uri` (`scheme://address`).
    pub fn contains(&self, uri: &str) -> bool {
        self.instances.get(uri).is_some()
    }

    /// Every instance, in no particular order (the same order for the same set).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ServiceInfo>> {
        self.instances.iter()
    }

    /// The addresses of all instances, sorted.
    pub fn addresses(&self) -> Vec<&str> {
        let mut addresses: Vec<&str> = self.iter().map(|i| i.address.as_str()).collect();
        addresses.sort_unstable();
        addresses
    }

    /// Puts `info` at its `scheme://address`; returns the entry it replaced.
    pub fn insert(&mut self, info: impl Into<Arc<ServiceInfo>>) -> Option<Arc<ServiceInfo>> {
        self.instances.insert(info.into())
    }

    /// Removes the instance at `uri` (`scheme://address`); returns it.
    pub fn remove(&mut self, uri: &str) -> Option<Arc<ServiceInfo>> {
        self.instances.remove(uri)
    }

    /// What changed from `older` to this snapshot, instance by instance, in no particular
    /// order. Its cost grows with the changes, not the size, when both come from one watch
    /// (each snapshot made from the one before); for unrelated snapshots it compares every
    /// entry. Entries are compared by content, so one put again unchanged is no change.
    pub fn changes_since<'a>(&'a self, older: &'a Instances) -> impl Iterator<Item = Change<'a>> {
        self.instances.differences(&older.instances).map(|d| match d {
            Difference::Added(info) => Change::Added(info),
            Difference::Removed(info) => Change::Removed(info),
            Difference::Updated(old, new) => Change::Updated { old, new },
        })
    }

    /// Whether the two snapshots hold the same instances, whatever their revisions.
    pub fn same_instances(&self, other: &Instances) -> bool {
        self.instances == other.instances
    }
}

impl Default for Instances {
    fn default() -> Self {
        Self::new("", 0)
    }
}

impl fmt::Debug for Instances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instances")
            .field("service", &self.service)
            .field("revision", &self.revision)
            .field("instances", &self.addresses())
            .finish()
    }
}

/// A live view of one service's [`Instances`]: always holds the latest snapshot.
///
/// ```
/// # async fn demo(registry: &dyn jovian::Registry) -> Result<(), jovian::Error> {
/// let mut watch = registry.watch("greeter").await?;
/// let mut seen = watch.current();
/// println!("now: {:?}", seen.addresses());
/// let next = watch.changed().await?; // waits for the next change
/// for change in next.changes_since(&seen) {
///     println!("{change:?}");
/// }
/// seen = next;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct InstancesWatch {
    receiver: watch::Receiver<Instances>,
}

/// The registry's side of an [`InstancesWatch`].
#[derive(Debug)]
pub struct InstancesPublisher {
    sender: watch::Sender<Instances>,
}

impl InstancesWatch {
    /// A publisher and the first watch on it, starting at `initial`.
    pub fn channel(initial: Instances) -> (InstancesPublisher, InstancesWatch) {
        let (sender, receiver) = watch::channel(initial);
        (InstancesPublisher { sender }, InstancesWatch { receiver })
    }

    /// The latest snapshot, marking it seen.
    pub fn current(&mut self) -> Instances {
        self.receiver.borrow_and_update().clone()
    }

    /// The latest snapshot without marking it seen.
    pub fn peek(&self) -> Instances {
        self.receiver.borrow().clone()
    }

    /// Waits until a snapshot newer than the last one seen arrives, and returns the latest.
    /// Fails with [`Error::Closed`] once the registry has stopped watching.
    pub async fn changed(&mut self) -> Result<Instances, Error> {
        self.receiver.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.current())
    }

    /// Waits until the latest snapshot satisfies `condition` and returns it (at once if the
    /// current one does). Fails with [`Error::Closed`] if the watch ends first.
    pub async fn wait_for(&mut self, condition: impl FnMut(&Instances) -> bool) -> Result<Instances, Error> {
        let mut condition = condition;
        let snapshot = self
            .receiver
            .wait_for(|e| condition(e))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(snapshot.clone())
    }
}

impl InstancesPublisher {
    /// Publishes `next` if its instances differ from the current snapshot's; a change of
    /// revision alone wakes nobody. Returns whether watchers were notified.
    pub fn publish(&self, next: Instances) -> bool {
        self.sender.send_if_modified(|current| {
            if current.same_instances(&next) && current.service == next.service {
                return false;
            }
            *current = next;
            true
        })
    }

    /// The latest snapshot published.
    pub fn current(&self) -> Instances {
        self.sender.borrow().clone()
    }

    /// Another watch on this publisher, starting at the latest snapshot.
    pub fn subscribe(&self) -> InstancesWatch {
        InstancesWatch {
            receiver: self.sender.subscribe(),
        }
    }

    /// Completes once every watch on this publisher has been dropped, so the registry can stop
    /// the work behind it.
    pub async fn unwatched(&self) {
        self.sender.closed().await;
    }
}
