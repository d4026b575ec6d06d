//! The deterministic simulator.
//!
//! [`run`] builds a whole group on the [`crate::fabric::sim`] fabric from one
//! seed and drives every core from a single loop with a virtual clock: no
//! threads, no wall time, no unseeded randomness, so a seed replays exactly
//! (the trace hash proves it). A run has two phases:
//!
//! 1. **safety**: clients propose while replicas crash (losing their memory)
//!    and restart, pause and resume, and get cut off; writes tear and links
//!    stall; in half the seeds every node also stalls for a few heartbeat
//!    intervals at random (a loaded host), so detectors misfire and
//!    leadership flaps. After every step the [`invariants`] are checked.
//! 2. **liveness**: faults stop, everything heals; a fresh proposal must
//!    commit within [`Options::recovery_bound_ns`], and the group must bring
//!    every replica up to the same applied index within a budget. At most a minority ever loses its
//!    memory at once, so the group always stays recoverable.
//!
//! A failure prints the options and the command that reproduces it.

mod fast_path;
pub mod invariants;
pub mod options;

pub use fast_path::FastPath;

pub use invariants::{Checker, Violation};
pub use options::Options;

use crate::config::{Config, StartMode};
use crate::core::{Core, Proposed, RoleKind};
use crate::driver::execute;
use crate::fabric::sim::{SimEndpoint, SimNet};
use crate::fabric::{Completion, Fabric, Memory};
use crate::log::layout::{self, Layout};
use crate::types::NodeId;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Highest decided index.
    pub decided: u64,
    /// Proposals acknowledged to clients.
    pub acked: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Scheduler stalls injected (see [`Options::stall_per_ms`]).
    pub stalls: u64,
    /// From the end of the faults to the first commit of a fresh proposal.
    pub recovery_ns: u64,
    /// State transfers performed for replicas that fell behind the ring.
    pub transfers: u64,
    /// Crashes that hit the leader.
    pub leader_crashes: u64,
    /// Leader terms started across the group.
    pub leader_terms: u64,
    /// Simulated nanoseconds.
    pub sim_ns: u64,
    /// Hash of every fabric event and decision: equal for equal seeds.
    pub trace: u64,
}

/// A run that broke a property.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The options of the run.
    pub options: String,
    /// The seed.
    pub seed: u64,
    /// Group size (part of the reproduce command).
    pub nodes: usize,
    /// Simulated time of the violation.
    pub at_ns: u64,
    /// What broke.
    pub violation: Violation,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "violation at {} ns: {}\n  options: {}\n  reproduce: cargo run -p mu --release --bin mu-sim -- --seed {} --nodes {}",
            self.at_ns, self.violation, self.options, self.seed, self.nodes
        )
    }
}

struct SimNode {
    core: Option<Core>,
    ep: SimEndpoint,
    incarnation: u16,
    down_until: u64,
    paused_until: u64,
    cut_until: u64,
    role: RoleKind,
}

struct Client {
    target: NodeId,
    waiting: Option<(NodeId, Proposed, u64)>,
    retry_at: u64,
}

struct Sim {
    log: bool,
    /// Scripted runs: no random faults, no random clients.
    scripted: bool,
    /// Scripted runs: every delivery per node.
    delivered: Vec<Vec<(u64, crate::EntryId, Vec<u8>)>>,
    o: Options,
    net: SimNet,
    rng: SmallRng,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    checker: Checker,
    report: Report,
    now: u64,
    comps: Vec<Completion>,
    acked_after_faults: u64,
}

/// Runs one seed. `Ok` when every invariant held and the group converged.
pub fn run(o: &Options) -> Result<Report, Failure> {
    let mut sim = Sim::new(o.clone());
    let outcome = sim.run();
    sim.report.trace = sim.net.trace() ^ sim.checker.decided.len() as u64;
    sim.report.decided = sim.checker.decided.len() as u64;
    outcome
        .map(|()| sim.report.clone())
        .map_err(|violation| Failure {
            options: o.to_string(),
            seed: o.seed,
            nodes: o.nodes,
            at_ns: sim.now,
            violation,
        })
}

