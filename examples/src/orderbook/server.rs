//! One order-book server: a Mu replica (used directly as a library), the
//! applier that feeds committed entries to the [`Exchange`] in log order,
//! and the TCP front end of the [client protocol](super).
//!
//! Threads: the replica's driver; the applier; one acceptor; one thread
//! per client connection (at most [`MAX_CONNECTIONS`]). A connection
//! thread registers a mailbox under its command's (client, seq), submits
//! the command to Mu and sleeps on the mailbox. The applier posts the
//! result there when it applies an entry with that (client, seq); the
//! replica's completion callback posts only refusals (not leader, leader
//! changing, superseded), so an order's answer costs one wake-up of the
//! connection thread.

use super::exchange::{Applied, Command, Effect, Exchange};
use super::protocol::{parse_request, read_line, Ack, LineError, Reply, Request, MAX_REQUEST_LINE};
use crate::Node;
use mu::driver::replica::{Committed, Replica};
use mu::ProposeError;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Client connections served at once; more are refused with an `ERR`.
pub const MAX_CONNECTIONS: usize = 64;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// This server's replica id, 1-based.
    pub id: u8,
    /// Every server's order address, in id order (a follower names the
    /// leader's in its `NOTLEADER` answer).
    pub order_addrs: Vec<SocketAddr>,
    /// Append one line per applied entry here: `<index> <client> <seq>
    /// fresh placed|cancelled|rejected <order>`, `… dup`, `… stale` or
    /// `<index> - - malformed`. Flushed on `DUMP` and at shutdown.
    pub journal: Option<PathBuf>,
    /// How long a connection waits for its proposal to commit and apply
    /// before answering `RETRY`.
    pub propose_timeout: Duration,
}

/// What a waiting connection is told.
#[derive(Debug)]
enum Answer {
    /// The applier applied the command: its result, or why it was ignored.
    Applied(Result<Applied, String>),
    /// The replica refused or lost the proposal.
    Refused(ProposeError),
}

/// Where one connection waits for its command's answer.
#[derive(Debug, Default)]
struct Mailbox {
    answer: Mutex<Option<Answer>>,
    ready: Condvar,
}

impl Mailbox {
    /// Posts `answer` unless one was posted already (the first wins).
    fn post(&self, answer: Answer) {
        let mut a = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        if a.is_none() {
            *a = Some(answer);
            self.ready.notify_one();
        }
    }

