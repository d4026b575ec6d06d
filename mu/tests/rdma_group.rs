//! Three replicas in three processes, each on its own rxe device, over the
//! `rdma` fabric: they commit a stream, survive a SIGSTOP of the leader
//! (which, resumed, is fenced out and catches up as a follower) and then a
//! SIGKILL of the next leader, and agree on the applied sequence. Prints the fail-over times and the
//! propose-to-commit latency of the last leader. Runs inside the guest of
//! `scripts/rdma-vm`: `RDMA_VM_NODES=3
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm cargo
//! test -p mu --features rdma --test rdma_group -- --nocapture`. Without a
//! device it fails and says how to get one.

#![cfg(feature = "rdma")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const N: u8 = 3;
const SECRET: &str = "rdma group test secret";
/// Bound on any one expected event (a leader, a commit, catching up).
const DEADLINE: Duration = Duration::from_secs(60);

#[allow(clippy::disallowed_methods, reason = "the test bounds its waits")]
fn now() -> Instant {
    Instant::now()
}

struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    role: String,
    leader: String,
    applied: BTreeMap<u64, String>,
    /// Answers to `propose` and `bench`, oldest first.
    answers: Vec<String>,
    killed: bool,
    stopped: bool,
}

struct Group {
    nodes: Vec<Node>,
    lines: Receiver<(usize, String)>,
    /// (index, payload) of every acknowledged proposal.
    acked: Vec<(u64, String)>,
    attempt: u64,
    /// The node that acknowledged the latest proposal.
    last_leader: Option<usize>,
}

