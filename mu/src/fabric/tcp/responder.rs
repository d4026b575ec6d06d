//! The serving side of a `tcp` node: a listener thread authenticates each
//! incoming connection and hands it to a responder thread, which applies
//! the peer's writes and reads to the region in arrival order. Permission
//! is checked when a write is applied, under the region lock that
//! [`Fabric::grant`](crate::fabric::Fabric::grant) takes, so a write that
//! arrives after a grant is refused even if it was sent before.

use super::inbox::Inbox;
use super::wire::{self, RequestHeader, REQUEST_HEADER};
use super::{clock, Shared};
use crate::fabric::Memory;
use crate::types::NodeId;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a connecting peer has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections until the endpoint stops.
pub(super) fn listen(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let s = shared.clone();
        let started = std::thread::Builder::new()
            .name(format!("mu-tcp-responder-{}", shared.id))
            .spawn(move || serve(s, stream));
        // Without a thread the connection is dropped; the peer retries.
        drop(started);
    }
}

/// Authenticates a connection, then serves it until it closes.
fn serve(shared: Arc<Shared>, mut stream: TcpStream) {
    let peer = match handshake(&shared, &mut stream) {
        Ok(peer) => peer,
        Err(_) => {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    // A newer connection from the same peer supersedes this one: whatever
    // is still queued on an old connection is dropped, never applied after
    // the new connection's operations.
    let epoch = {
        let mut region = shared.lock();
        region.epochs[peer.idx()] += 1;
        region.epochs[peer.idx()]
    };
    let number = shared.next_stream.fetch_add(1, Ordering::Relaxed);
    if let Ok(clone) = stream.try_clone() {
        shared.lock_streams().push((number, clone));
    }
    if !shared.stop.load(Ordering::Acquire) {
        let _ = respond(&shared, &mut stream, peer, epoch);
    }
    let _ = stream.shutdown(Shutdown::Both);
    shared.lock_streams().retain(|(n, _)| *n != number);
}

fn handshake(shared: &Shared, stream: &mut TcpStream) -> io::Result<NodeId> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    wire::server_handshake(stream, &shared.key, shared.id, shared.layout.group_size)
}

/// Serves the peer's requests in arrival order until the connection closes
/// or a newer connection from the same peer supersedes this one.
///
/// Requests are read into one buffer, so a single read takes everything
/// that arrived; every complete request in it is applied in order and all
/// their responses go out in one write. After a write to the log the
/// socket is polled without blocking for [`Shared::busy_poll`]: the next
/// entry of a busy leader then finds the responder running, not asleep in
/// the kernel waiting for a wake-up.
fn respond(shared: &Shared, stream: &mut TcpStream, peer: NodeId, epoch: u64) -> io::Result<()> {
    let mut inbox = Inbox::default();
    let mut response = Vec::new();
    // While `Some`, the socket is non-blocking and polled until then.
    let mut polling: Option<Instant> = None;
    loop {
        let mut wrote_log = false;
        let need = loop {
            let pending = inbox.pending();
            let Some(header) = pending.first_chunk::<REQUEST_HEADER>() else {
                break REQUEST_HEADER;
            };
            let h = RequestHeader::decode(header);
            let size = request_size(shared, &h)?;
            if pending.len() < size {
                break size;
            }
            match apply(
                shared,
                peer,
                epoch,
                &h,
                &pending[REQUEST_HEADER..size],
                &mut response,
            ) {
                Applied::Superseded => return Ok(()),
                Applied::Log => wrote_log = true,
                Applied::Other => {}
            }
            inbox.consume(size);
        };
        if !response.is_empty() {
            send(stream, &response, polling.is_some())?;
            response.clear();
        }
        if wrote_log && !shared.busy_poll.is_zero() {
            if polling.is_none() {
                stream.set_nonblocking(true)?;
            }
            polling = Some(clock() + shared.busy_poll);
        }
        // Wait for more bytes: blocking, or polling until the window ends.
        loop {
            match stream.read(inbox.room(need)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => {
                    inbox.filled(k);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match polling {
                    Some(until) if clock() < until => std::thread::yield_now(),
                    _ => {
                        stream.set_nonblocking(false)?;
                        polling = None;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The size of the request `h` heads, header included; an error for a
/// request no well-behaved peer sends (checked before anything is
/// buffered for it).
fn request_size(shared: &Shared, h: &RequestHeader) -> io::Result<usize> {
    if h.len > shared.layout.region_len()
        || (h.kind != wire::KIND_WRITE && h.kind != wire::KIND_READ)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed request",
        ));
    }
    Ok(REQUEST_HEADER
        + if h.kind == wire::KIND_WRITE {
            h.len as usize
        } else {
            0
        })
}

/// What applying one request did.
enum Applied {
    /// A newer connection from the peer exists: this one must stop.
    Superseded,
    /// A write landed in the log area.
    Log,
    /// Anything else: a read, a control-area write, a refused request.
    Other,
}

/// Applies one complete request (`data` is a write's payload) under the
/// region lock and appends its response to `response`. A write is only
/// checked and applied once it has fully arrived: a writer paused
/// mid-frame holds up nobody, and its write is checked against the holder
/// of the moment it is complete.
fn apply(
    shared: &Shared,
    peer: NodeId,
    epoch: u64,
    h: &RequestHeader,
    data: &[u8],
    response: &mut Vec<u8>,
) -> Applied {
    let region_len = shared.layout.region_len();
    let mut region = shared.lock();
    if region.epochs[peer.idx()] != epoch {
        return Applied::Superseded;
    }
    let in_bounds = h.remote.checked_add(h.len).is_some_and(|e| e <= region_len);
    let (status, applied) = if !in_bounds {
        (wire::STATUS_OUT_OF_BOUNDS, Applied::Other)
    } else if h.kind == wire::KIND_READ {
        // One response: the header, then the bytes read.
        response.extend_from_slice(&wire::encode_response(wire::STATUS_OK, h.op));
        let at = response.len();
        response.resize(at + h.len as usize, 0);
        region.bytes.read(h.remote, &mut response[at..]);
        return Applied::Other;
    } else if !shared.layout.touches_log(h.remote, h.len) {
        Memory::write(&mut region.bytes, h.remote, data);
        (wire::STATUS_OK, Applied::Other)
    } else if region.holder != Some(peer) {
        (wire::STATUS_PERMISSION, Applied::Other)
    } else {
        Memory::write(&mut region.bytes, h.remote, data);
        (wire::STATUS_OK, Applied::Log)
    };
    drop(region);
    response.extend_from_slice(&wire::encode_response(status, h.op));
    applied
}

/// Writes all of `bytes`; on a non-blocking socket whose send buffer is
/// full (the peer is slow to read its responses) it blocks until done.
fn send(stream: &mut TcpStream, bytes: &[u8], nonblocking: bool) -> io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && nonblocking => {
                stream.set_nonblocking(false)?;
                let rest = stream.write_all(&bytes[sent..]);
                stream.set_nonblocking(true)?;
                return rest;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
