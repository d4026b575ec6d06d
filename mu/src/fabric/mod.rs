//! One-sided access to peers' regions (DESIGN §3.2).
//!
//! Every node owns one region (see [`crate::log::layout`]). A fabric lets it
//! post writes from its own region into a peer's region and reads from a
//! peer's region into its own, completed later with success or an error.
//! The contract every backend honours:
//!
//! - operations to one peer land and complete **in post order**;
//! - a node grants write access to its **log area** to at most one peer at a
//!   time; after [`Fabric::grant`] returns, no write from a revoked peer
//!   lands, not even one already in flight; a write without permission
//!   completes with [`OpError::Permission`] and changes nothing that was not
//!   already landed;
//! - the control area is always readable and writable by group members;
//! - an operation to a dead or unreachable peer completes with an error
//!   within a bounded time.

pub mod conformance;
pub mod local;
#[cfg(feature = "rdma")]
#[allow(unsafe_code)]
pub mod rdma;
pub mod sim;
// Shared mappings; its raw-memory code is confined to `shm::map`.
#[allow(unsafe_code)]
pub mod shm;
pub mod tcp;

use crate::error::{FabricError, OpError};
use crate::types::NodeId;

/// A node's view of its own region. Remote writes may change it at any
/// moment, so readers copy bytes out and verify them before trusting them.
pub trait Memory {
    /// Copies `buf.len()` bytes at `offset` into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]);
    /// Copies `data` to `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);

    /// Reads a little-endian u64.
    fn read_u64(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(offset, &mut b);
        u64::from_le_bytes(b)
    }

    /// Writes a little-endian u64.
    fn write_u64(&mut self, offset: u64, value: u64) {
        self.write(offset, &value.to_le_bytes());
    }
}

impl Memory for [u8] {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let o = offset as usize;
        buf.copy_from_slice(&self[o..o + buf.len()]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self[o..o + data.len()].copy_from_slice(data);
    }
}

impl Memory for Vec<u8> {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        self.as_slice().read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.as_mut_slice().write(offset, data)
    }
}

/// Identifies a posted operation in its completion.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// The outcome of a posted operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Completion {
    /// The operation.
    pub op: OpId,
    /// The peer it addressed.
    pub peer: NodeId,
    /// Success, or why it failed.
    pub result: Result<(), OpError>,
}

/// A node's endpoint on a fabric.
pub trait Fabric {
    /// The node's own region.
    type Mem: Memory;

    /// This node's id.
    fn node(&self) -> NodeId;

    /// The node's own region.
    fn memory(&mut self) -> &mut Self::Mem;

    /// Posts a write of `len` bytes from the local region at `local` into
    /// `peer`'s region at `remote`. The local bytes may be read at any time
    /// until the completion is polled, so they must not change before then.
    fn post_write(
        &mut self,
        peer: NodeId,
        op: OpId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), FabricError>;

    /// Posts a read of `len` bytes from `peer`'s region at `remote` into the
    /// local region at `local`; the bytes are in place when it completes.
    fn post_read(
        &mut self,
        peer: NodeId,
        op: OpId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Result<(), FabricError>;

    /// Appends completed operations to `out`; returns how many.
    fn poll(&mut self, out: &mut Vec<Completion>) -> usize;

    /// Gives `peer` exclusive write access to this node's log area, revoking
    /// the previous holder. Granting to oneself revokes every remote writer.
    /// When it returns, no write from a revoked peer lands any more.
    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError>;

    /// Grants without revoking the previous holder. Only the simulator's
    /// planted-bug runs use it (to show the checker catches it); every other
    /// backend treats it as [`Fabric::grant`].
    #[doc(hidden)]
    fn grant_keeping_previous(&mut self, peer: NodeId) -> Result<(), FabricError> {
        self.grant(peer)
    }
}
