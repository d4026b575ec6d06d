//! A client that appends numbered values to one list through a sidecar,
//! without pause, recording which writes were acknowledged; and checks of
//! the backends' copies of that list.

use super::{text, wait_for, Kind, McClient, RespClient};
use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the writer saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Values whose write was acknowledged.
    pub acked: Vec<u64>,
    /// Error replies (and connection failures), in order.
    pub errors: Vec<String>,
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

/// A running writer thread.
pub struct Load {
    seen: Arc<Mutex<Seen>>,
    acked: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts writing through the sidecar at `addr`. For memcached the
    /// list must exist (see [`create_log`]).
    pub fn start(kind: Kind, addr: SocketAddr) -> Load {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let acked = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
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
                            // Backoff before reconnecting to a dead node.
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        };
        Load {
            seen,
            acked,
            errors,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `by` more writes are acknowledged.
    pub fn grow(&self, by: u64, what: &str) {
        let target = self.acked.load(Ordering::Acquire) + by;
        wait_for(Duration::from_secs(30), what, || {
            (self.acked.load(Ordering::Acquire) >= target).then_some(())
        });
    }

    /// Error replies so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Acquire)
    }

    /// Stops the writer and returns what it saw.
    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Creates the (memcached) list the writer appends to.
pub fn create_log(kind: Kind, sidecar: SocketAddr) {
    if kind == Kind::Memcached {
        let mut m = McClient::connect(sidecar).unwrap();
        assert_eq!(m.call(b"set log 0 0 0\r\n\r\n").unwrap(), McReply::Stored);
    }
}

/// The log's values on one backend.
pub fn backend_log(kind: Kind, addr: SocketAddr) -> Vec<u64> {
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

/// Every backend in `addrs` holds the same log, with no value twice and
/// every acknowledged value present; `context` is shown on failure.
pub fn check_logs(kind: Kind, addrs: &[SocketAddr], seen: &Seen, context: &dyn Fn() -> String) {
    let logs: Vec<Vec<u64>> = addrs.iter().map(|&a| backend_log(kind, a)).collect();
    for (i, l) in logs.iter().enumerate().skip(1) {
        assert_eq!(
            &logs[0], l,
            "backends {} and {} hold different logs",
            addrs[0], addrs[i]
        );
    }
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
        context()
    );
}
