//! The posting side of a `tcp` node: one link thread per peer owns the one
//! connection to it (so operations stay in post order), connects and
//! authenticates on demand, and sends requests; a reader thread per
//! connection matches responses to pending operations in order and
//! completes them. A connection that fails, or leaves an operation
//! unanswered for longer than the operation timeout, is closed and every
//! pending operation on it completes with [`OpError::Unreachable`]; the
//! next operation reconnects.

use super::wire::{self, RequestHeader, RESPONSE_HEADER};
use super::{clock, Shared, TcpOptions};
use crate::error::OpError;
use crate::fabric::{Completion, Memory, OpId};
use crate::types::NodeId;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An operation handed to a link thread.
#[derive(Debug)]
pub(super) enum Request {
    /// Write `data` at `remote`.
    Write {
        /// Operation id.
        op: OpId,
        /// Offset in the peer's region.
        remote: u64,
        /// The bytes, copied from the local region when posted.
        data: Vec<u8>,
    },
    /// Read `len` bytes at `remote` into the local region at `local`.
    Read {
        /// Operation id.
        op: OpId,
        /// Offset in the peer's region.
        remote: u64,
        /// Offset in the local region.
        local: u64,
        /// Length.
        len: u64,
    },
}

impl Request {
    fn op(&self) -> OpId {
        match self {
            Request::Write { op, .. } | Request::Read { op, .. } => *op,
        }
    }
}

/// A sent operation waiting for its response.
#[derive(Debug)]
struct Pending {
    op: OpId,
    /// `Some((local, len))` for a read.
    read: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
struct InFlight {
    queue: VecDeque<Pending>,
    /// When the oldest pending operation last saw progress.
    since: Option<Instant>,
    /// The reader has stopped and completed everything queued.
    closed: bool,
}

/// One open connection: the stream and its reader thread.
struct Conn {
    stream: TcpStream,
    inflight: Arc<Mutex<InFlight>>,
    dead: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

impl Conn {
    /// Closes the connection and waits until the reader has completed
    /// every pending operation, so later completions stay in post order.
    fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        let _ = self.reader.join();
    }
}

fn lock(m: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The link thread's loop: runs until the endpoint drops its sender.
pub(super) fn run(
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    options: TcpOptions,
    requests: Receiver<Request>,
) {
    let mut conn: Option<Conn> = None;
    let mut last_failure: Option<Instant> = None;
    while let Ok(req) = requests.recv() {
        if conn
            .as_ref()
            .is_some_and(|c| c.dead.load(Ordering::Acquire))
        {
            if let Some(c) = conn.take() {
                c.close();
            }
        }
        if conn.is_none() {
            let backing_off = last_failure.is_some_and(|t| t.elapsed() < options.reconnect_backoff);
            if !backing_off {
                match connect(&shared, peer, addr, options) {
                    Ok(c) => conn = Some(c),
                    Err(_) => last_failure = Some(clock()),
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            shared.complete(Completion {
                op: req.op(),
                peer,
                result: Err(OpError::Unreachable),
            });
            continue;
        };
        let queued = {
            let mut f = lock(&c.inflight);
            if f.queue.is_empty() {
                f.since = Some(clock());
            }
            if !f.closed {
                f.queue.push_back(Pending {
                    op: req.op(),
                    read: match req {
                        Request::Read { local, len, .. } => Some((local, len)),
                        Request::Write { .. } => None,
                    },
                });
            }
            !f.closed
        };
        if !queued {
            // The connection died after the check above; everything before
            // this operation has completed already.
            if let Some(c) = conn.take() {
                c.close();
            }
            last_failure = Some(clock());
            shared.complete(Completion {
                op: req.op(),
                peer,
                result: Err(OpError::Unreachable),
            });
            continue;
        }
        if send(&mut c.stream, &req).is_err() {
            // The reader completes this operation and the ones before it.
            if let Some(c) = conn.take() {
                c.close();
            }
            last_failure = Some(clock());
        }
    }
    if let Some(c) = conn {
        c.close();
    }
}

fn send(stream: &mut TcpStream, req: &Request) -> io::Result<()> {
    match req {
        Request::Write { op, remote, data } => {
            let h = RequestHeader {
                kind: wire::KIND_WRITE,
                op: op.0,
                remote: *remote,
                len: data.len() as u64,
            };
            stream.write_all(&h.encode())?;
            stream.write_all(data)
        }
        Request::Read {
            op, remote, len, ..
        } => {
            let h = RequestHeader {
                kind: wire::KIND_READ,
                op: op.0,
                remote: *remote,
                len: *len,
            };
            stream.write_all(&h.encode())
        }
    }
}

fn connect(
    shared: &Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    options: TcpOptions,
) -> io::Result<Conn> {
    let mut stream = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.connect_timeout))?;
    stream.set_write_timeout(Some(options.op_timeout))?;
    if let Err(e) = wire::client_handshake(&mut stream, &shared.key, shared.id, peer) {
        if e.kind() == io::ErrorKind::PermissionDenied {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
        }
        return Err(e);
    }
    // The reader wakes this often to check the operation timeout.
    stream.set_read_timeout(Some(options.op_timeout / 8))?;
    let inflight = Arc::new(Mutex::new(InFlight::default()));
    let dead = Arc::new(AtomicBool::new(false));
    let reader = {
        let (shared, inflight, dead) = (shared.clone(), inflight.clone(), dead.clone());
        let stream = stream.try_clone()?;
        std::thread::Builder::new()
            .name(format!("mu-tcp-reader-{}-{peer}", shared.id))
            .spawn(move || read_responses(shared, peer, stream, inflight, dead, options))?
    };
    Ok(Conn {
        stream,
        inflight,
        dead,
        reader,
    })
}

/// Why the reader stopped.
enum Stop {
    Io,
    Timeout,
}

/// Fills `buf` completely; a read timeout with nothing pending is not an
/// error, with something pending for longer than `limit` it is.
fn fill(
    stream: &mut TcpStream,
    buf: &mut [u8],
    inflight: &Mutex<InFlight>,
    limit: Duration,
) -> Result<(), Stop> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(Stop::Io),
            Ok(k) => filled += k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let f = lock(inflight);
                if f.since.is_some_and(|t| t.elapsed() > limit) {
                    return Err(Stop::Timeout);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Stop::Io),
        }
    }
    Ok(())
}

