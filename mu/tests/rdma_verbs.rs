//! The verbs layer on a real (software) RDMA device: one-sided WRITE and
//! READ between two devices, Mu's permission switch by queue pair access
//! flags, and reconnection after a fenced write. Runs inside the Soft-RoCE
//! guest: `RDMA_VM_NODES=2 scripts/rdma-vm <test binary>`, or through cargo
//! with `CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=scripts/rdma-vm`.
//! Without a device the test fails and says how to get one.

#![cfg(feature = "rdma")]

use mu::fabric::rdma::verbs::{
    devices, Access, CompletionQueue, Context, MemoryRegion, Op, ProtectionDomain, QpState,
    QueuePair, Region, WorkCompletion,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEN: usize = 1 << 16;

/// Devices from the guest's RDMA_VM_DEVS, else MU_RDMA_DEVICE (one device
/// talking to itself).
fn device_pair() -> (String, String, u8) {
    let list = std::env::var("RDMA_VM_DEVS")
        .or_else(|_| std::env::var("MU_RDMA_DEVICE"))
        .unwrap_or_default();
    let names: Vec<&str> = list.split_whitespace().collect();
    let gid = std::env::var("RDMA_VM_GID_INDEX")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1);
    assert!(
        !names.is_empty(),
        "no RDMA device given (devices present: {:?}). Run inside the Soft-RoCE guest: \
         RDMA_VM_NODES=2 scripts/rdma-vm <this test binary>, or set MU_RDMA_DEVICE after \
         `rdma link add rxe0 type rxe netdev <interface>`",
        devices()
    );
    let a = names[0].to_string();
    let b = names.get(1).unwrap_or(&names[0]).to_string();
    (a, b, gid)
}

struct Side {
    region: Arc<Region>,
    mr: Arc<MemoryRegion>,
    cq: Arc<CompletionQueue>,
    pd: Arc<ProtectionDomain>,
    qp: QueuePair,
}

fn side(dev: &str, gid: u8, psn: u32) -> Side {
    let ctx = Context::open(dev, gid).expect("device opens");
    let pd = ProtectionDomain::new(&ctx).unwrap();
    let cq = CompletionQueue::new(&ctx, 256).unwrap();
    let region = Region::new(LEN);
    let mr = MemoryRegion::new(&pd, &region, 0, LEN as u64, Access::READ_WRITE).unwrap();
    let qp = QueuePair::new(&pd, &cq, vec![mr.clone()], 128, 64, psn).unwrap();
    Side {
        region,
        mr,
        cq,
        pd,
        qp,
    }
}

fn wait(cq: &CompletionQueue) -> WorkCompletion {
    let mut out = Vec::new();
    #[allow(clippy::disallowed_methods, reason = "bounded wait for a completion")]
    let started = Instant::now();
    while out.is_empty() {
        cq.poll(&mut out, 1).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no completion within 10 s"
        );
    }
    out[0]
}

fn connect(a: &mut Side, b: &mut Side, b_access: Access) {
    let (ea, eb) = (a.qp.endpoint(), b.qp.endpoint());
    a.qp.connect(&eb, Access::READ_WRITE).expect("a connects");
    b.qp.connect(&ea, b_access).expect("b connects");
}

#[test]
fn write_read_and_the_permission_switch_on_real_verbs() {
    let (da, db, gid) = device_pair();
    println!("devices {da} -> {db}, gid index {gid}");
    let mut a = side(&da, gid, 100);
    let mut b = side(&db, gid, 200);
    connect(&mut a, &mut b, Access::READ_WRITE);

    // WRITE: 64 bytes from a's offset 0 to b's offset 4096.
    let pattern: Vec<u8> = (0..64u8).map(|i| i ^ 0x5a).collect();
    a.region.write(0, &pattern);
    a.qp.post(Op::Write, 1, 0, 0, 64, b.mr.addr(4096), b.mr.rkey(), true)
        .unwrap();
    let wc = wait(&a.cq);
    assert_eq!(
        wc,
        WorkCompletion {
            wr_id: 1,
            error: None
        }
    );
    let mut got = vec![0u8; 64];
    b.region.read(4096, &mut got);
    assert_eq!(got, pattern, "the write did not land");

    // READ: 4 KiB from b's offset 8192 into a's offset 16384.
    let page: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    b.region.write(8192, &page);
    a.qp.post(
        Op::Read,
        2,
        0,
        16384,
        4096,
        b.mr.addr(8192),
        b.mr.rkey(),
        true,
    )
    .unwrap();
    assert_eq!(wait(&a.cq).error, None);
    let mut got = vec![0u8; 4096];
    a.region.read(16384, &mut got);
    assert_eq!(got, page, "the read returned other bytes");

    // Revoke: b takes REMOTE_WRITE away from a's queue pair; it stays in RTS.
    #[allow(clippy::disallowed_methods, reason = "measures the permission switch")]
    let t = Instant::now();
    b.qp.set_access(Access::READ)
        .expect("access change on a live queue pair");
    let switch = t.elapsed();
    assert_eq!(b.qp.query().unwrap(), (QpState::Rts, Access::READ));
    println!("permission switch (ibv_modify_qp access flags): {switch:?}");

    // A write after the revocation fails and changes nothing.
    a.region.write(0, &[0xEE; 64]);
    a.qp.post(Op::Write, 3, 0, 0, 64, b.mr.addr(4096), b.mr.rkey(), true)
        .unwrap();
    let wc = wait(&a.cq);
    assert!(wc.error.is_some(), "a revoked write succeeded: {wc:?}");
    println!("fenced write completed with status {:?}", wc.error);
    b.region.read(4096, &mut got[..64]);
    assert_eq!(
        &got[..64],
        &pattern[..],
        "a fenced write changed the target"
    );

    // Regrant: both ends reset and connect again; writes work again.
    a.qp.reset().unwrap();
    b.qp.reset().unwrap();
    connect(&mut a, &mut b, Access::READ_WRITE);
    a.qp.post(Op::Write, 4, 0, 0, 64, b.mr.addr(4096), b.mr.rkey(), true)
        .unwrap();
    assert_eq!(wait(&a.cq).error, None);
    b.region.read(4096, &mut got[..64]);
    assert_eq!(&got[..64], &[0xEE; 64][..]);

    // Latency of one signalled 64-byte write, for the record.
    let mut samples = Vec::new();
    for i in 0..200u64 {
        #[allow(clippy::disallowed_methods, reason = "measures write latency")]
        let t = Instant::now();
        a.qp.post(
            Op::Write,
            10 + i,
            0,
            0,
            64,
            b.mr.addr(4096),
            b.mr.rkey(),
            true,
        )
        .unwrap();
        assert_eq!(wait(&a.cq).error, None);
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "64 B write latency: median {:?}, p99 {:?} (200 samples)",
        samples[100], samples[198]
    );
    drop((a.pd, b.pd));
}
