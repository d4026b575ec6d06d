//! The error every decoder returns for a corrupt or oversized stream.

use std::fmt;

/// Which [`Limits`](crate::Limits) field a stream exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`Limits::bulk_len_max`](crate::Limits::bulk_len_max).
    BulkLen,
    /// [`Limits::array_len_max`](crate::Limits::array_len_max).
    ArrayLen,
    /// [`Limits::depth_max`](crate::Limits::depth_max).
    Depth,
    /// [`Limits::line_len_max`](crate::Limits::line_len_max).
    LineLen,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::BulkLen => "bulk length",
            Limit::ArrayLen => "element count",
            Limit::Depth => "nesting depth",
            Limit::LineLen => "line length",
        })
    }
}

/// A decoder found bytes it cannot accept. The stream is corrupt from this
/// point on: the caller should answer with a protocol error (if it can) and
/// close the connection, as redis-server and memcached do.
///
/// `pos` is the offset of the offending byte from the start of the buffer
/// handed to `decode`, which is always the start of the frame being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The bytes do not follow the protocol grammar; the peer is at fault.
    #[error("protocol error at byte {pos}: {what}")]
    Malformed {
        /// What was expected or found, e.g. `expected '$'`.
        what: &'static str,
        /// Offset of the offending byte.
        pos: usize,
    },
    /// A header or line announced more than the configured [`Limits`]
    /// allow; nothing was allocated for it.
    ///
    /// [`Limits`]: crate::Limits
    #[error("protocol error at byte {pos}: {limit} {value} exceeds the limit {max}")]
    LimitExceeded {
        /// Which limit.
        limit: Limit,
        /// The announced or observed value.
        value: u64,
        /// The configured maximum.
        max: u64,
        /// Offset of the header or line that exceeded it.
        pos: usize,
    },
}

impl ProtocolError {
    pub(crate) fn malformed(what: &'static str, pos: usize) -> Self {
        ProtocolError::Malformed { what, pos }
    }

    pub(crate) fn limit(limit: Limit, value: u64, max: u64, pos: usize) -> Self {
        ProtocolError::LimitExceeded {
            limit,
            value,
            max,
            pos,
        }
    }

    /// What is wrong, without the position (for an error reply).
    pub fn detail(&self) -> String {
        match self {
            ProtocolError::Malformed { what, .. } => what.to_string(),
            ProtocolError::LimitExceeded {
                limit, value, max, ..
            } => format!("{limit} {value} exceeds the limit {max}"),
        }
    }

    /// Offset of the offending byte from the start of the decoded buffer.
    pub fn pos(&self) -> usize {
        match self {
            ProtocolError::Malformed { pos, .. } | ProtocolError::LimitExceeded { pos, .. } => *pos,
        }
    }
}
