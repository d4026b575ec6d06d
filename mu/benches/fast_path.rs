//! Cost of the replication fast path in the core: propose on the leader,
//! writes to two followers, completions, commit, and delivery on all three
//! replicas, on the deterministic sim fabric (so the figure is the protocol
//! code's CPU time, not a network's).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mu::sim::FastPath;

fn fast_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_path");
    for size in [64u32, 4096] {
        let mut g = FastPath::new(size);
        for _ in 0..1_000 {
            g.replicate_one();
        }
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("entry", size), &size, |b, _| {
            b.iter(|| g.replicate_one())
        });
    }
    group.finish();
}

criterion_group!(benches, fast_path);
criterion_main!(benches);
