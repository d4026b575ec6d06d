//! Clients waiting for their writes to be applied, by request tag.
//!
//! A write is registered *before* it is proposed, so the applier can never
//! apply it before its waiter exists; the applier completes the waiter
//! when it applies the entry carrying the tag, whichever leader committed
//! it and whenever.

use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::oneshot;

/// What applying an entry produced for the client that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Redis: the backend's reply.
    Redis(Frame),
    /// memcached: the backend's reply, or `None` when the request asked for
    /// none (`noreply`, or a quiet meta command that succeeded).
    Memcached(Option<McReply>),
    /// A read barrier was reached: the local backend holds every write
    /// committed before it.
    Barrier,
    /// The entry committed but could not be applied here (the backend is
    /// gone or out of step); the message says why.
    NotApplied(String),
}

/// The waiters of one sidecar process.
#[derive(Debug)]
pub struct Pending {
    waiters: Mutex<HashMap<u64, oneshot::Sender<Applied>>>,
    next: AtomicU64,
}

impl Default for Pending {
    fn default() -> Self {
        Self::new()
    }
}

impl Pending {
    /// An empty table whose tags start at a random point, so the tags of a
    /// restarted sidecar do not collide with those its previous life left
    /// in the log.
    pub fn new() -> Self {
        Pending {
            waiters: Mutex::new(HashMap::new()),
            next: AtomicU64::new(rand::random::<u64>() >> 1),
        }
    }

    /// A fresh tag and the receiver its outcome will arrive on.
    pub fn register(&self) -> (u64, oneshot::Receiver<Applied>) {
        let tag = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(tag, tx);
        (tag, rx)
    }

    /// Hands `applied` to the waiter of `tag`, if it still waits.
    pub fn complete(&self, tag: u64, applied: Applied) {
        if let Some(tx) = self.lock().remove(&tag) {
            let _ = tx.send(applied);
        }
    }

    /// Forgets the waiter of `tag` (its client gave up).
    pub fn cancel(&self, tag: u64) {
        self.lock().remove(&tag);
    }

    /// Writes still waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Applied>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}
