//! The `shm` fabric: processes on one host store straight into each
//! other's regions, which live in shared files of a tmpfs directory
//! (normally `/dev/shm`). A write is a `memcpy` into the peer's mapping,
//! a fence and a few atomic operations on its header; no system call is made on the fast path (the lease
//! check reads `CLOCK_MONOTONIC` through the vDSO).
//!
//! # Objects
//! Each node `i` of group `g` owns
//! - `g-n{i}.ctl`: a 4 KiB metadata page (current log generation, lease,
//!   alive flag) followed by the whole region; everything outside the log
//!   area lives here, always writable by the group;
//! - `g-n{i}.log.{gen}`: the log area of generation `gen`, after a 4 KiB
//!   header of three words: **perm** (a grant epoch and the one node
//!   allowed to write), **busy** (how many writers are inside a write) and
//!   **abandoned** (set once the owner moved to a newer generation).
//!
//! # Writing
//! A writer increments `busy`, loads `perm` and stores nothing unless it is
//! the holder; then it copies its bytes, issues a SeqCst fence, loads
//! `perm` again, decrements `busy`, and reports `Ok` only if `perm` did not
//! change. All these accesses are SeqCst.
//!
//! # Fencing: quiesce, or move the log to a fresh object
//! [`Fabric::grant`] first stores a `perm` with a new epoch and no holder,
//! issues a SeqCst fence and watches `busy` for up to [`GRANT_QUIESCE`]:
//! - **`busy` reaches 0**: no writer is inside a write. Any writer that
//!   enters later increments `busy` before it loads `perm`, so (SeqCst
//!   total order: the owner's `perm` store precedes its `busy` load, which
//!   read a value older than that writer's increment) it loads the new
//!   `perm` and stores nothing. The owner publishes the grantee in `perm`
//!   and returns: no copy.
//! - **`busy` stays above 0**: a writer is inside a write and may be
//!   paused there (SIGSTOP, a long preemption, or dead with its count
//!   never undone). The owner creates generation `gen + 1`, sets
//!   `abandoned` in the current object, fences, copies the log area into
//!   the new object, writes the grantee into its `perm`, publishes
//!   `gen + 1` in the control page, switches its own view and unlinks the
//!   old file. The stalled writer can only store into the old object's
//!   pages: its mapping keeps them alive, but no process reads them again.
//!
//! Either way, after `grant` returns nothing a revoked writer stores
//! becomes visible. A write reported `Ok` loaded the old `perm` after its
//! fence, so it preceded the owner's fence in the SeqCst order and the
//! owner's copy (or the live object) holds all of its bytes. A write racing
//! a grant may be torn and reported as refused, as in the simulator; the
//! log format detects torn entries by checksum.
//!
//! Readers check `abandoned` after copying and retry on the new generation,
//! so a read never returns bytes a stalled writer stored after the copy.
//! A grant costs a fence and a short wait in the common case, and a copy of
//! the log area when a writer is stuck inside a write; during a grant even
//! the holder's writes are refused.
//!
//! # Liveness
//! A keeper thread refreshes the lease in the control page every
//! [`LEASE_REFRESH`]; an operation to a node whose lease is older than
//! [`ShmConfig::lease_timeout`], or that closed its endpoint, fails with
//! [`OpError::Unreachable`](crate::error::OpError::Unreachable) at once, so errors from a dead, killed or
//! stopped node arrive within the lease timeout. A restarting node marks
//! its previous incarnation's control page dead before replacing it.

mod map;
mod peer;

use crate::error::FabricError;
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::{Layout, LOG};
use crate::types::NodeId;
use map::{monotonic_ns, Mapping};
use peer::PeerView;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Default lease timeout: how long a silent node is still taken for alive.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a grant waits for writers inside a write to finish before it
/// moves the log to a fresh object instead.
pub const GRANT_QUIESCE: Duration = Duration::from_micros(50);
/// How often the keeper thread refreshes the lease.
pub const LEASE_REFRESH: Duration = Duration::from_millis(5);

/// Size of the metadata page of a control object and of a log header.
const PAGE: usize = 4096;
const MAGIC_CTL: u64 = u64::from_le_bytes(*b"MUSHMCTL");
const MAGIC_LOG: u64 = u64::from_le_bytes(*b"MUSHMLOG");
/// Control page words.
const W_MAGIC: usize = 0;
const W_GEN: usize = 8;
const W_LEASE: usize = 16;
const W_ALIVE: usize = 24;
/// Log header words.
const W_PERM: usize = 8;
const W_BUSY: usize = 16;
const W_ABANDONED: usize = 24;
/// The low byte of `perm`: holder id + 1, or 0 for nobody.
const PERM_HOLDER_MASK: u64 = 0xff;
/// How often a writer or reader follows a generation change before it
/// gives up on a node that rotates faster than it can follow.
const FOLLOW_LIMIT: usize = 64;

