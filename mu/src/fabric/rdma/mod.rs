//! The `rdma` fabric: one-sided RDMA WRITE and READ over libibverbs
//! (feature `rdma`), with Mu's permission fencing by queue pair access
//! flags.
//!
//! [`verbs`] is this crate's own thin layer over `ibverbs-sys` 0.3 (the FFI
//! crate of the `ibverbs` family). The safe `ibverbs` 0.9 API offers only
//! two-sided SEND/RECV, fixes a queue pair's access flags at the handshake
//! and hides every raw handle, so it cannot do one-sided WRITE/READ or
//! Mu's permission switch; `ibverbs-sys` exposes the verbs themselves, and
//! `ibv_post_send`/`ibv_poll_cq` (static inline in `verbs.h`) are called
//! through the context's operation table.
//!
//! ## Queue pairs and protection domains
//! Each node registers its region once, in three protection domains:
//! - the *local* domain holds the whole region for local access only, and
//!   the node's **outgoing** queue pairs: per peer, one for the log plane
//!   and one for the control plane, from which it posts;
//! - the *log* domain holds only the log area (remote write) and, per
//!   peer, the **incoming** log queue pair that the peer's outgoing log
//!   pair connects to;
//! - the *control* domain holds the whole region read-only, the control
//!   area and the read scratch read-write, and per peer the incoming
//!   control queue pair (always read-write).
//!
//! Remote access needs both the queue pair's access flags and a memory
//! region's, and a queue pair reaches only the regions of its own domain:
//! the control plane can read the log but never write it, and the log is
//! written only through an incoming log queue pair that carries
//! REMOTE_WRITE. Writes into the log area go on the log plane; reads and
//! every other write go on the control plane; a write that straddles into
//! the log fails with [`OpError::Permission`](crate::error::OpError::Permission) without being sent.
//! Operations to one peer complete in post order across both planes
//! (see `link`).
//!
//! ## Fencing
//! [`Fabric::grant`] clears REMOTE_WRITE on every incoming log queue pair
//! but the new holder's and sets it on the holder's (`ibv_modify_qp` with
//! `IBV_QP_ACCESS_FLAGS`; the pairs stay in RTS). A write that arrives
//! after that fails: on Soft-RoCE it completes with
//! `IBV_WC_REM_INV_REQ_ERR`, on mlx5 with `IBV_WC_REM_ACCESS_ERR`, and both
//! queue pairs go to the error state. So every failed completion on the
//! log plane (other than a retry timeout, which means the peer is
//! unreachable) reports [`OpError::Permission`](crate::error::OpError::Permission), and a link whose queue pair
//! failed reconnects over the control channel ([`control`]) before it
//! posts again; the peer connects its incoming pairs with the access its
//! current grant allows. A grant never waits for the writer: a paused
//! process's writes are executed by the NIC (or, on Soft-RoCE, the kernel)
//! and checked packet by packet against the flags of the moment.
//!
//! Soft-RoCE (Linux 6.1) checks the flags as each packet is processed and
//! `ibv_modify_qp` does not wait for a packet the responder is processing
//! at that instant: at most that one packet (up to the path MTU) may land
//! just after the grant returns. The log format detects such a torn entry
//! by its checksum; on a hardware NIC the change applies between packets.
//!
//! ## Failures and restarts
//! A dead peer's operations fail when the RC transport gives up (ack
//! timeout 14 ≈ 67 ms, 7 retries: about 0.5 s), or when the oldest of them
//! has waited [`RdmaOptions::op_timeout`] (the link then moves its queue
//! pairs to the error state, which flushes the rest), and a new connection
//! is refused, so errors arrive within [`RdmaOptions::dead_peer_bound`]. A
//! restarted peer has new queue pairs and a new region: the next operation
//! reconnects and learns them from the control exchange. The control
//! channel authenticates both sides with the cluster secret.
//!
//! ## Fast path
//! A write or read is one `ibv_post_send` of a signalled work request from
//! the local registration (inline when small enough for the device), and
//! completions come from one completion queue polled by the caller's
//! thread; nothing is allocated once the per-peer queues have reached
//! their working size. On a hardware NIC posting is a doorbell write; on
//! Soft-RoCE the provider hands every post to the kernel with a system
//! call.

