//! The posting side of an `rdma` node: one [`Link`] per peer owns the two
//! outgoing queue pairs to it (log plane, control plane) and keeps the
//! operations addressed to that peer in post order across both.
//!
//! An RC queue pair executes and completes its own work in order, but two
//! queue pairs are not ordered with respect to each other. So an operation
//! is issued only while the other plane has nothing in flight to the same
//! peer; until then it waits in the link's queue, as do operations posted
//! while the link connects. Operations that fail without being sent (a
//! write straddling into the log, a peer that could not be reached) wait
//! their turn the same way, so every completion to one peer is reported in
//! post order.
//!
//! The first failed completion marks the link broken: the rest of the work
//! on that queue pair completes with a flush error and is reported with the
//! first failure's meaning. Once nothing is in flight the link goes down,
//! and the next operation reconnects both planes over the control channel.

use super::control::{self, Pair, RemoteRegion};
use super::verbs::{Access, Op, QueuePair, WorkCompletion};
use super::{clock, RdmaOptions};
use crate::error::OpError;
use crate::fabric::{Completion, OpId};
use crate::types::NodeId;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Instant;

/// An operation gets one more operation timeout per this many bytes.
const TIMEOUT_BYTES: u64 = 256 << 10;

/// Log plane: writes into the peer's log area.
pub(super) const LOG: usize = 0;
/// Control plane: reads, and writes outside the log area.
pub(super) const CTL: usize = 1;

/// Which of the peer's registrations an operation addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The log area, through the log plane.
    Log,
    /// The whole region, read-only.
    Read,
    /// The control area.
    Control,
    /// The read scratch.
    Scratch,
}

impl Target {
    fn plane(self) -> usize {
        match self {
            Target::Log => LOG,
            _ => CTL,
        }
    }

    fn rkey(self, r: &RemoteRegion) -> u32 {
        match self {
            Target::Log => r.log_rkey,
            Target::Read => r.read_rkey,
            Target::Control => r.ctl_rkey,
            Target::Scratch => r.scratch_rkey,
        }
    }
}

/// A one-sided operation for a link.
#[derive(Clone, Copy, Debug)]
pub(super) struct Request {
    /// Its id.
    pub op: OpId,
    /// WRITE or READ.
    pub kind: Op,
    /// Which of the peer's registrations it addresses.
    pub target: Target,
    /// Offset in the local region.
    pub local: u64,
    /// Offset in the peer's region.
    pub remote: u64,
    /// Bytes.
    pub len: u64,
}

/// An operation not yet issued.
#[derive(Clone, Copy, Debug)]
enum Queued {
    /// To be posted on a queue pair.
    Post(Request),
    /// Already decided: completes with this error in its turn.
    Fail { op: OpId, error: OpError },
}

#[derive(Debug)]
enum State {
    /// Not connected; the next operation connects unless backing off.
    Down { backoff_until: Option<Instant> },
    /// A helper thread runs the control exchange.
    Connecting {
        result: Receiver<io::Result<(RemoteRegion, Pair)>>,
        since: Instant,
    },
    /// Connected to the peer's region.
    Up(RemoteRegion),
}

/// The outgoing queue pairs to one peer and the work on them.
#[derive(Debug)]
pub(super) struct Link {
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    key: [u8; 32],
    options: RdmaOptions,
    qps: [QueuePair; 2],
    state: State,
    /// Set by the first failed completion since the link came up.
    broken: Option<OpError>,
    /// Per plane: the operations posted and not completed, with their lengths.
    inflight: [VecDeque<(OpId, u64)>; 2],
    /// When the oldest operation in flight last saw progress.
    since: Instant,
    queue: VecDeque<Queued>,
}

impl Link {
    /// A link to `peer`, whose control channel listens at `addr`; it
    /// connects on first use.
    pub(super) fn new(
        me: NodeId,
        peer: NodeId,
        addr: SocketAddr,
        key: [u8; 32],
        options: RdmaOptions,
        qps: [QueuePair; 2],
    ) -> Link {
        let depth = options.queue_depth as usize;
        Link {
            me,
            peer,
            addr,
            key,
            options,
            qps,
            state: State::Down {
                backoff_until: None,
            },
            broken: None,
            inflight: [
                VecDeque::with_capacity(depth),
                VecDeque::with_capacity(depth),
            ],
            since: clock(),
            queue: VecDeque::with_capacity(depth),
        }
    }

