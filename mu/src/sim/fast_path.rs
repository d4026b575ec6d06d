//! A three-replica group on the sim fabric driven step by step: the harness
//! behind the fast-path benchmark and the allocation test.

use crate::config::Config;
use crate::core::{Core, RoleKind};
use crate::driver::execute;
use crate::fabric::sim::{LinkParams, SimEndpoint, SimNet};
use crate::fabric::{Completion, Fabric};
use crate::log::layout::Layout;
use crate::types::NodeId;

/// Nanoseconds of simulated time per step. Links take 10-20 ns, so an
/// entry completes within a step or two and the measured time is the
/// protocol code's, not simulated waiting.
const STEP_NS: u64 = 50;

/// A steady group: a leader, two followers, no faults, no tearing.
#[derive(Debug)]
pub struct FastPath {
    net: SimNet,
    cores: Vec<Core>,
    eps: Vec<SimEndpoint>,
    comps: Vec<Completion>,
    now: u64,
    delivered: u64,
    payload: Vec<u8>,
}

impl FastPath {
    /// A group whose entries carry `payload_len` bytes, with a leader elected.
    pub fn new(payload_len: u32) -> FastPath {
        let ring = (1u64 << 20).max(crate::log::entry::total_len(payload_len) * 64);
        let layout = Layout::new(ring, payload_len, 3);
        let params = LinkParams {
            min_delay_ns: 10,
            max_delay_ns: 20,
            spike_prob: 0.0,
            tear_prob: 0.0,
            ..LinkParams::default()
        };
        let net = SimNet::new(3, layout, 1, params);
        let mut eps: Vec<_> = (0..3).map(|i| net.endpoint(NodeId(i))).collect();
        let cores = eps
            .iter_mut()
            .enumerate()
            .map(|(i, ep)| {
                let mut c = Config::new(NodeId(i as u8), 3);
                c.ring_capacity = ring;
                c.max_payload = payload_len;
                c.heartbeat_interval_ns = 10_000;
                Core::new(c, 0, ep.memory()).expect("valid configuration")
            })
            .collect();
        let mut g = FastPath {
            net,
            cores,
            eps,
            comps: Vec::with_capacity(4096),
            now: 0,
            delivered: 0,
            payload: vec![0xab; payload_len as usize],
        };
        while !g.cores.iter().any(|c| c.role() == RoleKind::Leader) {
            g.step();
        }
        g
    }

    /// One simulated step of every replica: completions, tick, actions,
    /// deliveries.
    pub fn step(&mut self) {
        self.now += STEP_NS;
        self.net.run_until(self.now);
        for (core, ep) in self.cores.iter_mut().zip(self.eps.iter_mut()) {
            ep.poll(&mut self.comps);
            for c in self.comps.drain(..) {
                core.on_completion(self.now, c, ep.memory());
            }
            core.tick(self.now, ep.memory());
            execute(core, ep);
            let mut n = 0;
            core.drain_deliveries(|_| n += 1);
            self.delivered += n;
        }
    }

    /// Proposes one entry on the leader and runs until the leader committed
    /// and applied it: the fast path of one entry. Followers apply it when
    /// the next entry carries the commit index, as in steady traffic.
    pub fn replicate_one(&mut self) {
        let l = self
            .cores
            .iter()
            .position(|c| c.role() == RoleKind::Leader)
            .expect("a leader");
        let (core, ep) = (&mut self.cores[l], &mut self.eps[l]);
        let p = core
            .propose(self.now, &self.payload, ep.memory())
            .expect("the leader accepts");
        execute(core, ep);
        while self.cores[l].status_applied() < p.index {
            self.step();
        }
    }

    /// Deliveries on all replicas so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }
}
