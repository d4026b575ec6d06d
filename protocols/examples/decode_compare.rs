//! A load-tolerant companion to `benches/codec.rs`: decodes the same
//! pipelined SET/GET stream with this crate's decoders and `redis-protocol`
//! in interleaved rounds and reports each one's best round, so that other
//! work on the machine slows all of them alike instead of skewing one.
//!
//! `cargo run --release -p mu-protocols --example decode_compare`

use std::time::{Duration, Instant};

use bytes::BytesMut;
use mu_protocols::resp::{encode_request, FrameDecoder, RequestDecoder};

fn stream(commands: usize) -> BytesMut {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut out = BytesMut::new();
    for i in 0..commands {
        let key = format!("key:{:08}", next() % 100_000);
        if i % 2 == 0 {
            let exp = 4.0 + (next() % 1000) as f64 / 1000.0 * 8.0;
            let len = (2f64.powf(exp) as usize).clamp(16, 4096);
            let value: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            encode_request(&[&b"SET"[..], key.as_bytes(), &value], &mut out);
        } else {
            encode_request(&[&b"GET"[..], key.as_bytes()], &mut out);
        }
    }
    out
}

/// A named decoder run over a whole buffer, returning a checksum.
type Run = (&'static str, Box<dyn FnMut(BytesMut) -> usize>);

fn time(wire: &BytesMut, f: &mut dyn FnMut(BytesMut) -> usize) -> Duration {
    let buf = wire.clone();
    let start = Instant::now();
    std::hint::black_box(f(buf));
    start.elapsed()
}

fn main() {
    let wire = stream(20_000);
    let mut decoders: Vec<Run> = vec![
        (
            "mu-protocols RequestDecoder",
            Box::new(|mut b| {
                let mut d = RequestDecoder::default();
                let mut n = 0;
                while let Some(r) = d.decode(&mut b).unwrap() {
                    n += r.args.len();
                }
                n
            }),
        ),
        (
            "mu-protocols FrameDecoder",
            Box::new(|mut b| {
                let mut d = FrameDecoder::default();
                let mut n = 0;
                while let Some(f) = d.decode(&mut b).unwrap() {
                    n += usize::from(!f.is_null());
                }
                n
            }),
        ),
        (
            "redis-protocol resp2::decode_bytes_mut",
            Box::new(|mut b| {
                let mut n = 0;
                while let Some((_, amt, _)) =
                    redis_protocol::resp2::decode::decode_bytes_mut(&mut b).unwrap()
                {
                    n += amt;
                }
                n
            }),
        ),
    ];
    let mut best = vec![Duration::MAX; decoders.len()];
    for _round in 0..200 {
        for (i, (_, f)) in decoders.iter_mut().enumerate() {
            best[i] = best[i].min(time(&wire, f.as_mut()));
        }
    }
    let gib = wire.len() as f64 / (1u64 << 30) as f64;
    let baseline = best[2].as_secs_f64();
    println!(
        "stream: {} bytes, 20000 commands (half SET 16-4096 B, half GET)",
        wire.len()
    );
    for ((name, _), t) in decoders.iter().zip(&best) {
        let s = t.as_secs_f64();
        println!(
            "{name:42} best {:>8.3} ms  {:>6.2} GiB/s  {:.2}x redis-protocol",
            s * 1e3,
            gib / s,
            baseline / s
        );
    }
}