impl Sim {
    fn new(o: Options) -> Sim {
        let layout = Layout::new(o.ring_capacity, o.max_payload, o.nodes);
        let net = SimNet::new(o.nodes, layout, o.seed, o.link);
        let mut rng = SmallRng::seed_from_u64(o.seed.rotate_left(17) ^ 0x5eed);
        let mut nodes = Vec::new();
        for i in 0..o.nodes {
            let id = NodeId(i as u8);
            let mut ep = net.endpoint(id);
            let core = Core::new(config(&o, id, StartMode::Bootstrap, 0), 0, ep.memory())
                .expect("simulator configuration is valid");
            nodes.push(SimNode {
                core: Some(core),
                ep,
                incarnation: 0,
                down_until: 0,
                paused_until: 0,
                cut_until: 0,
                role: RoleKind::Follower,
            });
        }
        let clients = (0..o.clients)
            .map(|_| Client {
                target: NodeId(rng.gen_range(0..o.nodes) as u8),
                waiting: None,
                retry_at: 0,
            })
            .collect();
        Sim {
            #[allow(clippy::disallowed_methods, reason = "debug switch for humans")]
            log: std::env::var_os("MU_SIM_LOG").is_some(),
            scripted: false,
            delivered: vec![Vec::new(); o.nodes],
            checker: Checker::new(o.nodes),
            report: Report {
                seed: o.seed,
                ..Report::default()
            },
            o,
            net,
            rng,
            nodes,
            clients,
            now: 0,
            comps: Vec::with_capacity(1024),
            acked_after_faults: 0,
        }
    }

    fn run(&mut self) -> Result<(), Violation> {
        let safety_end = self.o.safety_ms * 1_000_000;
        let end = safety_end + self.o.liveness_ms * 1_000_000;
        let mut healed = false;
        while self.now < end {
            self.now += self.o.tick_ns;
            self.report.sim_ns = self.now;
            self.net.run_until(self.now);
            if self.now < safety_end {
                self.inject_faults();
                self.stall_storm();
            } else if !healed {
                self.heal();
                healed = true;
            }
            self.lifecycle();
            for i in 0..self.o.nodes {
                self.step_node(NodeId(i as u8))?;
            }
            self.clients_step()?;
            self.global_checks()?;
            if healed && self.converged() {
                return Ok(());
            }
            let bound = self.o.recovery_bound_ns;
            if healed && self.acked_after_faults == 0 && self.now > safety_end + bound {
                return Err(Violation::Stuck {
                    what: format!(
                        "nothing committed within {bound} ns of the faults ending; {}",
                        self.summary()
                    ),
                });
            }
        }
        Err(Violation::Stuck {
            what: self.summary(),
        })
    }

    fn active(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        n.core.is_some() && n.paused_until <= self.now
    }

