//! The in-process checks of the conformance suite.

use super::{clock, pattern, Group, GroupBuilder, EVENT_DEADLINE, LARGE_WRITE};
use crate::error::OpError;
use crate::log::layout::{self, LOG, RING};
use crate::types::NodeId;
use std::time::Duration;

/// Writes to one peer complete in post order; a read posted after them
/// sees the last one.
pub fn per_peer_order<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 2);
    g.grant(1, 0);
    const K: u64 = 200;
    let target = RING + 128;
    let mut ops = Vec::new();
    for i in 0..K {
        // Each write has its own source bytes: they must stay unchanged
        // until the completion is polled.
        let src = RING + 4096 + 8 * i;
        g.local_write(0, src, &(i + 1).to_le_bytes());
        ops.push(g.write(0, 1, src, target, 8));
    }
    let landing = layout::slot(layout::STAGE_ACKS, NodeId(0));
    let read = g.read(0, 1, target, landing, 8);
    ops.push(read);
    // A control-area write after them is ordered too.
    let ctl = g.write(
        0,
        1,
        RING + 4096,
        layout::slot(layout::REQUESTS, NodeId(0)),
        8,
    );
    ops.push(ctl);
    for &op in &ops {
        g.expect_ok(0, op, "ordered write or read");
    }
    assert_eq!(
        g.completion_order(0, 1),
        ops,
        "completions to one peer must arrive in post order"
    );
    let seen = u64::from_le_bytes(g.local_read(0, landing, 8).try_into().expect("8 bytes"));
    assert_eq!(seen, K, "a read posted after {K} writes must see the last");
    let landed = u64::from_le_bytes(g.local_read(1, target, 8).try_into().expect("8 bytes"));
    assert_eq!(landed, K, "the target must hold the last write");
}

/// Bytes written to a peer's control area, log and scratch read back.
pub fn read_your_write<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    let scratch = g.layout.scratch(NodeId(1));
    let places = [
        (layout::slot(layout::REQUESTS, NodeId(0)), 8u64),
        (LOG, 64),
        (RING + 64 * 3, 4096),
        (scratch, 4096),
    ];
    for (i, &(remote, len)) in places.iter().enumerate() {
        let data = pattern(100 + i as u64, len);
        let src = RING + (i as u64) * 8192;
        g.local_write(0, src, &data);
        let w = g.write(0, 2, src, remote, len);
        let back = RING + 64 * 1024 + (i as u64) * 8192;
        let r = g.read(0, 2, remote, back, len);
        g.expect_ok(0, w, "write to a held log / the control area");
        g.expect_ok(0, r, "read back");
        assert_eq!(g.local_read(0, back, len), data, "read back at {remote}");
        assert_eq!(g.local_read(2, remote, len), data, "landed at {remote}");
    }
}

/// A write into a log the writer does not hold fails with `Permission` and
/// changes nothing.
pub fn write_without_permission<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    let before = g.local_read(1, 0, g.layout.log_end());
    let data = pattern(7, 4096);
    g.local_write(0, RING, &data);
    // Nobody holds node 1's log yet.
    let w = g.write(0, 1, RING, RING + 256, 4096);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write to an ungranted log"
    );
    // Someone else holds it.
    g.grant(1, 2);
    let w = g.write(0, 1, RING, LOG, 64);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write to a log held by another"
    );
    // A write that straddles the control area and the log changes neither.
    let w = g.write(0, 1, RING, LOG - 1024, 4096);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "write straddling into the log"
    );
    let after = g.local_read(1, 0, g.layout.log_end());
    assert!(
        before == after,
        "a refused write changed the target's region"
    );
}

/// After `grant` returns, no write from the previous holder lands, not even
/// one posted before the grant; the new holder's writes land.
pub fn grant_fences_previous_holder<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    let (owner, old, new) = (0u8, 1u8, 2u8);
    g.grant(owner, old);
    let first = pattern(1, 64);
    g.local_write(old, RING, &first);
    let w = g.write(old, owner, RING, RING, 64);
    g.expect_ok(old, w, "the holder's write");
    // Writes in flight while the owner grants the log to someone else.
    const K: u64 = 64;
    let mut inflight = Vec::new();
    for i in 0..K {
        let src = RING + 4096 + 256 * i;
        g.local_write(old, src, &pattern(1000 + i, 256));
        inflight.push(g.write(old, owner, src, RING + 256 * (i + 1), 256));
    }
    g.grant(owner, new);
    let snapshot = g.log_snapshot(owner);
    for (i, &op) in inflight.iter().enumerate() {
        match g.wait(old, op) {
            Ok(()) => {
                // It completed successfully, so it landed before the grant.
                let at = (RING + 256 * (i as u64 + 1) - LOG) as usize;
                assert!(
                    snapshot[at..at + 256] == pattern(1000 + i as u64, 256)[..],
                    "write {i} completed successfully but was not in place when grant returned"
                );
            }
            Err(OpError::Permission) => {}
            Err(e) => panic!("in-flight write of the revoked holder failed with {e}"),
        }
    }
    for i in 0..8 {
        let w = g.write(old, owner, RING, RING + 64 * i, 64);
        assert_eq!(
            g.wait(old, w),
            Err(OpError::Permission),
            "revoked holder's write"
        );
    }
    assert!(
        g.log_snapshot(owner) == snapshot,
        "a write of the revoked holder landed after grant returned"
    );
    // The new holder writes.
    let data = pattern(2, 512);
    g.local_write(new, RING, &data);
    let w = g.write(new, owner, RING, RING + 8192, 512);
    g.expect_ok(new, w, "the new holder's write");
    assert_eq!(g.local_read(owner, RING + 8192, 512), data);
    // Granting to oneself fences every remote writer.
    g.grant(owner, owner);
    let w = g.write(new, owner, RING, RING + 8192, 512);
    assert_eq!(
        g.wait(new, w),
        Err(OpError::Permission),
        "after a self-grant"
    );
    // The owner's own writes to its log always work.
    g.local_write(owner, RING, &first);
    assert_eq!(g.local_read(owner, RING, 64), first);
}

