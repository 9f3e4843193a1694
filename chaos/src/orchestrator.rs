//! The orchestrator: starts the cluster (three etcd members, or one that can be wiped; the
//! servers and clients, each process behind its own proxies), plays the fault schedule against
//! it, and records everything it does in the history.
//!
//! Every server and client reaches each etcd member through a proxy of its own, and clients
//! reach each server through that server's proxy, so one process can be cut off (or slowed)
//! without privileges. A link's state is the combination of every fault on it: a member that
//! is down refuses, then reset beats blackhole beats forwarding, and latencies take the
//! largest.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use jovian_tests::etcd::{EtcdCluster, EtcdOptions, free_port};
use jovian_tests::proxy::{Mode, Proxy};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::history::Event;
use crate::procs::{Child, Exit, Sink};
use crate::schedule::{Fault, FaultKind};

/// A link reason standing for "the process behind this proxy is not running".
const DEAD: u32 = u32::MAX;
/// How long a stopping process gets before it is killed (the checker's stop bound + margin).
const STOP_WAIT: Duration = Duration::from_secs(12);

/// Whether a slot runs a server or a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A chaos server.
    Server,
    /// A chaos client.
    Client,
}

/// A server or client position in the cluster, across its incarnations.
struct Slot {
    name: String,
    role: Role,
    r#gen: u32,
    etcd_proxies: Vec<Proxy>,
    client_proxy: Option<Proxy>,
    listen_port: u16,
    child: Option<Child>,
    broken: bool,
    etcd_reasons: BTreeMap<u32, (Mode, u64, &'static str)>,
    client_reasons: BTreeMap<u32, (Mode, u64, &'static str)>,
    etcd_link: (Mode, u64, Vec<&'static str>),
    client_link: (Mode, u64, Vec<&'static str>),
}

/// Everything a run holds.
pub struct Cluster {
    clock: Clock,
    sink: Sink,
    etcd: EtcdCluster,
    member_down: Vec<bool>,
    slots: Vec<Slot>,
    admin: etcd_client::Client,
    exits: mpsc::UnboundedReceiver<Exit>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    logs: PathBuf,
    binary: PathBuf,
    ttl_ms: u64,
    leaders: HashMap<u32, usize>,
    truth_stop: CancellationToken,
}

/// How many of each process a cluster has and where its files go.
pub struct ClusterSpec {
    /// etcd members (1 or 3).
    pub members: usize,
    /// Server slots.
    pub servers: usize,
    /// Client slots.
    pub clients: usize,
    /// The lease TTL, ms.
    pub ttl_ms: u64,
    /// Make client `c0` the deliberately broken one.
    pub broken_client: bool,
    /// The chaos binary (it runs servers and clients as subcommands).
    pub binary: PathBuf,
    /// Where process logs go.
    pub logs: PathBuf,
}

impl Cluster {
    /// Starts etcd, the proxies, the servers (waiting until etcd holds every one) and the
    /// clients.
    pub async fn start(spec: &ClusterSpec, clock: Clock, sink: Sink) -> anyhow::Result<Self> {
        let etcd = EtcdCluster::start(spec.members, EtcdOptions::default()).await;
        let admin = etcd.client().await;
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let truth_stop = CancellationToken::new();
        tokio::spawn(crate::truth::poll(
            etcd.endpoints(),
            clock,
            sink.clone(),
            truth_stop.clone(),
        ));
        let mut cluster = Self {
            clock,
            sink,
            member_down: vec![false; etcd.endpoints().len()],
            etcd,
            slots: Vec::new(),
            admin,
            exits,
            exits_tx,
            logs: spec.logs.clone(),
            binary: spec.binary.clone(),
            ttl_ms: spec.ttl_ms,
            leaders: HashMap::new(),
            truth_stop,
        };
        for i in 0..spec.servers {
            let slot = cluster.new_slot(format!("s{i}"), Role::Server, false).await?;
            cluster.slots.push(slot);
        }
        for i in 0..spec.servers {
            cluster.spawn(i)?;
        }
        cluster.wait_registered(Duration::from_secs(30)).await?;
        for i in 0..spec.clients {
            let broken = spec.broken_client && i == 0;
            let slot = cluster.new_slot(format!("c{i}"), Role::Client, broken).await?;
            cluster.slots.push(slot);
            cluster.spawn(spec.servers + i)?;
        }
        Ok(cluster)
    }

    async fn new_slot(&self, name: String, role: Role, broken: bool) -> anyhow::Result<Slot> {
        let mut etcd_proxies = Vec::new();
        for endpoint in self.etcd.endpoints() {
            etcd_proxies.push(proxy_to(endpoint.parse()?).await?);
        }
        let (listen_port, client_proxy) = match role {
            Role::Server => {
                let port = free_port();
                (port, Some(proxy_to(SocketAddr::from(([127, 0, 0, 1], port))).await?))
            }
            Role::Client => (0, None),
        };
        Ok(Slot {
            name,
            role,
            r#gen: 0,
            etcd_proxies,
            client_proxy,
            listen_port,
            child: None,
            broken,
            etcd_reasons: BTreeMap::new(),
            client_reasons: BTreeMap::new(),
            etcd_link: (Mode::Forward, 0, Vec::new()),
            client_link: (Mode::Forward, 0, Vec::new()),
        })
    }

    /// Starts the next incarnation of slot `i`.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let epoch = self.clock.epoch_ms().to_string();
        let ttl = self.ttl_ms.to_string();
        let slot = &mut self.slots[i];
        slot.r#gen += 1;
        let etcd: Vec<String> = slot.etcd_proxies.iter().map(|p| p.addr().to_string()).collect();
        let mut args = vec![
            match slot.role {
                Role::Server => "server",
                Role::Client => "client",
            }
            .to_owned(),
            "--slot".into(),
            slot.name.clone(),
            "--gen".into(),
            slot.r#gen.to_string(),
            "--epoch-ms".into(),
            epoch,
            "--etcd".into(),
            etcd.join(","),
            "--ttl-ms".into(),
            ttl,
        ];
        if let Some(proxy) = &slot.client_proxy {
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{}", slot.listen_port),
                "--advertise".into(),
                proxy.addr().to_string(),
            ]);
        }
        if slot.broken {
            args.push("--broken".into());
        }
        let child = Child::spawn(
            &self.binary,
            &args,
            &slot.name,
            i,
            slot.r#gen,
            &self.logs,
            self.sink.clone(),
            self.clock,
            self.exits_tx.clone(),
        )?;
        slot.child = Some(child);
        slot.client_reasons.remove(&DEAD);
        self.refresh(i);
        Ok(())
    }

    async fn wait_registered(&mut self, limit: Duration) -> anyhow::Result<()> {
        let wanted: Vec<String> = self
            .slots
            .iter()
            .filter_map(|s| s.client_proxy.as_ref().map(|p| p.addr().to_string()))
            .collect();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let held = self
                .admin
                .get(
                    crate::truth::providers_prefix(),
                    Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()),
                )
                .await?;
            let keys: Vec<String> = held
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok().map(str::to_owned))
                .collect();
            if wanted.iter().all(|a| keys.contains(&crate::truth::provider_key(a))) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "the servers did not all register within {limit:?} (etcd holds {keys:?}); see their stderr in {}",
                    self.logs.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn note(&self, text: String) {
        self.sink
            .event(self.clock.now(), "orchestrator", 0, Event::Note { text });
    }

