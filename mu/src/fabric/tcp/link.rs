//! The posting side of a `tcp` node: one [`Link`] per peer owns the one
//! connection to it, so operations stay in post order. It is driven by the
//! endpoint's own thread, with no thread hop on the data path: a post
//! appends the request to the link's outgoing buffer and writes what the
//! non-blocking socket takes; [`Link::poll`] writes the rest, reads the
//! responses that arrived and completes the pending operations in order.
//! Only connecting (a TCP handshake and the authentication round trips)
//! runs on a short-lived helper thread, so that posting never blocks.
//!
//! A connection that fails, or leaves the oldest pending operation
//! unanswered for longer than the operation timeout, is closed and every
//! pending operation on it completes with [`OpError::Unreachable`]; the
//! next operation reconnects, after a short backoff during which
//! operations fail at once.

use super::inbox::Inbox;
use super::wire::{self, RequestHeader, RESPONSE_HEADER};
use super::{clock, Shared, TcpOptions};
use crate::error::OpError;
use crate::fabric::{Completion, Memory, OpId};
use crate::types::NodeId;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

/// A posted operation waiting for its response.
#[derive(Debug)]
struct Pending {
    op: OpId,
    /// `Some((local, len))` for a read.
    read: Option<(u64, u64)>,
}

#[derive(Debug)]
enum State {
    /// No connection; the next post starts one unless backing off.
    Idle,
    /// A helper thread is connecting and authenticating.
    Connecting {
        result: Receiver<io::Result<TcpStream>>,
        since: Instant,
    },
    /// Connected; the stream is non-blocking.
    Up(TcpStream),
}

/// The connection to one peer and the operations in flight on it.
#[derive(Debug)]
pub(super) struct Link {
    shared: Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    options: TcpOptions,
    state: State,
    /// Encoded requests not yet taken by the socket.
    out: Vec<u8>,
    sent: usize,
    /// Response bytes received but not yet consumed.
    inbox: Inbox,
    pending: VecDeque<Pending>,
    /// When the oldest pending operation last saw progress.
    since: Instant,
    backoff_until: Option<Instant>,
}

impl Link {
    /// A link to `peer` at `addr`; it connects on first use.
    pub(super) fn new(
        shared: Arc<Shared>,
        peer: NodeId,
        addr: SocketAddr,
        options: TcpOptions,
    ) -> Self {
        Link {
            shared,
            peer,
            addr,
            options,
            state: State::Idle,
            out: Vec::new(),
            sent: 0,
            inbox: Inbox::default(),
            pending: VecDeque::new(),
            since: clock(),
            backoff_until: None,
        }
    }

    /// Queues a write of `data` at `remote`; returns a completion at once
    /// if the peer is known to be unreachable.
    pub(super) fn post_write(&mut self, op: OpId, remote: u64, data: &[u8]) -> Option<Completion> {
        let h = RequestHeader {
            kind: wire::KIND_WRITE,
            op: op.0,
            remote,
            len: data.len() as u64,
        };
        self.post(op, None, &h, data)
    }

