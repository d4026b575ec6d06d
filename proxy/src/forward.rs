//! The peer port: a follower hands writes to the leader's sidecar, which
//! proposes them and answers with the outcome.
//!
//! Connections are authenticated with the cluster secret by the same
//! handshake as the tcp fabric (mutual proof over fresh nonces, keyed
//! BLAKE3), under a key of its own so that a sidecar port and a fabric
//! port can never be mistaken for each other. Then the connecting side
//! sends one mode byte: `F` for forwarded writes, `T` for a state transfer
//! ([`crate::transfer`]), `D` for divergence digests ([`crate::digest`]),
//! `V` for a data verification ([`crate::verify`]).
//! Forwarded writes:
//!
//! ```text
//! request:  u32 payload length, u64 sequence, payload (a crate::payload)
//! response: u64 sequence, u8 code, u64 value
//!   code 0 committed (value: index)   1 not leader (value: leader id, 0 unknown)
//!        2 leader changing   3 too large   4 log full   5 superseded
//!        6 outcome unknown   7 needs state transfer
//! ```
//!
//! Only the *proposal* crosses: the client's reply comes from the origin's
//! own backend when its applier applies the committed entry.

use crate::state::Shared;
use mu::{NodeId, ProposeError};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Largest forwarded payload accepted (the replica refuses larger ones
/// with a clear error anyway; this bounds what a peer can make us buffer).
const MAX_FORWARD: u32 = 64 << 20;

/// Mode byte of a connection carrying forwarded writes.
pub const MODE_FORWARD: u8 = b'F';
/// Mode byte of a connection carrying a state transfer.
pub const MODE_TRANSFER: u8 = b'T';
/// Mode byte of a connection carrying divergence digests.
pub const MODE_DIGEST: u8 = b'D';
/// Mode byte of a connection carrying a verification session.
pub const MODE_VERIFY: u8 = b'V';

/// The handshake key of the peer port.
pub fn key(secret: &str) -> [u8; 32] {
    blake3::derive_key("mu-sidecar forward v1 cluster secret", secret.as_bytes())
}

/// Why a write could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// Nothing was sent (no connection): retrying is safe.
    NotSent(String),
}

fn encode_outcome(r: &Result<u64, ProposeError>) -> (u8, u64) {
    match r {
        Ok(i) => (0, *i),
        Err(ProposeError::NotLeader { leader }) => (1, leader.map_or(0, |l| u64::from(l.0) + 1)),
        Err(ProposeError::LeaderChanging) => (2, 0),
        Err(ProposeError::TooLarge { len, .. }) => (3, *len as u64),
        Err(ProposeError::LogFull { .. }) => (4, 0),
        Err(ProposeError::Superseded) => (5, 0),
        Err(ProposeError::Unknown) => (6, 0),
        Err(ProposeError::NeedsStateTransfer) => (7, 0),
    }
}

fn decode_outcome(code: u8, value: u64, max: u32) -> Result<u64, ProposeError> {
    match code {
        0 => Ok(value),
        1 => Err(ProposeError::NotLeader {
            leader: (value > 0 && value <= 255).then(|| NodeId((value - 1) as u8)),
        }),
        2 => Err(ProposeError::LeaderChanging),
        3 => Err(ProposeError::TooLarge {
            len: value as usize,
            max,
        }),
        4 => Err(ProposeError::LogFull { needed: 0, free: 0 }),
        5 => Err(ProposeError::Superseded),
        7 => Err(ProposeError::NeedsStateTransfer),
        _ => Err(ProposeError::Unknown),
    }
}

/// Serves the peer port until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((sock, from)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_peer(shared, sock).await {
                tracing::warn!(peer = %from, error = %e, "peer connection closed");
            }
        });
    }
}