fn read_responses(
    shared: Arc<Shared>,
    peer: NodeId,
    mut stream: TcpStream,
    inflight: Arc<Mutex<InFlight>>,
    dead: Arc<AtomicBool>,
    options: TcpOptions,
) {
    let mut data = Vec::new();
    let _stopped: Stop = loop {
        let mut h = [0u8; RESPONSE_HEADER];
        if let Err(s) = fill(&mut stream, &mut h, &inflight, options.op_timeout) {
            break s;
        }
        let op = OpId(u64::from_le_bytes(h[1..9].try_into().expect("8 bytes")));
        let Some(p) = lock(&inflight).queue.pop_front() else {
            break Stop::Io;
        };
        if p.op != op {
            break Stop::Io;
        }
        let result = match h[0] {
            wire::STATUS_OK => Ok(()),
            wire::STATUS_PERMISSION => Err(OpError::Permission),
            _ => Err(OpError::OutOfBounds),
        };
        if let (Some((local, len)), Ok(())) = (p.read, result) {
            data.resize(len as usize, 0);
            if let Err(s) = fill(&mut stream, &mut data, &inflight, options.op_timeout) {
                shared.complete(Completion {
                    op,
                    peer,
                    result: Err(OpError::Unreachable),
                });
                break s;
            }
            Memory::write(&mut shared.lock().bytes, local, &data);
        }
        {
            let mut f = lock(&inflight);
            f.since = (!f.queue.is_empty()).then(clock);
        }
        shared.complete(Completion { op, peer, result });
    };
    dead.store(true, Ordering::Release);
    let _ = stream.shutdown(Shutdown::Both);
    let mut f = lock(&inflight);
    f.closed = true;
    for p in f.queue.drain(..) {
        shared.complete(Completion {
            op: p.op,
            peer,
            result: Err(OpError::Unreachable),
        });
    }
}
