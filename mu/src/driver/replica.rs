//! The production driver: one busy-polling thread per replica.
//!
//! The thread loops: poll the fabric for completions and feed them to the
//! core, tick the core, hand it queued proposals, execute its actions, and
//! pass committed entries to the application in log order. Nothing on this
//! loop blocks; with `idle_sleep` set the thread naps only after a run of
//! empty iterations (useful when replicas share cores, e.g. in tests), and
//! a proposal wakes it from the nap at once. A driver that took a
//! proposal recently polls on for `busy_poll`, so the leader of a loaded
//! group pays no wake-ups while its followers, which take no proposals,
//! keep napping.

use crate::config::Config;
use crate::core::{Core, RoleKind, SnapshotPoint, Status};
use crate::driver::execute;
use crate::error::{ConfigError, ProposeError};
use crate::fabric::{Completion, Fabric};
use crate::types::EntryId;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A committed entry, in log order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// Log index.
    pub index: u64,
    /// Identity of the proposed value.
    pub id: EntryId,
    /// The payload.
    pub payload: Vec<u8>,
    /// The replica's applied point once this entry is applied: what a
    /// state transfer taken right after it hands to the receiver.
    pub point: SnapshotPoint,
}

/// Driver settings.
#[derive(Clone, Copy, Debug)]
pub struct DriverOptions {
    /// Nap this long after `idle_spins` idle iterations; `None` spins
    /// forever (lowest latency, one core per replica). A proposal ends a
    /// nap at once; the fabric's traffic waits for the nap's end.
    pub idle_sleep: Option<Duration>,
    /// Idle iterations before a nap.
    pub idle_spins: u32,
    /// After taking a proposal the driver polls without napping for this
    /// long: under load the next proposal comes before it ends, and it
    /// finds the driver awake instead of paying a wake-up. Followers,
    /// which take no proposals, keep napping.
    pub busy_poll: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            idle_sleep: None,
            idle_spins: 1_000,
            busy_poll: Duration::ZERO,
        }
    }
}

/// Where a proposal's outcome goes: a waiting thread or a callback.
enum Reply {
    Wait(SyncSender<Result<u64, ProposeError>>),
    Call(Box<dyn FnOnce(Result<u64, ProposeError>) + Send>),
}

impl Reply {
    fn send(self, outcome: Result<u64, ProposeError>) {
        match self {
            Reply::Wait(tx) => {
                let _ = tx.try_send(outcome);
            }
            Reply::Call(f) => f(outcome),
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reply::Wait(_) => "Reply::Wait",
            Reply::Call(_) => "Reply::Call",
        })
    }
}

/// Called on the driver thread when the published role or leader changes.
type OnChange = Box<dyn Fn() + Send + Sync>;

struct Shared {
    requests: Mutex<VecDeque<(Vec<u8>, Reply, bool)>>,
    status: Mutex<Option<Status>>,
    on_change: std::sync::OnceLock<OnChange>,
    stop: AtomicBool,
    paused: AtomicBool,
    install: Mutex<Option<SnapshotPoint>>,
    /// Where the driver naps; a proposal wakes it.
    doze: Doze,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("status", &self.status)
            .field("on_change", &self.on_change.get().is_some())
            .field("stop", &self.stop)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

/// A nap that another thread can end early.
#[derive(Debug, Default)]
struct Doze {
    /// Set while the sleeper naps (or is about to).
    napping: AtomicBool,
    /// The sleeping thread, set once by that thread.
    sleeper: std::sync::OnceLock<std::thread::Thread>,
}

impl Doze {
    /// Naps for up to `nap` unless `work_waiting` says there is something
    /// to do; returns at once when [`Doze::wake`] is called meanwhile.
    /// Called by one thread only.
    fn nap(&self, nap: Duration, work_waiting: impl FnOnce() -> bool) {
        self.sleeper.get_or_init(std::thread::current);
        self.napping.store(true, Ordering::SeqCst);
        // After the flag: work queued before this check is seen here, work
        // queued after it sees the flag and wakes the sleeper.
        if !work_waiting() {
            std::thread::park_timeout(nap);
        }
        self.napping.store(false, Ordering::SeqCst);
    }

