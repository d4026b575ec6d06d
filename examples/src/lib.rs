//! Shared plumbing of the Mu artifact's tools: command-line options, one
//! replica per process over the `tcp` or `shm` fabric, peers from a static
//! list or the memcached registry (`DORY_REGISTRY_IP`), the per-node pause
//! fifo, and launching a whole local group from one command.

#![forbid(unsafe_code)]

use clap::{Args, ValueEnum};
use mu::driver::replica::{Committed, DriverOptions, Replica};
use mu::fabric::shm::{ShmConfig, ShmEndpoint};
use mu::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use mu::log::layout::Layout;
use mu::{Config, NodeId};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// Which fabric carries the replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FabricKind {
    /// TCP between processes or hosts.
    Tcp,
    /// Shared memory between processes on one host.
    Shm,
}

/// Options every tool shares. Each flag is also an environment variable.
#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    /// The fabric.
    #[arg(long, env = "MU_FABRIC", value_enum, default_value = "tcp")]
    pub fabric: FabricKind,
    /// Number of replicas in the group.
    #[arg(long, env = "MU_NODES", default_value_t = 3)]
    pub nodes: u8,
    /// tcp: every replica's address, comma separated, in id order.
    #[arg(long, env = "MU_PEERS", value_delimiter = ',')]
    pub peers: Vec<SocketAddr>,
    /// tcp: a memcached registry (`host[:port]`) to publish and find
    /// addresses instead of `--peers`, as the original Mu did.
    #[arg(long, env = "DORY_REGISTRY_IP")]
    pub registry: Option<String>,
    /// tcp: the secret every member of the group knows.
    #[arg(long, env = "MU_SECRET", default_value = "mu-local-secret")]
    pub secret: String,
    /// shm: directory of the shared objects (a tmpfs).
    #[arg(long, env = "MU_SHM_DIR", default_value = "/dev/shm")]
    pub shm_dir: PathBuf,
    /// Name of the group (shm file prefix, registry key prefix).
    #[arg(long, env = "MU_GROUP", default_value = "mu")]
    pub group: String,
    /// Ring size per replica, MiB. The shm fabric copies the log area when
    /// a grant finds a writer stalled in the middle of a write (that is how
    /// it fences it), so a small ring keeps such leader changes fast.
    #[arg(long, env = "MU_RING_MIB", default_value_t = 4)]
    pub ring_mib: u64,
    /// Heartbeat interval, µs (failure detection takes about 13 of them).
    /// The default suits a small shared machine, where a process can be
    /// descheduled for milliseconds; dedicated hosts can go much lower.
    #[arg(long, env = "MU_HEARTBEAT_US", default_value_t = 1_000)]
    pub heartbeat_us: u64,
    /// Directory of the pause fifos (`mu-fifo-<id>`).
    #[arg(long, env = "MU_FIFO_DIR", default_value = "/tmp")]
    pub fifo_dir: PathBuf,
    /// Start the whole group as child processes of this one (ids 1..=N) and
    /// wait for them: no need to open N terminals.
    #[arg(long)]
    pub launch: bool,
    /// Nap this many µs when the driver has had nothing to do for a while;
    /// 0 spins (lowest latency, but it needs a core per replica: with the
    /// whole group on a small machine, a short nap is much faster).
    #[arg(long, env = "MU_IDLE_SLEEP_US", default_value_t = 20)]
    pub idle_sleep_us: u64,
}

/// A replica of a tool process.
#[derive(Debug)]
pub struct Node {
    /// The replica.
    pub replica: Arc<Replica>,
    /// Committed entries, in log order.
    pub committed: Receiver<Committed>,
    fifo: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.fifo);
    }
}

