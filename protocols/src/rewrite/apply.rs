//! Turning committed Redis entries into backend requests, on every replica.

use bytes::{Bytes, BytesMut};

use super::WatchTracker;
use crate::entry::RedisEntry;
use crate::resp::encode_request;

/// What applying one entry sends and which reply is the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyPlan {
    /// The bytes appended to the output produce `replies` replies; the
    /// client's answer is the one at `client_reply` (0-based); the others
    /// (`SELECT`, `MULTI`, `+QUEUED`) are checked for errors and dropped.
    Send {
        /// Number of replies the backend will send.
        replies: usize,
        /// Index of the reply that answers the client.
        client_reply: usize,
    },
    /// A WATCH guard fired: nothing is sent; answer the client with a null
    /// array (`*-1`), as Redis does for an aborted EXEC.
    Aborted,
}

/// Applies Redis entries in log order over one backend connection,
/// tracking its selected database and the WATCH state.
#[derive(Debug, Default)]
pub struct RedisApplier {
    /// The connection's database; `None` when unknown (start, or after a
    /// transaction that contained SELECT).
    db: Option<u32>,
    tracker: WatchTracker,
}

impl RedisApplier {
    /// An applier whose WATCH tracker has `watch_buckets` buckets.
    pub fn new(watch_buckets: usize) -> Self {
        Self {
            db: None,
            tracker: WatchTracker::new(watch_buckets),
        }
    }

    /// Forgets the connection's selected database: call after reconnecting
    /// (the WATCH history is kept, it belongs to the log, not the
    /// connection).
    pub fn forget_connection(&mut self) {
        self.db = None;
    }

    /// The WATCH history, for a replica that continues from this point
    /// after a state transfer.
    pub fn watch_state(&self) -> Vec<u8> {
        self.tracker.to_bytes()
    }

    /// Continues from a donor's [`RedisApplier::watch_state`]; the
    /// connection's database is forgotten.
    pub fn restore_watch_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.tracker =
            WatchTracker::from_bytes(state).ok_or("the donor's WATCH history does not decode")?;
        self.db = None;
        Ok(())
    }

    /// Appends the backend requests for the entry at log `index` to `out`.
    /// Must be called for every committed Redis entry, in log order.
    pub fn apply(&mut self, index: u64, entry: &RedisEntry, out: &mut BytesMut) -> ApplyPlan {
        if entry.transaction && self.tracker.conflicts(&entry.guards) {
            return ApplyPlan::Aborted;
        }
        self.tracker.record(index, entry);
        let mut replies = 0;
        if self.db != Some(entry.db) {
            encode_request(
                &[
                    Bytes::from_static(b"SELECT"),
                    Bytes::from(entry.db.to_string()),
                ],
                out,
            );
            replies += 1;
        }
        self.db = Some(entry.db);
        if entry.transaction {
            encode_request(&[&b"MULTI"[..]], out);
            replies += 1;
        }
        for cmd in &entry.commands {
            encode_request(cmd, out);
            replies += 1;
            if cmd
                .first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"select"))
            {
                self.db = None;
            }
        }
        if entry.transaction {
            encode_request(&[&b"EXEC"[..]], out);
            replies += 1;
        }
        ApplyPlan::Send {
            replies,
            client_reply: replies - 1,
        }
    }
}