impl Group {
    fn start() -> Group {
        let (devs, gid) = mu::fabric::rdma::test_devices(
            "RDMA_VM_NODES=3 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm \
             cargo test -p mu --features rdma --test rdma_group",
        );
        let gid = gid.to_string();
        let ports: Vec<String> = (0..N)
            .map(|_| {
                let l = TcpListener::bind("127.0.0.1:0").expect("bind");
                l.local_addr().expect("addr").to_string()
            })
            .collect();
        let (tx, lines) = mpsc::channel();
        let nodes = (0..N)
            .map(|i| {
                let mut child = Command::new(env!("CARGO_BIN_EXE_mu-fabric-peer"))
                    .args(["replica", "--fabric", "rdma"])
                    .args(["--group", &N.to_string(), "--node", &i.to_string()])
                    .args(["--peers", &ports.join(",")])
                    .args(["--rdma-device", &devs[usize::from(i) % devs.len()]])
                    .args(["--gid-index", &gid])
                    .env("MU_FABRIC_SECRET", SECRET)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("start mu-fabric-peer replica");
                let stdout = child.stdout.take().expect("piped");
                let tx = tx.clone();
                std::thread::Builder::new()
                    .name(format!("replica-{i}-output"))
                    .spawn(move || {
                        for line in BufReader::new(stdout).lines() {
                            let Ok(line) = line else { return };
                            if tx.send((usize::from(i), line)).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("start an output reader");
                Node {
                    stdin: child.stdin.take(),
                    child,
                    role: String::new(),
                    leader: String::new(),
                    applied: BTreeMap::new(),
                    answers: Vec::new(),
                    killed: false,
                    stopped: false,
                }
            })
            .collect();
        Group {
            nodes,
            lines,
            acked: Vec::new(),
            attempt: 0,
            last_leader: None,
        }
    }

    /// Takes in reports until `done` holds or `limit` passes.
    fn pump_until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Group) -> bool) {
        let start = now();
        while !done(self) {
            let left = limit
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("{what}: not within {limit:?}; {}", self.summary()));
            if let Ok((i, line)) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.record(i, &line);
            }
        }
    }

    fn record(&mut self, i: usize, line: &str) {
        let n = &mut self.nodes[i];
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status", role, leader] => {
                n.role = role.to_string();
                n.leader = leader.to_string();
            }
            ["applied", index, payload] => {
                let index: u64 = index.parse().expect("index");
                if let Some(old) = n.applied.insert(index, payload.to_string()) {
                    panic!("node {i} applied index {index} twice ({old}, {payload})");
                }
            }
            ["proposed", ..] | ["bench", ..] => n.answers.push(line.to_string()),
            _ => panic!("node {i} reported {line:?}"),
        }
    }

    fn summary(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "node {i}: {} leader {} applied {} killed {} stopped {}",
                    n.role,
                    n.leader,
                    n.applied.len(),
                    n.killed,
                    n.stopped
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A running node that reports itself as leader.
    fn leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| !n.killed && !n.stopped && n.role == "Leader")
    }

    fn send(&mut self, i: usize, line: &str) {
        let stdin = self.nodes[i].stdin.as_mut().expect("running");
        writeln!(stdin, "{line}").expect("write to a replica");
        stdin.flush().expect("flush");
    }

    /// Commits one new entry through whichever replica leads; returns its index.
    fn commit(&mut self, tag: &str) -> u64 {
        let start = now();
        loop {
            assert!(
                start.elapsed() < DEADLINE,
                "no commit of {tag} within {DEADLINE:?}; {}",
                self.summary()
            );
            self.pump_until("a leader", DEADLINE, |g| g.leader().is_some());
            let l = self.leader().expect("a leader");
            self.attempt += 1;
            let payload = format!("{tag}-{}", self.attempt);
            let before = self.nodes[l].answers.len();
            self.send(l, &format!("propose {payload}"));
            self.pump_until("an answer to a proposal", DEADLINE, |g| {
                g.nodes[l].answers.len() > before
            });
            let answer = self.nodes[l].answers[before].clone();
            if let Some(index) = answer
                .strip_prefix(&format!("proposed {payload} ok "))
                .and_then(|i| i.parse().ok())
            {
                self.acked.push((index, payload));
                self.last_leader = Some(l);
                return index;
            }
            // Not the leader any more, or a leader change: try again.
        }
    }

    fn signal(&mut self, i: usize, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.nodes[i].child.id().to_string())
            .status()
            .expect("run kill(1)")
            .success();
        assert!(ok, "kill -{sig} node {i}");
    }

    /// Waits until every running node applied every acknowledged entry.
    fn converge(&mut self) {
        let top = self.acked.iter().map(|a| a.0).max().unwrap_or(0);
        self.pump_until(
            "every running node applying every acked entry",
            DEADLINE,
            |g| {
                g.nodes
                    .iter()
                    .filter(|n| !n.killed)
                    .all(|n| n.applied.range(top..).next().is_some())
            },
        );
    }

    /// Agreement, no gaps, and every acknowledged entry in place.
    fn check(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            for (k, &index) in n.applied.keys().enumerate() {
                assert_eq!(index, k as u64 + 1, "node {i} skipped an index");
            }
            for (j, m) in self.nodes.iter().enumerate() {
                for (index, p) in &n.applied {
                    if let Some(q) = m.applied.get(index) {
                        assert_eq!(
                            p, q,
                            "nodes {i} and {j} applied different entries at {index}"
                        );
                    }
                }
            }
            if n.killed {
                continue;
            }
            for (index, payload) in &self.acked {
                assert_eq!(
                    n.applied.get(index),
                    Some(payload),
                    "node {i} lacks the acknowledged entry {index}"
                );
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

#[test]
fn three_replicas_over_rdma_survive_sigkill_and_sigstop_of_the_leader() {
    let mut g = Group::start();
    for i in 0..20 {
        g.commit(&format!("a{i}"));
    }

    // SIGSTOP the leader: the other two elect a new one and go on; the
    // stopped one, resumed, is fenced out of their logs and follows.
    let first = g.last_leader.expect("a leader");
    g.signal(first, "STOP");
    g.nodes[first].stopped = true;
    let t = now();
    g.commit("after-stop");
    let stop_failover = t.elapsed();
    for i in 0..20 {
        g.commit(&format!("b{i}"));
    }
    g.signal(first, "CONT");
    g.nodes[first].stopped = false;
    g.converge();
    g.check();

    // SIGKILL the current leader: the remaining two go on.
    g.commit("before-kill");
    let second = g.last_leader.expect("a leader");
    g.signal(second, "KILL");
    g.nodes[second].killed = true;
    g.nodes[second].stdin = None;
    let t = now();
    g.commit("after-kill");
    let kill_failover = t.elapsed();
    for i in 0..20 {
        g.commit(&format!("c{i}"));
    }
    g.converge();
    g.check();

    let mut bench = Vec::new();
    for (count, size) in [(300, 64), (200, 4096)] {
        // A leader change during the run (the resumed replica may take the
        // lead back) spoils it: run it again on the new leader.
        let start = now();
        loop {
            assert!(start.elapsed() < DEADLINE, "no benchmark run finished");
            g.commit("bench");
            let l = g.last_leader.expect("a leader");
            let before = g.nodes[l].answers.len();
            g.send(l, &format!("bench {count} {size}"));
            g.pump_until("a benchmark", DEADLINE, |g| {
                g.nodes[l].answers.len() > before
            });
            let answer = g.nodes[l].answers[before].clone();
            if !answer.starts_with("bench err") {
                bench.push(answer);
                break;
            }
        }
    }
    g.converge();
    g.check();
    println!("fail-over after SIGSTOP of the leader (stop to first commit): {stop_failover:?}");
    println!("fail-over after SIGKILL of the leader (kill to first commit): {kill_failover:?}");
    for b in bench {
        println!("propose to commit, 3 replicas over rdma: {b} (ns)");
    }
}
