//! Command-line options; every flag is also an environment variable.

use crate::backend::BackendAddr;
use clap::{Parser, ValueEnum};
use mu::node::NodeOptions;
use std::net::SocketAddr;
use std::time::Duration;

/// Which server the sidecar fronts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// redis-server (RESP2/RESP3 and inline commands).
    Redis,
    /// memcached (text and meta protocol).
    Memcached,
}

/// Where reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadPolicy {
    /// From the local backend as it is (fast; may lag the leader by the
    /// entries not yet applied here).
    Local,
    /// Linearizable: each read first commits a barrier through the log and
    /// waits until this node applied it.
    Leader,
}

/// What a node does when its data are found to differ from the group's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnDivergence {
    /// Count it, log it and set the `diverged` gauge; keep serving.
    Report,
    /// Also stop serving reads and report not ready, until a state
    /// transfer replaces the data.
    Fence,
    /// Fence, and replace the data with a copy of a peer's at once (a
    /// state transfer).
    Resync,
}

/// mu-sidecar: replicates the writes sent to a local redis-server or
/// memcached to the same server on every other node, with Mu consensus.
///
/// Point your application at `--listen` instead of the server. Writes are
/// replicated before they are answered; reads are served locally. Example,
/// node 1 of 3 over tcp on one host:
///
///   mu-sidecar --id 1 --backend 127.0.0.1:6379 --listen 127.0.0.1:7001 \
///     --peers 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \
///     --forward-peers 127.0.0.1:7201,127.0.0.1:7202,127.0.0.1:7203 \
///     --http 127.0.0.1:9001
///
/// `cargo run -p mu-examples --bin local-cluster` starts a whole group.
#[derive(Parser, Debug, Clone)]
#[command(name = "mu-sidecar", version, verbatim_doc_comment)]
pub struct Options {
    /// This node's id, 1..=N (the position of its addresses in the lists).
    #[arg(long, env = "MU_ID")]
    pub id: u8,
    /// The server behind this sidecar.
    #[arg(long, env = "MU_BACKEND_KIND", value_enum, default_value = "redis")]
    pub backend_kind: BackendKind,
    /// The local server: `ip:port`, or its Unix socket as `unix:/path`
    /// (redis-server's `unixsocket`, memcached's `-s`), which costs both
    /// ends less CPU per request than loopback TCP.
    #[arg(long, env = "MU_BACKEND", default_value = "127.0.0.1:6379")]
    pub backend: BackendAddr,
    /// Redis: password the sidecar's own connections use (AUTH); clients
    /// still authenticate themselves, their AUTH goes to the server.
    #[arg(long, env = "MU_BACKEND_PASSWORD")]
    pub backend_password: Option<String>,
    /// Redis: ACL user for the sidecar's own connections (with the password).
    /// It runs every replicated write, so it needs every command the clients
    /// write with, plus `+acl|getuser` and `+acl|dryrun` to check that each
    /// client's own user may run its writes.
    #[arg(long, env = "MU_BACKEND_USER")]
    pub backend_user: Option<String>,
    /// Where clients connect (speaks the server's protocol).
    #[arg(long, env = "MU_LISTEN", default_value = "127.0.0.1:7379")]
    pub listen: SocketAddr,
    /// Every sidecar's peer port (writes forwarded from followers to the
    /// leader), comma separated, in id order. With `--registry` and no list,
    /// addresses are published and found in the registry.
    #[arg(long, env = "MU_FORWARD_PEERS", value_delimiter = ',')]
    pub forward_peers: Vec<SocketAddr>,
    /// HTTP address of /metrics, /healthz, /readyz and /status.
    #[arg(long, env = "MU_HTTP", default_value = "127.0.0.1:9379")]
    pub http: SocketAddr,
    /// Where reads are served.
    #[arg(long, env = "MU_READS", value_enum, default_value = "local")]
    pub reads: ReadPolicy,
    /// How long a write waits for a leader (during a leader change) before
    /// it is answered with TRYAGAIN / SERVER_ERROR, ms.
    #[arg(long, env = "MU_WRITE_DEADLINE_MS", default_value_t = 2_000)]
    pub write_deadline_ms: u64,
    /// Largest replicated entry (a write with its arguments), bytes.
    /// Bigger writes are refused with a clear error. The ring (`--ring-mib`)
    /// must hold at least four entries of this size.
    #[arg(long, env = "MU_MAX_ENTRY", default_value_t = 512 << 10)]
    pub max_entry: u32,
    /// Redis: databases the server has (`databases` in redis.conf).
    #[arg(long, env = "MU_DATABASES", default_value_t = 16)]
    pub databases: u32,
    /// Redis: replicate EVAL/FCALL scripts, trusting they are deterministic
    /// (by default they are refused).
    #[arg(long, env = "MU_TRUST_SCRIPTS")]
    pub trust_scripts: bool,
    /// Log entries per divergence-check range: every node digests its
    /// backend's replies per range and compares with its peers.
    #[arg(long, env = "MU_DIGEST_EVERY", default_value_t = 1024)]
    pub digest_every: u64,
    /// How often the digests are compared with the peers', ms.
    #[arg(long, env = "MU_DIGEST_INTERVAL_MS", default_value_t = 1_000)]
    pub digest_interval_ms: u64,
    /// What a node whose data differ from the majority's does.
    #[arg(long, env = "MU_ON_DIVERGENCE", value_enum, default_value = "report")]
    pub on_divergence: OnDivergence,
    /// Apply the log on top of what the backend holds at start. By default a
    /// backend that is not empty when the sidecar starts is replaced by a
    /// copy of a peer's (a restarted sidecar cannot tell which entries its
    /// data reflect); set this only when starting a new group whose
    /// backends all hold the same data.
    #[arg(long, env = "MU_ADOPT_BACKEND_DATA")]
    pub adopt_backend_data: bool,
    /// Redis: send runs of consecutive plain `SET key value` writes to the
    /// backend as one `MSET` each (same data, same replies; the backend
    /// then counts `MSET` calls in `INFO commandstats`, and an ACL user
    /// for the sidecar needs `+mset`). Only for a standalone server.
    #[arg(long, env = "MU_JOIN_SETS", default_value_t = true,
          action = clap::ArgAction::Set, value_name = "BOOL")]
    pub join_sets: bool,
    /// Client connections accepted at once; more are refused with an error.
    #[arg(long, env = "MU_MAX_CLIENTS", default_value_t = 10_000)]
    pub max_clients: usize,
    /// Where `kill -USR1` writes `dump-<id>.txt`: the replication latency
    /// (ns, one per line) of each write answered since the previous dump.
    #[arg(long, env = "MU_DUMP_DIR", default_value = ".")]
    pub dump_dir: std::path::PathBuf,
    /// Threads serving clients, the peer port, HTTP and the applier. One
    /// event loop, like redis-server's, leaves the other cores to the
    /// backend and the replica's driver; raise it when parsing the
    /// clients' requests needs more than one core.
    #[arg(long, env = "MU_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: u16,
    /// The replica: fabric, group size, fabric peers or registry, secret.
    #[command(flatten)]
    pub mu: NodeOptions,
}

impl Options {
    /// The write deadline.
    pub fn write_deadline(&self) -> Duration {
        Duration::from_millis(self.write_deadline_ms)
    }

    /// Checks what clap cannot: id range and list lengths.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.mu.nodes;
        if self.id == 0 || self.id > n {
            return Err(format!("--id must be 1..={n} (got {})", self.id));
        }
        if self.forward_peers.is_empty() && self.mu.registry.is_none() && n > 1 {
            return Err(format!(
                "--forward-peers must list the peer port of all {n} sidecars \
                 (or give --registry / DORY_REGISTRY_IP)"
            ));
        }
        if !self.forward_peers.is_empty() && self.forward_peers.len() != usize::from(n) {
            return Err(format!(
                "--forward-peers lists {} addresses for {n} nodes",
                self.forward_peers.len()
            ));
        }
        if self.digest_every == 0 || self.digest_interval_ms == 0 {
            return Err("--digest-every and --digest-interval-ms must be at least 1".into());
        }
        if self.max_entry < 64 {
            return Err("--max-entry must be at least 64 bytes".into());
        }
        Ok(())
    }
}