/// Starts replica `id` (1-based, as the original tools) with `max_payload`.
pub fn start_node(args: &NodeArgs, id: u8, max_payload: u32) -> Result<Node, String> {
    if id == 0 || id > args.nodes {
        return Err(format!("id must be 1..={} (got {id})", args.nodes));
    }
    let me = NodeId(id - 1);
    let mut cfg = Config::new(me, args.nodes);
    cfg.ring_capacity = args.ring_mib << 20;
    cfg.max_payload = max_payload;
    cfg.incarnation = rand::random();
    cfg.heartbeat_interval_ns = args.heartbeat_us * 1_000;
    cfg.validate().map_err(|e| e.to_string())?;
    let layout = Layout::new(cfg.ring_capacity, cfg.max_payload, usize::from(args.nodes));
    let options = DriverOptions {
        idle_sleep: (args.idle_sleep_us > 0).then(|| Duration::from_micros(args.idle_sleep_us)),
        idle_spins: 200,
    };
    let (replica, committed) = match args.fabric {
        FabricKind::Tcp => {
            let (listener, peers) = tcp_peers(args, me)?;
            let ep = TcpEndpoint::start_with_listener(
                TcpConfig {
                    id: me,
                    peers,
                    secret: args.secret.clone().into_bytes(),
                    layout,
                    options: TcpOptions::default(),
                },
                listener,
            )
            .map_err(|e| e.to_string())?;
            Replica::start(cfg, ep, options).map_err(|e| e.to_string())?
        }
        FabricKind::Shm => {
            let ep = ShmEndpoint::create(ShmConfig {
                dir: args.shm_dir.clone(),
                group: args.group.clone(),
                id: me,
                layout,
                lease_timeout: Duration::from_millis(500),
            })
            .map_err(|e| e.to_string())?;
            Replica::start(cfg, ep, options).map_err(|e| e.to_string())?
        }
    };
    let replica = Arc::new(replica);
    let fifo = args.fifo_dir.join(format!("mu-fifo-{id}"));
    listen_for_pause(&fifo, replica.clone())?;
    Ok(Node {
        replica,
        committed,
        fifo,
    })
}

/// The listener of this replica and every replica's address.
fn tcp_peers(args: &NodeArgs, me: NodeId) -> Result<(TcpListener, Vec<SocketAddr>), String> {
    if let Some(registry) = &args.registry {
        let reg = mu::discovery::Registry::connect(registry, &format!("{}-", args.group))
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        reg.publish(me, &addr.to_string())
            .map_err(|e| e.to_string())?;
        let all = reg
            .wait_for_all(
                usize::from(args.nodes),
                Duration::from_secs(30),
                Duration::from_millis(20),
            )
            .map_err(|e| e.to_string())?;
        let peers = all
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("bad address {a:?} in the registry"))
            })
            .collect::<Result<Vec<SocketAddr>, String>>()?;
        return Ok((listener, peers));
    }
    if args.peers.len() != usize::from(args.nodes) {
        return Err(format!(
            "--peers lists {} addresses for {} replicas (or give --registry / DORY_REGISTRY_IP)",
            args.peers.len(),
            args.nodes
        ));
    }
    let listener = TcpListener::bind(args.peers[me.idx()])
        .map_err(|e| format!("cannot listen on {}: {e}", args.peers[me.idx()]))?;
    Ok((listener, args.peers.clone()))
}

