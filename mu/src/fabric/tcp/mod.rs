//! The `tcp` fabric: one-sided semantics over ordinary TCP, for hosts
//! without RDMA.
//!
//! Each node listens on its address from a static list indexed by node id.
//! A responder thread per incoming connection applies the peer's writes and
//! reads to the node's region **in arrival order**, checking the log
//! permission when each write is applied, under the same lock that
//! [`Fabric::grant`] takes: once `grant` returns, every write of the
//! revoked peer that is applied later is refused, whether it was sent
//! before the grant, is still in a socket buffer, or comes from a process
//! that was stopped in the middle of sending it.
//!
//! After a write to its log a responder polls its connection for
//! [`TcpOptions::busy_poll`] before it blocks again, so a leader that
//! writes entry after entry finds it running rather than asleep.
//!
//! Posting never blocks: the bytes of a write are copied out of the region
//! at post time into the outgoing buffer of the peer's link, which owns the
//! only connection to that peer (so operations to it land and complete in
//! post order) and writes what its non-blocking socket takes; `poll` sends
//! the rest and completes operations from the responses, on the caller's
//! thread. Connections are authenticated both ways with the cluster secret
//! ([`wire`]); a peer that fails the handshake is closed and counted
//! ([`TcpEndpoint::rejected`]). A failed connection fails its pending
//! operations with [`OpError::Unreachable`](crate::error::OpError::Unreachable) and the next operation
//! reconnects; an operation left unanswered for [`TcpOptions::op_timeout`]
//! fails the same way, and a connection attempt gives up after
//! [`TcpOptions::connect_timeout`], so errors from a dead peer arrive within
//! about `connect_timeout + op_timeout`.
//!
//! An operation that fails with `Unreachable` may or may not have landed
//! (as with a broken RDMA queue pair). A reconnecting peer's new connection
//! supersedes the old one: requests still queued on the old connection are
//! dropped by the responder, never applied after newer ones.

mod inbox;
mod link;
mod responder;
pub mod wire;

use crate::error::FabricError;
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::Layout;
use crate::types::{NodeId, MAX_NODES};
use link::Link;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default bound on waiting for a response. Generous enough for a 1 MiB
/// operation on a busy machine, short enough that a dead leader is noticed
/// by its fabric well before an operator would.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(1);
/// Default pause between failed connection attempts; operations posted in
/// it fail at once.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Default time a responder polls its connection after a write to the
/// log before it blocks again (the driver's default busy-poll window).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_millis(1);

/// Timeouts of a `tcp` endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// Bound on connecting and authenticating.
    pub connect_timeout: Duration,
    /// Bound on waiting for the response to the oldest pending operation.
    pub op_timeout: Duration,
    /// Pause between failed connection attempts.
    pub reconnect_backoff: Duration,
    /// After a peer's write to the log, its responder polls the
    /// connection without blocking for this long (yielding the core
    /// between polls), so the next entry of a busy leader is applied
    /// without a wake-up of the responder thread. Zero always blocks.
    /// Reads and control-area writes (heartbeats, permission requests)
    /// do not start a window: an idle group does not poll.
    pub busy_poll: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

impl TcpOptions {
    /// How long an operation to a dead peer can take to fail.
    pub fn dead_peer_bound(&self) -> Duration {
        self.connect_timeout * 2 + self.op_timeout
    }
}

/// Who a node is and how to reach the others.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node.
    pub id: NodeId,
    /// Every node's address, indexed by node id (this node's included).
    pub peers: Vec<SocketAddr>,
    /// The cluster secret every member knows.
    pub secret: Vec<u8>,
    /// The region map (identical on every node).
    pub layout: Layout,
    /// Timeouts.
    pub options: TcpOptions,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the tcp fabric's timeouts need a clock"
)]
fn clock() -> Instant {
    Instant::now()
}

#[derive(Debug)]
struct Region {
    bytes: Vec<u8>,
    holder: Option<NodeId>,
    /// Per peer: the number of its latest accepted connection.
    epochs: [u64; MAX_NODES],
}

