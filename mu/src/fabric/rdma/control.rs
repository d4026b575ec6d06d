//! The control channel of the `rdma` fabric: a small authenticated TCP
//! exchange that (re)connects the queue pairs of one direction.
//!
//! Node `A` posts to node `B` on two of its own *outgoing* queue pairs
//! (log plane and control plane); each is connected to one of `B`'s
//! *incoming* queue pairs for `A`, which decide what `A` may touch. To
//! connect (first use, after a failed completion, after `B` restarted), `A`
//! resets its outgoing pairs, opens a TCP connection to `B`'s control
//! address, authenticates with the cluster secret (the `tcp` fabric's
//! handshake, [`crate::fabric::tcp::wire`]) and sends its endpoints; `B`
//! resets its incoming pairs for `A`, connects them to `A`'s endpoints with
//! the access its current grant allows, and answers with their endpoints
//! and the keys and address of its region. `A` then connects its pairs.
//!
//! ```text
//! after the handshake:
//!   A: magic "MUR1", log qpn u32, log psn u32, ctl qpn u32, ctl psn u32, gid [16]
//!   B: status u8 (1 = connected), region address u64, log rkey u32,
//!      read rkey u32, control rkey u32, scratch rkey u32,
//!      log qpn u32, log psn u32, ctl qpn u32, ctl psn u32, gid [16]
//! ```

use super::verbs::Endpoint;
use super::Shared;
use crate::fabric::tcp::wire;
use crate::types::NodeId;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// First bytes of a connect request.
const MAGIC: [u8; 4] = *b"MUR1";
/// Size of a connect request after the handshake.
const REQUEST: usize = 4 + 16 + 16;
/// Size of a connect reply.
const REPLY: usize = 1 + 8 + 16 + 16 + 16;

/// Where a peer's region is and how to address it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RemoteRegion {
    /// Address of region byte 0 in the peer's process.
    pub addr: u64,
    /// Key of the log area (log plane; writes need the peer's grant).
    pub log_rkey: u32,
    /// Key of the whole region, read-only (control plane).
    pub read_rkey: u32,
    /// Key of the control area, read-write (control plane).
    pub ctl_rkey: u32,
    /// Key of the read scratch, read-write (control plane).
    pub scratch_rkey: u32,
}

/// The two endpoints of one side of a direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Pair {
    /// Log plane.
    pub log: Endpoint,
    /// Control plane.
    pub ctl: Endpoint,
}

fn put_endpoints(b: &mut [u8], p: &Pair) {
    b[0..4].copy_from_slice(&p.log.qpn.to_le_bytes());
    b[4..8].copy_from_slice(&p.log.psn.to_le_bytes());
    b[8..12].copy_from_slice(&p.ctl.qpn.to_le_bytes());
    b[12..16].copy_from_slice(&p.ctl.psn.to_le_bytes());
    b[16..32].copy_from_slice(&p.log.gid);
}

fn get_endpoints(b: &[u8]) -> Pair {
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let mut gid = [0u8; 16];
    gid.copy_from_slice(&b[16..32]);
    Pair {
        log: Endpoint {
            qpn: word(0),
            psn: word(4),
            gid,
        },
        ctl: Endpoint {
            qpn: word(8),
            psn: word(12),
            gid,
        },
    }
}

/// The connecting side: authenticates to `server` at `addr` and exchanges
/// endpoints (blocking; runs on a helper thread).
pub(super) fn request(
    key: &[u8; 32],
    client: NodeId,
    server: NodeId,
    addr: SocketAddr,
    timeout: Duration,
    ours: Pair,
) -> io::Result<(RemoteRegion, Pair)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    wire::client_handshake(&mut s, key, client, server)?;
    let mut b = [0u8; REQUEST];
    b[..4].copy_from_slice(&MAGIC);
    put_endpoints(&mut b[4..], &ours);
    s.write_all(&b)?;
    let mut r = [0u8; REPLY];
    s.read_exact(&mut r)?;
    if r[0] != 1 {
        return Err(io::Error::other(format!(
            "node {server} could not connect its queue pairs for node {client}"
        )));
    }
    let word = |i: usize| u32::from_le_bytes(r[i..i + 4].try_into().expect("4 bytes"));
    let remote = RemoteRegion {
        addr: u64::from_le_bytes(r[1..9].try_into().expect("8 bytes")),
        log_rkey: word(9),
        read_rkey: word(13),
        ctl_rkey: word(17),
        scratch_rkey: word(21),
    };
    Ok((remote, get_endpoints(&r[25..])))
}

/// How long a connecting peer has for the whole exchange.
const SERVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts control connections until the endpoint stops.
pub(super) fn listen(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let s = shared.clone();
        // Without a thread the connection is dropped; the peer retries.
        let _ = std::thread::Builder::new()
            .name(format!("mu-rdma-control-{}", shared.id))
            .spawn(move || serve(&s, stream));
    }
}

fn serve(shared: &Shared, mut stream: TcpStream) {
    if let Err(e) = serve_one(shared, &mut stream) {
        if e.kind() == io::ErrorKind::PermissionDenied {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve_one(shared: &Shared, stream: &mut TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(SERVE_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVE_TIMEOUT))?;
    let peer = wire::server_handshake(stream, &shared.key, shared.id, shared.layout.group_size)?;
    let mut b = [0u8; REQUEST];
    stream.read_exact(&mut b)?;
    if b[..4] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an rdma fabric connect request",
        ));
    }
    let theirs = get_endpoints(&b[4..]);
    let mut r = [0u8; REPLY];
    if shared.stop.load(Ordering::Acquire) {
        return stream.write_all(&r);
    }
    match shared.accept(peer, &theirs) {
        Ok(ours) => {
            let region = shared.remote_region();
            r[0] = 1;
            r[1..9].copy_from_slice(&region.addr.to_le_bytes());
            r[9..13].copy_from_slice(&region.log_rkey.to_le_bytes());
            r[13..17].copy_from_slice(&region.read_rkey.to_le_bytes());
            r[17..21].copy_from_slice(&region.ctl_rkey.to_le_bytes());
            r[21..25].copy_from_slice(&region.scratch_rkey.to_le_bytes());
            put_endpoints(&mut r[25..], &ours);
        }
        Err(_) => r[0] = 0,
    }
    stream.write_all(&r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip() {
        let p = Pair {
            log: Endpoint {
                qpn: 17,
                psn: 0xabcdef,
                gid: [3; 16],
            },
            ctl: Endpoint {
                qpn: 18,
                psn: 0x123456,
                gid: [3; 16],
            },
        };
        let mut b = [0u8; 32];
        put_endpoints(&mut b, &p);
        assert_eq!(get_endpoints(&b), p);
    }
}