mod control;
mod link;
pub mod verbs;

/// The RDMA devices a test spreads its nodes over, from the environment:
/// the Soft-RoCE guest's `RDMA_VM_DEVS` (set by `scripts/rdma-vm`), else
/// `MU_RDMA_DEVICES`; and the GID index, `RDMA_VM_GID_INDEX` (default 1).
/// With no device named it panics with `how_to_run` and the devices
/// present, so a test run outside the guest fails saying how to run it.
pub fn test_devices(how_to_run: &str) -> (Vec<String>, u8) {
    let list = std::env::var("RDMA_VM_DEVS")
        .or_else(|_| std::env::var("MU_RDMA_DEVICES"))
        .unwrap_or_default();
    let names: Vec<String> = list.split_whitespace().map(String::from).collect();
    assert!(
        !names.is_empty(),
        "no RDMA device given (devices present: {:?}). Run inside the Soft-RoCE guest: \
         {how_to_run}, or set MU_RDMA_DEVICES (and RDMA_VM_GID_INDEX) on a host with RDMA \
         devices",
        verbs::devices()
    );
    let gid = std::env::var("RDMA_VM_GID_INDEX")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    (names, gid)
}

use crate::error::FabricError;
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::{Layout, CONTROL_LEN, LOG};
use crate::types::NodeId;
use control::{Pair, RemoteRegion};
use link::{Link, Request, Target};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use verbs::{
    Access, CompletionQueue, Context, MemoryRegion, Op, ProtectionDomain, QpState, QueuePair,
    Region, VerbsError, WorkCompletion,
};

/// Default bound on a control exchange (TCP connect, handshake, reply).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Default bound on waiting for the oldest operation in flight to a peer.
/// The RC transport gives up on a silent peer by itself (ack timeout 14 ≈
/// 67 ms, 7 retries), but Soft-RoCE was seen not to report that within
/// seconds, so the link enforces its own bound: short enough that a
/// replica reading a dead leader's heartbeat learns of it quickly, and
/// extended by one timeout per 256 KiB an operation carries (a 1 MiB
/// write on an emulated device with retransmissions took over 0.5 s).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(500);
/// Default pause after a failed connection attempt; operations posted in
/// it fail at once.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Default number of operations in flight per queue pair; more wait in the
/// link's queue.
pub const DEFAULT_QUEUE_DEPTH: u32 = 128;
/// Default inline size asked of the device (writes up to this many bytes
/// are copied into the work request); 0 is used if the device refuses.
pub const DEFAULT_MAX_INLINE: u32 = 256;

/// Tunables of an `rdma` endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaOptions {
    /// Bound on a control exchange.
    pub connect_timeout: Duration,
    /// Bound on waiting for the oldest operation in flight to a peer (one
    /// more per 256 KiB it carries); past it the link fails its work with
    /// `Unreachable` and reconnects.
    pub op_timeout: Duration,
    /// Pause between failed connection attempts.
    pub reconnect_backoff: Duration,
    /// Operations in flight per queue pair.
    pub queue_depth: u32,
    /// Inline size asked of the device.
    pub max_inline: u32,
}

impl Default for RdmaOptions {
    fn default() -> Self {
        RdmaOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_inline: DEFAULT_MAX_INLINE,
        }
    }
}

impl RdmaOptions {
    /// How long an operation to a dead peer can take to fail.
    pub fn dead_peer_bound(&self) -> Duration {
        self.op_timeout + self.connect_timeout * 2
    }
}

/// Who a node is, which device it uses and how to reach the others.
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// This node.
    pub id: NodeId,
    /// Every node's control-channel address, indexed by node id (this
    /// node's included).
    pub peers: Vec<SocketAddr>,
    /// The cluster secret every member knows.
    pub secret: Vec<u8>,
    /// The region map (identical on every node).
    pub layout: Layout,
    /// RDMA device name (`ibv_devices` lists them), e.g. `mlx5_0`, `rxe0`.
    pub device: String,
    /// GID index on port 1: for RoCE v2 over IPv4 usually 1 (index 0 is
    /// the IPv6 link-local GID); `show_gids` lists them.
    pub gid_index: u8,
    /// Tunables.
    pub options: RdmaOptions,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the rdma fabric's timeouts need a clock"
)]
fn clock() -> Instant {
    Instant::now()
}

