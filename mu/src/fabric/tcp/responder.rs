//! The serving side of a `tcp` node: a listener thread authenticates each
//! incoming connection and hands it to a responder thread, which applies
//! the peer's writes and reads to the region in arrival order. Permission
//! is checked when a write is applied, under the region lock that
//! [`Fabric::grant`](crate::fabric::Fabric::grant) takes, so a write that
//! arrives after a grant is refused even if it was sent before.

use super::wire::{self, RequestHeader, REQUEST_HEADER};
use super::Shared;
use crate::fabric::Memory;
use crate::types::NodeId;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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

fn respond(shared: &Shared, stream: &mut TcpStream, peer: NodeId, epoch: u64) -> io::Result<()> {
    let region_len = shared.layout.region_len();
    let mut data = Vec::new();
    let mut response = Vec::new();
    let mut header = [0u8; REQUEST_HEADER];
    loop {
        stream.read_exact(&mut header)?;
        let h = RequestHeader::decode(&header);
        if h.len > region_len || (h.kind != wire::KIND_WRITE && h.kind != wire::KIND_READ) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed request",
            ));
        }
        data.resize(h.len as usize, 0);
        if h.kind == wire::KIND_WRITE {
            // Read the whole payload before taking the lock: a writer
            // paused mid-frame holds up nobody, and its write is checked
            // against the holder of the moment it is complete.
            stream.read_exact(&mut data)?;
        }
        let status = {
            let mut region = shared.lock();
            if region.epochs[peer.idx()] != epoch {
                return Ok(());
            }
            let in_bounds = h.remote.checked_add(h.len).is_some_and(|e| e <= region_len);
            if !in_bounds {
                wire::STATUS_OUT_OF_BOUNDS
            } else if h.kind == wire::KIND_READ {
                region.bytes.read(h.remote, &mut data);
                wire::STATUS_OK
            } else if shared.layout.touches_log(h.remote, h.len) && region.holder != Some(peer) {
                wire::STATUS_PERMISSION
            } else {
                Memory::write(&mut region.bytes, h.remote, &data);
                wire::STATUS_OK
            }
        };
        // One write per response: header, then the data of a read.
        response.clear();
        response.extend_from_slice(&wire::encode_response(status, h.op));
        if h.kind == wire::KIND_READ && status == wire::STATUS_OK {
            response.extend_from_slice(&data);
        }
        stream.write_all(&response)?;
    }
}
