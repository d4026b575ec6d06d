//! Deterministic rewriting: every write becomes an [`Entry`] that gives the
//! same result on every replica, or a [`Refusal`] that changes nothing.
//!
//! # How the sidecar uses it
//!
//! Per client connection keep a [`RedisSession`] (or call
//! [`rewrite_memcached`] per request). For every decoded request:
//!
//! - [`Action::Local`]: send the request to the local backend as is.
//! - [`Action::Reply`]: answer the client with this frame; the backend is
//!   not involved (`MULTI` → `+OK`, queued commands → `+QUEUED`, WATCH).
//! - [`Action::Replicate`]: propose the entry; once committed, every
//!   replica applies it in log order (see [`RedisApplier`]); the leader's
//!   client gets the backend's reply to the entry's last command (for a
//!   transaction, the `EXEC` reply, or a null array if a WATCH guard
//!   fired).
//! - [`Action::Refuse`]: answer with [`Refusal::to_frame`] (or
//!   [`Refusal::to_memcached`]); nothing was changed anywhere.
//!
//! A memcached entry ([`Entry::Memcached`]) is one request in wire form:
//! every replica sends it to its memcached as is; decode it with
//! [`McRequestDecoder`](crate::memcached::McRequestDecoder) and use
//! [`McRequest::reply_expectation`](crate::memcached::McRequest::reply_expectation)
//! to know how many replies to read.
//!
//! # Policy
//!
//! Relative times become absolute using the leader's clock
//! ([`Context::now_ms`]); the selected database travels in every entry;
//! `MULTI`..`EXEC` becomes one entry applied inside `MULTI`/`EXEC` on every
//! replica. Commands are never sent on to a backend when the table does
//! not know them or their arity is wrong.
//!
//! **WATCH.** The sidecar sees every write in log order, so "was this key
//! written after the client watched it?" has the same answer on every
//! replica. WATCH records, per key, the last applied log index
//! ([`Context::applied_index`]) and is not sent to the backend. The
//! transaction's entry carries these guards; each replica's
//! [`RedisApplier`] keeps a [`WatchTracker`] (key → index of the last
//! entry that wrote it, in fixed-size hashed buckets) and skips the whole
//! transaction when a guard fired, answering the client with a null array
//! as Redis does. Hash collisions and commands whose keys cannot be known
//! (scripts, `FLUSHDB`, `SWAPDB`, ...) only cause extra aborts, never a
//! missed one, and the outcome is identical on every replica. Unlike
//! Redis, a watched key that merely *expires* does not abort the
//! transaction: expiry is not an entry in the log.
//!
//! Assumptions: replicas run the same redis-server version and
//! configuration (`databases`, stream node sizes, `maxmemory-policy
//! noeviction`) and the same CPU architecture (float arithmetic of
//! `INCRBYFLOAT`/`ZINCRBY`); memcached replicas have the same memory limit
//! and are sized so that they never evict (an LRU eviction is local to one
//! replica); `XADD *` relies on the leader clock moving
//! forward (after a leader change to a node whose clock is behind, XADD
//! with an auto ID can fail until the clock passes the stream's top ID,
//! identically on every replica).
//!
//! The full per-command table for Redis is [`crate::policy_table`]. memcached:
//!
//! | request | policy |
//! |---|---|
//! | `get`, `gets`, `mg` (without `T`/`N`), `mn`, `me`, `version`, `stats`, `verbosity`, `quit` | served locally |
//! | `set`, `add`, `replace`, `append`, `prepend`, `touch`, `gat`, `gats` | **rewritten**: an exptime of at most 30 days becomes the absolute Unix second |
//! | `ms`, `md`, `ma`, `mg` with `T`/`N` | **rewritten**: `T` and `N` tokens as above |
//! | `flush_all <delay>` | **rewritten**: the delay becomes absolute |
//! | `delete`, `incr`, `decr`, `flush_all` | replicated as-is |
//! | `cas`, meta commands with `C` | **refused**: CAS uniques are assigned independently by each memcached |
//! | any other verb | **refused** with `ERROR`, as memcached answers unknown commands |

mod apply;
mod expiry;
mod memcached;
pub mod policy;
mod session;
mod watch;

pub use apply::{ApplyPlan, RedisApplier, Run, Step, RUN_MAX};
pub use expiry::{memcached_exptime, MEMCACHED_RELATIVE_MAX_S};
pub use memcached::rewrite_memcached;
pub use session::{hello_version, RedisSession, DEFAULT_DATABASES};
pub use watch::{command_writes, WatchTracker, Writes};

use crate::entry::Entry;
use crate::resp::Frame;

/// What the leader knows when it rewrites a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The leader's wall clock, Unix milliseconds.
    pub now_ms: i64,
    /// The last log index applied to the local backend (for WATCH).
    pub applied_index: u64,
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Serve from the local backend, unchanged.
    Local,
    /// Answer the client with this frame; the backend is not involved.
    Reply(Frame),
    /// Replicate this entry; the client's answer comes from applying it.
    Replicate(Entry),
    /// Refuse: nothing is executed anywhere.
    Refuse(Refusal),
}

/// A request the sidecar will not execute, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{command}' is refused: {reason}")]
pub struct Refusal {
    /// The command (lower case, `container|sub` for subcommands).
    pub command: String,
    /// Why, in words a user can act on.
    pub reason: &'static str,
    /// The whole error line, when the server's own wording is kept (an
    /// unknown Redis command is answered as redis-server answers it).
    pub message: Option<String>,
}

impl Refusal {
    pub(crate) fn new(command: &str, reason: &'static str) -> Self {
        Self {
            command: command.to_string(),
            reason,
            message: None,
        }
    }

    pub(crate) fn unknown(command: &str) -> Self {
        Self::new(command, policy::reason::UNKNOWN)
    }

    /// An unknown Redis command or subcommand, answered in the server's
    /// words ([`table::unknown_error`](crate::table::unknown_error)).
    pub(crate) fn unknown_redis(args: &[impl AsRef<[u8]>]) -> Self {
        let name = args.first().map_or(&b""[..], |a| a.as_ref());
        Self {
            message: Some(crate::table::unknown_error(args)),
            ..Self::unknown(&String::from_utf8_lossy(name))
        }
    }

    /// A memcached line memcached itself would reject
    /// ([`McRequest::Invalid`](crate::memcached::McRequest::Invalid)).
    pub(crate) fn bad_memcached_line(error: &str) -> Self {
        Self {
            message: Some(format!("bad command line format: {error}")),
            ..Self::new("invalid", policy::reason::MALFORMED)
        }
    }

    /// The RESP error for the client, e.g. `-ERR mu-sidecar refuses 'spop': ...`.
    pub fn to_frame(&self) -> Frame {
        if let Some(message) = &self.message {
            return Frame::error(message);
        }
        Frame::error(format!(
            "ERR mu-sidecar refuses '{}': {}",
            self.command.replace('|', " "),
            self.reason
        ))
    }

    /// The memcached error line for the client (`ERROR` for unknown
    /// commands, as memcached itself answers).
    pub fn to_memcached(&self) -> crate::memcached::McReply {
        if let Some(message) = &self.message {
            return crate::memcached::McReply::ClientError(bytes::Bytes::from(message.clone()));
        }
        if self.reason == policy::reason::UNKNOWN {
            return crate::memcached::McReply::Error(bytes::Bytes::new());
        }
        crate::memcached::McReply::ClientError(bytes::Bytes::from(format!(
            "mu-sidecar refuses '{}': {}",
            self.command, self.reason
        )))
    }
}