/// Two fresh 24-bit packet sequence numbers.
fn fresh_psns() -> std::io::Result<[u32; 2]> {
    let n = crate::fabric::tcp::wire::nonce()?;
    let word = |i: usize| u32::from_le_bytes(n[i..i + 4].try_into().expect("4 bytes")) & 0xff_ffff;
    Ok([word(0), word(4)])
}

/// The incoming queue pairs and the log grant.
#[derive(Debug)]
struct Inbound {
    holder: Option<NodeId>,
    /// Per peer: [log, control].
    qps: Vec<[QueuePair; 2]>,
    /// Per peer: whether its pairs were connected (a grant changes the
    /// access of connected pairs only; the others get it when they connect).
    connected: Vec<bool>,
}

impl Inbound {
    fn access(&self, me: NodeId, peer: NodeId) -> Access {
        if self.holder == Some(peer) && peer != me {
            Access::READ_WRITE
        } else {
            Access::READ
        }
    }
}

/// State shared by the endpoint and its control-channel threads.
#[derive(Debug)]
struct Shared {
    id: NodeId,
    layout: Layout,
    key: [u8; 32],
    stop: AtomicBool,
    rejected: AtomicU64,
    remote: RemoteRegion,
    inbound: Mutex<Inbound>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inbound> {
        self.inbound.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remote_region(&self) -> RemoteRegion {
        self.remote
    }

    /// Connects the incoming pairs for `peer` to its outgoing ones, with the
    /// access the current grant allows; returns their endpoints.
    fn accept(&self, peer: NodeId, theirs: &Pair) -> Result<Pair, VerbsError> {
        let psns = fresh_psns().map_err(|source| VerbsError::Call {
            call: "read /dev/urandom",
            source,
        })?;
        let mut inbound = self.lock();
        let access = [inbound.access(self.id, peer), Access::READ_WRITE];
        let remote = [theirs.log, theirs.ctl];
        inbound.connected[peer.idx()] = false;
        let qps = &mut inbound.qps[peer.idx()];
        for (i, qp) in qps.iter_mut().enumerate() {
            qp.reset()?;
            qp.set_psn(psns[i]);
            qp.connect(&remote[i], access[i])?;
        }
        inbound.connected[peer.idx()] = true;
        let qps = &inbound.qps[peer.idx()];
        Ok(Pair {
            log: qps[0].endpoint(),
            ctl: qps[1].endpoint(),
        })
    }
}

/// A node's own region on the `rdma` fabric: registered memory that peers
/// read and write with the NIC at any moment.
#[derive(Debug)]
pub struct RdmaMemory {
    region: Arc<Region>,
}

impl Memory for RdmaMemory {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        self.region.read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.region.write(offset, data)
    }
}

/// One node's endpoint on the `rdma` fabric. Dropping it resets its queue
/// pairs and stops its control channel: to the others, the node is dead.
#[derive(Debug)]
pub struct RdmaEndpoint {
    shared: Arc<Shared>,
    memory: RdmaMemory,
    links: Vec<Link>,
    cq: Arc<CompletionQueue>,
    wcs: Vec<WorkCompletion>,
    /// Completions decided at post time, in order.
    done: Vec<Completion>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
    /// Keeps every registration alive as long as the endpoint.
    _mrs: Vec<Arc<MemoryRegion>>,
}

/// Maps a verbs error into a setup error naming what was being done.
fn setup(what: &str) -> impl Fn(VerbsError) -> FabricError + '_ {
    move |e| FabricError::Setup(format!("{what}: {e}"))
}

impl RdmaEndpoint {
    /// Binds this node's control address from `config.peers` and starts.
    pub fn start(config: RdmaConfig) -> Result<RdmaEndpoint, FabricError> {
        let listener = crate::fabric::tcp::bind_own(&config.peers, config.id)?;
        Self::start_with_listener(config, listener)
    }