/// Where a node's objects live and how long a silent node counts as alive.
#[derive(Clone, Debug)]
pub struct ShmConfig {
    /// A tmpfs directory shared by the group, e.g. `/dev/shm/mu`.
    pub dir: PathBuf,
    /// The group's name: the prefix of every file.
    pub group: String,
    /// This node.
    pub id: NodeId,
    /// The region map (identical on every node).
    pub layout: Layout,
    /// Operations to a node whose lease is older than this fail.
    pub lease_timeout: Duration,
}

impl ShmConfig {
    fn ctl_path(&self, node: NodeId) -> PathBuf {
        self.dir.join(format!("{}-n{}.ctl", self.group, node.0))
    }

    fn log_path(&self, node: NodeId, gen: u64) -> PathBuf {
        self.dir
            .join(format!("{}-n{}.log.{gen}", self.group, node.0))
    }
}

/// Which object holds a piece of a region range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Ctl,
    Log,
}

/// Splits `[offset, offset + len)` into pieces: (object, offset in the
/// object, offset in the range, length).
fn pieces(
    layout: &Layout,
    offset: u64,
    len: u64,
) -> impl Iterator<Item = (Place, usize, usize, usize)> {
    let (start, end) = (offset, offset + len);
    let (log_start, log_end) = (LOG, layout.log_end());
    [
        (Place::Ctl, start, end.min(log_start)),
        (Place::Log, start.max(log_start), end.min(log_end)),
        (Place::Ctl, start.max(log_end), end),
    ]
    .into_iter()
    .filter(|(_, a, b)| a < b)
    .map(move |(place, a, b)| {
        let at = match place {
            Place::Ctl => PAGE + a as usize,
            Place::Log => PAGE + (a - log_start) as usize,
        };
        (place, at, (a - start) as usize, (b - a) as usize)
    })
}

/// A node's own region: the control object and its current log object.
#[derive(Debug)]
pub struct ShmRegion {
    layout: Layout,
    ctl: Arc<Mapping>,
    log: Mapping,
    gen: u64,
    /// Grants so far; the high bits of `perm`.
    epoch: u64,
}

impl Memory for ShmRegion {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        for (place, at, from, len) in pieces(&self.layout, offset, buf.len() as u64) {
            let m = if place == Place::Ctl {
                &*self.ctl
            } else {
                &self.log
            };
            m.read(at, &mut buf[from..from + len]);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (place, at, from, len) in pieces(&self.layout, offset, data.len() as u64) {
            let m = if place == Place::Ctl {
                &*self.ctl
            } else {
                &self.log
            };
            m.write(at, &data[from..from + len]);
        }
    }
}

/// One node's endpoint on the `shm` fabric. Dropping it marks the node
/// dead and removes its files.
#[derive(Debug)]
pub struct ShmEndpoint {
    config: ShmConfig,
    region: ShmRegion,
    peers: Vec<Option<PeerView>>,
    done: VecDeque<Completion>,
    buf: Vec<u8>,
    keeper_stop: Arc<AtomicBool>,
    keeper: Option<JoinHandle<()>>,
}

fn setup(what: &str, e: impl std::fmt::Display) -> FabricError {
    FabricError::Setup(format!("{what}: {e}"))
}

impl ShmEndpoint {
    /// Creates this node's objects in `config.dir` (replacing those of a
    /// previous incarnation) and starts the lease keeper.
    pub fn create(config: ShmConfig) -> Result<ShmEndpoint, FabricError> {
        let layout = config.layout;
        let n = layout.group_size;
        if config.id.idx() >= n {
            return Err(FabricError::Setup(format!(
                "node {} is outside a group of {n}",
                config.id
            )));
        }
        let ctl_path = config.ctl_path(config.id);
        // Peers may still map the previous incarnation's control page:
        // mark it dead so they drop their views, then replace the files.
        if let Ok(old) = Mapping::open(&ctl_path) {
            if old.len() >= PAGE {
                old.word(W_ALIVE).store(0, Ordering::SeqCst);
            }
        }
        remove_node_files(&config)?;
        let ctl = Mapping::create(&ctl_path, PAGE + layout.region_len() as usize)
            .map_err(|e| setup(&format!("create {}", ctl_path.display()), e))?;
        let gen = 1;
        let log = create_log(&config, gen)?;
        log.word(W_MAGIC).store(MAGIC_LOG, Ordering::Relaxed);
        ctl.word(W_GEN).store(gen, Ordering::Relaxed);
        ctl.word(W_LEASE).store(monotonic_ns(), Ordering::Relaxed);
        ctl.word(W_ALIVE).store(1, Ordering::Relaxed);
        ctl.word(W_MAGIC).store(MAGIC_CTL, Ordering::Release);
        let ctl = Arc::new(ctl);
        let keeper_stop = Arc::new(AtomicBool::new(false));
        let keeper = {
            let (ctl, stop) = (ctl.clone(), keeper_stop.clone());
            std::thread::Builder::new()
                .name(format!("mu-shm-lease-{}", config.id))
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        ctl.word(W_LEASE).store(monotonic_ns(), Ordering::Release);
                        std::thread::park_timeout(LEASE_REFRESH);
                    }
                })
                .map_err(|e| setup("start the lease keeper", e))?
        };
        Ok(ShmEndpoint {
            region: ShmRegion {
                layout,
                ctl,
                log,
                gen,
                epoch: 0,
            },
            peers: (0..n).map(|_| None).collect(),
            done: VecDeque::with_capacity(1024),
            buf: Vec::new(),
            keeper_stop,
            keeper: Some(keeper),
            config,
        })
    }

    fn check(&self, peer: NodeId, local: u64, remote: u64, len: u64) -> Result<(), FabricError> {
        let max = self.region.layout.region_len();
        let inside = |o: u64| o.checked_add(len).is_some_and(|e| e <= max);
        if peer.idx() >= self.peers.len() || !inside(local) || !inside(remote) {
            return Err(FabricError::Post {
                peer,
                reason: format!(
                    "node {peer} or range {local}/{remote}+{len} outside the group or the {max}-byte region"
                ),
            });
        }
        Ok(())
    }
}