    /// Queues a one-sided operation and issues what may go.
    pub(super) fn post(&mut self, request: Request, out: &mut Vec<Completion>) {
        self.queue.push_back(Queued::Post(request));
        self.issue(out);
    }

    /// Queues an operation that fails with `error` in its turn.
    pub(super) fn fail(&mut self, op: OpId, error: OpError, out: &mut Vec<Completion>) {
        self.queue.push_back(Queued::Fail { op, error });
        self.issue(out);
    }

    /// Handles one completion of this link's queue pair `plane`.
    pub(super) fn complete(&mut self, plane: usize, wc: WorkCompletion, out: &mut Vec<Completion>) {
        let Some((op, _)) = self.inflight[plane].pop_front() else {
            return;
        };
        self.since = clock();
        let result = match wc.error {
            None if self.broken.is_none() => Ok(()),
            None => Err(self.broken.expect("set")),
            Some((status, _)) => {
                let e = *self.broken.get_or_insert(meaning(plane, status));
                Err(e)
            }
        };
        out.push(Completion {
            op,
            peer: self.peer,
            result,
        });
    }

    /// Makes progress: finishes a connection attempt, takes a broken link
    /// down once its work has drained, issues queued operations.
    pub(super) fn progress(&mut self, out: &mut Vec<Completion>) {
        if let State::Connecting { result, since } = &self.state {
            match result.try_recv() {
                Ok(Ok((remote, theirs))) => match self.finish_connect(&theirs) {
                    Ok(()) => self.state = State::Up(remote),
                    Err(_) => self.connect_failed(out),
                },
                Ok(Err(_)) | Err(TryRecvError::Disconnected) => self.connect_failed(out),
                Err(TryRecvError::Empty) => {
                    if since.elapsed() > self.options.connect_timeout * 2 {
                        self.connect_failed(out);
                    }
                }
            }
        }
        if self.broken.is_none() && self.overdue() {
            // The peer does not answer: flush the work and reconnect.
            self.broken = Some(OpError::Unreachable);
            for qp in &mut self.qps {
                let _ = qp.fail();
            }
        }
        if self.broken.is_some() && self.idle() {
            self.broken = None;
            self.state = State::Down {
                backoff_until: None,
            };
        }
        self.issue(out);
    }

    /// True when the oldest operation in flight waited longer than the
    /// operation timeout allows for its size: one timeout, plus one per
    /// [`TIMEOUT_BYTES`] it carries.
    fn overdue(&self) -> bool {
        let oldest = self.inflight[LOG]
            .front()
            .or_else(|| self.inflight[CTL].front());
        let Some(&(_, len)) = oldest else {
            return false;
        };
        let allowance = self.options.op_timeout * (1 + (len / TIMEOUT_BYTES) as u32);
        self.since.elapsed() > allowance
    }

    fn idle(&self) -> bool {
        self.inflight[LOG].is_empty() && self.inflight[CTL].is_empty()
    }