    /// Ends the sleeper's nap, if it naps; call after queueing its work.
    fn wake(&self) {
        if self.napping.load(Ordering::SeqCst) {
            if let Some(t) = self.sleeper.get() {
                t.unpark();
            }
        }
    }
}

/// A running replica: its driver thread and the handle to talk to it.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Waiter {
    index: u64,
    id: EntryId,
    reply: Reply,
}

impl Replica {
    /// Starts the driver thread on `fabric`. Committed entries arrive on the
    /// returned receiver, in log order, on every replica.
    pub fn start<F>(
        cfg: Config,
        fabric: F,
        options: DriverOptions,
    ) -> Result<(Replica, Receiver<Committed>), ConfigError>
    where
        F: Fabric + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let replica = Replica::start_with(cfg, fabric, options, move |c| {
            let _ = tx.send(c);
        })?;
        Ok((replica, rx))
    }

    /// [`Replica::start`] handing each committed entry, in log order, to
    /// `deliver` on the driver thread (which must not block), e.g. to
    /// wake an asynchronous task directly.
    pub fn start_with<F, D>(
        cfg: Config,
        fabric: F,
        options: DriverOptions,
        deliver: D,
    ) -> Result<Replica, ConfigError>
    where
        F: Fabric + Send + 'static,
        D: FnMut(Committed) + Send + 'static,
    {
        cfg.validate()?;
        let shared = Arc::new(Shared {
            requests: Mutex::new(VecDeque::new()),
            status: Mutex::new(None),
            on_change: std::sync::OnceLock::new(),
            stop: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            install: Mutex::new(None),
            doze: Doze::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mu-replica-{}", cfg.id))
            .spawn(move || run(cfg, fabric, s, deliver, options))
            .map_err(|e| ConfigError {
                problems: vec![format!("cannot start the replica thread: {e}")],
            })?;
        Ok(Replica {
            shared,
            thread: Some(thread),
        })
    }

    /// Proposes `payload` and waits until it is committed (returns its
    /// index) or fails. After `timeout` the outcome is reported as
    /// [`ProposeError::Unknown`]: the entry may still commit.
    pub fn propose(&self, payload: Vec<u8>, timeout: Duration) -> Result<u64, ProposeError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.enqueue(payload, Reply::Wait(tx), true);
        rx.recv_timeout(timeout)
            .unwrap_or(Err(ProposeError::Unknown))
    }

    /// Proposes `payload` without waiting: `done` is called once, on the
    /// driver thread, with the outcome of [`Replica::propose`] (the index
    /// once committed, or the error; [`ProposeError::Unknown`] when the
    /// replica stops first). `done` must not block. Proposals are handed to
    /// the core in the order they were submitted.
    pub fn submit<F>(&self, payload: Vec<u8>, done: F)
    where
        F: FnOnce(Result<u64, ProposeError>) + Send + 'static,
    {
        self.enqueue(payload, Reply::Call(Box::new(done)), true);
    }

    /// [`Replica::submit`] for a proposal made under load (one that packs
    /// several waiting requests): batching already absorbs the wait for
    /// the driver, so after it the driver does not poll on for the next
    /// proposal (see [`DriverOptions::busy_poll`]) and leaves the core to
    /// the rest of the process's work.
    pub fn submit_loaded<F>(&self, payload: Vec<u8>, done: F)
    where
        F: FnOnce(Result<u64, ProposeError>) + Send + 'static,
    {
        self.enqueue(payload, Reply::Call(Box::new(done)), false);
    }

    fn enqueue(&self, payload: Vec<u8>, reply: Reply, poll_after: bool) {
        if self.shared.stop.load(Ordering::Acquire) {
            reply.send(Err(ProposeError::Unknown));
            return;
        }
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((payload, reply, poll_after));
        self.shared.doze.wake();
    }

    /// The latest status published by the driver thread.
    pub fn status(&self) -> Option<Status> {
        self.shared
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Has `f` called, on the driver thread, each time a status is
    /// published that names another role or leader than the status before
    /// it, so a watcher waits for changes instead of polling
    /// [`Replica::status`] (it reads the status once after setting the
    /// hook: changes before that call no hook). `f` must not block. Set
    /// once; `false` if a hook was already set.
    pub fn on_status_change(&self, f: impl Fn() + Send + Sync + 'static) -> bool {
        self.shared.on_change.set(Box::new(f)).is_ok()
    }

    /// Pauses (`true`) or resumes the replica: see [`Core::set_paused`].
    /// Pausing the leader forces a leader change.
    pub fn pause(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Release);
    }

    /// Continues from a state transfer (see [`Core::install_snapshot`]): the
    /// application loaded a donor's state at `point`, and the replica goes
    /// on from the entry after it. A point at or below what this replica
    /// already applied is ignored (the log only moves forward). Takes effect
    /// on the driver thread's next iteration; `status()` shows the result.
    pub fn install_snapshot(&self, point: SnapshotPoint) {
        *self
            .shared
            .install
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(point);
    }

    /// Stops the driver thread; waiting proposals get [`ProposeError::Unknown`].
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.doze.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Proposes `payload` on whichever replica of an in-process group leads,
/// following `NotLeader` hints and retrying through leader changes, until
/// it commits (its index) or `deadline` passes. `None` entries are replicas
/// that are not running. For tests, examples and single-process groups.
pub fn propose_to_group(
    replicas: &[Option<Replica>],
    payload: &[u8],
    deadline: Duration,
) -> Result<u64, ProposeError> {
    let step = Duration::from_secs(1).min(deadline);
    let mut spent = Duration::ZERO;
    let mut target = 0usize;
    let mut last = ProposeError::NotLeader { leader: None };
    while spent < deadline && !replicas.is_empty() {
        let Some(r) = &replicas[target % replicas.len()] else {
            target += 1;
            continue;
        };
        match r.propose(payload.to_vec(), step) {
            Ok(index) => return Ok(index),
            Err(ProposeError::NotLeader { leader: Some(l) }) if l.idx() != target => {
                target = l.idx();
            }
            Err(e) if e.is_retryable() || e == ProposeError::Unknown => {
                // Unknown: the deadline of one attempt passed; the value may
                // still commit, so a caller that must not duplicate it should
                // use `Replica::propose` and decide itself.
                last = e;
                target += 1;
                spent += Duration::from_millis(1);
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
        spent += Duration::from_micros(50);
    }
    Err(last)
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run<F: Fabric>(
    cfg: Config,
    mut fabric: F,
    shared: Arc<Shared>,
    mut deliver: impl FnMut(Committed),
    options: DriverOptions,
) {
    #[allow(clippy::disallowed_methods, reason = "the driver is where time enters")]
    let epoch = Instant::now();
    let clock = || epoch.elapsed().as_nanos() as u64 + 1;
    let Ok(mut core) = Core::new(cfg, clock(), fabric.memory()) else {
        return;
    };
    let mut completions: Vec<Completion> = Vec::with_capacity(1024);
    let mut waiters: Vec<Waiter> = Vec::new();
    let mut idle = 0u32;
    let mut next_status = 0u64;
    // The role and leader of the last status published.
    let mut published = None;
    let busy_poll = options.busy_poll.as_nanos() as u64;
    // Polled (no nap) until then: a proposal was taken shortly before.
    let mut poll_until = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let now = clock();
        let paused = shared.paused.load(Ordering::Acquire);
        if paused != core.paused() {
            core.set_paused(paused);
        }
        let mut busy = fabric.poll(&mut completions) > 0;
        for c in completions.drain(..) {
            core.on_completion(now, c, fabric.memory());
        }
        core.tick(now, fabric.memory());
        if let Ok(mut q) = shared.requests.try_lock() {
            while let Some((payload, reply, poll_after)) = q.pop_front() {
                busy = true;
                poll_until = if poll_after { now + busy_poll } else { 0 };
                match core.propose(now, &payload, fabric.memory()) {
                    Ok(p) => waiters.push(Waiter {
                        index: p.index,
                        id: p.id,
                        reply,
                    }),
                    Err(e) => reply.send(Err(e)),
                }
            }
        }
        busy |= core.has_actions() || core.has_deliveries();
        execute(&mut core, &mut fabric);
        core.drain_deliveries(|d| {
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].index != d.index {
                    i += 1;
                    continue;
                }
                let w = waiters.swap_remove(i);
                w.reply.send(if w.id == d.id {
                    Ok(d.index)
                } else {
                    Err(ProposeError::Superseded)
                });
            }
            deliver(Committed {
                index: d.index,
                id: d.id,
                payload: d.payload.to_vec(),
                point: SnapshotPoint {
                    applied: d.index,
                    hash: d.hash,
                    apply_pos: d.next_pos,
                },
            });
        });
        let install = shared.install.try_lock().ok().and_then(|mut i| i.take());
        if let Some(point) = install {
            if point.applied > core.snapshot_point().applied {
                core.install_snapshot(point);
                // Entries up to the point will not be delivered here: their
                // proposers learn nothing more from this replica (the entry
                // may have committed elsewhere).
                let (skipped, rest): (Vec<Waiter>, Vec<Waiter>) =
                    waiters.drain(..).partition(|w| w.index <= point.applied);
                waiters = rest;
                for w in skipped {
                    w.reply.send(Err(ProposeError::Unknown));
                }
                execute(&mut core, &mut fabric);
                // Published at once: the application waits for it.
                next_status = now;
            }
        }
        if now >= next_status {
            next_status = now + 200_000;
            let status = core.status();
            let seen = Some((status.role, status.leader));
            *shared.status.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            if seen != published {
                published = seen;
                if let Some(f) = shared.on_change.get() {
                    f();
                }
            }
        }
        // Proposals waiting for their commit keep the driver awake: the
        // completions that commit them (from a fabric thread, or a peer)
        // do not end a nap. So do a recent proposal (the next one is
        // likely near) and an election in progress (its steps are fabric
        // completions too).
        let progress = busy;
        busy |= !waiters.is_empty() || now < poll_until || core.role() == RoleKind::Candidate;
        idle = if busy { 0 } else { idle + 1 };
        if !progress && !waiters.is_empty() {
            // Awake only to wait: let the threads this core also runs go
            // first (the client, the backend, the sidecar's event loop).
            std::thread::yield_now();
        }
        if let Some(nap) = options.idle_sleep {
            if idle >= options.idle_spins {
                shared.doze.nap(nap, || {
                    shared.stop.load(Ordering::SeqCst)
                        || !shared
                            .requests
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_empty()
                });
            }
        }
    }
    for w in waiters {
        w.reply.send(Err(ProposeError::Unknown));
    }
    let queued: Vec<_> = shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for (_, reply, _) in queued {
        reply.send(Err(ProposeError::Unknown));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nap far longer than the test ends as soon as work is queued and
    /// the sleeper woken, whenever that happens relative to the nap.
    #[test]
    fn wake_ends_a_nap_for_queued_work() {
        let doze = Arc::new(Doze::default());
        let work = Arc::new(Mutex::new(0u32));
        let (done_tx, done_rx) = mpsc::channel();
        let (d, w) = (doze.clone(), work.clone());
        let sleeper = std::thread::Builder::new()
            .name("doze-test".into())
            .spawn(move || {
                let mut seen = 0;
                while seen < 100 {
                    d.nap(Duration::from_secs(3600), || *w.lock().unwrap() > seen);
                    let now = *w.lock().unwrap();
                    if now > seen {
                        seen = now;
                        let _ = done_tx.send(seen);
                    }
                }
            })
            .expect("spawns");
        for i in 1..=100 {
            *work.lock().unwrap() = i;
            doze.wake();
            let got = done_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the sleeper woke for the queued work");
            assert_eq!(got, i);
        }
        sleeper.join().expect("the sleeper ends");
    }
}
