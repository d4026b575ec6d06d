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
//! - [`fabric`]: the one-sided memory contract and its backends
//!   ([`fabric::sim`] for deterministic tests, [`fabric::local`] for threads
//!   in one process).
//! - [`driver`]: runs a core against a fabric on a busy-polling thread and
//!   exposes the [`Replica`] handle.
//! - [`sim`]: the deterministic simulator and the invariant checkers.
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
//! ## Invariants and the tests that defend them
//! | property (mu-reference §8) | where it is checked |
//! |---|---|
//! | agreement per index | `sim::invariants` `Agreement`, every simulator step; `tests/sim_seeds.rs` |
//! | gap-free prefix, exactly once | `sim::invariants` `Gap` / `Duplicate` |
//! | durability of acknowledged entries | `sim::invariants` `LostAck` and the liveness phase |
//! | validity (no garbage applied) | `sim::invariants` `Invented`; dirty rings in every run; `log::entry` tests |
//! | single writer / fencing | the sim fabric's landing check `ForeignWrite`; planted bug (a) |
//! | monotonic min proposal | `sim::invariants` `ProposalDecreased` |
//! | commit rule | planted bug (b) in `tests/planted_bugs.rs` |
//! | recycling | `sim::invariants` `RecycledUnapplied`; planted bug (d) |
//! | regressions B1–B7 of the original | `tests/regressions.rs` |

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
pub mod driver;
pub mod error;
pub mod fabric;
pub mod log;
pub mod sim;
pub mod types;

pub use config::{Config, DetectorConfig, StartMode};
pub use driver::replica::Replica;
pub use error::{ConfigError, FabricError, OpError, ProposeError};
pub use types::{majority, EntryId, NodeId, MAX_NODES};