    /// Starts with a control listener bound by the caller (e.g. to port 0,
    /// with the resulting address in `config.peers`).
    pub fn start_with_listener(
        config: RdmaConfig,
        listener: TcpListener,
    ) -> Result<RdmaEndpoint, FabricError> {
        let n = config.layout.group_size;
        crate::fabric::tcp::check_members(config.peers.len(), n, config.id, &config.secret)?;
        let addr = listener
            .local_addr()
            .map_err(|e| FabricError::Setup(format!("listener address: {e}")))?;
        let layout = config.layout;
        let options = config.options;
        let ctx = Context::open(&config.device, config.gid_index)
            .map_err(setup("opening the RDMA device"))?;
        let len = layout.region_len();
        let region = Region::new(len as usize);
        let pd = |what| ProtectionDomain::new(&ctx).map_err(setup(what));
        let (pd_local, pd_log, pd_ctl) = (
            pd("local protection domain")?,
            pd("log protection domain")?,
            pd("control protection domain")?,
        );
        let mr = |pd: &Arc<ProtectionDomain>, offset: u64, end: u64, access| {
            MemoryRegion::new(pd, &region, offset, end - offset, access)
                .map_err(setup("registering the region"))
        };
        let scratch = layout.scratch(NodeId(0));
        let local = mr(&pd_local, 0, len, Access::LOCAL)?;
        let log = mr(&pd_log, LOG, layout.log_end(), Access::READ_WRITE)?;
        let read = mr(&pd_ctl, 0, len, Access::READ)?;
        let ctl = mr(&pd_ctl, 0, CONTROL_LEN, Access::READ_WRITE)?;
        let scr = mr(&pd_ctl, scratch, len, Access::READ_WRITE)?;
        let depth = options.queue_depth.max(1);
        let cq = CompletionQueue::new(&ctx, (2 * depth as usize * n + 16) as i32)
            .map_err(setup("completion queue"))?;
        let cq_in = CompletionQueue::new(&ctx, 16).map_err(setup("completion queue"))?;
        let outgoing = |pd: &Arc<ProtectionDomain>| {
            QueuePair::new(pd, &cq, vec![local.clone()], depth, options.max_inline, 0)
                .or_else(|_| QueuePair::new(pd, &cq, vec![local.clone()], depth, 0, 0))
                .map_err(setup("outgoing queue pair"))
        };
        let incoming = |pd: &Arc<ProtectionDomain>| {
            QueuePair::new(pd, &cq_in, Vec::new(), 1, 0, 0).map_err(setup("incoming queue pair"))
        };
        let mut inbound = Vec::with_capacity(n);
        for _ in 0..n {
            inbound.push([incoming(&pd_log)?, incoming(&pd_ctl)?]);
        }
        let shared = Arc::new(Shared {
            id: config.id,
            layout,
            key: crate::fabric::tcp::wire::derive_key(&config.secret),
            stop: AtomicBool::new(false),
            rejected: AtomicU64::new(0),
            remote: RemoteRegion {
                addr: region.addr(0),
                log_rkey: log.rkey(),
                read_rkey: read.rkey(),
                ctl_rkey: ctl.rkey(),
                scratch_rkey: scr.rkey(),
            },
            inbound: Mutex::new(Inbound {
                holder: None,
                qps: inbound,
                connected: vec![false; n],
            }),
        });
        let mut links = Vec::with_capacity(n);
        for (i, &peer_addr) in config.peers.iter().enumerate() {
            let qps = [outgoing(&pd_local)?, outgoing(&pd_local)?];
            links.push(Link::new(
                config.id,
                NodeId(i as u8),
                peer_addr,
                shared.key,
                options,
                qps,
            ));
        }
        let s = shared.clone();
        let listener = std::thread::Builder::new()
            .name(format!("mu-rdma-listen-{}", config.id))
            .spawn(move || control::listen(s, listener))
            .map_err(|e| FabricError::Setup(format!("cannot start the listener thread: {e}")))?;
        Ok(RdmaEndpoint {
            shared,
            memory: RdmaMemory { region },
            links,
            cq,
            wcs: Vec::with_capacity(64),
            done: Vec::with_capacity(64),
            addr,
            listener: Some(listener),
            _mrs: vec![local, log, read, ctl, scr],
        })
    }