    fn proc_event(&self, i: usize, action: &str) {
        let slot = &self.slots[i];
        let pid = slot.child.as_ref().map_or(0, |c| c.pid);
        self.sink.event(
            self.clock.now(),
            &slot.name,
            slot.r#gen,
            Event::Proc {
                action: action.to_owned(),
                pid,
                status: String::new(),
            },
        );
    }

    fn signal(&mut self, i: usize, signal: &str) {
        if let Some(child) = &self.slots[i].child {
            // Recorded first: the exit it causes must not come before it in the history.
            self.proc_event(i, &format!("sig{}", signal.to_lowercase()));
            child.signal(signal);
        }
        if signal == "KILL" {
            self.dead(i);
        }
    }

    /// Slot `i`'s process is gone: its server proxy refuses, as its port would.
    fn dead(&mut self, i: usize) {
        self.slots[i].client_reasons.insert(DEAD, (Mode::Refuse, 0, "dead"));
        self.refresh(i);
    }

    /// Takes note of exits without waiting.
    fn reap(&mut self) {
        while let Ok((i, r#gen)) = self.exits.try_recv() {
            if self.slots[i].r#gen == r#gen {
                self.slots[i].child = None;
                self.dead(i);
            }
        }
    }

    /// Waits until `at` (ms on the run's clock), taking note of exits meanwhile.
    pub async fn wait_until(&mut self, at: u64) {
        loop {
            self.reap();
            let now = self.clock.now();
            if now >= at {
                return;
            }
            let left = Duration::from_millis(at - now);
            tokio::select! {
                () = tokio::time::sleep(left) => {}
                Some(exit) = self.exits.recv() => {
                    let (i, r#gen) = exit;
                    if self.slots[i].r#gen == r#gen {
                        self.slots[i].child = None;
                        self.dead(i);
                    }
                }
            }
        }
    }

