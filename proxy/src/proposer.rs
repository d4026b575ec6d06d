//! Hands proposals to the replica, packing those that wait at the same
//! moment into one batch entry.
//!
//! Under load many clients' writes (and writes forwarded by followers)
//! arrive while the replica is busy; one log entry for all of them costs
//! one write per follower instead of one per request. A lone proposal goes
//! as it is, so an idle group pays nothing for batching. Proposals keep
//! their arrival order, inside a batch and across batches.

use crate::payload::{self, MEMBER_OVERHEAD};
use mu::{ProposeError, Replica};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Outcome = Result<u64, ProposeError>;
type Item = (Vec<u8>, oneshot::Sender<Outcome>);

/// The batching front of a replica.
#[derive(Debug, Clone)]
pub struct Proposer {
    tx: mpsc::UnboundedSender<Item>,
}

impl Proposer {
    /// Starts the batching task (on the current tokio runtime); batches
    /// stay within `max` bytes, the replica's largest payload.
    pub fn start(replica: Arc<Replica>, max: usize) -> Proposer {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(replica, rx, max));
        Proposer { tx }
    }

    /// Proposes `payload`; the receiver gets the outcome (the entry's index
    /// once committed), or is dropped if the sidecar is stopping.
    pub fn submit(&self, payload: Vec<u8>) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send((payload, tx));
        rx
    }
}

async fn run(replica: Arc<Replica>, mut rx: mpsc::UnboundedReceiver<Item>, max: usize) {
    let mut carry: Option<Item> = None;
    loop {
        let first = match carry.take() {
            Some(i) => i,
            None => match rx.recv().await {
                Some(i) => i,
                None => return,
            },
        };
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
        if batch.len() == 1 {
            let (p, done) = batch.pop().expect("one item");
            replica.submit(p, move |r| {
                let _ = done.send(r);
            });
            continue;
        }
        let packed = payload::encode_batch(batch.iter().map(|(p, _)| &p[..]));
        let waiters: Vec<oneshot::Sender<Outcome>> = batch.into_iter().map(|(_, w)| w).collect();
        replica.submit(packed, move |r| {
            for w in waiters {
                let _ = w.send(r.clone());
            }
        });
    }
}
