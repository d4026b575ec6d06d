//! One replica per process over a real fabric, from a handful of options:
//! the fabric, the group size, peers from a static list or the memcached
//! registry (`DORY_REGISTRY_IP`), the cluster secret, ring size and timing.
//!
//! The sidecar and the example tools start their replica through
//! [`start`]; with feature `cli`, [`NodeOptions`] is a `clap` argument group
//! whose every flag is also an environment variable.

use crate::driver::replica::{Committed, DriverOptions, Replica};
use crate::fabric::shm::{ShmConfig, ShmEndpoint};
use crate::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use crate::log::layout::Layout;
use crate::{Config, NodeId};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// Which fabric carries the replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum FabricKind {
    /// TCP between processes or hosts.
    Tcp,
    /// Shared memory between processes on one host.
    Shm,
    /// RDMA verbs (one-sided WRITE/READ, fencing by queue pair access
    /// flags); needs a build with feature `rdma` and an RDMA device.
    Rdma,
    /// `rdma` when this build has it and the host has a device; else `shm`
    /// when every peer is on this host (loopback addresses, or no list);
    /// else `tcp`.
    Auto,
}

impl FabricKind {
    /// The name used on the command line and in `MU_FABRIC`.
    pub fn name(self) -> &'static str {
        match self {
            FabricKind::Tcp => "tcp",
            FabricKind::Shm => "shm",
            FabricKind::Rdma => "rdma",
            FabricKind::Auto => "auto",
        }
    }
}

/// True when this build can use RDMA and the host has a device.
pub fn rdma_available() -> bool {
    #[cfg(feature = "rdma")]
    {
        !crate::fabric::rdma::verbs::devices().is_empty()
    }
    #[cfg(not(feature = "rdma"))]
    {
        false
    }
}

/// How to start this process's replica.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct NodeOptions {
    /// The fabric.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_FABRIC", value_enum, default_value = "tcp")
    )]
    pub fabric: FabricKind,
    /// Number of replicas in the group.
    #[cfg_attr(feature = "cli", arg(long, env = "MU_NODES", default_value_t = 3))]
    pub nodes: u8,
    /// tcp: every replica's fabric address, comma separated, in id order.
    #[cfg_attr(feature = "cli", arg(long, env = "MU_PEERS", value_delimiter = ','))]
    pub peers: Vec<SocketAddr>,
    /// tcp: a memcached registry (`host[:port]`) to publish and find
    /// addresses instead of `--peers`, as the original Mu did.
    #[cfg_attr(feature = "cli", arg(long, env = "DORY_REGISTRY_IP"))]
    pub registry: Option<String>,
    /// tcp: the secret every member of the group knows.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_SECRET", default_value = "mu-local-secret")
    )]
    pub secret: String,
    /// shm: directory of the shared objects (a tmpfs).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_SHM_DIR", default_value = "/dev/shm")
    )]
    pub shm_dir: PathBuf,
    /// Name of the group (shm file prefix, registry key prefix).
    #[cfg_attr(feature = "cli", arg(long, env = "MU_GROUP", default_value = "mu"))]
    pub group: String,
    /// Ring size per replica, MiB. The shm fabric copies the log area when
    /// a grant finds a writer stalled in the middle of a write (that is how
    /// it fences it), so a small ring keeps such leader changes fast.
    #[cfg_attr(feature = "cli", arg(long, env = "MU_RING_MIB", default_value_t = 4))]
    pub ring_mib: u64,
    /// Heartbeat interval, µs (failure detection takes about 13 of them).
    /// The default suits a small shared machine, where a process can be
    /// descheduled for milliseconds; dedicated hosts can go much lower.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_HEARTBEAT_US", default_value_t = 1_000)
    )]
    pub heartbeat_us: u64,
    /// Nap this many µs when the driver has had nothing to do for a while
    /// (at most half a heartbeat interval); 0 spins (lowest latency, but
    /// it needs a core per replica: with the whole group on a small
    /// machine, napping is much faster). A proposal ends a nap at once;
    /// a follower sees new entries (and applies them) after its nap.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_IDLE_SLEEP_US", default_value_t = 500)
    )]
    pub idle_sleep_us: u64,
    /// Idle driver iterations before a nap (when `--idle-sleep-us` is not
    /// 0). A proposal wakes a napping driver at once, so few spins suit a
    /// shared machine: spinning replicas take the cores their
    /// applications and peers need.
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_IDLE_SPINS", default_value_t = 10)
    )]
    pub idle_spins: u32,
    /// After taking a proposal the driver polls without napping for this
    /// many µs: a leader under load finds the next proposal awake instead
    /// of paying a wake-up for each. Followers take no proposals and keep
    /// napping, which leaves the cores to the leader's work. On the tcp
    /// fabric a follower's responder polls its leader's connection for
    /// as long after each log write (0: it blocks at once).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_BUSY_POLL_US", default_value_t = 1_000)
    )]
    pub busy_poll_us: u64,
    /// rdma: the device (`ibv_devices` lists them); default: the first.
    #[cfg_attr(feature = "cli", arg(long, env = "MU_RDMA_DEVICE"))]
    pub rdma_device: Option<String>,
    /// rdma: GID index on port 1 (RoCE v2 over IPv4: usually 1).
    #[cfg_attr(
        feature = "cli",
        arg(long, env = "MU_RDMA_GID_INDEX", default_value_t = 1)
    )]
    pub rdma_gid_index: u8,
}

