//! The write path: propose (here, or at the leader through the peer port),
//! wait for the local applier, and say exactly what is known when that
//! fails.
//!
//! One client's pipelined writes form a *run*: they are handed to Mu in
//! order and their outcomes awaited in order. A write that was definitely
//! not committed (no leader, leader changing, wrong node) is retried until
//! the write deadline, but only together with every later write of its run
//! that also failed: if a later write of the same connection already went
//! through, the failed one is answered TRYAGAIN instead, so retries never
//! reorder a client's writes. A write whose fate is unknown (its leader
//! went silent after receiving it) is never proposed again; its client
//! still gets the reply if the entry commits before the deadline.

use crate::forward::ForwardError;
use crate::metrics::Tally;
use crate::payload::{self, Header, Kind};
use crate::pending::{Applied, Settled};
use crate::state::Shared;
use bytes::Bytes;
use mu::{NodeId, ProposeError};
use mu_protocols::entry::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// Why a write has no reply from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Not applied anywhere: the client may retry.
    TryAgain(String),
    /// May or may not have been applied: the client must check first.
    Unknown(String),
    /// Will never be applied (e.g. too large).
    Refused(String),
    /// Committed (so applied on the other replicas), but this node could
    /// not apply it.
    NotApplied(String),
}

impl WriteError {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            WriteError::TryAgain(_) => "tryagain",
            WriteError::Unknown(_) => "unknown",
            WriteError::Refused(_) => "refused",
            WriteError::NotApplied(_) => "not_applied",
        }
    }

    /// The RESP error for the client.
    pub fn redis_error(&self) -> String {
        match self {
            WriteError::TryAgain(m) => format!("TRYAGAIN mu-sidecar: {m}; nothing was written"),
            WriteError::Unknown(m) => format!(
                "ERR mu-sidecar: outcome unknown ({m}); the write may have been applied, \
                 check before retrying"
            ),
            WriteError::Refused(m) => format!("ERR mu-sidecar refuses the write: {m}"),
            WriteError::NotApplied(m) => format!("ERR mu-sidecar: {m}"),
        }
    }

    /// The memcached error line (after `SERVER_ERROR `).
    pub fn memcached_error(&self) -> String {
        match self {
            WriteError::TryAgain(m) => format!("mu-sidecar: {m}; nothing was written, retry"),
            WriteError::Unknown(m) => {
                format!("mu-sidecar: outcome unknown ({m}); the write may have been applied")
            }
            WriteError::Refused(m) => format!("mu-sidecar refuses the write: {m}"),
            WriteError::NotApplied(m) => format!("mu-sidecar: {m}"),
        }
    }
}

/// One write of a run, from registration to its reply.
struct Write {
    tag: u64,
    /// Its waiter in [`crate::pending::Pending`]; `None` once settled.
    reply: Option<oneshot::Receiver<Settled>>,
    /// Encoded once; each attempt hands the replica a reference to it.
    payload: Bytes,
}

/// How one attempt to propose ended.
enum Attempt {
    /// Applied locally: the write's outcome.
    Applied(Result<Applied, WriteError>),
    /// Committed; the local applier has yet to apply it.
    Committed,
    /// Definitely not committed; may be retried.
    Retry(String, Option<NodeId>),
    /// Definitely not committed; must not be retried.
    Fail(WriteError),
    /// Perhaps committed.
    Uncertain(String),
}

enum Started {
    /// Forwarded to the leader's sidecar, which sends the outcome.
    Forwarded(oneshot::Receiver<Result<u64, ProposeError>>),
    /// Proposed to the local replica: settled in `Pending`.
    Local,
    Done(Attempt),
}

