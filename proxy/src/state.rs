//! What every part of one sidecar shares.

use crate::config::Options;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::proposer::Proposer;
use mu::core::Status;
use mu::Replica;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Committed entries a node may trail by and still be ready.
pub const READY_LAG: u64 = 1024;

/// The local backend as the applier sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Not connected yet.
    Connecting = 0,
    /// Connected and in step with the log.
    Up = 1,
    /// Unreachable; nothing was lost, entries wait until it returns.
    Down = 2,
    /// Reachable but no longer in step with the log: it restarted (and lost
    /// what it held), or the connection broke while entries were in flight
    /// so whether they were applied is unknown. It needs a state transfer;
    /// the node does not serve reads from it.
    OutOfStep = 3,
    /// Being loaded with a copy of a peer's data (a state transfer); not
    /// serving reads until the copy is complete.
    Transferring = 4,
}

impl BackendState {
    /// Lower-case name for `/status`.
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Connecting => "connecting",
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::OutOfStep => "out-of-step",
            BackendState::Transferring => "transferring",
        }
    }
}

/// The backend's state, applied index and the reason of its last change.
#[derive(Debug, Default)]
pub struct BackendHealth {
    state: AtomicU8,
    applied: AtomicU64,
    detail: Mutex<String>,
}

impl BackendHealth {
    /// Current state.
    pub fn state(&self) -> BackendState {
        match self.state.load(Ordering::Acquire) {
            1 => BackendState::Up,
            2 => BackendState::Down,
            3 => BackendState::OutOfStep,
            4 => BackendState::Transferring,
            _ => BackendState::Connecting,
        }
    }

    /// Sets the state and why.
    pub fn set(&self, state: BackendState, detail: impl Into<String>) {
        *self.detail.lock().unwrap_or_else(|e| e.into_inner()) = detail.into();
        self.state.store(state as u8, Ordering::Release);
    }

    /// Why the state is what it is.
    pub fn detail(&self) -> String {
        self.detail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Last log index applied to the backend.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Records that entries up to `index` were applied.
    pub fn set_applied(&self, index: u64) {
        self.applied.store(index, Ordering::Release);
    }
}

/// One sidecar's shared state.
#[derive(Debug)]
pub struct Shared {
    /// The options it was started with.
    pub opts: Options,
    /// Its Mu replica.
    pub replica: Arc<Replica>,
    /// The batching front of the replica: every proposal goes through it.
    pub proposer: Proposer,
    /// Writes waiting to be applied.
    pub pending: Arc<Pending>,
    /// Metrics.
    pub metrics: Metrics,
    /// The local backend.
    pub backend: BackendHealth,
    /// Connections to the other sidecars' peer ports.
    pub forward: Forwarder,
    /// Set on SIGTERM: no new writes, the node steps down.
    pub stopping: AtomicBool,
    /// State transfers this node donates.
    pub transfer: crate::transfer::Hub,
    /// Divergence digests.
    pub digests: crate::digest::Digests,
    /// Checks of what a client's user may run through the sidecar.
    pub acl: crate::acl::Acl,
}

impl Shared {
    /// The replica's latest status.
    pub fn status(&self) -> Option<Status> {
        self.replica.status()
    }

    /// Counts one client request by command class and outcome.
    pub fn count(&self, class: &str, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[class, outcome])
            .inc();
    }

    /// Whether this node serves clients, and if not why.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match self.backend.state() {
            BackendState::Up => {}
            s => return Err(format!("backend {}: {}", s.name(), self.backend.detail())),
        }
        let Some(st) = self.status() else {
            return Err("replica starting".into());
        };
        if st.needs_state_transfer {
            return Err("behind the recycled log: needs a state transfer".into());
        }
        self.divergence_fence()?;
        if st.recovering {
            return Err("rejoining: catching up with the log".into());
        }
        if st.leader.is_none() {
            return Err("no leader".into());
        }
        // A node in step trails the commit index by the entries in flight
        // to its backend (and the status snapshot lags a little): only a
        // real backlog makes it not ready.
        let applied = self.backend.applied();
        if applied + READY_LAG < st.commit {
            return Err(format!(
                "catching up: applied {applied} of {} committed",
                st.commit.saturating_sub(1)
            ));
        }
        Ok(())
    }

    /// With `--on-divergence fence`, an error once this node's data were
    /// found to differ from the majority's.
    fn divergence_fence(&self) -> Result<(), String> {
        if self.opts.on_divergence != crate::config::OnDivergence::Report && self.digests.diverged()
        {
            return Err(self.digests.diverged_detail(self.opts.digest_every));
        }
        Ok(())
    }

    /// Whether local reads may be served now, and if not why (the backend
    /// lost its data or the node has not caught up yet).
    pub fn reads_allowed(&self) -> Result<(), String> {
        match self.backend.state() {
            BackendState::OutOfStep => Err(format!(
                "this node's backend is out of step with the log ({}); it needs a state transfer",
                self.backend.detail()
            )),
            BackendState::Transferring => Err(format!(
                "this node is loading a copy of a peer's data ({}); \
                 it serves reads once the copy is complete",
                self.backend.detail()
            )),
            BackendState::Down | BackendState::Connecting => {
                Err(format!("backend unreachable: {}", self.backend.detail()))
            }
            BackendState::Up if self.divergence_fence().is_err() => self.divergence_fence(),
            BackendState::Up => match self.status() {
                Some(st) if st.recovering || st.needs_state_transfer => {
                    Err("this node is catching up with the log".into())
                }
                _ => Ok(()),
            },
        }
    }
}
