//! A group of `mu-node` processes on one host, for the multi-process group
//! tests and the fail-over benchmark: free loopback ports or a fresh shm
//! directory, a reader per process that records what it reports, waits on
//! those reports with deadlines, signals (kill, stop, continue), and every
//! process killed and every temporary file removed when the group is
//! dropped, also when a test panics.

use mu::node::{FabricKind, NodeOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What one process reported so far.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Its latest role (`Leader`, `Candidate`, `Follower`), once reported.
    pub role: Option<String>,
    /// The leader it believes in (1-based), 0 for none.
    pub leader: u8,
    /// Committed entries it applied, in order: (index, payload).
    pub applied: Vec<(u64, String)>,
    /// Answers to `propose`: (payload, index or error).
    pub replies: Vec<(String, Result<u64, String>)>,
    /// `first-commit` reports: (index, Unix time in ns).
    pub first_commits: Vec<(u64, u128)>,
    /// Its standard output closed (the process exited).
    pub closed: bool,
}

impl Output {
    /// True if it reports being the leader.
    pub fn leads(&self) -> bool {
        self.role.as_deref() == Some("Leader")
    }

    fn record(&mut self, line: &str) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["status", role, leader] => {
                self.role = Some((*role).to_string());
                self.leader = leader.parse().unwrap_or(0);
            }
            ["applied", index, payload @ ..] => {
                if let Ok(i) = index.parse() {
                    self.applied.push((i, payload.join(" ")));
                }
            }
            ["proposed", payload, "ok", index] => {
                let outcome = index.parse().map_err(|_| line.to_string());
                self.replies.push(((*payload).to_string(), outcome));
            }
            ["proposed", payload, "err", ..] => {
                self.replies
                    .push(((*payload).to_string(), Err(w[3..].join(" "))));
            }
            ["first-commit", index, ns] => {
                if let (Ok(i), Ok(t)) = (index.parse(), ns.parse()) {
                    self.first_commits.push((i, t));
                }
            }
            _ => {}
        }
    }
}

/// The state of a member process as the group left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Running.
    Running,
    /// Stopped with SIGSTOP.
    Stopped,
    /// Killed with SIGKILL.
    Killed,
}

#[derive(Debug)]
struct Member {
    child: Child,
    stdin: Option<ChildStdin>,
    state: State,
}

type Shared = Arc<(Mutex<Vec<Output>>, Condvar)>;

/// A running group of `mu-node` processes, ids 1..=N.
#[derive(Debug)]
pub struct Group {
    members: Vec<Member>,
    shared: Shared,
    /// Directory of the members' pause fifos.
    pub fifo_dir: PathBuf,
    scratch: Vec<PathBuf>,
}