/// Replicates the entries of one run (each a `mu-protocols` entry, or
/// `None` for a read barrier) and returns each one's outcome, in order.
pub async fn run(shared: &Shared, entries: Vec<Option<Entry>>) -> Vec<Result<Applied, WriteError>> {
    let started = Instant::now();
    let deadline = started + shared.opts.write_deadline();
    let n = entries.len();
    let mut results: Vec<Option<Result<Applied, WriteError>>> = vec![None; n];
    let mut writes = Vec::with_capacity(n);
    let registered = shared.pending.register_run(n);
    for (i, (entry, (tag, reply))) in entries.into_iter().zip(registered).enumerate() {
        if shared.stopping.load(Ordering::Acquire) {
            results[i] = Some(Err(WriteError::TryAgain(
                "this sidecar is shutting down".into(),
            )));
        }
        let header = Header {
            origin: shared.opts.id,
            kind: if entry.is_some() {
                Kind::Write
            } else {
                Kind::Barrier
            },
            tag,
        };
        let payload = Bytes::from(payload::encode_entry(header, entry.as_ref()));
        if payload.len() > shared.opts.max_entry as usize {
            results[i] = Some(Err(WriteError::Refused(format!(
                "the write needs {} bytes, over the limit of {} (--max-entry)",
                payload.len(),
                shared.opts.max_entry
            ))));
        }
        writes.push(Write {
            tag,
            reply: Some(reply),
            payload,
        });
    }
    // Indices still to propose, always in client order.
    let mut todo: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
    let mut hint: Option<NodeId> = None;
    let mut last_reason = String::from("no leader");
    // One timer for the whole run: its writes share the deadline.
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    let me = NodeId(shared.opts.id - 1);
    while !todo.is_empty() {
        let target = hint.or_else(|| shared.status().and_then(|s| s.leader));
        let mut started_attempts = Vec::with_capacity(todo.len());
        for &i in &todo {
            let (tag, payload) = (writes[i].tag, &writes[i].payload);
            started_attempts.push(match target {
                Some(t) if t != me => start_forward(shared, t, payload).await,
                // This node leads, or it does not know who does: its
                // replica answers (and names the leader if it knows).
                _ => start_local(shared, tag, payload),
            });
        }
        let mut attempts = Vec::with_capacity(todo.len());
        for (s, &i) in started_attempts.into_iter().zip(&todo) {
            let w = &mut writes[i];
            attempts.push(match s {
                Started::Done(a) => a,
                Started::Local => finish_local(shared, w, expiry.as_mut()).await,
                Started::Forwarded(rx) => finish_forwarded(rx, expiry.as_mut()).await,
            });
        }
        let first_retry = attempts
            .iter()
            .position(|a| matches!(a, Attempt::Retry(..)));
        let suffix_retry = first_retry.is_some_and(|f| {
            attempts[f..]
                .iter()
                .all(|a| matches!(a, Attempt::Retry(..)))
        });
        let mut next = Vec::new();
        let mut new_hint = None;
        for (k, a) in attempts.into_iter().enumerate() {
            let i = todo[k];
            match a {
                Attempt::Applied(r) => results[i] = Some(r),
                Attempt::Committed => {
                    results[i] = Some(await_apply(shared, &mut writes[i], None, deadline).await)
                }
                Attempt::Uncertain(why) => {
                    results[i] =
                        Some(await_apply(shared, &mut writes[i], Some(why), deadline).await)
                }
                Attempt::Fail(e) => results[i] = Some(Err(e)),
                Attempt::Retry(why, leader) if suffix_retry => {
                    if writes[i].reply.is_none() {
                        // Settled as failed: wait again for the retry.
                        writes[i].reply = Some(shared.pending.wait_again(writes[i].tag));
                    }
                    last_reason = why;
                    new_hint = new_hint.or(leader);
                    next.push(i);
                }
                Attempt::Retry(why, _) => {
                    results[i] = Some(Err(WriteError::TryAgain(format!(
                        "{why}; a later write of this connection already went through, \
                         so this one is not retried out of order"
                    ))))
                }
            }
        }
        todo = next;
        if todo.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for &i in &todo {
                results[i] = Some(Err(WriteError::TryAgain(format!(
                    "no leader accepted the write within {:?} ({last_reason})",
                    shared.opts.write_deadline()
                ))));
            }
            break;
        }
        // A fresh hint names the new leader: go there at once. Otherwise
        // wait a little for the group to elect one.
        if new_hint.is_none() || new_hint == target {
            tokio::time::sleep(Duration::from_micros(500)).await;
            hint = None;
        } else {
            hint = new_hint;
        }
    }
    let elapsed = started.elapsed();
    let mut tally = Tally::default();
    let mut out = Vec::with_capacity(n);
    let mut ok = 0;
    for (w, r) in writes.iter().zip(results) {
        let r = r.unwrap_or_else(|| Err(WriteError::TryAgain("not proposed".into())));
        if r.is_err() {
            shared.pending.cancel(w.tag);
        }
        let label = match &r {
            Ok(_) => {
                ok += 1;
                shared
                    .metrics
                    .replication_latency
                    .observe(elapsed.as_secs_f64());
                "ok"
            }
            Err(e) => e.label(),
        };
        tally.add([label]);
        out.push(r);
    }
    // Every write of the run was answered at the same moment.
    shared
        .metrics
        .latency_samples
        .record_n(elapsed.as_nanos() as u64, ok);
    tally.add_to(&shared.metrics.write_outcomes);
    out
}

/// Hands the payload to the leader's sidecar.
async fn start_forward(shared: &Shared, leader: NodeId, payload: &[u8]) -> Started {
    match shared.forward.send(leader, payload).await {
        Ok(rx) => {
            shared.metrics.forwarded.with_label_values(&["sent"]).inc();
            Started::Forwarded(rx)
        }
        Err(ForwardError::NotSent(why)) => {
            shared
                .metrics
                .forwarded
                .with_label_values(&["unreachable"])
                .inc();
            Started::Done(Attempt::Retry(why, None))
        }
    }
}