    /// Issues queued operations, in order, while the rules allow.
    fn issue(&mut self, out: &mut Vec<Completion>) {
        while let Some(&front) = self.queue.front() {
            match front {
                Queued::Fail { op, error } => {
                    if !self.idle() {
                        return;
                    }
                    self.queue.pop_front();
                    out.push(Completion {
                        op,
                        peer: self.peer,
                        result: Err(error),
                    });
                }
                Queued::Post(Request {
                    op,
                    kind,
                    target,
                    local,
                    remote,
                    len,
                }) => {
                    let remote_region = match &self.state {
                        State::Up(r) => *r,
                        State::Connecting { .. } => return,
                        State::Down { backoff_until } => {
                            if backoff_until.is_some_and(|t| clock() < t) {
                                return self.fail_queued(OpError::Unreachable, out);
                            }
                            if !self.idle() {
                                return;
                            }
                            // Leaves the link connecting, or down and
                            // backing off: the next round ends the loop.
                            self.connect(out);
                            continue;
                        }
                    };
                    let plane = target.plane();
                    if self.broken.is_some()
                        || !self.inflight[1 - plane].is_empty()
                        || self.inflight[plane].len() >= self.options.queue_depth as usize
                    {
                        return;
                    }
                    self.queue.pop_front();
                    let posted = self.qps[plane].post(
                        kind,
                        (self.peer.idx() * 2 + plane) as u64,
                        0,
                        local,
                        len,
                        remote_region.addr + remote,
                        target.rkey(&remote_region),
                        true,
                    );
                    if posted.is_ok() {
                        if self.idle() {
                            self.since = clock();
                        }
                        self.inflight[plane].push_back((op, len));
                    } else {
                        // The queue pair refused the work (e.g. it is in the
                        // error state): treat it as a failed completion.
                        let e = *self.broken.get_or_insert(if plane == LOG {
                            OpError::Permission
                        } else {
                            OpError::Unreachable
                        });
                        self.queue.push_front(Queued::Fail { op, error: e });
                    }
                }
            }
        }
    }

    /// Every queued operation that is not sent yet fails with `error`.
    fn fail_queued(&mut self, error: OpError, out: &mut Vec<Completion>) {
        for q in self.queue.drain(..) {
            let op = match q {
                Queued::Post(r) => r.op,
                Queued::Fail { op, error } => {
                    out.push(Completion {
                        op,
                        peer: self.peer,
                        result: Err(error),
                    });
                    continue;
                }
            };
            out.push(Completion {
                op,
                peer: self.peer,
                result: Err(error),
            });
        }
    }

    /// Resets both queue pairs and starts the control exchange.
    fn connect(&mut self, out: &mut Vec<Completion>) {
        let psns = match super::fresh_psns() {
            Ok(p) => p,
            Err(_) => return self.connect_failed(out),
        };
        for (qp, psn) in self.qps.iter_mut().zip(psns) {
            if qp.reset().is_err() {
                return self.connect_failed(out);
            }
            qp.set_psn(psn);
        }
        let ours = Pair {
            log: self.qps[LOG].endpoint(),
            ctl: self.qps[CTL].endpoint(),
        };
        let (tx, rx) = mpsc::channel();
        let (key, me, peer, addr, timeout) = (
            self.key,
            self.me,
            self.peer,
            self.addr,
            self.options.connect_timeout,
        );
        let started = std::thread::Builder::new()
            .name(format!("mu-rdma-connect-{me}-{peer}"))
            .spawn(move || {
                let _ = tx.send(control::request(&key, me, peer, addr, timeout, ours));
            });
        if started.is_err() {
            return self.connect_failed(out);
        }
        self.state = State::Connecting {
            result: rx,
            since: clock(),
        };
    }

    fn finish_connect(&mut self, theirs: &Pair) -> Result<(), super::verbs::VerbsError> {
        self.qps[LOG].connect(&theirs.log, Access::LOCAL)?;
        self.qps[CTL].connect(&theirs.ctl, Access::LOCAL)
    }

    fn connect_failed(&mut self, out: &mut Vec<Completion>) {
        self.state = State::Down {
            backoff_until: Some(clock() + self.options.reconnect_backoff),
        };
        self.fail_queued(OpError::Unreachable, out);
    }
}

/// What a failed completion on `plane` means for the core: a peer that
/// does not answer is unreachable; on the log plane every other failure is
/// lost permission (Soft-RoCE reports a revoked write as an invalid
/// request, mlx5 as a remote access error).
fn meaning(plane: usize, status: u32) -> OpError {
    use ibverbs_sys::ibv_wc_status::*;
    match status {
        IBV_WC_RETRY_EXC_ERR | IBV_WC_RNR_RETRY_EXC_ERR => OpError::Unreachable,
        _ if plane == LOG => OpError::Permission,
        _ => OpError::Unreachable,
    }
}
