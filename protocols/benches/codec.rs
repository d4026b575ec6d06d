//! Decode throughput on a realistic pipelined client stream: mixed SET/GET
//! (half each) with values of 16–4096 bytes (log-uniform), parsed by this
//! crate's request and frame decoders and by the `redis-protocol` crate
//! (RESP2, zero-copy `decode_bytes_mut`) over the same bytes in the same
//! run. Also: encoding of the same requests.
//!
//! `cargo bench -p mu-protocols --bench codec`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use mu_protocols::resp::{encode_request, FrameDecoder, RequestDecoder};

/// A small deterministic generator (xorshift64*), so every run parses the
/// same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `commands` pipelined SET/GET requests; SET values are 16..=4096 bytes,
/// log-uniform (as many 16–32 B values as 2–4 KiB ones).
fn stream(commands: usize) -> BytesMut {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = BytesMut::new();
    for i in 0..commands {
        let key = format!("key:{:08}", rng.next() % 100_000);
        if i % 2 == 0 {
            let exp = 4.0 + (rng.next() % 1000) as f64 / 1000.0 * 8.0; // 2^4 .. 2^12
            let len = (2f64.powf(exp) as usize).clamp(16, 4096);
            let value: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            encode_request(&[&b"SET"[..], key.as_bytes(), &value], &mut out);
        } else {
            encode_request(&[&b"GET"[..], key.as_bytes()], &mut out);
        }
    }
    out
}

fn decode(c: &mut Criterion) {
    let wire = stream(20_000);
    let mut group = c.benchmark_group("decode_pipelined_set_get");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function(BenchmarkId::new("mu-protocols", "RequestDecoder"), |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut dec = RequestDecoder::default();
                let mut n = 0;
                while let Some(req) = dec.decode(&mut buf).unwrap() {
                    n += req.args.len();
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function(BenchmarkId::new("mu-protocols", "FrameDecoder"), |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let mut dec = FrameDecoder::default();
                let mut n = 0;
                while let Some(frame) = dec.decode(&mut buf).unwrap() {
                    n += usize::from(!frame.is_null());
                }
                n
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function(
        BenchmarkId::new("redis-protocol", "resp2::decode_bytes_mut"),
        |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| {
                    let mut n = 0;
                    while let Some((_frame, amt, _)) =
                        redis_protocol::resp2::decode::decode_bytes_mut(&mut buf).unwrap()
                    {
                        n += amt;
                    }
                    n
                },
                BatchSize::LargeInput,
            )
        },
    );
    group.finish();
}

fn encode(c: &mut Criterion) {
    let value = vec![b'x'; 1024];
    let mut group = c.benchmark_group("encode_set_1KiB");
    group.throughput(Throughput::Bytes(1024));
    group.bench_function("encode_request", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            encode_request(&[&b"SET"[..], b"key:00000001", &value], &mut out);
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