impl NodeOptions {
    /// Options for a group of `nodes` on `fabric` with the defaults of the
    /// command line.
    pub fn new(fabric: FabricKind, nodes: u8) -> Self {
        NodeOptions {
            fabric,
            nodes,
            peers: Vec::new(),
            registry: None,
            secret: "mu-local-secret".into(),
            shm_dir: PathBuf::from("/dev/shm"),
            group: "mu".into(),
            ring_mib: 4,
            heartbeat_us: 1_000,
            idle_sleep_us: 500,
            idle_spins: 10,
            busy_poll_us: 1_000,
            rdma_device: None,
            rdma_gid_index: 1,
        }
    }

    /// The fabric `--fabric` names, with `auto` resolved.
    pub fn resolved_fabric(&self) -> FabricKind {
        if self.fabric != FabricKind::Auto {
            return self.fabric;
        }
        if rdma_available() {
            FabricKind::Rdma
        } else if self.registry.is_none() && self.peers.iter().all(|a| a.ip().is_loopback()) {
            FabricKind::Shm
        } else {
            FabricKind::Tcp
        }
    }

    /// The options as the environment variables their flags read, for
    /// starting another process of the same group (without peers and
    /// registry, which differ per launch).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MU_FABRIC", self.fabric.name().into()),
            ("MU_NODES", self.nodes.to_string()),
            ("MU_GROUP", self.group.clone()),
            ("MU_SECRET", self.secret.clone()),
            ("MU_SHM_DIR", self.shm_dir.display().to_string()),
            ("MU_RING_MIB", self.ring_mib.to_string()),
            ("MU_IDLE_SLEEP_US", self.idle_sleep_us.to_string()),
            ("MU_IDLE_SPINS", self.idle_spins.to_string()),
            ("MU_BUSY_POLL_US", self.busy_poll_us.to_string()),
            ("MU_HEARTBEAT_US", self.heartbeat_us.to_string()),
            ("MU_RDMA_GID_INDEX", self.rdma_gid_index.to_string()),
        ]
    }
}

/// The driver settings `opts` asks for. Naps stay within half a
/// heartbeat, so a napping replica still heartbeats and reads its peers'
/// heartbeats on time.
pub fn driver_options(opts: &NodeOptions) -> DriverOptions {
    let nap_us = opts.idle_sleep_us.min(opts.heartbeat_us / 2).max(1);
    DriverOptions {
        idle_sleep: (opts.idle_sleep_us > 0).then(|| Duration::from_micros(nap_us)),
        idle_spins: opts.idle_spins,
        busy_poll: Duration::from_micros(opts.busy_poll_us),
    }
}