    fn lost_memory(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.core.as_ref().is_none_or(|c| c.status().recovering))
            .count()
    }

    fn leader(&self) -> Option<usize> {
        (0..self.o.nodes).find(|&i| self.active(i) && self.nodes[i].role == RoleKind::Leader)
    }

    fn victim(&mut self) -> usize {
        match self.leader() {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => self.rng.gen_range(0..self.o.nodes),
        }
    }

    fn inject_faults(&mut self) {
        let per_tick = self.o.tick_ns as f64 / 1e6;
        let f = (self.o.nodes - 1) / 2;
        if self.rng.gen_bool((self.o.crash_per_ms * per_tick).min(1.0)) {
            let v = self.victim();
            if self.nodes[v].core.is_some() && self.lost_memory() < f {
                if self.nodes[v].role == RoleKind::Leader {
                    self.report.leader_crashes += 1;
                }
                self.net.crash(NodeId(v as u8));
                self.note(format_args!("crash n{v}"));
                let down = self.rng.gen_range(100_000..3_000_000);
                let node = &mut self.nodes[v];
                node.core = None;
                node.down_until = self.now + down;
                self.report.crashes += 1;
            }
        }
        if self.rng.gen_bool((self.o.pause_per_ms * per_tick).min(1.0)) {
            let v = self.victim();
            if self.active(v) {
                self.nodes[v].paused_until = self.now + self.rng.gen_range(20_000..2_000_000);
                self.note(format_args!(
                    "pause n{v} until {}",
                    self.nodes[v].paused_until
                ));
                self.report.pauses += 1;
            }
        }
        if self
            .rng
            .gen_bool((self.o.partition_per_ms * per_tick).min(1.0))
        {
            let v = self.victim();
            if self.nodes[v].cut_until <= self.now {
                for p in 0..self.o.nodes {
                    if p != v {
                        self.net.set_cut(NodeId(v as u8), NodeId(p as u8), true);
                    }
                }
                self.nodes[v].cut_until = self.now + self.rng.gen_range(50_000..3_000_000);
                self.note(format_args!("cut n{v} until {}", self.nodes[v].cut_until));
                self.report.partitions += 1;
            }
        }
    }

    /// Stalls nodes at random for a few heartbeat intervals each, like a
    /// loaded host deschedules processes.
    fn stall_storm(&mut self) {
        if self.o.stall_per_ms <= 0.0 {
            return;
        }
        let p = (self.o.stall_per_ms * self.o.tick_ns as f64 / 1e6).min(1.0);
        for v in 0..self.o.nodes {
            if self.rng.gen_bool(p) && self.active(v) {
                let len = self.rng.gen_range(self.o.tick_ns..=self.o.stall_max_ns);
                self.nodes[v].paused_until = self.now + len;
                self.report.stalls += 1;
            }
        }
    }

    fn heal(&mut self) {
        self.net.heal_all();
        // Proposals still waiting were probably lost with a leader change:
        // their clients give up on them as fast as on fresh ones.
        let patience = self.now + 50 * self.o.heartbeat_ns;
        for c in &mut self.clients {
            if let Some((_, _, deadline)) = &mut c.waiting {
                *deadline = (*deadline).min(patience);
            }
        }
        for n in &mut self.nodes {
            n.paused_until = 0;
            n.cut_until = 0;
            n.down_until = n.down_until.min(self.now);
        }
    }

    /// Restarts crashed replicas and heals expired cuts.
    fn lifecycle(&mut self) {
        for i in 0..self.o.nodes {
            let id = NodeId(i as u8);
            if self.nodes[i].core.is_none() && self.nodes[i].down_until <= self.now {
                self.net.restart(id);
                let mut ep = self.net.endpoint(id);
                let inc = self.nodes[i].incarnation + 1;
                let cfg = config(&self.o, id, StartMode::Rejoin, inc);
                let core = Core::new(cfg, self.now, ep.memory()).expect("valid configuration");
                let node = &mut self.nodes[i];
                node.core = Some(core);
                node.ep = ep;
                node.incarnation = inc;
                node.role = RoleKind::Follower;
                self.checker.restarted(id);
                self.note(format_args!("restart n{i}"));
            }
            if self.nodes[i].cut_until != 0 && self.nodes[i].cut_until <= self.now {
                self.nodes[i].cut_until = 0;
                for p in 0..self.o.nodes {
                    let other = &self.nodes[p];
                    if p != i && (other.cut_until == 0 || other.cut_until <= self.now) {
                        self.net.set_cut(id, NodeId(p as u8), false);
                    }
                }
            }
        }
    }

    fn step_node(&mut self, id: NodeId) -> Result<(), Violation> {
        let i = id.idx();
        if !self.active(i) {
            return Ok(());
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        let core = node.core.as_mut().expect("active node has a core");
        node.ep.poll(&mut self.comps);
        for c in self.comps.drain(..) {
            core.on_completion(now, c, node.ep.memory());
        }
        core.tick(now, node.ep.memory());
        execute(core, &mut node.ep);
        self.deliver(id)?;
        let node = &mut self.nodes[i];
        let core = node.core.as_mut().expect("active node has a core");
        let role = core.role();
        if role != node.role && self.log {
            println!(
                "{:>10} n{i} {:?} -> {:?} {}",
                self.now,
                node.role,
                role,
                core.debug()
            );
        }
        if role == RoleKind::Leader && node.role != RoleKind::Leader {
            self.report.leader_terms += 1;
            let proposal = core.status().proposal;
            self.checker.leader_log(id, proposal, &core.inspect().log)?;
        }
        node.role = role;
        let min = node.ep.memory().read_u64(layout::MIN_PROPOSAL);
        self.checker.min_proposal(id, min)?;
        if core.status().needs_state_transfer {
            self.transfer(id);
        }
        Ok(())
    }

    fn deliver(&mut self, id: NodeId) -> Result<(), Violation> {
        let node = &mut self.nodes[id.idx()];
        let core = node.core.as_mut().expect("active node has a core");
        let checker = &mut self.checker;
        let clients = &mut self.clients;
        let record = self.scripted.then_some(&mut self.delivered[id.idx()]);
        let mut record = record;
        let mut result = Ok(());
        let mut acked = 0;
        core.drain_deliveries(|d| {
            if result.is_err() {
                return;
            }
            result = checker.applied(id, d.index, d.id, d.payload);
            if let Some(r) = record.as_mut() {
                r.push((d.index, d.id, d.payload.to_vec()));
            }
            for c in clients.iter_mut() {
                if let Some((n, p, _)) = c.waiting {
                    if n == id && p.index == d.index {
                        if p.id == d.id {
                            acked += 1;
                        }
                        c.waiting = None;
                    }
                }
            }
        });
        self.report.acked += acked;
        let healed_at = self.o.safety_ms * 1_000_000;
        if self.now >= healed_at {
            if self.acked_after_faults == 0 && acked > 0 {
                self.report.recovery_ns = self.now - healed_at;
            }
            self.acked_after_faults += acked;
        }
        result
    }

    /// A replica behind the ring gets the state of the most advanced healthy
    /// replica (what the application's state transfer does).
    fn transfer(&mut self, id: NodeId) {
        let donor = (0..self.o.nodes)
            .filter(|&p| p != id.idx() && self.active(p))
            .filter_map(|p| {
                let c = self.nodes[p].core.as_ref()?;
                let s = c.status();
                (!s.recovering && !s.needs_state_transfer).then(|| (c.snapshot_point(), p))
            })
            .max_by_key(|(pt, _)| pt.applied);
        let Some((point, _)) = donor else {
            return;
        };
        let core = self.nodes[id.idx()].core.as_mut().expect("active");
        if point.applied < core.snapshot_point().applied {
            return;
        }
        core.install_snapshot(point);
        if self.log {
            println!(
                "{:>10} n{} state transfer to {:?}",
                self.now,
                id.idx(),
                point
            );
        }
        self.checker.transferred(id, point.applied);
        self.report.transfers += 1;
    }

    fn clients_step(&mut self) -> Result<(), Violation> {
        for k in 0..self.clients.len() {
            let now = self.now;
            if let Some((n, _, deadline)) = self.clients[k].waiting {
                if now >= deadline || self.nodes[n.idx()].core.is_none() {
                    // Outcome unknown to this client: it moves on.
                    self.clients[k].waiting = None;
                }
                continue;
            }
            if now < self.clients[k].retry_at || self.workload_done() {
                continue;
            }
            let target = self.clients[k].target;
            if !self.active(target.idx()) {
                self.clients[k].target = NodeId(self.rng.gen_range(0..self.o.nodes) as u8);
                continue;
            }
            let len = if self.rng.gen_bool(0.8) {
                self.rng.gen_range(1..=self.o.max_payload.min(64))
            } else {
                self.rng.gen_range(1..=self.o.max_payload)
            };
            let mut payload = vec![0u8; len as usize];
            self.rng.fill(&mut payload[..]);
            let node = &mut self.nodes[target.idx()];
            let core = node.core.as_mut().expect("active");
            match core.propose(now, &payload, node.ep.memory()) {
                Ok(p) => {
                    self.checker.proposed(p.id, &payload);
                    // Once the faults stop, a proposal that does not commit
                    // soon was lost with a leader change: give up on it
                    // quickly, so the recovery time measures the group.
                    let patience = if now >= self.o.safety_ms * 1_000_000 {
                        50 * self.o.heartbeat_ns
                    } else {
                        5_000_000
                    };
                    self.clients[k].waiting = Some((target, p, now + patience));
                    execute(core, &mut node.ep);
                    self.deliver(target)?;
                }
                Err(crate::ProposeError::NotLeader { leader: Some(l) }) => {
                    self.clients[k].target = l;
                    self.clients[k].retry_at = now + self.o.tick_ns;
                }
                Err(_) => {
                    self.clients[k].target = NodeId(self.rng.gen_range(0..self.o.nodes) as u8);
                    self.clients[k].retry_at = now + 20_000;
                }
            }
        }
        Ok(())
    }

    fn global_checks(&mut self) -> Result<(), Violation> {
        if let Some(w) = self.net.foreign_writes().first() {
            return Err(Violation::ForeignWrite {
                from: w.from,
                to: w.to,
            });
        }
        let capacity = self.o.ring_capacity;
        for l in 0..self.o.nodes {
            let Some((tail, confirmed)) =
                self.nodes[l].core.as_ref().and_then(|c| c.inspect_leader())
            else {
                continue;
            };
            for (q, node) in self.nodes.iter().enumerate() {
                let Some(core) = &node.core else { continue };
                let holds = self.net.holder(NodeId(q as u8)) == Some(NodeId(l as u8));
                if q != l && confirmed[q] && holds && tail > core.apply_pos() + capacity {
                    return Err(Violation::RecycledUnapplied {
                        leader: NodeId(l as u8),
                        follower: NodeId(q as u8),
                        tail,
                        apply_pos: core.apply_pos(),
                    });
                }
            }
        }
        Ok(())
    }

    fn note(&self, what: std::fmt::Arguments<'_>) {
        if self.log {
            println!("{:>10} {what}", self.now);
        }
    }

    /// After the faults, clients stop once a few fresh proposals committed,
    /// so the group can be seen to converge (through the idle commit flush).
    fn workload_done(&self) -> bool {
        self.acked_after_faults >= 4 * self.o.clients as u64
    }

    fn converged(&self) -> bool {
        let waiting = self.clients.iter().any(|c| c.waiting.is_some());
        if !self.workload_done() || waiting || self.leader().is_none() {
            return false;
        }
        let top = self.checker.decided.len() as u64;
        self.nodes.iter().all(|n| {
            n.core.as_ref().is_some_and(|c| {
                let s = c.status();
                !s.recovering && !s.needs_state_transfer && s.applied == top
            })
        })
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "decided={} acked_after_faults={} leader={:?};",
            self.checker.decided.len(),
            self.acked_after_faults,
            self.leader()
        );
        for (i, n) in self.nodes.iter().enumerate() {
            match &n.core {
                None => s += &format!(" n{i}=down"),
                Some(c) => {
                    let st = c.status();
                    let cap = self.o.ring_capacity;
                    let pos = c.apply_pos();
                    let mut buf =
                        vec![0u8; crate::log::entry::total_len(self.o.max_payload) as usize];
                    let mem = n.ep.clone_region();
                    crate::log::ring::read(&mem, cap, pos, &mut buf);
                    let probe = (
                        crate::log::entry::peek(&buf, self.o.max_payload),
                        crate::log::entry::verify(&buf, self.o.max_payload).map(|p| {
                            (
                                p.header.index,
                                p.header.proposal,
                                p.header.prev_hash,
                                c.snapshot_point().hash,
                            )
                        }),
                    );
                    let mut hint = [0u8; 24];
                    n.ep.region_read(layout::HINT, &mut hint);
                    s += &format!(" probe={probe:?} hint={:?}", &hint[..8]);
                    let mut ep_mem = [0u8; 8];
                    n.ep.region_read(layout::MIN_PROPOSAL, &mut ep_mem);
                    s += &format!(
                        " n{i}={:?} minp={} confirmed={:?} dbg={} applied={} commit={} rec={} lapped={} holder={:?} view={:?};",
                        st.role,
                        u64::from_le_bytes(ep_mem),
                        c.inspect_leader().map(|x| x.1),
                        c.debug(),
                        st.applied,
                        st.commit,
                        st.recovering,
                        st.needs_state_transfer,
                        st.log_holder,
                        st.leader
                    );
                }
            }
        }
        s
    }
}