impl Group {
    /// Starts `nodes` processes of the `mu-node` binary `bin` on `fabric`,
    /// each with `args` after its id (e.g. `--print-applied`, timing
    /// flags). Tcp members get free loopback ports; shm members a fresh
    /// directory in /dev/shm.
    pub fn start(bin: &Path, fabric: FabricKind, nodes: u8, args: &[&str]) -> Result<Self, String> {
        static GROUPS: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "mu-group-{}-{}",
            std::process::id(),
            GROUPS.fetch_add(1, Ordering::Relaxed)
        );
        let fifo_dir = std::env::temp_dir().join(&name);
        let shm_dir = Path::new("/dev/shm").join(&name);
        let shared: Shared = Arc::default();
        let mut group = Group {
            members: Vec::new(),
            shared: shared.clone(),
            fifo_dir: fifo_dir.clone(),
            scratch: vec![fifo_dir.clone(), shm_dir.clone()],
        };
        for dir in [&fifo_dir, &shm_dir] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut opts = NodeOptions::new(fabric, nodes);
        opts.group = name;
        opts.shm_dir = shm_dir;
        let ports = free_ports(nodes)?;
        *shared.0.lock().unwrap_or_else(|e| e.into_inner()) =
            vec![Output::default(); usize::from(nodes)];
        for id in 1..=nodes {
            let mut child = Command::new(bin)
                .arg(id.to_string())
                .args(args)
                .envs(opts.to_env())
                .env("MU_PEERS", &ports)
                .env("MU_FIFO_DIR", &fifo_dir)
                .env_remove("DORY_REGISTRY_IP")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take();
            group.members.push(Member {
                child,
                stdin,
                state: State::Running,
            });
            let shared = shared.clone();
            let slot = usize::from(id - 1);
            std::thread::Builder::new()
                .name(format!("mu-group-reader-{id}"))
                .spawn(move || read_reports(stdout, slot, &shared))
                .map_err(|e| e.to_string())?;
        }
        Ok(group)
    }

    /// Number of members.
    pub fn len(&self) -> u8 {
        self.members.len() as u8
    }

    /// True for a group without members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// What member `id` reported so far.
    pub fn output(&self, id: u8) -> Output {
        self.lock()[usize::from(id - 1)].clone()
    }

    /// The state the group left member `id` in.
    pub fn state(&self, id: u8) -> State {
        self.members[usize::from(id - 1)].state
    }

    /// Ids of the running members.
    pub fn running(&self) -> Vec<u8> {
        (1..=self.len())
            .filter(|&id| self.state(id) == State::Running)
            .collect()
    }

    /// A running member that reports leading, if any.
    pub fn leader(&self) -> Option<u8> {
        let out = self.lock();
        self.running()
            .into_iter()
            .find(|&id| out[usize::from(id - 1)].leads())
    }

    /// Waits until `check` returns something for the members' reports, or
    /// fails after `limit` saying what it waited for.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&[Output]) -> Option<T>,
    ) -> Result<T, String> {
        let end = deadline(limit);
        let mut out = self.lock();
        loop {
            if let Some(t) = check(&out) {
                return Ok(t);
            }
            let left = end.saturating_duration_since(now());
            if left.is_zero() {
                return Err(format!(
                    "{what}: not within {limit:?}; reports: {}",
                    summary(&out)
                ));
            }
            out = self
                .shared
                .1
                .wait_timeout(out, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until some running member leads; returns its id.
    pub fn wait_leader(&self, limit: Duration) -> Result<u8, String> {
        let running = self.running();
        self.wait_for("a leader", limit, |out| {
            running
                .iter()
                .copied()
                .find(|&id| out[usize::from(id - 1)].leads())
        })
    }

    /// Sends a command line to member `id`'s standard input.
    pub fn send(&mut self, id: u8, line: &str) -> Result<(), String> {
        let m = &mut self.members[usize::from(id - 1)];
        let stdin = m.stdin.as_mut().ok_or("the member's input is closed")?;
        writeln!(stdin, "{line}").map_err(|e| format!("to member {id}: {e}"))
    }

    /// Proposes `payload` (no spaces) on member `id` and waits for its
    /// answer: the index it committed at, or the error it reported.
    pub fn propose(&mut self, id: u8, payload: &str, limit: Duration) -> Result<u64, String> {
        let seen = self.lock()[usize::from(id - 1)].replies.len();
        self.send(id, &format!("propose {payload}"))?;
        let slot = usize::from(id - 1);
        self.wait_for(&format!("member {id} answers {payload}"), limit, |out| {
            out[slot].replies[seen..]
                .iter()
                .find(|(p, _)| p == payload)
                .map(|(_, r)| r.clone())
        })?
    }

    /// Commits a value tagged `tag` through whichever running member leads,
    /// retrying through leader changes until `limit`; each attempt proposes
    /// `<tag>.<attempt>`. Returns the member, the payload and its index.
    pub fn commit(&mut self, tag: &str, limit: Duration) -> Result<(u8, String, u64), String> {
        let end = deadline(limit);
        let mut last = String::from("no attempt");
        for attempt in 0u32.. {
            let left = end.saturating_duration_since(now());
            if left.is_zero() {
                break;
            }
            let running = self.running();
            if running.is_empty() {
                break;
            }
            let target = self
                .leader()
                .unwrap_or(running[attempt as usize % running.len()]);
            let payload = format!("{tag}.{attempt}");
            match self.propose(target, &payload, left) {
                Ok(index) => return Ok((target, payload, index)),
                Err(e) => last = format!("member {target}: {e}"),
            }
            // Let the leader change progress: wake on any report, or soon.
            let out = self.lock();
            let _ = self.shared.1.wait_timeout(out, Duration::from_millis(2));
        }
        Err(format!("{tag} not committed within {limit:?}: {last}"))
    }

    /// Kills member `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: u8) -> Result<(), String> {
        let m = &mut self.members[usize::from(id - 1)];
        m.child.kill().map_err(|e| e.to_string())?;
        m.child.wait().map_err(|e| e.to_string())?;
        m.state = State::Killed;
        Ok(())
    }

    /// Stops member `id` with SIGSTOP.
    pub fn stop(&mut self, id: u8) -> Result<(), String> {
        self.signal(id, "STOP")?;
        self.members[usize::from(id - 1)].state = State::Stopped;
        Ok(())
    }

    /// Resumes a stopped member `id` with SIGCONT.
    pub fn cont(&mut self, id: u8) -> Result<(), String> {
        self.signal(id, "CONT")?;
        self.members[usize::from(id - 1)].state = State::Running;
        Ok(())
    }

    fn signal(&self, id: u8, sig: &str) -> Result<(), String> {
        let pid = self.members[usize::from(id - 1)].child.id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .map_err(|e| format!("kill -{sig}: {e}"))?
            .success();
        ok.then_some(())
            .ok_or_else(|| format!("kill -{sig} {pid} failed"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Output>> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for m in &mut self.members {
            // SIGKILL also ends a stopped process.
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
        for dir in &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn read_reports(stdout: std::process::ChildStdout, slot: usize, shared: &Shared) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        shared.0.lock().unwrap_or_else(|e| e.into_inner())[slot].record(&line);
        shared.1.notify_all();
    }
    shared.0.lock().unwrap_or_else(|e| e.into_inner())[slot].closed = true;
    shared.1.notify_all();
}

/// `nodes` free loopback addresses, comma separated.
fn free_ports(nodes: u8) -> Result<String, String> {
    let listeners = (0..nodes)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("no free loopback port: {e}"))?;
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(addrs.join(","))
}

fn summary(out: &[Output]) -> String {
    out.iter()
        .enumerate()
        .map(|(i, o)| {
            format!(
                "[{}: role {:?}, leader {}, applied {} (last {:?}), last reply {:?}, exited {}]",
                i + 1,
                o.role,
                o.leader,
                o.applied.len(),
                o.applied.last(),
                o.replies.last(),
                o.closed
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[allow(clippy::disallowed_methods, reason = "deadlines of real processes")]
fn now() -> Instant {
    Instant::now()
}

fn deadline(limit: Duration) -> Instant {
    now() + limit
}
