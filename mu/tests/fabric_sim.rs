//! The deterministic simulated fabric passes the fabric conformance suite.

use mu::fabric::conformance::{run_all, GroupBuilder};
use mu::fabric::sim::{LinkParams, SimEndpoint, SimNet};
use mu::log::layout::Layout;
use mu::NodeId;
use std::time::Duration;

/// Builds simulated groups and drives their clock from the suite's waits.
struct Sim {
    net: Option<SimNet>,
    seed: u64,
}

impl GroupBuilder for Sim {
    type F = SimEndpoint;

    fn build(&mut self, n: usize, layout: Layout) -> Vec<SimEndpoint> {
        self.seed += 1;
        let net = SimNet::new(n, layout, self.seed, LinkParams::default());
        let nodes = (0..n as u8).map(|i| net.endpoint(NodeId(i))).collect();
        self.net = Some(net);
        nodes
    }

    fn pump(&mut self) {
        let net = self.net.as_ref().expect("a group was built");
        if let Some(t) = net.next_event() {
            net.run_until(t);
        }
    }

    fn kill(&mut self, endpoint: SimEndpoint) {
        use mu::fabric::Fabric;
        self.net
            .as_ref()
            .expect("a group was built")
            .crash(endpoint.node());
    }

    fn restart(&mut self, node: NodeId) -> Option<SimEndpoint> {
        let net = self.net.as_ref().expect("a group was built");
        net.restart(node);
        Some(net.endpoint(node))
    }

    fn dead_peer_bound(&self) -> Duration {
        // Simulated time passes only when pumped; in real time the failure
        // is immediate.
        Duration::from_millis(100)
    }
}

#[test]
fn sim_fabric_passes_the_conformance_suite() {
    run_all(&mut Sim { net: None, seed: 0 });
}