/// Whoever holds the log, every member reads and writes the control area.
pub fn control_area_always_accessible<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    for holder in [None, Some(0u8), Some(2u8), Some(1u8)] {
        if let Some(h) = holder {
            g.grant(1, h);
        }
        for from in [0u8, 2] {
            let value = pattern(u64::from(from) + 10 * holder.map_or(9, u64::from), 8);
            let slot = layout::slot(layout::REQUESTS, NodeId(from));
            g.local_write(from, RING, &value);
            let w = g.write(from, 1, RING, slot, 8);
            g.expect_ok(from, w, "control-area write");
            let r = g.read(from, 1, layout::STATUS, RING + 64, 64);
            g.expect_ok(from, r, "control-area read");
            assert_eq!(g.local_read(1, slot, 8), value);
            // The log is readable by everyone too (a candidate reads it).
            let r = g.read(from, 1, LOG, RING + 128, 64);
            g.expect_ok(from, r, "log read");
        }
    }
}

/// A 1 MiB write lands whole and reads back.
pub fn large_writes<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 2);
    g.grant(1, 0);
    for round in 0..3u64 {
        let data = pattern(50 + round, LARGE_WRITE);
        g.local_write(0, RING, &data);
        let w = g.write(0, 1, RING, RING + 64 * round, LARGE_WRITE);
        g.expect_ok(0, w, "1 MiB write");
        assert!(
            g.local_read(1, RING + 64 * round, LARGE_WRITE) == data,
            "1 MiB landed"
        );
        let back = RING + 2 * LARGE_WRITE;
        let r = g.read(0, 1, RING + 64 * round, back, LARGE_WRITE);
        g.expect_ok(0, r, "1 MiB read");
        assert!(
            g.local_read(0, back, LARGE_WRITE) == data,
            "1 MiB read back"
        );
    }
}

/// Operations to a killed node fail within the backend's bound; the others
/// keep working.
pub fn dead_peer_fails_in_bounded_time<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    g.grant(1, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write before the kill");
    let victim = g.nodes[2].take().expect("alive");
    g.builder.kill(victim);
    let bound = g.builder.dead_peer_bound();
    // The bound, plus slack for a loaded machine.
    let limit = bound + bound / 2 + Duration::from_millis(500);
    for round in 0..3u64 {
        let started = clock();
        let w = g.write(0, 2, RING, RING + 64 * round, 64);
        let r = g.read(0, 2, layout::STATUS, RING + 4096, 64);
        let wr = g.wait_within(0, w, limit);
        let rr = g.wait_within(0, r, limit);
        assert!(wr.is_err(), "a write to a dead node succeeded");
        assert!(rr.is_err(), "a read from a dead node succeeded");
        assert!(
            started.elapsed() <= limit,
            "errors from a dead node took {:?} (bound {bound:?})",
            started.elapsed()
        );
    }
    let w = g.write(0, 1, RING, RING, 64);
    g.expect_ok(0, w, "write to a live node after another died");
}

/// After a node is killed and restarted, operations to it succeed again
/// and land in the new incarnation, whose log nobody may write until it
/// grants it.
pub fn restarted_peer_is_reachable_again<B: GroupBuilder>(builder: &mut B) {
    let mut g = Group::new(builder, 3);
    g.grant(2, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write before the kill");
    let victim = g.nodes[2].take().expect("alive");
    g.builder.kill(victim);
    let w = g.write(0, 2, RING, layout::STATUS, 8);
    assert!(g.wait(0, w).is_err(), "a write to a killed node succeeded");
    let Some(fresh) = g.builder.restart(NodeId(2)) else {
        return;
    };
    g.nodes[2] = Some(fresh);
    let slot = layout::slot(layout::REQUESTS, NodeId(0));
    let value = pattern(77, 8);
    g.local_write(0, RING + 512, &value);
    let start = clock();
    loop {
        let w = g.write(0, 2, RING + 512, slot, 8);
        if g.wait(0, w).is_ok() {
            break;
        }
        assert!(
            start.elapsed() < EVENT_DEADLINE,
            "operations to a restarted node kept failing for {EVENT_DEADLINE:?}"
        );
        g.builder.pump();
    }
    assert_eq!(
        g.local_read(2, slot, 8),
        value,
        "landed in the new incarnation"
    );
    let w = g.write(0, 2, RING, RING, 64);
    assert_eq!(
        g.wait(0, w),
        Err(OpError::Permission),
        "a restarted node's log is fenced until it grants it"
    );
    g.grant(2, 0);
    let w = g.write(0, 2, RING, RING, 64);
    g.expect_ok(0, w, "write after the restarted node's grant");
}