fn create_log(config: &ShmConfig, gen: u64) -> Result<Mapping, FabricError> {
    let path = config.log_path(config.id, gen);
    let len = PAGE + (config.layout.log_end() - LOG) as usize;
    // A leftover of a crashed incarnation may hold the name.
    let _ = std::fs::remove_file(&path);
    Mapping::create(&path, len).map_err(|e| setup(&format!("create {}", path.display()), e))
}

/// Removes this node's control object and every log generation.
fn remove_node_files(config: &ShmConfig) -> Result<(), FabricError> {
    let prefix = format!("{}-n{}.", config.group, config.id.0);
    let entries = std::fs::read_dir(&config.dir)
        .map_err(|e| setup(&format!("read {}", config.dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && (name.ends_with(".ctl") || name.contains(".log.")) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

impl Fabric for ShmEndpoint {
    type Mem = ShmRegion;

    fn node(&self) -> NodeId {
        self.config.id
    }

    fn memory(&mut self) -> &mut ShmRegion {
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
        self.check(peer, local, remote, len)?;
        let result = self.remote_write(peer, local, remote, len);
        self.done.push_back(Completion { op, peer, result });
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
        self.check(peer, local, remote, len)?;
        let result = self.remote_read(peer, remote, local, len);
        self.done.push_back(Completion { op, peer, result });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let k = self.done.len();
        out.extend(self.done.drain(..));
        k
    }

    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError> {
        if peer.idx() >= self.peers.len() {
            return Err(FabricError::Grant {
                peer,
                reason: format!("no node {peer} in a group of {}", self.peers.len()),
            });
        }
        let epoch = self.region.epoch + 1;
        self.region.epoch = epoch;
        let granted = (epoch << 8) | (u64::from(peer.0) + 1);
        let log = &self.region.log;
        log.word(W_PERM).store(epoch << 8, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let deadline = monotonic_ns() + GRANT_QUIESCE.as_nanos() as u64;
        loop {
            if log.word(W_BUSY).load(Ordering::SeqCst) == 0 {
                log.word(W_PERM).store(granted, Ordering::SeqCst);
                return Ok(());
            }
            if monotonic_ns() > deadline {
                break;
            }
            std::hint::spin_loop();
        }
        // A writer is stuck inside a write: move the log. If this fails the
        // log stays without a holder, which is safe; the caller retries.
        let gen = self.region.gen + 1;
        let fresh = create_log(&self.config, gen).map_err(|e| FabricError::Grant {
            peer,
            reason: e.to_string(),
        })?;
        let old = &self.region.log;
        old.word(W_ABANDONED).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let log_len = (self.region.layout.log_end() - LOG) as usize;
        fresh.copy_from(PAGE, old, PAGE, log_len);
        fresh.word(W_PERM).store(granted, Ordering::Relaxed);
        fresh.word(W_MAGIC).store(MAGIC_LOG, Ordering::Release);
        self.region.ctl.word(W_GEN).store(gen, Ordering::SeqCst);
        let old_gen = self.region.gen;
        self.region.log = fresh;
        self.region.gen = gen;
        let _ = std::fs::remove_file(self.config.log_path(self.config.id, old_gen));
        Ok(())
    }
}

impl Drop for ShmEndpoint {
    fn drop(&mut self) {
        self.region.ctl.word(W_ALIVE).store(0, Ordering::SeqCst);
        self.keeper_stop.store(true, Ordering::Release);
        if let Some(k) = self.keeper.take() {
            k.thread().unpark();
            let _ = k.join();
        }
        let _ = remove_node_files(&self.config);
    }
}