fn config(o: &Options, id: NodeId, start: StartMode, incarnation: u16) -> Config {
    let mut c = Config::new(id, o.nodes as u8);
    c.ring_capacity = o.ring_capacity;
    c.max_payload = o.max_payload;
    c.start = start;
    c.incarnation = incarnation;
    c.heartbeat_interval_ns = o.heartbeat_ns;
    c.permission_timeout_ns = o.permission_timeout_ns;
    c.prepare_timeout_ns = o.prepare_timeout_ns;
    c.commit_flush_delay_ns = 10_000;
    c.rescan_idle_ns = 100_000;
    c.max_inflight_per_peer = 64;
    #[cfg(feature = "planted-bugs")]
    {
        c.planted = o.planted;
    }
    c
}

/// A scripted simulation for scenario tests: the same fabric, cores and
/// invariant checks as [`run`], but faults and proposals come from the test.
/// Every step checks the invariants; a violation panics with the evidence.
pub struct Scenario {
    sim: Sim,
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sim.summary())
    }
}

impl Scenario {
    /// A group of `nodes` replicas with the given ring and payload sizes;
    /// `seed` drives link delays and tearing.
    pub fn new(nodes: usize, ring_capacity: u64, max_payload: u32, seed: u64) -> Scenario {
        let mut o = Options::from_seed(seed, Some(nodes));
        o.ring_capacity = ring_capacity;
        o.max_payload = max_payload;
        o.clients = 0;
        let mut sim = Sim::new(o);
        sim.scripted = true;
        Scenario { sim }
    }