/// State shared by the endpoint, its listener, responders and links.
#[derive(Debug)]
struct Shared {
    id: NodeId,
    layout: Layout,
    /// [`TcpOptions::busy_poll`].
    busy_poll: Duration,
    key: [u8; 32],
    region: Mutex<Region>,
    /// Accepted connections by number, to close them when stopping.
    streams: Mutex<Vec<(u64, TcpStream)>>,
    next_stream: AtomicU64,
    rejected: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Region> {
        self.region.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_streams(&self) -> MutexGuard<'_, Vec<(u64, TcpStream)>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A node's own region on the `tcp` fabric.
#[derive(Debug)]
pub struct TcpRegion {
    shared: Arc<Shared>,
}

impl Memory for TcpRegion {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        self.shared.lock().bytes.read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.shared.lock().bytes.write(offset, data)
    }
}

/// One node's endpoint on the `tcp` fabric. Dropping it stops its threads
/// and closes its connections: to the others, the node is dead.
#[derive(Debug)]
pub struct TcpEndpoint {
    shared: Arc<Shared>,
    region: TcpRegion,
    addr: SocketAddr,
    links: Vec<Link>,
    /// Completions decided at post time (peer known unreachable).
    done: Vec<Completion>,
    scratch: Vec<u8>,
    listener: Option<JoinHandle<()>>,
}

/// Binds this node's own address from a list of every node's address
/// (the tcp fabric's data channel, the rdma fabric's control channel).
pub(crate) fn bind_own(peers: &[SocketAddr], id: NodeId) -> Result<TcpListener, FabricError> {
    let addr = *peers
        .get(id.idx())
        .ok_or_else(|| FabricError::Setup(format!("no address for node {id} in the list")))?;
    TcpListener::bind(addr).map_err(|e| FabricError::Setup(format!("cannot listen on {addr}: {e}")))
}

/// Checks an address list and the cluster secret against the group size.
pub(crate) fn check_members(
    addresses: usize,
    n: usize,
    id: NodeId,
    secret: &[u8],
) -> Result<(), FabricError> {
    if addresses != n || n > MAX_NODES || id.idx() >= n {
        return Err(FabricError::Setup(format!(
            "{addresses} addresses for a group of {n} (node {id}); give one address per node"
        )));
    }
    if secret.is_empty() {
        return Err(FabricError::Setup(
            "the cluster secret is empty; every member needs the same non-empty secret".into(),
        ));
    }
    Ok(())
}

impl TcpEndpoint {
    /// Binds this node's address from `config.peers` and starts.
    pub fn start(config: TcpConfig) -> Result<TcpEndpoint, FabricError> {
        let listener = bind_own(&config.peers, config.id)?;
        Self::start_with_listener(config, listener)
    }

    /// Starts on a listener bound by the caller (e.g. to port 0, with the
    /// resulting address in `config.peers`).
    pub fn start_with_listener(
        config: TcpConfig,
        listener: TcpListener,
    ) -> Result<TcpEndpoint, FabricError> {
        check_members(
            config.peers.len(),
            config.layout.group_size,
            config.id,
            &config.secret,
        )?;
        let addr = listener
            .local_addr()
            .map_err(|e| FabricError::Setup(format!("listener address: {e}")))?;
        let shared = Arc::new(Shared {
            id: config.id,
            layout: config.layout,
            busy_poll: config.options.busy_poll,
            key: wire::derive_key(&config.secret),
            region: Mutex::new(Region {
                bytes: vec![0; config.layout.region_len() as usize],
                holder: None,
                epochs: [0; MAX_NODES],
            }),
            streams: Mutex::new(Vec::new()),
            next_stream: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let listener = std::thread::Builder::new()
            .name(format!("mu-tcp-listen-{}", config.id))
            .spawn(move || responder::listen(s, listener))
            .map_err(|e| FabricError::Setup(format!("cannot start the listener thread: {e}")))?;
        let links = config
            .peers
            .iter()
            .enumerate()
            .map(|(i, &a)| Link::new(shared.clone(), NodeId(i as u8), a, config.options))
            .collect();
        Ok(TcpEndpoint {
            region: TcpRegion {
                shared: shared.clone(),
            },
            shared,
            addr,
            links,
            done: Vec::with_capacity(64),
            scratch: Vec::new(),
            listener: Some(listener),
        })
    }

    /// The address this node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections refused because the other side did not prove it knows
    /// the cluster secret (counted on both the accepting and the
    /// connecting side).
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    fn check(&self, peer: NodeId, local: u64, len: u64) -> Result<(), FabricError> {
        let max = self.shared.layout.region_len();
        if peer.idx() >= self.links.len() {
            return Err(FabricError::Post {
                peer,
                reason: format!("no node {peer} in a group of {}", self.links.len()),
            });
        }
        if local.checked_add(len).is_none_or(|e| e > max) {
            return Err(FabricError::Post {
                peer,
                reason: format!("local range {local}+{len} outside the {max}-byte region"),
            });
        }
        Ok(())
    }
}

impl Fabric for TcpEndpoint {
    type Mem = TcpRegion;

    fn node(&self) -> NodeId {
        self.shared.id
    }

    fn memory(&mut self) -> &mut TcpRegion {
        &mut self.region
    }

    fn post_write(
        &mut self,
        peer: NodeId,
        op: OpId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.check(peer, local, len)?;
        self.scratch.resize(len as usize, 0);
        self.region.read(local, &mut self.scratch);
        if let Some(c) = self.links[peer.idx()].post_write(op, remote, &self.scratch) {
            self.done.push(c);
        }
        Ok(())
    }

    fn post_read(
        &mut self,
        peer: NodeId,
        op: OpId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.check(peer, local, len)?;
        if let Some(c) = self.links[peer.idx()].post_read(op, remote, local, len) {
            self.done.push(c);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        out.append(&mut self.done);
        for link in &mut self.links {
            link.poll(out);
        }
        out.len() - before
    }

    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError> {
        if peer.idx() >= self.links.len() {
            return Err(FabricError::Grant {
                peer,
                reason: format!("no node {peer} in a group of {}", self.links.len()),
            });
        }
        self.shared.lock().holder = Some(peer);
        Ok(())
    }
}

impl Drop for TcpEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Closes the outgoing connections.
        self.links.clear();
        // Wake the listener so it sees the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for (_, s) in self.shared.lock_streams().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        // Connections accepted while stopping.
        for (_, s) in self.shared.lock_streams().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