    /// Queues a read of `len` bytes at `remote` into the local `local`.
    pub(super) fn post_read(
        &mut self,
        op: OpId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Option<Completion> {
        let h = RequestHeader {
            kind: wire::KIND_READ,
            op: op.0,
            remote,
            len,
        };
        self.post(op, Some((local, len)), &h, &[])
    }

    fn post(
        &mut self,
        op: OpId,
        read: Option<(u64, u64)>,
        header: &RequestHeader,
        data: &[u8],
    ) -> Option<Completion> {
        if matches!(self.state, State::Idle) {
            if self.backoff_until.is_some_and(|t| clock() < t) {
                return Some(self.unreachable(op));
            }
            self.connect();
        }
        if self.pending.is_empty() {
            self.since = clock();
        }
        self.pending.push_back(Pending { op, read });
        self.out.extend_from_slice(&header.encode());
        self.out.extend_from_slice(data);
        if let State::Up(stream) = &mut self.state {
            // A broken connection shows the same error again at the next
            // poll, which fails the link.
            let _ = flush(stream, &self.out, &mut self.sent);
            if self.sent == self.out.len() {
                self.out.clear();
                self.sent = 0;
            }
        }
        None
    }

    fn unreachable(&self, op: OpId) -> Completion {
        Completion {
            op,
            peer: self.peer,
            result: Err(OpError::Unreachable),
        }
    }

    fn connect(&mut self) {
        let (tx, rx) = mpsc::channel();
        let (shared, peer, addr, options) =
            (self.shared.clone(), self.peer, self.addr, self.options);
        let started = std::thread::Builder::new()
            .name(format!("mu-tcp-connect-{}-{peer}", shared.id))
            .spawn(move || {
                let _ = tx.send(connect(&shared, peer, addr, options));
            });
        if started.is_err() {
            // No thread: the channel is closed and the next poll fails the link.
            drop(rx);
            let (_, closed) = mpsc::channel();
            self.state = State::Connecting {
                result: closed,
                since: clock(),
            };
            return;
        }
        self.state = State::Connecting {
            result: rx,
            since: clock(),
        };
    }

    /// Makes progress and appends completed operations to `out`.
    pub(super) fn poll(&mut self, out: &mut Vec<Completion>) {
        if let State::Connecting { result, since } = &self.state {
            match result.try_recv() {
                Ok(Ok(stream)) => self.state = State::Up(stream),
                Ok(Err(_)) | Err(TryRecvError::Disconnected) => return self.fail(out),
                Err(TryRecvError::Empty) => {
                    if since.elapsed() > self.options.connect_timeout * 2 {
                        self.fail(out);
                    }
                    return;
                }
            }
        }
        let State::Up(stream) = &mut self.state else {
            return;
        };
        if self.pending.is_empty() && self.sent == self.out.len() {
            return;
        }
        let mut broken = flush(stream, &self.out, &mut self.sent).is_err();
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        if !broken {
            broken = receive(stream, &mut self.inbox).is_err();
        }
        if !self.complete(out) {
            broken = true;
        }
        let stalled = !self.pending.is_empty() && self.since.elapsed() > self.options.op_timeout;
        if broken || stalled {
            self.fail(out);
        }
    }

    /// Completes every pending operation whose response is in `inbuf`;
    /// `false` if the responses do not match the pending operations.
    fn complete(&mut self, out: &mut Vec<Completion>) -> bool {
        let mut at = 0;
        let inbuf = self.inbox.pending();
        while inbuf.len() - at >= RESPONSE_HEADER {
            let Some(p) = self.pending.front() else {
                break;
            };
            let h = &inbuf[at..at + RESPONSE_HEADER];
            let result = match h[0] {
                wire::STATUS_OK => Ok(()),
                wire::STATUS_PERMISSION => Err(OpError::Permission),
                _ => Err(OpError::OutOfBounds),
            };
            let op = u64::from_le_bytes(h[1..9].try_into().expect("8 bytes"));
            let body = match (p.read, result) {
                (Some((_, len)), Ok(())) => len as usize,
                _ => 0,
            };
            if inbuf.len() - at < RESPONSE_HEADER + body {
                break;
            }
            if op != p.op.0 {
                // The peer answered out of order: the stream is corrupt.
                return false;
            }
            if let (Some((local, len)), Ok(())) = (p.read, result) {
                let data = &inbuf[at + RESPONSE_HEADER..at + RESPONSE_HEADER + len as usize];
                Memory::write(&mut self.shared.lock().bytes, local, data);
            }
            out.push(Completion {
                op: p.op,
                peer: self.peer,
                result,
            });
            self.pending.pop_front();
            self.since = clock();
            at += RESPONSE_HEADER + body;
        }
        self.inbox.consume(at);
        true
    }

    /// Closes the connection and fails every pending operation, in order.
    fn fail(&mut self, out: &mut Vec<Completion>) {
        if let State::Up(stream) = &self.state {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.state = State::Idle;
        self.out.clear();
        self.sent = 0;
        self.inbox.clear();
        for p in self.pending.drain(..) {
            out.push(Completion {
                op: p.op,
                peer: self.peer,
                result: Err(OpError::Unreachable),
            });
        }
        self.backoff_until = Some(clock() + self.options.reconnect_backoff);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let State::Up(stream) = &self.state {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Writes what the socket takes; `Err` when the connection is broken.
fn flush(stream: &mut TcpStream, out: &[u8], sent: &mut usize) -> io::Result<()> {
    while *sent < out.len() {
        match stream.write(&out[*sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => *sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what has arrived; `Err` when the connection is broken or closed.
fn receive(stream: &mut TcpStream, inbox: &mut Inbox) -> io::Result<()> {
    loop {
        match stream.read(inbox.room(0)) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => inbox.filled(k),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Connects and authenticates (blocking; runs on a helper thread).
fn connect(
    shared: &Shared,
    peer: NodeId,
    addr: SocketAddr,
    options: TcpOptions,
) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, options.connect_timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(options.connect_timeout))?;
    stream.set_write_timeout(Some(options.connect_timeout))?;
    if let Err(e) = wire::client_handshake(&mut stream, &shared.key, shared.id, peer) {
        if e.kind() == io::ErrorKind::PermissionDenied {
            shared
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        return Err(e);
    }
    stream.set_nonblocking(true)?;
    Ok(stream)
}
