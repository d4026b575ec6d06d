//! Shared plumbing of the Mu artifact's tools: command-line options, one
//! replica per process over the `tcp` or `shm` fabric, peers from a static
//! list or the memcached registry (`DORY_REGISTRY_IP`), the per-node pause
//! fifo, and launching a whole local group from one command; [`group`]
//! runs a group of `mu-node` processes for tests and benchmarks; [`load`]
//! is the artifact's Redis and memcached load generators; [`orderbook`]
//! is the replicated order book (the Liquibook experiment).

#![forbid(unsafe_code)]

pub mod group;
pub mod load;
pub mod orderbook;

use clap::Args;
use mu::driver::replica::{Committed, Replica};
use mu::node::{FabricKind, NodeOptions};
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

/// Options every tool shares. Each flag is also an environment variable.
#[derive(Args, Clone, Debug)]
pub struct NodeArgs {
    /// The replica: fabric, group, peers, timing.
    #[command(flatten)]
    pub mu: NodeOptions,
    /// Directory of the pause fifos (`mu-fifo-<id>`).
    #[arg(long, env = "MU_FIFO_DIR", default_value = "/tmp")]
    pub fifo_dir: PathBuf,
    /// Start the whole group as child processes of this one (ids 1..=N) and
    /// wait for them: no need to open N terminals.
    #[arg(long)]
    pub launch: bool,
}

/// A replica of a tool process.
#[derive(Debug)]
pub struct Node {
    /// The replica.
    pub replica: Arc<Replica>,
    /// Committed entries, in log order.
    pub committed: Receiver<Committed>,
    _fifo: FifoFile,
}

/// Removes the pause fifo when the node goes.
#[derive(Debug)]
struct FifoFile(PathBuf);

impl Drop for FifoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Starts replica `id` (1-based, as the original tools) with `max_payload`
/// and its pause fifo.
pub fn start_node(args: &NodeArgs, id: u8, max_payload: u32) -> Result<Node, String> {
    let (replica, committed) = mu::node::start(&args.mu, id, max_payload)?;
    let replica = Arc::new(replica);
    let fifo = fifo_path(&args.fifo_dir, id);
    listen_for_pause(&fifo, replica.clone())?;
    Ok(Node {
        replica,
        committed,
        _fifo: FifoFile(fifo),
    })
}

/// The path of replica `id`'s pause fifo in `dir`.
pub fn fifo_path(dir: &std::path::Path, id: u8) -> PathBuf {
    dir.join(format!("mu-fifo-{id}"))
}

/// Writes `command` (`p` pauses, `c` resumes) into replica `id`'s pause
/// fifo in `dir`, as `mu-pause` does. Opening the fifo waits until the
/// replica reads it; a missing fifo means no such replica runs.
pub fn send_pause(dir: &std::path::Path, id: u8, command: u8) -> Result<(), String> {
    use std::io::Write;
    let path = fifo_path(dir, id);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e} (is replica {id} running?)", path.display()))?;
    f.write_all(&[command]).map_err(|e| e.to_string())
}

/// Wall-clock time in ns since the Unix epoch: comparable between the
/// processes of one host, for measurements across processes.
pub fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
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
    let ports: Vec<String> = (0..args.mu.nodes)
        .map(|_| {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
            l.local_addr().expect("address").to_string()
        })
        .collect();
    let mut mu = args.mu.clone();
    mu.group = format!("{}-{}", args.mu.group, std::process::id());
    let mut children = Vec::new();
    for id in 1..=mu.nodes {
        let mut cmd = Command::new(&exe);
        cmd.arg(id.to_string())
            .args(tool_args)
            .envs(mu.to_env())
            .env("MU_FIFO_DIR", &args.fifo_dir)
            .env_remove("DORY_REGISTRY_IP");
        match &mu.registry {
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
    if mu.resolved_fabric() == FabricKind::Shm {
        mu::node::remove_shm_group(&mu.shm_dir, &mu.group);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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

/// Sorts `samples` (ns) and describes them as the latency tools print
/// them: `N samples of S bytes, T outstanding: p50 .. ns, p90 .., p99 ..,
/// p99.9 .. ns`.
pub fn percentiles_line(samples: &mut [u64], size: u32, outstanding: u32) -> String {
    samples.sort_unstable();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    format!(
        "{} samples of {size} bytes, {outstanding} outstanding: p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns",
        samples.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(0.999),
    )
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
