//! The in-process fabric passes the fabric conformance suite.

use mu::fabric::conformance::{run_all, GroupBuilder, SUITE_MAX_PAYLOAD};
use mu::fabric::local::{LocalEndpoint, LocalNetwork};
use mu::fabric::Fabric;
use mu::log::layout::Layout;
use mu::{Config, NodeId};
use std::time::Duration;

/// Builds in-process groups.
struct Local {
    net: Option<LocalNetwork>,
}

impl GroupBuilder for Local {
    type F = LocalEndpoint;

    fn build(&mut self, n: usize, layout: Layout) -> Vec<LocalEndpoint> {
        let configs: Vec<Config> = (0..n as u8)
            .map(|i| {
                let mut c = Config::new(NodeId(i), n as u8);
                c.ring_capacity = layout.ring_capacity;
                c.max_payload = SUITE_MAX_PAYLOAD;
                c
            })
            .collect();
        assert_eq!(
            Layout::new(layout.ring_capacity, SUITE_MAX_PAYLOAD, n),
            layout
        );
        let net = LocalNetwork::new(&configs);
        let nodes = (0..n as u8).map(|i| net.endpoint(NodeId(i))).collect();
        self.net = Some(net);
        nodes
    }

    fn kill(&mut self, endpoint: LocalEndpoint) {
        self.net
            .as_ref()
            .expect("a group was built")
            .set_up(endpoint.node(), false);
    }

    fn restart(&mut self, node: NodeId) -> Option<LocalEndpoint> {
        let net = self.net.as_ref().expect("a group was built");
        net.set_up(node, true);
        let mut endpoint = net.endpoint(node);
        // The in-process network keeps the region and its holder across a
        // restart; a new incarnation starts with its log fenced.
        endpoint.grant(node).expect("self-grant");
        Some(endpoint)
    }

    fn dead_peer_bound(&self) -> Duration {
        Duration::from_millis(100)
    }
}

#[test]
fn local_fabric_passes_the_conformance_suite() {
    run_all(&mut Local { net: None });
}