async fn serve_peer(shared: Arc<Shared>, sock: TcpStream) -> io::Result<()> {
    let key = key(&shared.opts.mu.secret);
    let me = NodeId(shared.opts.id - 1);
    let n = usize::from(shared.opts.mu.nodes);
    let sock = handshake(sock, move |s| {
        mu::fabric::tcp::wire::server_handshake(s, &key, me, n).map(|_| ())
    })
    .await
    .inspect_err(|_| {
        shared
            .metrics
            .forward_served
            .with_label_values(&["rejected"])
            .inc();
    })?;
    let mut sock = sock;
    match sock.read_u8().await? {
        MODE_FORWARD => {}
        MODE_DIGEST => return crate::digest::serve(shared, sock).await,
        mode @ (MODE_TRANSFER | MODE_VERIFY) => {
            let std_sock = sock.into_std()?;
            std_sock.set_nonblocking(false)?;
            return tokio::task::spawn_blocking(move || {
                if mode == MODE_TRANSFER {
                    crate::transfer::serve_donor(&shared, std_sock)
                } else {
                    crate::verify::serve(&shared, std_sock)
                }
            })
            .await
            .map_err(io::Error::other)?;
        }
        m => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown peer connection mode {m}"),
            ))
        }
    }
    let (mut rd, wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u8, u64)>();
    let writer = tokio::spawn(async move {
        let mut wr = wr;
        while let Some((seq, code, value)) = rx.recv().await {
            let mut b = [0u8; 17];
            b[..8].copy_from_slice(&seq.to_le_bytes());
            b[8] = code;
            b[9..].copy_from_slice(&value.to_le_bytes());
            if wr.write_all(&b).await.is_err() {
                return;
            }
        }
    });
    loop {
        let mut head = [0u8; 12];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
        if len > MAX_FORWARD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("forwarded payload of {len} bytes is over the limit"),
            ));
        }
        let mut payload = vec![0u8; len as usize];
        rd.read_exact(&mut payload).await?;
        // Submitted in arrival order: one connection's writes keep their order.
        let done_rx = shared.proposer.submit(payload);
        let tx = tx.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let r = done_rx.await.unwrap_or(Err(ProposeError::Unknown));
            let outcome = if r.is_ok() {
                "committed"
            } else {
                "not_committed"
            };
            shared
                .metrics
                .forward_served
                .with_label_values(&[outcome])
                .inc();
            let (code, value) = encode_outcome(&r);
            let _ = tx.send((seq, code, value));
        });
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// Runs a blocking handshake on the socket and hands it back.
async fn handshake<F>(sock: TcpStream, f: F) -> io::Result<TcpStream>
where
    F: FnOnce(&mut std::net::TcpStream) -> io::Result<()> + Send + 'static,
{
    let mut std_sock = sock.into_std()?;
    std_sock.set_nonblocking(false)?;
    std_sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let std_sock = tokio::task::spawn_blocking(move || {
        f(&mut std_sock)?;
        Ok::<_, io::Error>(std_sock)
    })
    .await
    .map_err(io::Error::other)??;
    std_sock.set_read_timeout(None)?;
    std_sock.set_nonblocking(true)?;
    let _ = std_sock.set_nodelay(true);
    TcpStream::from_std(std_sock)
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<u64, ProposeError>>>>>;

#[derive(Debug)]
struct Link {
    writer: OwnedWriteHalf,
    waiters: Waiters,
    /// Cleared by the reader when the connection ends.
    alive: Arc<AtomicBool>,
}

/// Connections to the other sidecars' peer ports, opened on first use and
/// reopened after a failure.
#[derive(Debug)]
pub struct Forwarder {
    addrs: Vec<SocketAddr>,
    links: Vec<tokio::sync::Mutex<Option<Link>>>,
    seq: AtomicU64,
    me: NodeId,
    key: [u8; 32],
    max: u32,
}

impl Forwarder {
    /// A forwarder for node `me` (1-based) to `addrs` (every node's peer
    /// port, in id order).
    pub fn new(me: u8, addrs: Vec<SocketAddr>, secret: &str, max: u32) -> Forwarder {
        Forwarder {
            links: addrs
                .iter()
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            addrs,
            seq: AtomicU64::new(1),
            me: NodeId(me - 1),
            key: key(secret),
            max,
        }
    }

    /// The peer port of node `to` (0-based).
    pub fn peer_addr(&self, to: NodeId) -> Option<SocketAddr> {
        self.addrs.get(to.idx()).copied()
    }

    /// Sends `payload` to node `to` (0-based) for proposing; the returned
    /// receiver gets its answer, or is dropped if the link breaks first.
    /// Sends on one link keep their order, and so do the proposals.
    pub async fn send(
        &self,
        to: NodeId,
        payload: &[u8],
    ) -> Result<oneshot::Receiver<Result<u64, ProposeError>>, ForwardError> {
        let Some(slot) = self.links.get(to.idx()) else {
            return Err(ForwardError::NotSent(format!(
                "no peer address for node {to}"
            )));
        };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut link = slot.lock().await;
        if link
            .as_ref()
            .is_some_and(|l| !l.alive.load(Ordering::Acquire))
        {
            *link = None;
        }
        if link.is_none() {
            *link = Some(self.connect(to).await.map_err(ForwardError::NotSent)?);
        }
        let l = link.as_mut().expect("connected above");
        l.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, tx);
        let mut frame = Vec::with_capacity(12 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(payload);
        if let Err(e) = l.writer.write_all(&frame).await {
            *link = None;
            // The peer cannot parse a frame cut short, so a write that
            // failed was not proposed.
            return Err(ForwardError::NotSent(format!("write to node {to}: {e}")));
        }
        Ok(rx)
    }

    /// Opens an authenticated connection to node `to`'s peer port in
    /// `mode`.
    pub async fn open(&self, to: NodeId, mode: u8) -> Result<TcpStream, String> {
        let addr = self
            .peer_addr(to)
            .ok_or_else(|| format!("no peer address for node {to}"))?;
        let sock = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to node {to} at {addr} timed out"))?
            .map_err(|e| format!("cannot connect to node {to} at {addr}: {e}"))?;
        let (key, me) = (self.key, self.me);
        let mut sock = handshake(sock, move |s| {
            mu::fabric::tcp::wire::client_handshake(s, &key, me, to)
        })
        .await
        .map_err(|e| format!("handshake with node {to}: {e}"))?;
        sock.write_all(&[mode])
            .await
            .map_err(|e| format!("write to node {to}: {e}"))?;
        Ok(sock)
    }

    async fn connect(&self, to: NodeId) -> Result<Link, String> {
        let sock = self.open(to, MODE_FORWARD).await?;
        let (mut rd, writer) = sock.into_split();
        let waiters: Waiters = Arc::default();
        let w = waiters.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        let max = self.max;
        tokio::spawn(async move {
            let mut b = [0u8; 17];
            while rd.read_exact(&mut b).await.is_ok() {
                let seq = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                let value = u64::from_le_bytes(b[9..].try_into().expect("8 bytes"));
                let waiter = w.lock().unwrap_or_else(|e| e.into_inner()).remove(&seq);
                if let Some(tx) = waiter {
                    let _ = tx.send(decode_outcome(b[8], value, max));
                }
            }
            a.store(false, Ordering::Release);
            // Dropping the senders tells every waiter the link broke.
            w.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        Ok(Link {
            writer,
            waiters,
            alive,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip() {
        let cases = [
            Ok(42),
            Err(ProposeError::NotLeader {
                leader: Some(NodeId(2)),
            }),
            Err(ProposeError::NotLeader { leader: None }),
            Err(ProposeError::LeaderChanging),
            Err(ProposeError::TooLarge { len: 9, max: 7 }),
            Err(ProposeError::Superseded),
            Err(ProposeError::Unknown),
            Err(ProposeError::NeedsStateTransfer),
        ];
        for c in cases {
            let (code, value) = encode_outcome(&c);
            assert_eq!(decode_outcome(code, value, 7), c);
        }
        assert!(matches!(
            decode_outcome(4, 0, 7),
            Err(ProposeError::LogFull { .. })
        ));
        assert_eq!(decode_outcome(99, 0, 7), Err(ProposeError::Unknown));
    }
}