/// Starts replica `id` (1-based, as the original tools and the sidecar
/// number nodes) with room for payloads of `max_payload` bytes. Committed
/// entries arrive on the receiver, in log order.
pub fn start(
    opts: &NodeOptions,
    id: u8,
    max_payload: u32,
) -> Result<(Replica, Receiver<Committed>), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let replica = start_with(opts, id, max_payload, move |c| {
        let _ = tx.send(c);
    })?;
    Ok((replica, rx))
}

/// [`start`] handing each committed entry, in log order, to `deliver` on
/// the driver thread (see [`Replica::start_with`]).
pub fn start_with(
    opts: &NodeOptions,
    id: u8,
    max_payload: u32,
    deliver: impl FnMut(Committed) + Send + 'static,
) -> Result<Replica, String> {
    if id == 0 || id > opts.nodes {
        return Err(format!("id must be 1..={} (got {id})", opts.nodes));
    }
    let me = NodeId(id - 1);
    let mut cfg = Config::new(me, opts.nodes);
    cfg.ring_capacity = opts.ring_mib << 20;
    cfg.max_payload = max_payload;
    cfg.incarnation = rand::random();
    cfg.heartbeat_interval_ns = opts.heartbeat_us * 1_000;
    cfg.validate().map_err(|e| e.to_string())?;
    let layout = Layout::new(cfg.ring_capacity, cfg.max_payload, usize::from(opts.nodes));
    let options = driver_options(opts);
    match opts.resolved_fabric() {
        FabricKind::Tcp | FabricKind::Auto => {
            let (listener, peers) = tcp_peers(opts, me)?;
            let ep = TcpEndpoint::start_with_listener(
                TcpConfig {
                    id: me,
                    peers,
                    secret: opts.secret.clone().into_bytes(),
                    layout,
                    options: TcpOptions {
                        busy_poll: Duration::from_micros(opts.busy_poll_us),
                        ..TcpOptions::default()
                    },
                },
                listener,
            )
            .map_err(|e| e.to_string())?;
            Replica::start_with(cfg, ep, options, deliver).map_err(|e| e.to_string())
        }
        FabricKind::Shm => {
            let ep = ShmEndpoint::create(ShmConfig {
                dir: opts.shm_dir.clone(),
                group: opts.group.clone(),
                id: me,
                layout,
                lease_timeout: Duration::from_millis(500),
            })
            .map_err(|e| e.to_string())?;
            Replica::start_with(cfg, ep, options, deliver).map_err(|e| e.to_string())
        }
        FabricKind::Rdma => start_rdma(opts, me, cfg, layout, options, deliver),
    }
}

#[cfg(feature = "rdma")]
fn start_rdma(
    opts: &NodeOptions,
    me: NodeId,
    cfg: Config,
    layout: Layout,
    options: DriverOptions,
    deliver: impl FnMut(Committed) + Send + 'static,
) -> Result<Replica, String> {
    use crate::fabric::rdma::{verbs, RdmaConfig, RdmaEndpoint, RdmaOptions};
    let device = match &opts.rdma_device {
        Some(d) => d.clone(),
        None => verbs::devices().into_iter().next().ok_or(
            "no RDMA device on this host (ibv_devices lists none); use --fabric tcp or shm",
        )?,
    };
    // The peer addresses are the control channels' (as tcp's are its data
    // channels').
    let (listener, peers) = tcp_peers(opts, me)?;
    let ep = RdmaEndpoint::start_with_listener(
        RdmaConfig {
            id: me,
            peers,
            secret: opts.secret.clone().into_bytes(),
            layout,
            device,
            gid_index: opts.rdma_gid_index,
            options: RdmaOptions::default(),
        },
        listener,
    )
    .map_err(|e| e.to_string())?;
    Replica::start_with(cfg, ep, options, deliver).map_err(|e| e.to_string())
}