    /// The answer, once posted; `None` after `deadline`.
    fn wait(&self, deadline: Instant) -> Option<Answer> {
        let mut a = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(answer) = a.take() {
                return Some(answer);
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return None;
            }
            a = self
                .ready
                .wait_timeout(a, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[derive(Debug)]
struct State {
    exchange: Exchange,
    /// Connections waiting for a command, by (client, seq).
    waiting: HashMap<(u64, u64), Vec<Arc<Mailbox>>>,
    journal: Option<BufWriter<File>>,
}

#[derive(Debug)]
struct Shared {
    opts: ServerOptions,
    replica: Arc<Replica>,
    state: Mutex<State>,
    connections: AtomicUsize,
    shutdown: Sender<()>,
}

/// Serves orders on `listener` with `node`'s replica until a client sends
/// `SHUTDOWN`; returns the final state as [`dump`] writes it. The caller
/// should then end the process: the applier and connection threads stay
/// blocked on the replica and the sockets.
pub fn run(node: Node, listener: TcpListener, opts: ServerOptions) -> Result<String, String> {
    // The rest of `node` (its pause fifo) lives until the end of `run`.
    let Node {
        replica, committed, ..
    } = node;
    let journal = match &opts.journal {
        Some(p) => Some(BufWriter::with_capacity(
            1 << 16,
            File::create(p).map_err(|e| format!("journal {}: {e}", p.display()))?,
        )),
        None => None,
    };
    let (shutdown, stop) = mpsc::channel();
    let shared = Arc::new(Shared {
        opts,
        replica,
        state: Mutex::new(State {
            exchange: Exchange::new(),
            waiting: HashMap::new(),
            journal,
        }),
        connections: AtomicUsize::new(0),
        shutdown,
    });
    let s = shared.clone();
    std::thread::Builder::new()
        .name("orderbook-apply".into())
        .spawn(move || apply_committed(&s, committed))
        .map_err(|e| format!("cannot start the applier: {e}"))?;
    let s = shared.clone();
    std::thread::Builder::new()
        .name("orderbook-accept".into())
        .spawn(move || accept(&s, &listener))
        .map_err(|e| format!("cannot start the acceptor: {e}"))?;
    stop.recv()
        .map_err(|_| "the connection threads are gone".to_string())?;
    let mut state = shared.lock();
    flush_journal(&mut state);
    Ok(dump(shared.opts.id, &state.exchange))
}

/// A server's whole state as the `DUMP` request returns it: `DUMP <node>
/// <applied> <digest>`, the [`Exchange::canonical`] lines, then `END`.
pub fn dump(node: u8, exchange: &Exchange) -> String {
    format!(
        "DUMP {node} {} {:016x}\n{}END\n",
        exchange.applied(),
        exchange.digest(),
        exchange.canonical()
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Proposes `cmd` and answers with what it did once applied.
    fn order(&self, cmd: &Command) -> Reply {
        let deadline = now() + self.opts.propose_timeout;
        let key = (cmd.client, cmd.seq);
        let mailbox = Arc::new(Mailbox::default());
        self.lock()
            .waiting
            .entry(key)
            .or_default()
            .push(mailbox.clone());
        let m = mailbox.clone();
        self.replica.submit(cmd.encode(), move |outcome| {
            if let Err(e) = outcome {
                m.post(Answer::Refused(e));
            }
        });
        let answer = mailbox.wait(deadline);
        {
            let mut state = self.lock();
            if let Some(waiters) = state.waiting.get_mut(&key) {
                waiters.retain(|w| !Arc::ptr_eq(w, &mailbox));
                if waiters.is_empty() {
                    state.waiting.remove(&key);
                }
            }
        }
        match answer {
            Some(Answer::Applied(Ok(applied))) => Reply::Ok(Ack::new(self.opts.id, &applied)),
            Some(Answer::Applied(Err(why))) => Reply::Err(why),
            Some(Answer::Refused(e)) => self.refused(e),
            None => Reply::Retry(format!(
                "not applied within {:?}; it may still be",
                self.opts.propose_timeout
            )),
        }
    }

    /// The answer to a proposal the replica refused or lost.
    fn refused(&self, e: ProposeError) -> Reply {
        match e {
            ProposeError::NotLeader { leader } => Reply::NotLeader {
                leader: leader.and_then(|l| {
                    let addr = self.opts.order_addrs.get(l.idx())?;
                    Some((l.0 + 1, *addr))
                }),
            },
            ProposeError::LeaderChanging
            | ProposeError::LogFull { .. }
            | ProposeError::Superseded
            | ProposeError::Unknown => Reply::Retry(e.to_string()),
            ProposeError::NeedsStateTransfer => Reply::Unavailable(e.to_string()),
            ProposeError::TooLarge { .. } => Reply::Err(e.to_string()),
        }
    }

    fn status(&self) -> Reply {
        let applied = self.lock().exchange.applied();
        let (role, leader) = match self.replica.status() {
            Some(s) => (format!("{:?}", s.role), s.leader.map(|l| l.0 + 1)),
            None => ("Starting".to_string(), None),
        };
        Reply::Status {
            node: self.opts.id,
            role,
            leader,
            applied,
        }
    }
}

/// Applies committed entries in log order, for as long as the replica runs.
fn apply_committed(shared: &Shared, committed: Receiver<Committed>) {
    for c in committed {
        let mut state = shared.lock();
        let effect = state.exchange.apply(c.index, &c.payload);
        let cmd = Command::decode(&c.payload).ok();
        let (client, seq) = cmd.map_or((0, 0), |c| (c.client, c.seq));
        let journal = state
            .journal
            .is_some()
            .then(|| journal_line(c.index, cmd.as_ref(), &effect));
        let result = match effect {
            Effect::Fresh(a) | Effect::Duplicate(a) => Ok(a),
            Effect::Stale {
                client,
                seq,
                latest,
            } => Err(format!(
                "stale sequence number {seq}: client {client} is at {latest}"
            )),
            Effect::Malformed(e) => Err(e.to_string()),
        };
        for w in state.waiting.remove(&(client, seq)).into_iter().flatten() {
            w.post(Answer::Applied(result.clone()));
        }
        if let (Some(j), Some(line)) = (state.journal.as_mut(), journal) {
            if let Err(e) = writeln!(j, "{line}") {
                eprintln!("orderbook-server: journal write failed, journal stopped: {e}");
                state.journal = None;
            }
        }
    }
}

fn journal_line(index: u64, cmd: Option<&Command>, effect: &Effect) -> String {
    use super::exchange::Outcome;
    let Some(cmd) = cmd else {
        return format!("{index} - - malformed");
    };
    let what = match effect {
        Effect::Fresh(a) => match &a.outcome {
            Outcome::Placed(p) => format!("fresh placed {}", p.id),
            Outcome::Cancelled { order, .. } => format!("fresh cancelled {order}"),
            Outcome::Rejected(_) => "fresh rejected -".to_string(),
        },
        Effect::Duplicate(_) => "dup".into(),
        Effect::Stale { .. } => "stale".into(),
        Effect::Malformed(_) => "malformed".into(),
    };
    format!("{index} {} {} {what}", cmd.client, cmd.seq)
}

fn flush_journal(state: &mut State) {
    if let Some(j) = state.journal.as_mut() {
        if let Err(e) = j.flush() {
            eprintln!("orderbook-server: journal flush failed: {e}");
        }
    }
}

fn accept(shared: &Arc<Shared>, listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            let _ = writeln!(
                stream,
                "{}",
                Reply::Err(format!("too many connections (at most {MAX_CONNECTIONS})"))
            );
            continue;
        }
        let s = shared.clone();
        let started = std::thread::Builder::new()
            .name("orderbook-conn".into())
            .spawn(move || {
                serve(&s, stream);
                s.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if started.is_err() {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Answers one client's requests until it disconnects.
fn serve(shared: &Shared, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    loop {
        let line = match read_line(&mut reader, MAX_REQUEST_LINE) {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => return,
            Err(e) => {
                // The rest of the line cannot be told from the next
                // request: answer and close.
                let _ = writeln!(out, "{}", Reply::Err(e.to_string()));
                return;
            }
        };
        let text = match parse_request(&line) {
            Err(e) => Reply::Err(e).to_string() + "\n",
            Ok(Request::Order(cmd)) => shared.order(&cmd).to_string() + "\n",
            Ok(Request::Status) => shared.status().to_string() + "\n",
            Ok(Request::Digest) => {
                let state = shared.lock();
                Reply::Digest {
                    node: shared.opts.id,
                    applied: state.exchange.applied(),
                    digest: state.exchange.digest(),
                }
                .to_string()
                    + "\n"
            }
            Ok(Request::Dump) => {
                let mut state = shared.lock();
                flush_journal(&mut state);
                dump(shared.opts.id, &state.exchange)
            }
            Ok(Request::Shutdown) => {
                let _ = writeln!(
                    out,
                    "{}",
                    Reply::Bye {
                        node: shared.opts.id
                    }
                );
                let _ = shared.shutdown.send(());
                return;
            }
        };
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

fn now() -> Instant {
    Instant::now()
}