/// Creates the pause fifo and a thread that reads it: `p` pauses the
/// replica (it stops heartbeating, so the others elect a new leader), `c`
/// resumes it.
fn listen_for_pause(path: &PathBuf, replica: Arc<Replica>) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .map_err(|e| format!("mkfifo: {e}"))?;
    if !status.success() {
        return Err(format!("mkfifo {} failed", path.display()));
    }
    let path = path.clone();
    std::thread::Builder::new()
        .name("mu-pause-fifo".into())
        .spawn(move || loop {
            // Opening blocks until a writer (mu-pause) opens the other end.
            let Ok(mut f) = std::fs::File::open(&path) else {
                return;
            };
            let mut buf = [0u8; 64];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    match b {
                        b'p' => replica.pause(true),
                        b'c' => replica.pause(false),
                        _ => {}
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Waits until this replica leads (the lowest id leads a healthy group).
pub fn wait_until_leader(replica: &Replica, limit: Duration) -> bool {
    let step = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    while waited < limit {
        if replica
            .status()
            .is_some_and(|s| s.role == mu::core::RoleKind::Leader)
        {
            return true;
        }
        std::thread::sleep(step);
        waited += step;
    }
    false
}

/// Waits until `count` entries were committed on this replica.
pub fn wait_applied(node: &Node, count: u64, limit: Duration) -> Result<(), String> {
    for seen in 0..count {
        node.committed.recv_timeout(limit).map_err(|_| {
            format!(
                "only {seen} of {count} entries were applied within {limit:?}; status: {:?}",
                node.replica.status()
            )
        })?;
    }
    Ok(())
}

/// On the proposing replica: waits until every peer reports (through its
/// heartbeat) that it applied `index`, so the group can exit together
/// without leaving a follower that still needed the leader.
pub fn wait_group_applied(node: &Node, index: u64, limit: Duration) -> Result<(), String> {
    let step = Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        if let Some(s) = node.replica.status() {
            if s.applied >= index && s.peers.iter().all(|p| p.applied >= index) {
                return Ok(());
            }
            if waited >= limit {
                return Err(format!(
                    "the group did not apply {index} within {limit:?}: {s:?}"
                ));
            }
        }
        std::thread::sleep(step);
        waited += step;
    }
}

/// On a following replica: stays up after applying everything until
/// replica 1 (the proposer) has gone, so it can see every follower finish.
pub fn linger_until_proposer_leaves(node: &Node, limit: Duration) -> Result<(), String> {
    let step = Duration::from_millis(2);
    let mut waited = Duration::ZERO;
    while waited < limit {
        let gone = node
            .replica
            .status()
            .is_some_and(|s| s.peers.iter().any(|p| p.id == mu::NodeId(0) && !p.alive));
        if gone {
            return Ok(());
        }
        std::thread::sleep(step);
        waited += step;
    }
    Err(format!("replica 1 was still up after {limit:?}"))
}

/// Runs the whole group as children of this process: each child gets
/// `id tool_args...`, the shared options as environment variables, free
/// loopback ports (tcp) and a fresh group name. Fails if any child fails.
pub fn launch(args: &NodeArgs, tool_args: &[String]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find this program: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ports: Vec<String> = (0..args.nodes)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            l.local_addr().expect("address").to_string()
        })
        .collect();
    let group = format!("{}-{}", args.group, std::process::id());
    let fabric = match args.fabric {
        FabricKind::Tcp => "tcp",
        FabricKind::Shm => "shm",
    };
    let mut children = Vec::new();
    for id in 1..=args.nodes {
        let mut cmd = Command::new(&exe);
        cmd.arg(id.to_string())
            .args(tool_args)
            .env("MU_FABRIC", fabric)
            .env("MU_NODES", args.nodes.to_string())
            .env("MU_GROUP", &group)
            .env("MU_SECRET", &args.secret)
            .env("MU_SHM_DIR", &args.shm_dir)
            .env("MU_RING_MIB", args.ring_mib.to_string())
            .env("MU_FIFO_DIR", &args.fifo_dir)
            .env("MU_IDLE_SLEEP_US", args.idle_sleep_us.to_string())
            .env("MU_HEARTBEAT_US", args.heartbeat_us.to_string())
            .env_remove("DORY_REGISTRY_IP");
        match &args.registry {
            Some(r) => {
                cmd.env("DORY_REGISTRY_IP", r).env_remove("MU_PEERS");
            }
            None => {
                cmd.env("MU_PEERS", ports.join(","));
            }
        }
        match cmd.spawn() {
            Ok(c) => children.push((id, c)),
            Err(e) => {
                eprintln!("cannot start replica {id}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut ok = true;
    for (id, mut c) in children {
        match c.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => {
                eprintln!("replica {id} exited with {s}");
                ok = false;
            }
            Err(e) => {
                eprintln!("replica {id}: {e}");
                ok = false;
            }
        }
    }
    if args.fabric == FabricKind::Shm {
        remove_group_files(&args.shm_dir, &group);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Removes the shared objects a launched shm group left in `dir`.
fn remove_group_files(dir: &std::path::Path, group: &str) {
    let prefix = format!("{group}-n");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Proposes `count` payloads of `size` random bytes from `outstanding`
/// threads at once (at least one); returns the wall time of the run and,
/// when `record` is set, every proposal's latency in nanoseconds.
pub fn run_proposers(
    replica: &Arc<Replica>,
    count: u64,
    outstanding: u32,
    size: u32,
    record: bool,
) -> Result<(Duration, Vec<u64>), String> {
    #[allow(clippy::disallowed_methods, reason = "the tools measure wall time")]
    let now = std::time::Instant::now;
    let threads = u64::from(outstanding.max(1));
    let started = now();
    let handles = (0..threads)
        .map(|t| {
            let replica = replica.clone();
            let share = count / threads + u64::from(t < count % threads);
            std::thread::Builder::new().spawn(move || -> Result<Vec<u64>, String> {
                let payload = random_payload(size);
                let mut latencies = Vec::with_capacity(if record { share as usize } else { 0 });
                for _ in 0..share {
                    let t0 = now();
                    propose(&replica, payload.clone()).map_err(|e| e.to_string())?;
                    if record {
                        latencies.push(t0.elapsed().as_nanos() as u64);
                    }
                }
                Ok(latencies)
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot start a proposer thread: {e}"))?;
    let mut all = Vec::new();
    for h in handles {
        all.extend(
            h.join()
                .map_err(|_| "a proposer thread panicked".to_string())??,
        );
    }
    Ok((started.elapsed(), all))
}

/// What replica 1 measured in a standalone run.
#[derive(Debug)]
pub struct Measured {
    /// The replica, still running until [`Measured::finish`].
    pub node: Node,
    /// Wall time of the timed proposals.
    pub elapsed: Duration,
    /// Each proposal's latency in ns, when recorded.
    pub latencies: Vec<u64>,
}

impl Measured {
    /// Waits until every replica applied the `count` proposals and the
    /// warm-up, so the group can exit together.
    pub fn finish(self, count: u64) -> Result<(), String> {
        let limit = Duration::from_secs(60);
        wait_applied(&self.node, count + 1, limit)?;
        wait_group_applied(&self.node, count + 1, limit)
    }
}

/// The standalone run of the artifact's tools: replica `id` starts; a
/// follower applies `count + 1` entries and stays until replica 1 leaves
/// (`Ok(None)`); replica 1 waits to lead, proposes one warm-up entry, then
/// `count` timed ones from `outstanding` threads.
pub fn run_standalone(
    args: &NodeArgs,
    id: u8,
    count: u64,
    outstanding: u32,
    size: u32,
    record: bool,
) -> Result<Option<Measured>, String> {
    let node = start_node(args, id, size.max(1))?;
    let limit = Duration::from_secs(60);
    if id != 1 {
        wait_applied(&node, count + 1, limit)?;
        linger_until_proposer_leaves(&node, limit)?;
        return Ok(None);
    }
    if !wait_until_leader(&node.replica, limit) {
        return Err("replica 1 did not become leader".into());
    }
    // Warm-up, as the original: one proposal before the clock starts.
    propose(&node.replica, random_payload(size)).map_err(|e| e.to_string())?;
    let (elapsed, latencies) = run_proposers(&node.replica, count, outstanding, size, record)?;
    Ok(Some(Measured {
        node,
        elapsed,
        latencies,
    }))
}

/// A payload of `len` random bytes.
pub fn random_payload(len: u32) -> Vec<u8> {
    (0..len).map(|_| rand::random::<u8>()).collect()
}

/// Proposes on the local replica, retrying while a leader change is under
/// way; gives up on any other error.
pub fn propose(replica: &Replica, payload: Vec<u8>) -> Result<u64, mu::ProposeError> {
    loop {
        match replica.propose(payload.clone(), Duration::from_secs(5)) {
            Err(mu::ProposeError::LeaderChanging) | Err(mu::ProposeError::LogFull { .. }) => {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}