    /// Simulated time in nanoseconds.
    pub fn now(&self) -> u64 {
        self.sim.now
    }

    /// Advances the simulation by `ns`, checking invariants at every step.
    pub fn run(&mut self, ns: u64) {
        let end = self.sim.now + ns;
        while self.sim.now < end {
            self.step();
        }
    }

    /// Runs until `done` holds or `ns` passed; returns whether it held.
    pub fn run_until(&mut self, ns: u64, mut done: impl FnMut(&Scenario) -> bool) -> bool {
        let end = self.sim.now + ns;
        while self.sim.now < end {
            if done(self) {
                return true;
            }
            self.step();
        }
        done(self)
    }

    fn step(&mut self) {
        let s = &mut self.sim;
        s.now += s.o.tick_ns;
        s.net.run_until(s.now);
        s.lifecycle();
        for i in 0..s.o.nodes {
            if let Err(v) = s.step_node(NodeId(i as u8)) {
                panic!("invariant violated at {} ns: {v}\n{}", s.now, s.summary());
            }
        }
        if let Err(v) = s.global_checks() {
            panic!("invariant violated at {} ns: {v}\n{}", s.now, s.summary());
        }
    }

    /// Proposes on `node` (which must be up).
    pub fn propose(&mut self, node: u8, payload: &[u8]) -> Result<Proposed, crate::ProposeError> {
        let s = &mut self.sim;
        let now = s.now;
        let n = &mut s.nodes[node as usize];
        let core = n.core.as_mut().expect("node is up");
        let r = core.propose(now, payload, n.ep.memory());
        if let Ok(p) = &r {
            s.checker.proposed(p.id, payload);
            execute(core, &mut n.ep);
        }
        if let Err(v) = s.deliver(NodeId(node)) {
            panic!("invariant violated: {v}");
        }
        r
    }

