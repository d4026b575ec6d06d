//! Errors, split by whose move it is next: retry, go elsewhere, or give up.

use crate::types::NodeId;
use thiserror::Error;

/// Why a proposal was not accepted or did not commit.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProposeError {
    /// This replica is not the leader; send the proposal to `leader` if known.
    #[error("not the leader; the leader is {}", leader.map(|l| l.to_string()).unwrap_or_else(|| "unknown".into()))]
    NotLeader {
        /// The replica this one believes leads, if any.
        leader: Option<NodeId>,
    },
    /// This replica is becoming leader (permission or prepare phase); retry shortly.
    #[error("leader change in progress; retry")]
    LeaderChanging,
    /// The payload exceeds the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The log ring has no room until followers apply more; retry shortly.
    #[error("log ring full ({needed} bytes needed, {free} free); retry when followers catch up")]
    LogFull {
        /// Bytes the entry needs.
        needed: u64,
        /// Bytes currently free.
        free: u64,
    },
    /// The value lost its slot to another value after a leader change: it was
    /// not committed and will never be.
    #[error("not committed: a leader change replaced this proposal; it is safe to retry")]
    Superseded,
    /// The replica stopped before the outcome was known; the value may or may
    /// not be committed.
    #[error(
        "outcome unknown: the replica stopped or the deadline passed before the entry was decided"
    )]
    Unknown,
    /// The replica fell behind the ring and needs a state transfer before it
    /// can take part again.
    #[error("replica needs a state transfer: the log it missed was recycled")]
    NeedsStateTransfer,
}

impl ProposeError {
    /// True when the same proposal may simply be retried (here or at the leader).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProposeError::NotLeader { .. }
                | ProposeError::LeaderChanging
                | ProposeError::LogFull { .. }
                | ProposeError::Superseded
        )
    }
}

/// Why a fabric operation failed. Every failure is reported; none is hidden.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum OpError {
    /// The target's log is not writable by this node (fencing).
    #[error("permission denied by the target's log")]
    Permission,
    /// The peer did not answer within the fabric's bound (crashed,
    /// partitioned or paused too long).
    #[error("peer unreachable")]
    Unreachable,
    /// The operation addressed memory outside the target's region.
    #[error("out of bounds")]
    OutOfBounds,
}

/// A fabric could not be set up or refused an operation locally.
#[derive(Debug, Error)]
pub enum FabricError {
    /// Posting failed before anything was sent (queue full, bad arguments).
    #[error("post to node {peer} failed: {reason}")]
    Post {
        /// The target.
        peer: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// Changing log permission failed.
    #[error("granting log access to node {peer} failed: {reason}")]
    Grant {
        /// The intended grantee.
        peer: NodeId,
        /// What went wrong.
        reason: String,
    },
    /// Setting up the fabric failed.
    #[error("fabric setup failed: {0}")]
    Setup(String),
}

/// An invalid configuration; lists every problem found.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid configuration: {}", problems.join("; "))]
pub struct ConfigError {
    /// One sentence per problem.
    pub problems: Vec<String>,
}