#[cfg(not(feature = "rdma"))]
fn start_rdma(
    _: &NodeOptions,
    _: NodeId,
    _: Config,
    _: Layout,
    _: DriverOptions,
    _: impl FnMut(Committed) + Send + 'static,
) -> Result<Replica, String> {
    Err(
        "this build has no rdma fabric: rebuild with `--features rdma` \
         (needs libibverbs-dev; scripts/install-deps.sh installs it)"
            .into(),
    )
}

/// The listener of this replica and every replica's address.
fn tcp_peers(opts: &NodeOptions, me: NodeId) -> Result<(TcpListener, Vec<SocketAddr>), String> {
    if let Some(registry) = &opts.registry {
        let reg = crate::discovery::Registry::connect(registry, &format!("{}-", opts.group))
            .map_err(|e| e.to_string())?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        reg.publish(me, &addr.to_string())
            .map_err(|e| e.to_string())?;
        let all = reg
            .wait_for_all(
                usize::from(opts.nodes),
                Duration::from_secs(30),
                Duration::from_millis(20),
            )
            .map_err(|e| e.to_string())?;
        let peers = all
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|_| format!("bad address {a:?} in the registry"))
            })
            .collect::<Result<Vec<SocketAddr>, String>>()?;
        return Ok((listener, peers));
    }
    if opts.peers.len() != usize::from(opts.nodes) {
        return Err(format!(
            "--peers lists {} addresses for {} replicas (or give --registry / DORY_REGISTRY_IP)",
            opts.peers.len(),
            opts.nodes
        ));
    }
    let listener = TcpListener::bind(opts.peers[me.idx()])
        .map_err(|e| format!("cannot listen on {}: {e}", opts.peers[me.idx()]))?;
    Ok((listener, opts.peers.clone()))
}

/// Removes the shared objects an shm group named `group` left in `dir`.
pub fn remove_shm_group(dir: &std::path::Path, group: &str) {
    let prefix = format!("{group}-n");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_stay_within_half_a_heartbeat() {
        let mut o = NodeOptions::new(FabricKind::Shm, 3);
        o.heartbeat_us = 1_000;
        o.idle_sleep_us = 5_000;
        let d = driver_options(&o);
        assert_eq!(d.idle_sleep, Some(Duration::from_micros(500)));
        assert_eq!(d.busy_poll, Duration::from_micros(o.busy_poll_us));
        o.idle_sleep_us = 100;
        assert_eq!(
            driver_options(&o).idle_sleep,
            Some(Duration::from_micros(100))
        );
        o.idle_sleep_us = 0;
        assert_eq!(driver_options(&o).idle_sleep, None, "0 spins");
    }

    #[test]
    fn auto_picks_shm_on_one_host_and_tcp_across_hosts() {
        let mut o = NodeOptions::new(FabricKind::Auto, 3);
        if rdma_available() {
            assert_eq!(o.resolved_fabric(), FabricKind::Rdma);
            return;
        }
        assert_eq!(o.resolved_fabric(), FabricKind::Shm, "no peers: one host");
        o.peers = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        assert_eq!(o.resolved_fabric(), FabricKind::Shm);
        o.peers.push("10.0.0.3:3".parse().unwrap());
        assert_eq!(o.resolved_fabric(), FabricKind::Tcp);
        o.peers.clear();
        o.registry = Some("registry:11211".into());
        assert_eq!(o.resolved_fabric(), FabricKind::Tcp);
        o.fabric = FabricKind::Shm;
        assert_eq!(
            o.resolved_fabric(),
            FabricKind::Shm,
            "explicit choices stay"
        );
    }

    #[cfg(not(feature = "rdma"))]
    #[test]
    fn rdma_without_the_feature_says_how_to_get_it() {
        let o = NodeOptions::new(FabricKind::Rdma, 1);
        let e = start(&o, 1, 64).unwrap_err();
        assert!(e.contains("--features rdma"), "{e}");
    }
}
