//! Figures of the `rdma` fabric between two devices, in this process:
//! post-to-completion times of writes and reads from node 0 (on the first
//! device) to node 1 (on the second), and the duration of a grant that
//! moves node 1's log between two connected writers.

use mu::fabric::conformance::suite_layout;
use mu::fabric::rdma::{RdmaConfig, RdmaEndpoint, RdmaOptions};
use mu::fabric::{Completion, Fabric, OpId};
use mu::log::layout::RING;
use mu::NodeId;
use std::net::TcpListener;
use std::time::{Duration, Instant};

const ITERATIONS: usize = 10_000;
const WARM_UP: usize = 500;

#[allow(
    clippy::disallowed_methods,
    reason = "a latency measurement reads the clock"
)]
fn now() -> Instant {
    Instant::now()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn line(what: &str, samples: &mut [Duration]) {
    samples.sort();
    println!(
        "rdma {what}: p50 {:?} p99 {:?} p99.9 {:?} ({} samples)",
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        percentile(samples, 0.999),
        samples.len()
    );
}

/// Waits for the completion of `op` on `f`; fails on an error.
fn complete(f: &mut RdmaEndpoint, op: OpId, out: &mut Vec<Completion>) -> Result<(), String> {
    let start = now();
    loop {
        out.clear();
        f.poll(out);
        if let Some(c) = out.iter().find(|c| c.op == op) {
            return c.result.map_err(|e| format!("operation failed: {e}"));
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("no completion within 10 s".into());
        }
    }
}

fn measure(a: &mut RdmaEndpoint, write: bool, len: u64) -> Result<(), String> {
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut out = Vec::with_capacity(16);
    for i in 0..ITERATIONS + WARM_UP {
        let op = OpId(i as u64);
        let start = now();
        let posted = if write {
            a.post_write(NodeId(1), op, RING, RING, len)
        } else {
            a.post_read(NodeId(1), op, RING, RING, len)
        };
        posted.map_err(|e| e.to_string())?;
        complete(a, op, &mut out)?;
        if i >= WARM_UP {
            samples.push(start.elapsed());
        }
    }
    let kind = if write { "write" } else { "read" };
    line(
        &format!("{kind} {len} B (post to completion)"),
        &mut samples,
    );
    Ok(())
}

/// Runs the measurement: node 0 on `devices[0]`, nodes 1 and 2 on
/// `devices[1]`.
pub fn run(devices: [&str; 2], gid_index: u8) -> Result<(), String> {
    let layout = suite_layout(3);
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let peers: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let config = RdmaConfig {
            id: NodeId(i as u8),
            peers: peers.clone(),
            secret: b"latency".to_vec(),
            layout,
            device: devices[usize::from(i > 0)].to_string(),
            gid_index,
            options: RdmaOptions::default(),
        };
        nodes.push(RdmaEndpoint::start_with_listener(config, l).map_err(|e| e.to_string())?);
    }
    let mut c = nodes.pop().expect("three");
    let mut b = nodes.pop().expect("three");
    let mut a = nodes.pop().expect("three");
    b.grant(NodeId(0)).map_err(|e| e.to_string())?;
    println!(
        "devices: node 0 on {}, node 1 on {}",
        devices[0], devices[1]
    );
    measure(&mut a, true, 64)?;
    measure(&mut a, true, 4096)?;
    measure(&mut a, false, 64)?;

    // Both writers connected, then the log moves between them.
    let mut out = Vec::new();
    b.grant(NodeId(2)).map_err(|e| e.to_string())?;
    c.post_write(NodeId(1), OpId(1), RING, RING, 64)
        .map_err(|e| e.to_string())?;
    complete(&mut c, OpId(1), &mut out)?;
    let mut samples = Vec::new();
    for i in 0..1000 {
        let to = if i % 2 == 0 { 0 } else { 2 };
        let start = now();
        b.grant(NodeId(to)).map_err(|e| e.to_string())?;
        samples.push(start.elapsed());
    }
    line(
        "grant (permission switch: revoke one writer, grant another)",
        &mut samples,
    );
    Ok(())
}
