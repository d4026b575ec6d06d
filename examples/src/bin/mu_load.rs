//! `mu-load <workload> <key_size> <value_size> <host> <port>`: the Mu
//! artifact's Redis and memcached clients in one command (see
//! `mu_examples::load`). Each workload is also a command of its own name
//! (`redis-puts-only 8 30 127.0.0.1 7379`), as in the artifact.

use clap::{Parser, Subcommand};
use mu_examples::load::{main_with, stats, Backend, LoadArgs, Mix, Workload};
use std::path::PathBuf;
use std::process::ExitCode;

/// Closed-loop load against a Redis or memcached port (a sidecar's or a
/// server's): per-request latencies in ns to a file, percentiles on stdout.
#[derive(Parser, Debug)]
#[command(name = "mu-load")]
struct Cli {
    #[command(subcommand)]
    workload: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Redis SETs of random keys.
    RedisPutsOnly(LoadArgs),
    /// Redis GETs of random keys, after SETting every key once.
    RedisGetsOnly(LoadArgs),
    /// Redis GET and SET alternately, after SETting every key once.
    RedisPutsGets(LoadArgs),
    /// memcached sets of random keys.
    MemcachedPutsOnly(LoadArgs),
    /// memcached gets of random keys, after setting every key once.
    MemcachedGetsOnly(LoadArgs),
    /// memcached get and set alternately, after setting every key once.
    MemcachedPutsGets(LoadArgs),
    /// Percentiles of a latency file (ns, one per line): a load
    /// generator's, or a sidecar's `dump-<id>.txt`.
    Stats {
        /// The file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let (backend, mix, args) = match Cli::parse().workload {
        Cmd::RedisPutsOnly(a) => (Backend::Redis, Mix::PutsOnly, a),
        Cmd::RedisGetsOnly(a) => (Backend::Redis, Mix::GetsOnly, a),
        Cmd::RedisPutsGets(a) => (Backend::Redis, Mix::PutsGets, a),
        Cmd::MemcachedPutsOnly(a) => (Backend::Memcached, Mix::PutsOnly, a),
        Cmd::MemcachedGetsOnly(a) => (Backend::Memcached, Mix::GetsOnly, a),
        Cmd::MemcachedPutsGets(a) => (Backend::Memcached, Mix::PutsGets, a),
        Cmd::Stats { file } => {
            return match stats(&file) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mu-load stats: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    main_with(Workload { backend, mix }, &args)
}
