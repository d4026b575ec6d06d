//! What the core asks its driver to do.

use crate::fabric::OpId;
use crate::types::NodeId;

/// One fabric operation or permission change, executed in emission order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action {
    /// Post a write from the local region at `local` to `peer` at `remote`.
    Write {
        /// Target.
        peer: NodeId,
        /// Identifier echoed in the completion.
        op: OpId,
        /// Source offset in the local region.
        local: u64,
        /// Destination offset in the peer's region.
        remote: u64,
        /// Bytes.
        len: u64,
    },
    /// Post a read from `peer` at `remote` into the local region at `local`.
    Read {
        /// Target.
        peer: NodeId,
        /// Identifier echoed in the completion.
        op: OpId,
        /// Source offset in the peer's region.
        remote: u64,
        /// Destination offset in the local region.
        local: u64,
        /// Bytes.
        len: u64,
    },
    /// Give `peer` exclusive write access to the local log area (revoking the
    /// previous holder) before executing any later action.
    Grant {
        /// The new holder; the node itself to revoke every remote writer.
        peer: NodeId,
        /// Revoke the previous holder. Always true except in the simulator's
        /// planted-bug runs, which must show that forgetting it is caught.
        revoke_others: bool,
    },
}
