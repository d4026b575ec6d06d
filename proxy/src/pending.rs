//! Clients waiting for their writes to be applied, by request tag.
//!
//! A write is registered *before* it is proposed, so the applier can never
//! apply it before its waiter exists; the applier completes the waiter
//! when it applies the entry carrying the tag, whichever leader committed
//! it and whenever. A write proposed to the local replica is also settled
//! here when its proposal fails; its commit only marks it, so its client
//! wakes once.

use mu_protocols::memcached::McReply;
use mu_protocols::resp::Frame;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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

/// How a local write ended, as its waiter learns it: one wake-up per
/// write, whether it was applied or its proposal failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Applied by this node's applier (so committed).
    Applied(Applied),
    /// The local replica refused or lost the proposal.
    Failed(mu::ProposeError),
}

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<Settled>,
    /// Set (without waking anyone) once the local replica committed it.
    committed: bool,
}

/// Hashes a tag with one multiplication: tags are this process's own
/// counter, so they need spreading, not SipHash's protection against
/// chosen keys (a write's tag is looked up two or three times).
#[derive(Default)]
struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, tag: u64) {
        self.0 = tag.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type Waiters = HashMap<u64, Waiter, BuildHasherDefault<TagHasher>>;

/// The waiters of one sidecar process.
#[derive(Debug)]
pub struct Pending {
    waiters: Mutex<Waiters>,
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
            waiters: Mutex::new(Waiters::default()),
            next: AtomicU64::new(rand::random::<u64>() >> 1),
        }
    }

    /// `n` fresh tags (one per write of a run), each with the receiver its
    /// outcome will arrive on; one lock for all.
    pub fn register_run(&self, n: usize) -> Vec<(u64, oneshot::Receiver<Settled>)> {
        let first = self.next.fetch_add(n as u64, Ordering::Relaxed);
        let mut waiters = self.lock();
        (first..first + n as u64)
            .map(|tag| {
                let (tx, rx) = oneshot::channel();
                waiters.insert(
                    tag,
                    Waiter {
                        tx,
                        committed: false,
                    },
                );
                (tag, rx)
            })
            .collect()
    }

    /// A new receiver for `tag` (after a failed proposal of it is proposed
    /// again, or to go on waiting for a write of unknown fate).
    pub fn wait_again(&self, tag: u64) -> oneshot::Receiver<Settled> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            tag,
            Waiter {
                tx,
                committed: false,
            },
        );
        rx
    }

    /// Hands `applied` to the waiter of `tag`, if it still waits.
    pub fn complete(&self, tag: u64, applied: Applied) {
        if let Some(w) = self.lock().remove(&tag) {
            let _ = w.tx.send(Settled::Applied(applied));
        }
    }

    /// [`Pending::complete`] for several writes, under one lock.
    pub fn complete_all(&self, applied: impl IntoIterator<Item = (u64, Applied)>) {
        let mut waiters = self.lock();
        for (tag, a) in applied {
            if let Some(w) = waiters.remove(&tag) {
                let _ = w.tx.send(Settled::Applied(a));
            }
        }
    }

    /// Tells the waiter of `tag` that its proposal failed.
    pub fn fail(&self, tag: u64, error: mu::ProposeError) {
        if let Some(w) = self.lock().remove(&tag) {
            let _ = w.tx.send(Settled::Failed(error));
        }
    }

    /// Notes that the local replica committed `tag`'s proposal; the
    /// waiter is not woken (the applier will complete it).
    pub fn mark_committed(&self, tags: impl IntoIterator<Item = u64>) {
        let mut w = self.lock();
        for tag in tags {
            if let Some(w) = w.get_mut(&tag) {
                w.committed = true;
            }
        }
    }

    /// True once the local replica committed `tag`'s proposal (and the
    /// waiter still waits for the applier).
    pub fn committed(&self, tag: u64) -> bool {
        self.lock().get(&tag).is_some_and(|w| w.committed)
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_gets_distinct_tags_and_each_waiter_its_own_outcome() {
        let p = Pending::new();
        let run = p.register_run(3);
        let more = p.register_run(1);
        let mut tags: Vec<u64> = run.iter().chain(&more).map(|(t, _)| *t).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 4, "tags repeat: {tags:?}");
        let [(a, mut ra), (b, mut rb), (c, mut rc)]: [_; 3] = run.try_into().unwrap();
        p.complete_all([(c, Applied::Barrier), (a, Applied::NotApplied("a".into()))]);
        assert_eq!(
            ra.try_recv(),
            Ok(Settled::Applied(Applied::NotApplied("a".into())))
        );
        assert_eq!(rc.try_recv(), Ok(Settled::Applied(Applied::Barrier)));
        assert!(rb.try_recv().is_err(), "b was not applied yet");
        p.complete(b, Applied::Barrier);
        assert_eq!(rb.try_recv(), Ok(Settled::Applied(Applied::Barrier)));
    }
}
