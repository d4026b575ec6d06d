//! In-process latency figures of the `tcp` and `shm` fabrics.

use mu::fabric::shm::{ShmConfig, ShmEndpoint, DEFAULT_LEASE_TIMEOUT};
use mu::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use mu::fabric::{Completion, Fabric, OpId};
use mu::log::layout::{Layout, RING};
use mu::NodeId;
use std::net::TcpListener;
use std::time::{Duration, Instant};

const ITERATIONS: usize = 20_000;
const SIZES: [u64; 3] = [64, 256, 4096];

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

/// Posts `ITERATIONS` operations one at a time from node 0 to node 1 and
/// prints the distribution of post-to-completion times.
fn measure<F: Fabric>(name: &str, a: &mut F, write: bool, len: u64) {
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut out: Vec<Completion> = Vec::with_capacity(16);
    for i in 0..ITERATIONS + 1000 {
        let op = OpId(i as u64);
        let start = now();
        let posted = if write {
            a.post_write(NodeId(1), op, RING, RING, len)
        } else {
            a.post_read(NodeId(1), op, RING, RING, len)
        };
        posted.expect("post");
        loop {
            out.clear();
            a.poll(&mut out);
            if let Some(c) = out.first() {
                assert_eq!(c.result, Ok(()), "operation failed");
                break;
            }
        }
        // The first 1000 warm up connections, mappings and caches.
        if i >= 1000 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    println!(
        "{name} {} {len} B: p50 {:?} p99 {:?} p99.9 {:?} ({ITERATIONS} ops)",
        if write { "write" } else { "read" },
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
    );
}

fn shm_pair(dir: &std::path::Path, layout: Layout) -> Result<(ShmEndpoint, ShmEndpoint), String> {
    let node = |i: u8| {
        ShmEndpoint::create(ShmConfig {
            dir: dir.to_path_buf(),
            group: "lat".into(),
            id: NodeId(i),
            layout,
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
        })
        .map_err(|e| e.to_string())
    };
    Ok((node(0)?, node(1)?))
}

/// The floor under the `tcp` figures: 64-byte ping-pongs between two
/// threads over one loopback connection (blocking sockets, no Nagle).
fn raw_tcp_ping_pong() -> Result<(), String> {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let echo = std::thread::Builder::new()
        .name("raw-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            let mut b = [0u8; 64];
            loop {
                if s.read_exact(&mut b).is_err() {
                    return Ok(());
                }
                s.write_all(&b)?;
            }
        })
        .map_err(|e| e.to_string())?;
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut b = [7u8; 64];
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 0..ITERATIONS + 1000 {
        let start = now();
        s.write_all(&b).map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        if i >= 1000 {
            samples.push(start.elapsed());
        }
    }
    drop(s);
    let _ = echo.join();
    samples.sort();
    println!(
        "raw loopback tcp ping-pong 64 B: p50 {:?} p99 {:?} p99.9 {:?} ({ITERATIONS} round trips)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
    );
    Ok(())
}

/// Round trips through the `shm` fabric between two threads: each waits
/// (spinning on its own region) for the other's 8-byte write into its
/// control area, then writes back: the cross-core floor under replication.
fn shm_ping_pong(a: ShmEndpoint, b: ShmEndpoint) -> Result<(), String> {
    use mu::fabric::Memory;
    const SLOT: u64 = 2048;
    fn wait_for<F: Fabric>(f: &mut F, value: u64) {
        while f.memory().read_u64(SLOT) != value {
            std::hint::spin_loop();
        }
    }
    fn send<F: Fabric>(f: &mut F, value: u64, out: &mut Vec<Completion>) {
        f.memory().write_u64(RING, value);
        f.post_write(NodeId(1 - f.node().0), OpId(value), RING, SLOT, 8)
            .expect("post");
        out.clear();
        f.poll(out);
        assert!(out.iter().all(|c| c.result.is_ok()), "ping failed");
    }
    let total = (ITERATIONS + 1000) as u64;
    let echo = std::thread::Builder::new()
        .name("shm-echo".into())
        .spawn(move || {
            let mut b = b;
            let mut out = Vec::new();
            for i in 1..=total {
                wait_for(&mut b, 2 * i - 1);
                send(&mut b, 2 * i, &mut out);
            }
        })
        .map_err(|e| e.to_string())?;
    let mut a = a;
    let mut out = Vec::new();
    let mut samples = Vec::with_capacity(ITERATIONS);
    for i in 1..=total {
        let start = now();
        send(&mut a, 2 * i - 1, &mut out);
        wait_for(&mut a, 2 * i);
        if i > 1000 {
            samples.push(start.elapsed());
        }
    }
    echo.join()
        .map_err(|_| "the echo thread panicked".to_string())?;
    samples.sort();
    println!(
        "shm ping-pong 8 B between two threads: p50 {:?} p99 {:?} p99.9 {:?} ({ITERATIONS} round trips)",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
    );
    Ok(())
}

/// Runs every measurement.
pub fn run() -> Result<(), String> {
    raw_tcp_ping_pong()?;
    let layout = Layout::new(1 << 20, 4096, 2);
    // tcp on loopback.
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let peers: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut tcp: Vec<TcpEndpoint> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let config = TcpConfig {
                id: NodeId(i as u8),
                peers: peers.clone(),
                secret: b"latency".to_vec(),
                layout,
                options: TcpOptions::default(),
            };
            TcpEndpoint::start_with_listener(config, l).map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    tcp[1].grant(NodeId(0)).map_err(|e| e.to_string())?;
    for len in SIZES {
        measure("tcp", &mut tcp[0], true, len);
    }
    measure("tcp", &mut tcp[0], false, 64);
    drop(tcp);

    // shm in /dev/shm.
    let dir =
        std::path::PathBuf::from(format!("/dev/shm/mu-fabric-latency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        let (mut a, mut b) = shm_pair(&dir, layout)?;
        b.grant(NodeId(0)).map_err(|e| e.to_string())?;
        for len in SIZES {
            measure("shm", &mut a, true, len);
        }
        measure("shm", &mut a, false, 64);
        shm_ping_pong(a, b)?;
        for ring in [1u64 << 20, 64 << 20] {
            let (_a, mut b) = shm_pair(&dir, Layout::new(ring, 4096, 2))?;
            let mut samples = Vec::new();
            for k in 0..21u8 {
                let start = now();
                b.grant(NodeId(k % 2)).map_err(|e| e.to_string())?;
                samples.push(start.elapsed());
            }
            samples.sort();
            println!(
                "shm grant with a {} MiB ring: p50 {:?} max {:?} (21 grants)",
                ring >> 20,
                percentile(&samples, 0.5),
                samples[samples.len() - 1]
            );
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
