//! The sidecar's 3-node smoke test over the `rdma` fabric: three
//! redis-servers behind three sidecars, one RDMA device each; a write
//! through one node is read back through the others and the backends end
//! identical. Runs inside the Soft-RoCE guest:
//!
//! ```sh
//! RDMA_VM_NODES=3 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm \
//!   cargo test -p mu-sidecar --features rdma --test rdma_sidecar
//! ```
//!
//! or on a host with devices: `MU_RDMA_DEVICES="mlx5_0 mlx5_1 mlx5_2"`
//! (and `RDMA_VM_GID_INDEX`).
#![cfg(feature = "rdma")]

mod common;

use common::{redis_snapshot, text, Cluster, Kind, RespClient, Via};
use std::time::Duration;

/// Guest figures are 10–40× a real NIC's and the guest's virtual CPUs are
/// slow: a 20 ms heartbeat keeps the failure detector from seeing them as
/// failures, and starting takes a while.
const HEARTBEAT_US: &str = "20000";
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn three_sidecars_replicate_over_rdma() {
    let (devs, gid) = mu::fabric::rdma::test_devices(
        "RDMA_VM_NODES=3 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/rdma-vm \
         cargo test -p mu-sidecar --features rdma --test rdma_sidecar",
    );
    let gid = gid.to_string();
    let c = Cluster::start_with(
        Kind::Redis,
        3,
        "rdma",
        &["--rdma-gid-index", &gid, "--heartbeat-us", HEARTBEAT_US],
        |id| {
            vec![
                "--rdma-device".into(),
                devs[usize::from(id - 1) % devs.len()].clone(),
            ]
        },
        LIMIT,
        Via::Tcp,
    );
    let all = [0, 1, 2];
    let leader = c.wait_leader(&all, LIMIT);
    // A write through a follower (forwarded to the leader) and one through
    // the leader; both read back through every node.
    let follower = (leader + 1) % 3;
    let mut f = RespClient::connect(c.nodes[follower].listen).unwrap();
    assert_eq!(text(&f.cmd(&["SET", "hello", "world"])), "OK");
    let mut l = RespClient::connect(c.nodes[leader].listen).unwrap();
    assert_eq!(text(&l.cmd(&["RPUSH", "list", "a", "b"])), "2");
    c.wait_applied(&all, c.commit_index(&all), LIMIT);
    for n in &c.nodes {
        let mut r = RespClient::connect(n.listen).unwrap();
        assert_eq!(text(&r.cmd(&["GET", "hello"])), "world", "node {}", n.id);
    }
    let first = redis_snapshot(c.nodes[0].backend);
    for n in &c.nodes[1..] {
        assert_eq!(
            redis_snapshot(n.backend),
            first,
            "node {}\n{}",
            n.id,
            c.logs()
        );
    }
    let status = c.status(leader).expect("/status");
    assert_eq!(status["fabric"], "rdma", "{status}");
}