    /// Waits up to `limit` for slot `i`'s process to exit; kills it past that.
    async fn wait_exit(&mut self, i: usize, limit: Duration) {
        let deadline = self.clock.now() + limit.as_millis() as u64;
        while self.slots[i].child.as_ref().is_some_and(|c| !c.has_exited()) && self.clock.now() < deadline {
            self.wait_until(self.clock.now() + 20).await;
        }
        if self.slots[i].child.as_ref().is_some_and(|c| !c.has_exited()) {
            self.note(format!(
                "{} did not exit within {limit:?}; killing it",
                self.slots[i].name
            ));
            self.signal(i, "KILL");
            while self.slots[i].child.as_ref().is_some_and(|c| !c.has_exited()) {
                self.wait_until(self.clock.now() + 20).await;
            }
        }
        self.reap();
        self.slots[i].child = None;
    }

    /// Puts every proxy of slot `i` in the state its faults add up to, and records changes.
    fn refresh(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let etcd_link = combine(slot.etcd_reasons.values());
        let (etcd_mode, etcd_latency) = (etcd_link.0, etcd_link.1);
        for (m, proxy) in slot.etcd_proxies.iter().enumerate() {
            proxy.set_mode(if self.member_down[m] { Mode::Refuse } else { etcd_mode });
            proxy.set_latency(Duration::from_millis(etcd_latency));
        }
        let client_link = combine(slot.client_reasons.values());
        if let Some(proxy) = &slot.client_proxy {
            proxy.set_mode(client_link.0);
            proxy.set_latency(Duration::from_millis(client_link.1));
        }
        let mut changes = Vec::new();
        if etcd_link != slot.etcd_link {
            slot.etcd_link = etcd_link;
            changes.push((format!("{}:etcd", slot.name), slot.etcd_link.clone()));
        }
        if slot.role == Role::Server && client_link != slot.client_link {
            slot.client_link = client_link;
            changes.push((format!("{}:clients", slot.name), slot.client_link.clone()));
        }
        for (link, (mode, latency_ms, causes)) in changes {
            let event = Event::Link {
                link,
                mode: mode_name(mode).to_owned(),
                latency_ms,
                causes: causes.iter().map(|c| (*c).to_owned()).collect(),
            };
            self.sink.event(self.clock.now(), "orchestrator", 0, event);
        }
    }

