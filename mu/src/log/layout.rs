//! The region map.
//!
//! ```text
//! 0            control area (always accessible to group members)
//!   0          own status record (heartbeat, flags, applied point)   64 B
//!   64         permission requests, one u64 per candidate             64 B
//!   128        permission acks, one u64 per peer                      64 B
//!   192        staging: outgoing min proposal, commit hint, floor     64 B
//!   256        staging: outgoing ack, one u64 per peer                64 B
//!   320        staging: outgoing recovered-through, one per peer      64 B
//!   384        landing: peers' status records (reads)                512 B
//!   1024       landing: peers' log headers (reads)                   512 B
//!   1536       staging: outgoing requests, one u64 per peer           64 B
//!   1600       staging: outgoing grant stamps, one u64 per peer       64 B
//! 4096         log area (writable only by the permission holder)
//!   +0         log header: min proposal, recovered-through, commit hint,
//!              grant stamp, ring floor
//!   +64        ring of `ring_capacity` bytes
//! align 4096   read scratch, `scratch_len` bytes per peer
//! ```
//!
//! Only the log area is fenced: the control area must stay reachable so
//! that heartbeats and permission requests work whoever holds the log.

use crate::log::entry;
use crate::types::{NodeId, MAX_NODES};

/// Status record of the node itself (written locally, read by peers).
pub const STATUS: u64 = 0;
/// Size of a status record.
pub const STATUS_LEN: u64 = 64;
/// `perm_request[c]`: written by candidate `c`.
pub const REQUESTS: u64 = 64;
/// `perm_ack[p]`: written by peer `p` in answer to this node's request.
pub const ACKS: u64 = 128;
/// Staging word for the outgoing min proposal.
pub const STAGE_MIN_PROPOSAL: u64 = 200;
/// Staging for the outgoing commit hint (24 bytes).
pub const STAGE_HINT: u64 = 208;
/// Staging words for outgoing acks, one per peer.
pub const STAGE_ACKS: u64 = 256;
/// Staging words for outgoing recovered-through marks, one per peer.
pub const STAGE_RECOVERED: u64 = 320;
/// Landing slots for peers' status records.
pub const STATUS_LANDING: u64 = 384;
/// Landing slots for peers' log headers.
pub const HEADER_LANDING: u64 = 1024;
/// Staging words for outgoing permission requests, one per peer.
pub const STAGE_REQUESTS: u64 = 1536;
/// Size of the control area.
pub const CONTROL_LEN: u64 = 4096;

/// Start of the fenced log area.
pub const LOG: u64 = CONTROL_LEN;
/// Log header: the highest proposal number this replica promised.
pub const MIN_PROPOSAL: u64 = LOG;
/// Log header: the index up to which a leader brought a rejoining replica.
pub const RECOVERED_THROUGH: u64 = LOG + 8;
/// Log header: commit hint written by an idle leader (index, hash, check).
pub const HINT: u64 = LOG + 16;
/// Size of the commit hint.
pub const HINT_LEN: u64 = 24;
/// Log header: the grant stamp. A follower that grants its log stops
/// applying until the new holder writes the grant's request number here.
pub const STAMP: u64 = LOG + 40;
/// Log header: the ring floor. Positions below it may have been reused by
/// a leader: a replica whose apply position is below its floor is behind
/// the ring. A leader publishes the floor before any write that needs it.
pub const FLOOR: u64 = LOG + 48;
/// Staging word for the outgoing ring floor.
pub const STAGE_FLOOR: u64 = 232;
/// Staging words for outgoing grant stamps, one per peer.
pub const STAGE_STAMPS: u64 = 1600;
/// Size of the log header.
pub const LOG_HEADER_LEN: u64 = 64;
/// Start of the ring.
pub const RING: u64 = LOG + LOG_HEADER_LEN;

const _: () = assert!(STATUS_LANDING + STATUS_LEN * MAX_NODES as u64 <= HEADER_LANDING);
const _: () = assert!(HEADER_LANDING + LOG_HEADER_LEN * MAX_NODES as u64 <= CONTROL_LEN);
const _: () = assert!(STAGE_HINT + HINT_LEN <= STAGE_ACKS);
const _: () = assert!(STAGE_REQUESTS >= HEADER_LANDING + LOG_HEADER_LEN * MAX_NODES as u64);
const _: () = assert!(STAGE_REQUESTS + 8 * MAX_NODES as u64 <= STAGE_STAMPS);
const _: () = assert!(STAGE_STAMPS + 8 * MAX_NODES as u64 <= CONTROL_LEN);
const _: () = assert!(FLOOR + 8 <= RING);
const _: () = assert!(STAGE_FLOOR + 8 <= STAGE_ACKS);
const _: () = assert!(RING.is_multiple_of(64));

/// The region of one replica, sized from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Ring size in bytes.
    pub ring_capacity: u64,
    /// Bytes of read scratch per peer (holds at least one largest entry).
    pub scratch_len: u64,
    /// Group size.
    pub group_size: usize,
}

impl Layout {
    /// Layout for a ring of `ring_capacity` bytes and entries of up to
    /// `max_payload` bytes.
    pub fn new(ring_capacity: u64, max_payload: u32, group_size: usize) -> Self {
        let scratch_len = (64 << 10)
            .max(entry::total_len(max_payload))
            .next_multiple_of(64);
        Layout {
            ring_capacity,
            scratch_len,
            group_size,
        }
    }

    /// End of the fenced log area.
    pub fn log_end(&self) -> u64 {
        RING + self.ring_capacity
    }

    /// Start of the read scratch of `peer`.
    pub fn scratch(&self, peer: NodeId) -> u64 {
        self.log_end().next_multiple_of(4096) + peer.0 as u64 * self.scratch_len
    }

    /// Total bytes of the region.
    pub fn region_len(&self) -> u64 {
        self.log_end().next_multiple_of(4096) + self.group_size as u64 * self.scratch_len
    }

    /// True when `[offset, offset + len)` touches the fenced log area.
    pub fn touches_log(&self, offset: u64, len: u64) -> bool {
        offset < self.log_end() && offset + len > LOG
    }
}

/// Offset of a peer-indexed u64 slot in a table starting at `base`.
pub fn slot(base: u64, peer: NodeId) -> u64 {
    base + 8 * peer.0 as u64
}

/// Offset of a peer's 64-byte landing slot in a table starting at `base`.
pub fn landing(base: u64, peer: NodeId) -> u64 {
    base + 64 * peer.0 as u64
}