    /// The address this node's control channel listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Control connections refused because the other side did not prove
    /// it knows the cluster secret.
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
        if len > u64::from(u32::MAX) {
            return Err(FabricError::Post {
                peer,
                reason: format!("{len} bytes exceed one work request"),
            });
        }
        Ok(())
    }

    /// Which registration of the peer a write of `len` bytes at `remote`
    /// goes to, or why it fails without being sent.
    fn write_target(&self, remote: u64, len: u64) -> Result<Target, crate::error::OpError> {
        use crate::error::OpError;
        let layout = &self.shared.layout;
        let end = remote
            .checked_add(len)
            .filter(|&e| e <= layout.region_len())
            .ok_or(OpError::OutOfBounds)?;
        if layout.touches_log(remote, len) {
            if remote >= LOG && end <= layout.log_end() {
                Ok(Target::Log)
            } else {
                Err(OpError::Permission)
            }
        } else if end <= CONTROL_LEN {
            Ok(Target::Control)
        } else if remote >= layout.scratch(NodeId(0)) {
            Ok(Target::Scratch)
        } else {
            Err(OpError::OutOfBounds)
        }
    }
}

impl Fabric for RdmaEndpoint {
    type Mem = RdmaMemory;

    fn node(&self) -> NodeId {
        self.shared.id
    }

    fn memory(&mut self) -> &mut RdmaMemory {
        &mut self.memory
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
        let target = self.write_target(remote, len);
        let link = &mut self.links[peer.idx()];
        match target {
            Ok(target) => link.post(
                Request {
                    op,
                    kind: Op::Write,
                    target,
                    local,
                    remote,
                    len,
                },
                &mut self.done,
            ),
            Err(e) => link.fail(op, e, &mut self.done),
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
        let in_bounds = remote
            .checked_add(len)
            .is_some_and(|e| e <= self.shared.layout.region_len());
        let link = &mut self.links[peer.idx()];
        if in_bounds {
            let request = Request {
                op,
                kind: Op::Read,
                target: Target::Read,
                local,
                remote,
                len,
            };
            link.post(request, &mut self.done);
        } else {
            link.fail(op, crate::error::OpError::OutOfBounds, &mut self.done);
        }
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        out.append(&mut self.done);
        loop {
            self.wcs.clear();
            // A failing poll leaves the work in flight; the next poll retries.
            let n = self.cq.poll(&mut self.wcs, 64).unwrap_or(0);
            for wc in &self.wcs {
                let link = (wc.wr_id / 2) as usize;
                let plane = (wc.wr_id % 2) as usize;
                if let Some(l) = self.links.get_mut(link) {
                    l.complete(plane, *wc, out);
                }
            }
            if n < 64 {
                break;
            }
        }
        for link in &mut self.links {
            link.progress(out);
        }
        out.len() - before
    }

    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError> {
        let me = self.shared.id;
        if peer.idx() >= self.links.len() {
            return Err(FabricError::Grant {
                peer,
                reason: format!("no node {peer} in a group of {}", self.links.len()),
            });
        }
        let mut inbound = self.shared.lock();
        inbound.holder = Some(peer);
        // Revoke everyone else first, then grant the holder.
        let order = (0..self.links.len())
            .filter(|&p| p != peer.idx())
            .chain(std::iter::once(peer.idx()));
        for p in order.filter(|&p| inbound.connected[p]) {
            let access = inbound.access(me, NodeId(p as u8));
            let qp = &inbound.qps[p][0];
            if let Err(e) = qp.set_access(access) {
                // A queue pair that is not connected gets the right access
                // when its peer reconnects; one in the error state refuses
                // everything already.
                if matches!(qp.query(), Ok((QpState::Rts, _)) | Ok((QpState::Rtr, _))) {
                    return Err(FabricError::Grant {
                        peer,
                        reason: format!("changing node {p}'s access: {e}"),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for RdmaEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Incoming work stops landing at once, whoever still holds the
        // shared state.
        let mut inbound = self.shared.lock();
        inbound.connected.fill(false);
        for qps in &mut inbound.qps {
            for qp in qps {
                let _ = qp.reset();
            }
        }
        drop(inbound);
        // Wake the listener so it sees the stop flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        self.links.clear();
    }
}
