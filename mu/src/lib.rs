//! # mu: microsecond consensus with one-sided writes
//!
//! A Rust implementation of the Mu protocol (Aguilera et al., OSDI 2020):
//! the leader writes each log entry straight into its followers' memory with
//! one-sided writes and commits once a majority holds it; each follower lets
//! one leader at a time write its log, so a deposed leader is fenced by the
//! fabric itself.
//!
//! ## Layout
//! - [`core`]: the sans-IO protocol state machine (events in, actions out).
//! - [`log`]: the region map, the self-describing entry format, the ring.
//! - [`fabric`]: the one-sided memory contract, the conformance suite every
//!   backend passes ([`fabric::conformance`]) and the backends
//!   ([`fabric::sim`] for deterministic tests, [`fabric::local`] for threads
//!   in one process, [`fabric::tcp`] for any network, [`fabric::shm`] for
//!   processes on one host).
//! - [`driver`]: runs a core against a fabric on a busy-polling thread and
//!   exposes the [`Replica`] handle.
//! - [`discovery`]: peers from a static list or a memcached registry.
//! - [`node`]: one replica per process over `tcp` or `shm` from a few
//!   options (a `clap` argument group with feature `cli`).
//! - [`sim`]: the deterministic simulator, the invariant checkers, and
//!   scripted scenarios ([`sim::Scenario`]).
//! - `mu-sim` (binary): runs the simulator over many seeds.
//!
//! ## The driver loop
//! A driver repeatedly feeds the core what happened and executes what it
//! asks for. This is all of it (here on the in-process fabric, one node):
//!
//! ```
//! use mu::core::Core;
//! use mu::fabric::{local::LocalNetwork, Fabric};
//! use mu::{Config, NodeId};
//!
//! let mut cfg = Config::new(NodeId(0), 1);
//! cfg.ring_capacity = 1 << 20;
//! cfg.max_payload = 4096;
//! let net = LocalNetwork::new(&[cfg.clone()]);
//! let mut fabric = net.endpoint(NodeId(0));
//! let mut core = Core::new(cfg, 0, fabric.memory()).unwrap();
//! let mut completions = Vec::new();
//! let mut delivered = Vec::new();
//! let mut now = 0;
//! let mut proposed = None;
//! while delivered.is_empty() {
//!     now += 10_000; // nanoseconds; a real driver reads a clock
//!     fabric.poll(&mut completions);
//!     for c in completions.drain(..) {
//!         core.on_completion(now, c, fabric.memory());
//!     }
//!     core.tick(now, fabric.memory());
//!     if proposed.is_none() {
//!         proposed = core.propose(now, b"SET k v", fabric.memory()).ok();
//!     }
//!     mu::driver::execute(&mut core, &mut fabric);
//!     core.drain_deliveries(|d| delivered.push(d.payload.to_vec()));
//! }
//! assert_eq!(delivered, vec![b"SET k v".to_vec()]);
//! ```
//!
//! ## How the protocol stays safe
//! - **Fencing.** A follower lets one peer at a time write its log area
//!   ([`fabric::Fabric::grant`]); a leader needs a majority of logs, so once
//!   a newer candidate holds a majority the old leader cannot complete a
//!   majority write. Followers freeze applying from the grant until the new
//!   holder's *grant stamp* lands, which the holder writes after the whole
//!   catch-up range, so a follower never applies a copy that may still be
//!   rewritten.
//! - **Paxos prepare.** A candidate raises its proposal above every min
//!   proposal of a majority and adopts, per index, the value with the
//!   highest proposal among their logs (read from its own apply position).
//! - **Self-describing entries** (index, proposal, commit, id, hash chain,
//!   checksum, completion marker): torn, stale or foreign bytes are never
//!   applied, whatever order bytes land in and whatever the ring held.
//! - **Ring floor.** A leader publishes the recycling point before reusing
//!   ring space; a replica (or candidate) below a floor knows it fell behind
//!   the ring and needs a state transfer instead of reading overwritten
//!   space.
//! - **Restarted replicas** lose their memory: they restore their promise
//!   from enough peers before granting, and neither vote nor lead until a
//!   leader has brought them up to date.
//!
//! ## Invariants and the tests that defend them
//! | property (mu-reference §8) | checked by | tests |
//! |---|---|---|
//! | 1 agreement per index | [`sim::invariants`] `Agreement`, every step | `tests/sim_seeds.rs`, `tests/regressions.rs` |
//! | 2 gap-free prefix, exactly once | `Gap` | same |
//! | 3 durability of acknowledged entries | `LostAck` on every new leader; convergence in the liveness phase | same; planted bug (b) |
//! | 4 validity (only proposed values) | `Invented`; dirty rings and torn writes in every run | same; `log::entry` unit tests |
//! | 5/6 single writer, fencing | the sim fabric's landing check `ForeignWrite` | planted bug (a); `fencing_a_resumed_leader_...` |
//! | 7 monotonic min proposal | `ProposalDecreased` | `tests/sim_seeds.rs` |
//! | 8 commit rule | `Agreement` / `LostAck` after leader crashes | planted bug (b), `b5_nothing_is_applied_before_...` |
//! | 9 recycling | `RecycledUnapplied` | planted bug (d), `b2_...`, `b7_...` |
//! | 11–13 liveness after faults | `Stuck` in the liveness phase | `tests/sim_seeds.rs` |
//! | the original's bugs B1–B7 | scripted scenarios | `tests/regressions.rs` (one test per bug) |
//! | no allocation per entry on the fast path | counting allocator | `tests/alloc_free.rs` |
//!
//! `tests/planted_bugs.rs` shows the checker is not blind: each of four
//! protocol mutations is caught within a few seeds, and the same seeds pass
//! without it.

#![deny(missing_docs)]

/// True when the configuration runs with the given planted bug.
#[doc(hidden)]
#[macro_export]
macro_rules! planted {
    ($cfg:expr, $bug:ident) => {{
        #[cfg(feature = "planted-bugs")]
        let hit = $cfg.planted == Some($crate::config::PlantedBug::$bug);
        #[cfg(not(feature = "planted-bugs"))]
        let hit = {
            let _ = &$cfg;
            false
        };
        hit
    }};
}

pub mod config;
pub mod core;
pub mod discovery;
pub mod driver;
pub mod error;
pub mod fabric;
pub mod log;
pub mod node;
pub mod sim;
pub mod types;

pub use config::{Config, DetectorConfig, StartMode};
pub use driver::replica::Replica;
pub use error::{ConfigError, FabricError, OpError, ProposeError};
pub use types::{majority, EntryId, NodeId, MAX_NODES};
