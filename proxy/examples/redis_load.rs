//! A Redis load generator for what redis-benchmark cannot send: `SET`
//! followed by `WAIT <replicas> 0` (Redis's synchronous replication), with
//! the same shapes as redis-benchmark's `-c` and `-P`.
//!
//! Each of `--clients` threads owns one connection and loops: write
//! `--pipeline` SETs (random keys out of `--keys`, a 3-byte value, as
//! redis-benchmark's SET), plus one `WAIT` when `--wait` is given, in one
//! write; read every reply; record the batch's round trip. One line of CSV
//! in redis-benchmark's column order is printed at the end; latencies are
//! per batch (with `--pipeline 1`, per request).
//!
//! `cargo run --release -p mu-sidecar --example redis_load -- --port 6379 --wait 2`

use bytes::BytesMut;
use clap::Parser;
use mu_protocols::resp::{encode_request, Frame, FrameDecoder};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "SET (+ WAIT) load against a Redis-protocol server")]
struct Args {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Connections, one thread each (redis-benchmark -c).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// SETs sent together per round trip (redis-benchmark -P).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Total SETs over all clients (redis-benchmark -n).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Keys are key:0 .. key:<keys-1>, picked at random.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// After each batch of SETs, `WAIT <n> 0`; a reply below n is counted
    /// as an error.
    #[arg(long)]
    wait: Option<u32>,
    /// Name in the CSV line.
    #[arg(long, default_value = "SET")]
    name: String,
}

/// What one client thread measured.
#[derive(Debug, Default)]
struct Measured {
    batch_us: Vec<f64>,
    errors: u64,
}

fn main() {
    let args = Args::parse();
    let per_client = args.requests.div_ceil(args.clients).max(1);
    let batches = per_client.div_ceil(args.pipeline).max(1);
    let start = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|c| {
            let addr = format!("{}:{}", args.host, args.port);
            let (pipeline, keys, wait) = (args.pipeline, args.keys, args.wait);
            std::thread::spawn(move || client(&addr, c as u64, batches, pipeline, keys, wait))
        })
        .collect();
    let mut all = Measured::default();
    for t in threads {
        let m = t.join().expect("client thread");
        all.batch_us.extend(m.batch_us);
        all.errors += m.errors;
    }
    let elapsed = start.elapsed();
    let sets = (batches * args.pipeline * args.clients) as f64;
    all.batch_us.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((all.batch_us.len() as f64 * p).ceil() as usize).clamp(1, all.batch_us.len());
        all.batch_us[i - 1] / 1000.0
    };
    let avg = all.batch_us.iter().sum::<f64>() / all.batch_us.len() as f64 / 1000.0;
    println!(
        "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\",\"errors\""
    );
    println!(
        "\"{}\",\"{:.2}\",\"{avg:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{:.3}\",\"{}\"",
        args.name,
        sets / elapsed.as_secs_f64(),
        all.batch_us[0] / 1000.0,
        pct(0.50),
        pct(0.95),
        pct(0.99),
        all.batch_us[all.batch_us.len() - 1] / 1000.0,
        all.errors
    );
    if all.errors > 0 {
        std::process::exit(1);
    }
}

/// One connection's loop.
fn client(
    addr: &str,
    seed: u64,
    batches: usize,
    pipeline: usize,
    keys: u64,
    wait: Option<u32>,
) -> Measured {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut rng = SmallRng::seed_from_u64(seed);
    let wait_args = wait.map(|n| ["WAIT".to_string(), n.to_string(), "0".to_string()]);
    let replies_per_batch = pipeline + usize::from(wait.is_some());
    let (mut out, mut inb) = (BytesMut::new(), BytesMut::new());
    let mut frames = FrameDecoder::default();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut m = Measured {
        batch_us: Vec::with_capacity(batches),
        errors: 0,
    };
    for _ in 0..batches {
        out.clear();
        for _ in 0..pipeline {
            let key = format!("key:{}", rng.gen_range(0..keys));
            encode_request(&["SET", key.as_str(), "xxx"], &mut out);
        }
        if let Some(w) = &wait_args {
            encode_request(w, &mut out);
        }
        let t = Instant::now();
        s.write_all(&out).expect("request written");
        let mut got = 0;
        while got < replies_per_batch {
            match frames.decode(&mut inb).expect("a valid reply") {
                Some(f) => {
                    got += 1;
                    let ok = match (&f, got > pipeline) {
                        (Frame::Integer(n), true) => *n >= i64::from(wait.unwrap_or(0)),
                        (Frame::Simple(s), false) => &s[..] == b"OK",
                        _ => false,
                    };
                    m.errors += u64::from(!ok);
                }
                None => {
                    let n = s.read(&mut chunk).expect("reply read");
                    assert!(n > 0, "{addr} closed the connection");
                    inb.extend_from_slice(&chunk[..n]);
                }
            }
        }
        m.batch_us.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    m
}