    fn refresh_all(&mut self) {
        for i in 0..self.slots.len() {
            self.refresh(i);
        }
    }

    fn slot_index(&self, name: &str) -> anyhow::Result<usize> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| anyhow::anyhow!("the schedule names slot {name}, which this cluster does not have"))
    }

    fn address(&self, i: usize) -> String {
        self.slots[i]
            .client_proxy
            .as_ref()
            .map(|p| p.addr().to_string())
            .unwrap_or_default()
    }

    /// Starts `fault`.
    pub async fn begin(&mut self, fault: &Fault) -> anyhow::Result<()> {
        let mut target = fault.target.clone();
        if fault.kind == FaultKind::LeaderKill {
            let leader = tokio::time::timeout(Duration::from_secs(10), self.etcd.leader()).await;
            let leader = leader.map_err(|_| anyhow::anyhow!("etcd had no leader for 10 s"))?;
            self.leaders.insert(fault.id, leader);
            target = format!("m{leader}");
        }
        self.sink.event(
            self.clock.now(),
            "orchestrator",
            0,
            Event::FaultStart {
                id: fault.id,
                kind: fault.kind.name(),
                target: target.clone(),
                detail: fault.detail.clone(),
            },
        );
        let latency = fault.detail.parse::<u64>().unwrap_or(0);
        match fault.kind {
            FaultKind::MemberKill | FaultKind::LeaderKill | FaultKind::EtcdWipe => {
                let m: usize = target.trim_start_matches('m').parse()?;
                self.etcd.kill(m);
                self.member_down[m] = true;
                self.refresh_all();
            }
            FaultKind::ClusterFreezeShort | FaultKind::ClusterFreezeLong => {
                for m in 0..self.member_down.len() {
                    self.etcd.pause(m);
                }
            }
            FaultKind::PartitionReset | FaultKind::PartitionBlackhole | FaultKind::SlowEtcd => {
                let i = self.slot_index(&target)?;
                let reason = match fault.kind {
                    FaultKind::PartitionReset => (Mode::Reset, 0, "partition_reset"),
                    FaultKind::PartitionBlackhole => (Mode::Blackhole, 0, "partition_blackhole"),
                    _ => (Mode::Forward, latency, "slow_etcd"),
                };
                self.slots[i].etcd_reasons.insert(fault.id, reason);
                self.refresh(i);
            }
            FaultKind::PartitionAllReset | FaultKind::PartitionAllBlackhole => {
                let reason = match fault.kind {
                    FaultKind::PartitionAllReset => (Mode::Reset, 0, "partition_all_reset"),
                    _ => (Mode::Blackhole, 0, "partition_all_blackhole"),
                };
                for slot in &mut self.slots {
                    slot.etcd_reasons.insert(fault.id, reason);
                }
                self.refresh_all();
            }
            FaultKind::SlowServer | FaultKind::ServerCut => {
                let i = self.slot_index(&target)?;
                let reason = match fault.detail.as_str() {
                    "reset" => (Mode::Reset, 0, "server_cut"),
                    "blackhole" => (Mode::Blackhole, 0, "server_cut"),
                    _ => (Mode::Forward, latency, "slow_server"),
                };
                self.slots[i].client_reasons.insert(fault.id, reason);
                self.refresh(i);
            }
            FaultKind::Compaction => self.admin_action(fault, "compact", None).await,
            FaultKind::Garbage => self.admin_action(fault, "garbage", None).await,
            FaultKind::KeyDelete | FaultKind::KeyOverwrite | FaultKind::LeaseRevoke => {
                let i = self.slot_index(&target)?;
                let address = self.address(i);
                self.admin_action(fault, "key", Some(address)).await;
            }
            FaultKind::ServerKill => self.signal(self.slot_index(&target)?, "KILL"),
            FaultKind::ServerTerm => self.signal(self.slot_index(&target)?, "TERM"),
            FaultKind::ServerFreeze => self.signal(self.slot_index(&target)?, "STOP"),
            FaultKind::ClientRestart => {
                let signal = if fault.detail == "sigkill" { "KILL" } else { "TERM" };
                self.signal(self.slot_index(&target)?, signal);
            }
        }
        Ok(())
    }

    /// Heals `fault`.
    pub async fn end(&mut self, fault: &Fault) -> anyhow::Result<()> {
        match fault.kind {
            FaultKind::MemberKill | FaultKind::LeaderKill => {
                let m = match fault.kind {
                    FaultKind::LeaderKill => self.leaders[&fault.id],
                    _ => fault.target.trim_start_matches('m').parse()?,
                };
                self.etcd.restart(m).await;
                self.member_down[m] = false;
                self.refresh_all();
            }
            FaultKind::EtcdWipe => {
                // A brand new etcd on the same address: no key, no lease, revisions from 1.
                self.etcd.restart_wiped().await;
                self.member_down[0] = false;
                self.refresh_all();
            }
            FaultKind::ClusterFreezeShort | FaultKind::ClusterFreezeLong => {
                for m in 0..self.member_down.len() {
                    self.etcd.resume(m);
                }
            }
            FaultKind::PartitionReset | FaultKind::PartitionBlackhole | FaultKind::SlowEtcd => {
                let i = self.slot_index(&fault.target)?;
                self.slots[i].etcd_reasons.remove(&fault.id);
                self.refresh(i);
            }
            FaultKind::PartitionAllReset | FaultKind::PartitionAllBlackhole => {
                for slot in &mut self.slots {
                    slot.etcd_reasons.remove(&fault.id);
                }
                self.refresh_all();
            }
            FaultKind::SlowServer | FaultKind::ServerCut => {
                let i = self.slot_index(&fault.target)?;
                self.slots[i].client_reasons.remove(&fault.id);
                self.refresh(i);
            }
            FaultKind::Compaction
            | FaultKind::Garbage
            | FaultKind::KeyDelete
            | FaultKind::KeyOverwrite
            | FaultKind::LeaseRevoke => {}
            FaultKind::ServerKill | FaultKind::ServerTerm => {
                let i = self.slot_index(&fault.target)?;
                self.wait_exit(i, STOP_WAIT).await;
                if fault.detail == "new_port" {
                    self.slots[i].listen_port = free_port();
                    let target = SocketAddr::from(([127, 0, 0, 1], self.slots[i].listen_port));
                    self.slots[i].client_proxy = Some(proxy_to(target).await?);
                    self.slots[i].client_link = (Mode::Forward, 0, Vec::new());
                }
                self.spawn(i)?;
            }
            FaultKind::ServerFreeze => self.signal(self.slot_index(&fault.target)?, "CONT"),
            FaultKind::ClientRestart => {
                let i = self.slot_index(&fault.target)?;
                self.wait_exit(i, STOP_WAIT).await;
                self.spawn(i)?;
            }
        }
        self.sink
            .event(self.clock.now(), "orchestrator", 0, Event::FaultEnd { id: fault.id });
        Ok(())
    }

    /// A fault made of etcd requests; one that etcd does not answer in time is noted, not
    /// fatal (etcd may be frozen by an overlapping fault).
    async fn admin_action(&mut self, fault: &Fault, what: &str, address: Option<String>) {
        let admin = self.admin.clone();
        let kind = fault.kind;
        let id = fault.id;
        let work = async move {
            let mut admin = admin;
            match (what, address) {
                ("compact", _) => {
                    let revision = admin.get("/", None).await?.header().map_or(0, |h| h.revision());
                    admin
                        .compact(revision, Some(etcd_client::CompactionOptions::new().with_physical()))
                        .await?;
                }
                ("garbage", _) => {
                    let prefix = crate::truth::providers_prefix();
                    admin.put(format!("{prefix}garbage-{id}"), "not json {", None).await?;
                    admin
                        .put(
                            format!("{prefix}grpc://127.0.0.1:1"),
                            r#"{"address":5,"weight":"x"}"#,
                            None,
                        )
                        .await?;
                    admin
                        .put(format!("{prefix}grpc://127.0.0.1:2"), "x".repeat(70 * 1024), None)
                        .await?;
                }
                (_, Some(address)) => {
                    let key = crate::truth::provider_key(&address);
                    match kind {
                        FaultKind::KeyDelete => {
                            admin.delete(key, None).await?;
                        }
                        FaultKind::KeyOverwrite => {
                            let held = admin.get(key.as_str(), None).await?;
                            let value = held.kvs().first().map(|kv| kv.value().to_vec()).unwrap_or_default();
                            let mut info = jovian::ServiceInfo::decode(&value)
                                .unwrap_or_else(|_| jovian::ServiceInfo::new(crate::server::SERVICE, address.clone()));
                            info.weight = 77;
                            admin.put(key, info.encode(), None).await?;
                        }
                        _ => {
                            let held = admin.get(key.as_str(), None).await?;
                            match held.kvs().first().map(|kv| kv.lease()) {
                                Some(lease) if lease != 0 => {
                                    admin.lease_revoke(lease).await?;
                                }
                                _ => anyhow::bail!("{key} has no lease to revoke"),
                            }
                        }
                    }
                }
                _ => {}
            }
            Ok::<(), anyhow::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(3), work).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.note(format!("fault {id} ({kind}) not applied: {error}")),
            Err(_) => self.note(format!("fault {id} ({kind}) not applied: etcd did not answer in 3 s")),
        }
    }

    /// Ends the run: SIGTERMs every process, waits for the orderly stops, stops etcd.
    pub async fn shutdown(mut self) {
        // Clients first, so no call is made while the servers unregister.
        for role in [Role::Client, Role::Server] {
            let slots: Vec<usize> = (0..self.slots.len()).filter(|&i| self.slots[i].role == role).collect();
            for &i in &slots {
                self.signal(i, "TERM");
            }
            let deadline = self.clock.now() + STOP_WAIT.as_millis() as u64;
            while slots
                .iter()
                .any(|&i| self.slots[i].child.as_ref().is_some_and(|c| !c.has_exited()))
                && self.clock.now() < deadline
            {
                self.wait_until(self.clock.now() + 20).await;
            }
            for &i in &slots {
                self.wait_exit(i, Duration::ZERO).await;
            }
        }
        // Let the truth poller see the final state once more before etcd goes.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.truth_stop.cancel();
    }
}