/// Hands the payload to the local replica.
fn start_local(shared: &Shared, tag: u64, payload: &Bytes) -> Started {
    if shared.proposer.submit_local(payload.clone(), tag) {
        Started::Local
    } else {
        Started::Done(Attempt::Retry("this sidecar is stopping".into(), None))
    }
}

/// `f`'s output, or `Err(())` once `expiry` (the run's deadline) passed.
async fn before<F: Future>(expiry: Pin<&mut Sleep>, f: F) -> Result<F::Output, ()> {
    tokio::select! {
        biased;
        out = f => Ok(out),
        () = expiry => Err(()),
    }
}

/// Waits for the outcome the leader's sidecar relays.
async fn finish_forwarded(
    rx: oneshot::Receiver<Result<u64, ProposeError>>,
    expiry: Pin<&mut Sleep>,
) -> Attempt {
    match before(expiry, rx).await {
        Ok(Ok(outcome)) => classify(outcome),
        Ok(Err(_)) => {
            Attempt::Uncertain("the leader's sidecar went away after receiving it".into())
        }
        Err(()) => Attempt::Uncertain("no outcome before the write deadline".into()),
    }
}

/// Waits for a locally proposed write: one wake-up, when the applier
/// applied it or the proposal failed.
async fn finish_local(shared: &Shared, w: &mut Write, expiry: Pin<&mut Sleep>) -> Attempt {
    let Some(rx) = w.reply.as_mut() else {
        return Attempt::Uncertain("awaited twice".into());
    };
    let settled = before(expiry, rx).await;
    match settled {
        Ok(Ok(Settled::Applied(a))) => {
            w.reply = None;
            Attempt::Applied(applied_result(a))
        }
        Ok(Ok(Settled::Failed(ProposeError::Unknown))) => {
            // It may still commit (through another leader): go on waiting.
            w.reply = Some(shared.pending.wait_again(w.tag));
            Attempt::Uncertain("the replica stopped".into())
        }
        Ok(Ok(Settled::Failed(e))) => {
            w.reply = None;
            classify(Err(e))
        }
        Ok(Err(_)) => Attempt::Uncertain("the sidecar is stopping".into()),
        // Committed but not applied yet: the applier gets its own grace.
        Err(()) if shared.pending.committed(w.tag) => Attempt::Committed,
        Err(()) => Attempt::Uncertain("no outcome before the write deadline".into()),
    }
}

/// What the applier's outcome means for the client.
fn applied_result(a: Applied) -> Result<Applied, WriteError> {
    match a {
        Applied::NotApplied(why) => Err(WriteError::NotApplied(why)),
        a => Ok(a),
    }
}

/// What a proposal's outcome means for the write.
fn classify(outcome: Result<u64, ProposeError>) -> Attempt {
    match outcome {
        Ok(_) => Attempt::Committed,
        Err(ProposeError::NotLeader { leader }) => Attempt::Retry(
            format!(
                "not the leader (leader: {})",
                leader.map_or("unknown".into(), |l| (l.0 + 1).to_string())
            ),
            leader,
        ),
        Err(ProposeError::LeaderChanging) => {
            Attempt::Retry("leader change in progress".into(), None)
        }
        Err(ProposeError::LogFull { .. }) => Attempt::Retry("the log is full".into(), None),
        Err(ProposeError::Superseded) => {
            Attempt::Retry("a leader change replaced the proposal".into(), None)
        }
        Err(ProposeError::NeedsStateTransfer) => {
            Attempt::Retry("the replica needs a state transfer".into(), None)
        }
        Err(ProposeError::TooLarge { len, max }) => Attempt::Fail(WriteError::Refused(format!(
            "the write needs {len} bytes, over the log's entry limit of {max}"
        ))),
        Err(ProposeError::Unknown) => Attempt::Uncertain("the replica stopped".into()),
    }
}

/// Waits until the local applier applied the write (committed) or, for an
/// uncertain one, until the deadline.
async fn await_apply(
    shared: &Shared,
    w: &mut Write,
    uncertain: Option<String>,
    deadline: Instant,
) -> Result<Applied, WriteError> {
    let Some(rx) = w.reply.take() else {
        return Err(WriteError::Unknown("awaited twice".into()));
    };
    // A committed write is applied within microseconds unless the backend
    // is away; give it at least a few seconds of its own.
    let limit = if uncertain.is_some() {
        deadline
    } else {
        deadline.max(Instant::now() + Duration::from_secs(5))
    };
    match tokio::time::timeout_at(limit, rx).await {
        Ok(Ok(Settled::Applied(a))) => applied_result(a),
        _ => match uncertain {
            Some(why) => Err(WriteError::Unknown(why)),
            None => Err(WriteError::NotApplied(format!(
                "the write is committed (the other replicas apply it) but this node's \
                 backend has not applied it yet (backend {}: {})",
                shared.backend.state().name(),
                shared.backend.detail()
            ))),
        },
    }
}
