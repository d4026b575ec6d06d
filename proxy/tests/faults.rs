//! Faults under load: while a client writes continuously through one
//! sidecar, the leader's sidecar is SIGKILLed, then the new leader is
//! SIGSTOPped and continued. Every acknowledged write must be on every
//! surviving backend, none twice, and the client sees only clear errors.

mod common;

use common::{text, wait_for, Cluster, Kind, McClient, RespClient};
use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the writer saw.
#[derive(Debug, Default)]
struct Seen {
    acked: Vec<u64>,
    errors: Vec<String>,
}

/// One write attempt's outcome.
enum Outcome {
    Acked,
    /// An error reply: the text.
    Error(String),
    /// The connection failed; reconnect.
    Io,
}

/// Appends value `i` to the log through the sidecar.
trait Writer: Send {
    fn write(&mut self, i: u64) -> Outcome;
}

struct RedisWriter(SocketAddr, Option<RespClient>);

impl Writer for RedisWriter {
    fn write(&mut self, i: u64) -> Outcome {
        if self.1.is_none() {
            self.1 = RespClient::connect(self.0).ok();
        }
        let Some(c) = self.1.as_mut() else {
            return Outcome::Io;
        };
        match c.call(&["RPUSH", "log", &i.to_string()]) {
            Ok(Frame::Integer(_)) => Outcome::Acked,
            Ok(other) => Outcome::Error(text(&other)),
            Err(_) => {
                self.1 = None;
                Outcome::Io
            }
        }
    }
}

struct McWriter(SocketAddr, Option<McClient>);

impl Writer for McWriter {
    fn write(&mut self, i: u64) -> Outcome {
        if self.1.is_none() {
            self.1 = McClient::connect(self.0).ok();
        }
        let Some(c) = self.1.as_mut() else {
            return Outcome::Io;
        };
        let item = format!(",{i}");
        let req = format!("append log 0 0 {}\r\n{item}\r\n", item.len());
        match c.call(req.as_bytes()) {
            Ok(McReply::Stored) => Outcome::Acked,
            Ok(McReply::ServerError(m)) => Outcome::Error(String::from_utf8_lossy(&m).into()),
            Ok(other) => Outcome::Error(format!("{other:?}")),
            Err(_) => {
                self.1 = None;
                Outcome::Io
            }
        }
    }
}

/// The log's values on one backend.
fn backend_log(kind: Kind, addr: SocketAddr) -> Vec<u64> {
    match kind {
        Kind::Redis => {
            let mut c = RespClient::connect(addr).expect("backend");
            match c.cmd(&["LRANGE", "log", "0", "-1"]) {
                Frame::Array(v) => v.iter().map(|f| text(f).parse().expect("number")).collect(),
                other => panic!("LRANGE answered {other:?}"),
            }
        }
        Kind::Memcached => {
            let mut c = McClient::connect(addr).expect("backend");
            match c.call(b"get log\r\n").expect("get") {
                McReply::Values(v) => String::from_utf8_lossy(&v[0].data)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().expect("number"))
                    .collect(),
                other => panic!("get log answered {other:?}"),
            }
        }
    }
}

fn clear_error(kind: Kind, e: &str) -> bool {
    match kind {
        Kind::Redis => e.starts_with("TRYAGAIN mu-sidecar") || e.starts_with("ERR mu-sidecar"),
        Kind::Memcached => e.starts_with("mu-sidecar"),
    }
}

fn fault_under_load(kind: Kind, fabric: &str) {
    let c = Cluster::start(kind, 3, fabric, &["--write-deadline-ms", "1500"]);
    if kind == Kind::Memcached {
        let mut m = McClient::connect(c.nodes[0].listen).unwrap();
        assert_eq!(m.call(b"set log 0 0 0\r\n\r\n").unwrap(), McReply::Stored);
    }
    let all = [0usize, 1, 2];
    let leader = c.wait_leader(&all, Duration::from_secs(10));
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    // The new leader will be the lowest live id; write through the other.
    let (next, via) = (others[0], others[1]);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = c.nodes[via].listen;
    let writer = {
        let (seen, acked, errors, stop) =
            (seen.clone(), acked.clone(), errors.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut w: Box<dyn Writer> = match kind {
                Kind::Redis => Box::new(RedisWriter(addr, None)),
                Kind::Memcached => Box::new(McWriter(addr, None)),
            };
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                match w.write(i) {
                    Outcome::Acked => {
                        seen.lock().unwrap().acked.push(i);
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    Outcome::Error(e) => {
                        seen.lock().unwrap().errors.push(e);
                        errors.fetch_add(1, Ordering::AcqRel);
                    }
                    Outcome::Io => {
                        seen.lock()
                            .unwrap()
                            .errors
                            .push("connection to the sidecar failed".into());
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        })
    };
    let grow = |by: u64, what: &str| {
        let target = acked.load(Ordering::Acquire) + by;
        wait_for(Duration::from_secs(30), what, || {
            (acked.load(Ordering::Acquire) >= target).then_some(())
        });
    };
    grow(200, "writes before the faults");
    let mut c = c;
    c.nodes[leader].proc.signal("KILL");
    c.nodes[leader].proc.kill();
    let new = c.wait_leader(&others, Duration::from_secs(10));
    assert_eq!(new, next, "the lowest live id leads");
    grow(200, "writes after the leader's SIGKILL");
    // With one node dead and one stopped there is no majority: writes fail
    // clearly until the stopped one continues.
    c.nodes[next].proc.signal("STOP");
    let e0 = errors.load(Ordering::Acquire);
    wait_for(
        Duration::from_secs(20),
        "an error while no majority is up",
        || (errors.load(Ordering::Acquire) > e0).then_some(()),
    );
    c.nodes[next].proc.signal("CONT");
    c.wait_leader(&others, Duration::from_secs(10));
    grow(200, "writes after SIGCONT");
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let commit = c.commit_index(&others);
    c.wait_applied(&others, commit, Duration::from_secs(10));
    let seen = seen.lock().unwrap();
    let mut kinds: Vec<&str> = seen.errors.iter().map(|e| &e[..e.len().min(60)]).collect();
    kinds.sort();
    kinds.dedup();
    eprintln!(
        "{kind:?}/{fabric}: {} acknowledged, {} errors, kinds: {kinds:#?}",
        seen.acked.len(),
        seen.errors.len()
    );
    let logs: Vec<Vec<u64>> = others
        .iter()
        .map(|&i| backend_log(kind, c.nodes[i].backend))
        .collect();
    assert_eq!(logs[0], logs[1], "the surviving backends differ");
    let log = &logs[0];
    let unique: HashSet<u64> = log.iter().copied().collect();
    assert_eq!(
        unique.len(),
        log.len(),
        "a write was applied twice: {log:?}"
    );
    let missing: Vec<u64> = seen
        .acked
        .iter()
        .copied()
        .filter(|v| !unique.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes lost: {missing:?}\n{}",
        c.logs()
    );
    let unclear: Vec<&String> = seen
        .errors
        .iter()
        .filter(|e| !clear_error(kind, e) && !e.starts_with("connection to the sidecar"))
        .collect();
    assert!(unclear.is_empty(), "unclear errors: {unclear:?}");
    assert!(
        !seen.errors.is_empty(),
        "the faults produced no error at all"
    );
}

#[test]
fn redis_fault_under_load_tcp() {
    fault_under_load(Kind::Redis, "tcp");
}

#[test]
fn redis_fault_under_load_shm() {
    fault_under_load(Kind::Redis, "shm");
}

#[test]
fn memcached_fault_under_load_tcp() {
    fault_under_load(Kind::Memcached, "tcp");
}