/// The mode and latency a link's reasons add up to, and the faults that make it fail.
fn combine<'a>(reasons: impl Iterator<Item = &'a (Mode, u64, &'static str)>) -> (Mode, u64, Vec<&'static str>) {
    let rank = |m: Mode| match m {
        Mode::Forward => 0,
        Mode::Blackhole => 1,
        Mode::Reset => 2,
        Mode::Refuse => 3,
    };
    reasons.fold(
        (Mode::Forward, 0, Vec::new()),
        |(mode, latency, mut causes), &(m, l, cause)| {
            if m != Mode::Forward {
                causes.push(cause);
            }
            (if rank(m) > rank(mode) { m } else { mode }, latency.max(l), causes)
        },
    )
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Forward => "forward",
        Mode::Reset => "reset",
        Mode::Blackhole => "blackhole",
        Mode::Refuse => "refuse",
    }
}

/// A proxy to `target` on a port below the ephemeral range, so it can close and reopen
/// (refuse mode) without an outgoing connection taking its port meanwhile.
async fn proxy_to(target: SocketAddr) -> anyhow::Result<Proxy> {
    for _ in 0..20 {
        if let Ok(proxy) = Proxy::start_on(free_port(), target).await {
            return Ok(proxy);
        }
    }
    anyhow::bail!("no free port for a proxy to {target}")
}
