//! Hands proposals to the replica, packing those that wait at the same
//! moment into one batch entry.
//!
//! Under load many clients' writes (and writes forwarded by followers)
//! arrive while the replica is busy; one log entry for all of them costs
//! one write per follower instead of one per request. A lone proposal goes
//! as it is, so an idle group pays nothing for batching; after it the
//! replica's driver polls for the next one, while after a batch it does
//! not (under load the next batch forms while the driver naps). Proposals keep
//! their arrival order, inside a batch and across batches.
//!
//! A local client's write is not woken when it commits: the applier's
//! reply is what it waits for, so a commit only marks it in [`Pending`]
//! and a failure settles it there. Writes forwarded by a follower get
//! their outcome on a channel, to relay it.

use crate::payload::{self, MEMBER_OVERHEAD};
use crate::pending::Pending;
use bytes::Bytes;
use mu::{ProposeError, Replica};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Outcome = Result<u64, ProposeError>;
type Item = (Bytes, Done);

/// Where a proposal's outcome goes.
#[derive(Debug)]
enum Done {
    /// A forwarded write: the outcome is relayed to its sidecar.
    Relay(oneshot::Sender<Outcome>),
    /// A local write, by its tag in [`Pending`].
    Local(u64),
}

impl Done {
    fn local(&self) -> Option<u64> {
        match self {
            Done::Local(tag) => Some(*tag),
            Done::Relay(_) => None,
        }
    }
}

/// Settles the proposals of one entry (on the replica's thread): a commit
/// marks the local ones under one lock of the pending table.
fn settle<W>(waiters: W, pending: &Pending, outcome: &Outcome)
where
    W: IntoIterator<Item = Done>,
    for<'a> &'a W: IntoIterator<Item = &'a Done>,
{
    if outcome.is_ok() {
        pending.mark_committed((&waiters).into_iter().filter_map(Done::local));
    }
    for w in waiters {
        match (w, outcome) {
            (Done::Relay(tx), _) => {
                let _ = tx.send(outcome.clone());
            }
            (Done::Local(_), Ok(_)) => {}
            (Done::Local(tag), Err(e)) => pending.fail(tag, e.clone()),
        }
    }
}

/// The batching front of a replica.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Item>,
}

impl Proposer {
    /// Starts the batching task (on the current tokio runtime); batches
    /// stay within `max` bytes, the replica's largest payload. Local
    /// writes are settled in `pending`.
    pub fn start(replica: Arc<Replica>, max: usize, pending: Arc<Pending>) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(replica, rx, max, pending));
        Proposer { tx }
    }

    /// Proposes `payload`; the receiver gets the outcome (the entry's index
    /// once committed), or is dropped if the sidecar is stopping.
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((Bytes::from(payload), Done::Relay(tx)));
        rx
    }

    /// Proposes a local write registered in [`Pending`] under `tag`: a
    /// commit marks it there, a failure settles it there. Returns false if
    /// the sidecar is stopping (nothing was proposed).
    pub fn submit_local(&self, payload: Bytes, tag: u64) -> bool {
        self.tx.send((payload, Done::Local(tag))).is_ok()
    }
}

async fn run(
    replica: Arc<Replica>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    max: usize,
    pending: Arc<Pending>,
) {
    let mut carry: Option<Item> = None;
    let mut loaded = false;
    loop {
        let first = match carry.take() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => return,
            },
        };
        // Under load (the last proposal was a batch), let the other tasks
        // that are ready run first: their writes join this batch. A lone
        // client does not pay for the extra turn of the scheduler.
        if loaded {
            tokio::task::yield_now().await;
        }
        let mut size = payload::HEADER + MEMBER_OVERHEAD + first.0.len();
        let mut batch = vec![first];
        while let Ok(next) = rx.try_recv() {
            let grown = size + MEMBER_OVERHEAD + next.0.len();
            if grown > max {
                carry = Some(next);
                break;
            }
            size = grown;
            batch.push(next);
        }
        let pending = pending.clone();
        loaded = batch.len() > 1;
        if batch.len() == 1 {
            let (p, done) = batch.pop().expect("one item");
            replica.submit(Vec::from(p), move |r| settle([done], &pending, &r));
            continue;
        }
        let packed = payload::encode_batch(batch.iter().map(|(p, _)| &p[..]));
        let waiters: Vec<Done> = batch.into_iter().map(|(_, w)| w).collect();
        // Several proposals waited at once: under load, batching takes the
        // place of the driver polling for the next one.
        replica.submit_loaded(packed, move |r| settle(waiters, &pending, &r));
    }
}