    /// The current leader (lowest id among active leaders).
    pub fn leader(&self) -> Option<u8> {
        self.sim.leader().map(|l| l as u8)
    }

    /// Status of `node`, if it is up.
    pub fn status(&self, node: u8) -> Option<crate::core::Status> {
        self.sim.nodes[node as usize]
            .core
            .as_ref()
            .map(|c| c.status())
    }

    /// Every entry `node` applied since its last restart: (index, id, payload).
    pub fn applied(&self, node: u8) -> &[(u64, crate::EntryId, Vec<u8>)] {
        &self.sim.delivered[node as usize]
    }

    /// Crashes `node` (memory lost); it stays down until [`Scenario::restart`].
    pub fn crash(&mut self, node: u8) {
        let s = &mut self.sim;
        s.net.crash(NodeId(node));
        s.nodes[node as usize].core = None;
        s.nodes[node as usize].down_until = u64::MAX;
        s.delivered[node as usize].clear();
    }

    /// Restarts a crashed node (it rejoins).
    pub fn restart(&mut self, node: u8) {
        self.sim.nodes[node as usize].down_until = 0;
        self.sim.lifecycle();
    }

    /// Pauses `node` (its in-flight operations continue) until [`Scenario::resume`].
    pub fn pause(&mut self, node: u8) {
        self.sim.nodes[node as usize].paused_until = u64::MAX;
    }

    /// The operator pause of a running node (see `Core::set_paused`):
    /// unlike [`Scenario::pause`], the process keeps running.
    pub fn operator_pause(&mut self, node: u8, paused: bool) {
        if let Some(core) = self.sim.nodes[node as usize].core.as_mut() {
            core.set_paused(paused);
        }
    }

    /// Resumes a paused node.
    pub fn resume(&mut self, node: u8) {
        self.sim.nodes[node as usize].paused_until = 0;
    }

    /// Cuts the link between `a` and `b`.
    pub fn cut(&mut self, a: u8, b: u8) {
        self.sim.net.set_cut(NodeId(a), NodeId(b), true);
    }

    /// Heals every link.
    pub fn heal(&mut self) {
        self.sim.net.heal_all();
    }

    /// Highest index applied anywhere.
    pub fn decided(&self) -> u64 {
        self.sim.checker.decided.len() as u64
    }
}
