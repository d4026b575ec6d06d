//! The `rdma` fabric on Soft-RoCE passes the fabric conformance suite,
//! including a writer process stopped mid-write. Runs inside the guest of
//! `scripts/rdma-vm` (nodes spread over its rxe devices):
//! `RDMA_VM_NODES=2 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm
//! cargo test -p mu --features rdma --test fabric_rdma`. Without a device
//! it fails and says how to get one.

#![cfg(feature = "rdma")]

use mu::fabric::conformance::{run_all, GroupBuilder};
use mu::fabric::rdma::{test_devices, RdmaConfig, RdmaEndpoint, RdmaOptions};
use mu::log::layout::Layout;
use mu::NodeId;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "rdma conformance cluster secret";

/// The devices to spread nodes over and the GID index.
fn devices_to_use() -> (Vec<String>, u8) {
    test_devices(
        "RDMA_VM_NODES=2 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm \
         cargo test -p mu --features rdma --test fabric_rdma",
    )
}

struct Rdma {
    devices: Vec<String>,
    gid_index: u8,
    /// Control addresses and layout of the last group built.
    last: Option<(Vec<SocketAddr>, Layout)>,
}

impl Rdma {
    fn new() -> Self {
        let (devices, gid_index) = devices_to_use();
        Rdma {
            devices,
            gid_index,
            last: None,
        }
    }

    fn device(&self, node: usize) -> String {
        self.devices[node % self.devices.len()].clone()
    }

    fn endpoint(
        &self,
        id: usize,
        addrs: &[SocketAddr],
        layout: Layout,
        l: TcpListener,
    ) -> RdmaEndpoint {
        let config = RdmaConfig {
            id: NodeId(id as u8),
            peers: addrs.to_vec(),
            secret: SECRET.as_bytes().to_vec(),
            layout,
            device: self.device(id),
            gid_index: self.gid_index,
            options: RdmaOptions::default(),
        };
        RdmaEndpoint::start_with_listener(config, l).expect("start rdma endpoint")
    }
}

fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    let addrs = ls.iter().map(|l| l.local_addr().expect("addr")).collect();
    (ls, addrs)
}

impl GroupBuilder for Rdma {
    type F = RdmaEndpoint;

    fn build(&mut self, n: usize, layout: Layout) -> Vec<RdmaEndpoint> {
        let (ls, addrs) = listeners(n);
        self.last = Some((addrs.clone(), layout));
        ls.into_iter()
            .enumerate()
            .map(|(i, l)| self.endpoint(i, &addrs, layout, l))
            .collect()
    }

    fn restart(&mut self, node: NodeId) -> Option<RdmaEndpoint> {
        let (addrs, layout) = self.last.clone().expect("a group was built");
        let l = TcpListener::bind(addrs[node.idx()]).expect("bind the restarted node's address");
        Some(self.endpoint(node.idx(), &addrs, layout, l))
    }

    fn kill(&mut self, endpoint: RdmaEndpoint) {
        drop(endpoint);
    }

    fn dead_peer_bound(&self) -> Duration {
        RdmaOptions::default().dead_peer_bound()
    }

    fn build_with_writer_process(
        &mut self,
        n: usize,
        layout: Layout,
        writer: NodeId,
        target: NodeId,
    ) -> Option<(Vec<Option<RdmaEndpoint>>, Child)> {
        let (ls, addrs) = listeners(n);
        let mut nodes = Vec::new();
        for (i, l) in ls.into_iter().enumerate() {
            if i == writer.idx() {
                // The child binds this port itself.
                drop(l);
                nodes.push(None);
            } else {
                nodes.push(Some(self.endpoint(i, &addrs, layout, l)));
            }
        }
        let peers: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_mu-fabric-peer"))
            .args(["paused-writer", "--fabric", "rdma"])
            .args(["--group", &n.to_string()])
            .args(["--node", &writer.0.to_string()])
            .args(["--target", &target.0.to_string()])
            .args(["--peers", &peers.join(",")])
            .args(["--rdma-device", &self.device(writer.idx())])
            .args(["--gid-index", &self.gid_index.to_string()])
            .env("MU_FABRIC_SECRET", SECRET)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start mu-fabric-peer");
        Some((nodes, child))
    }
}

#[test]
fn rdma_fabric_passes_the_conformance_suite() {
    run_all(&mut Rdma::new());
}
