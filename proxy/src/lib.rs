//! # mu-sidecar
//!
//! A replication sidecar in front of an unmodified `redis-server` or
//! `memcached`. Clients talk to it exactly as to the server. It
//! - serves reads from the local server (or, with `--reads leader`, after a
//!   barrier through the log, which makes them linearizable);
//! - turns every write into a deterministic entry (`mu-protocols`),
//!   replicates it with Mu, and answers once it is committed and applied
//!   to the local server, with the server's own reply;
//! - forwards writes that reach a follower to the leader's sidecar;
//! - applies every committed entry, in log order, on every node;
//! - exports Prometheus metrics and health on HTTP.
//!
//! ## Parts
//! - [`config`]: flags (each also an environment variable).
//! - [`client_redis`], [`client_memcached`]: one task per client connection,
//!   on the loop and read gate of [`conn`].
//! - [`replicate`]: the write path and its error semantics.
//! - [`forward`]: the authenticated peer port between sidecars.
//! - [`apply`]: the thread applying committed entries to the backend.
//! - [`payload`], [`proposer`]: what is proposed to Mu, and batching.
//! - [`pending`], [`state`]: what the parts share.
//! - [`transfer`]: state transfer to a node whose backend or replica fell
//!   out of step with the log; [`digest`]: continuous divergence detection;
//!   [`verify`]: on-demand comparison of every replica's data.
//! - [`metrics`], [`http`]: observability; [`dump`]: the replication
//!   latency dump on SIGUSR1.

pub mod acl;
pub mod apply;
pub mod backend;
pub mod client_memcached;
pub mod client_redis;
pub mod config;
pub mod conn;
pub mod digest;
pub mod dump;
pub mod forward;
pub mod http;
pub mod metrics;
pub mod payload;
pub mod pending;
pub mod proposer;
pub mod pubsub;
pub mod replicate;
pub mod state;
pub mod transfer;
pub mod verify;

use config::{BackendKind, Options};
use forward::Forwarder;
use metrics::Metrics;
use mu::core::RoleKind;
use pending::Pending;
use state::{BackendHealth, Shared};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// How long SIGTERM waits for clients to leave.
const DRAIN: Duration = Duration::from_secs(5);

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
}

/// The peer-port listener and every sidecar's peer address.
async fn forward_setup(opts: &Options) -> Result<(Option<TcpListener>, Vec<SocketAddr>), String> {
    let me = usize::from(opts.id - 1);
    if !opts.forward_peers.is_empty() {
        let l = bind(opts.forward_peers[me], "peer port").await?;
        return Ok((Some(l), opts.forward_peers.clone()));
    }
    let Some(registry) = opts.mu.registry.clone() else {
        return Ok((None, Vec::new()));
    };
    let l = bind(SocketAddr::new(opts.listen.ip(), 0), "peer port").await?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let prefix = format!("{}-fwd-", opts.mu.group);
    let nodes = usize::from(opts.mu.nodes);
    let id = mu::NodeId(opts.id - 1);
    let all = tokio::task::spawn_blocking(move || {
        let reg =
            mu::discovery::Registry::connect(&registry, &prefix).map_err(|e| e.to_string())?;
        reg.publish(id, &addr.to_string())
            .map_err(|e| e.to_string())?;
        reg.wait_for_all(nodes, Duration::from_secs(30), Duration::from_millis(20))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    let addrs = all
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|_| format!("bad address {a:?} in the registry"))
        })
        .collect::<Result<Vec<SocketAddr>, String>>()?;
    Ok((Some(l), addrs))
}

/// Runs a sidecar until SIGTERM or SIGINT.
pub async fn run(opts: Options) -> Result<(), String> {
    opts.validate()?;
    let clients = bind(opts.listen, "clients").await?;
    let http = bind(opts.http, "http").await?;
    let (peer_port, peer_addrs) = forward_setup(&opts).await?;
    let mu_opts = opts.mu.clone();
    let (id, max) = (opts.id, opts.max_entry);
    // Committed entries wake the applier task straight from the driver.
    let (deliver, committed) = tokio::sync::mpsc::unbounded_channel();
    let replica = tokio::task::spawn_blocking(move || {
        mu::node::start_with(&mu_opts, id, max, move |c| {
            let _ = deliver.send(c);
        })
    })
    .await
    .map_err(|e| e.to_string())??;
    let replica = Arc::new(replica);
    let pending = Arc::new(Pending::new());
    let shared = Arc::new(Shared {
        forward: Forwarder::new(opts.id, peer_addrs, &opts.mu.secret, opts.max_entry),
        proposer: proposer::Proposer::start(
            replica.clone(),
            opts.max_entry as usize,
            pending.clone(),
        ),
        replica,
        pending,
        metrics: Metrics::new(opts.id),
        backend: BackendHealth::default(),
        stopping: AtomicBool::new(false),
        transfer: transfer::Hub::default(),
        digests: digest::Digests::new(opts.digest_every),
        acl: acl::Acl::default(),
        opts,
    });
    let dumps = dump::on_sigusr1(
        shared.metrics.latency_samples.clone(),
        shared.opts.dump_dir.clone(),
        shared.opts.id,
    )?;
    tokio::spawn(dumps);
    apply::spawn(shared.clone(), committed);
    if let Some(l) = peer_port {
        tokio::spawn(forward::serve(shared.clone(), l));
    }
    tokio::spawn(http::serve(shared.clone(), http));
    tokio::spawn(watch(shared.clone()));
    if shared.opts.mu.nodes > 1 {
        let every = Duration::from_millis(shared.opts.digest_interval_ms);
        tokio::spawn(digest::exchange(shared.clone(), every));
    }
    tracing::info!(
        id = shared.opts.id,
        listen = %shared.opts.listen,
        http = %shared.opts.http,
        backend = %shared.opts.backend,
        fabric = shared.opts.mu.resolved_fabric().name(),
        "mu-sidecar started"
    );
    accept(shared.clone(), clients).await;
    Ok(())
}

async fn accept(shared: Arc<Shared>, listener: TcpListener) {
    use tokio::signal::unix::{signal, SignalKind};
    let open = Arc::new(AtomicUsize::new(0));
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        let (mut sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        if open.load(Ordering::Acquire) >= shared.opts.max_clients {
            let msg: &[u8] = match shared.opts.backend_kind {
                BackendKind::Redis => b"-ERR max number of clients reached\r\n",
                BackendKind::Memcached => b"SERVER_ERROR mu-sidecar: too many connections\r\n",
            };
            let _ = sock.write_all(msg).await;
            continue;
        }
        open.fetch_add(1, Ordering::AcqRel);
        shared.metrics.connections.inc();
        shared.metrics.connections_total.inc();
        let (shared, open) = (shared.clone(), open.clone());
        tokio::spawn(async move {
            let r = match shared.opts.backend_kind {
                BackendKind::Redis => client_redis::serve(shared.clone(), sock).await,
                BackendKind::Memcached => client_memcached::serve(shared.clone(), sock).await,
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "client connection ended");
            }
            shared.metrics.connections.dec();
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
    // Shutdown: refuse new writes, step down (the replica stops
    // heartbeating, so the others elect a leader), let clients leave.
    tracing::info!("shutting down: stepping down and draining connections");
    shared.stopping.store(true, Ordering::Release);
    shared.replica.pause(true);
    let until = Instant::now() + DRAIN;
    while open.load(Ordering::Acquire) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Follows the replica's status into the metrics, and times leader changes.
/// It wakes when the driver publishes another role or leader (see
/// [`mu::driver::replica::Replica::on_status_change`]), and every
/// [`GAUGE_REFRESH`] for the gauges, which `/metrics` also brings up to
/// date when scraped; a sidecar with nothing to do stays asleep between.
async fn watch(shared: Arc<Shared>) {
    let m = &shared.metrics;
    let mut last_leader: Option<mu::NodeId> = None;
    let mut leaderless_since: Option<Instant> = None;
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    shared.replica.on_status_change(move || notify.notify_one());
    let mut tick = tokio::time::interval(GAUGE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        let Some(st) = shared.status() else {
            continue;
        };
        refresh_gauges(&shared, &st);
        match st.leader {
            None if last_leader.is_some() && leaderless_since.is_none() => {
                leaderless_since = Some(Instant::now());
            }
            Some(l) if last_leader != Some(l) => {
                // The first leader after start is not a change.
                if last_leader.is_some() {
                    m.leader_changes.inc();
                    let gap = leaderless_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
                    m.failover.observe(gap);
                    tracing::info!(leader = l.0 + 1, gap_s = gap, "leader changed");
                }
                leaderless_since = None;
                last_leader = Some(l);
            }
            Some(_) => leaderless_since = None,
            None => {}
        }
    }
}

/// How often the status gauges are refreshed without a change or scrape.
const GAUGE_REFRESH: Duration = Duration::from_millis(100);

/// Sets the gauges that follow the replica's status `st`.
pub(crate) fn refresh_gauges(shared: &Shared, st: &mu::core::Status) {
    let m = &shared.metrics;
    for (role, kind) in [
        ("leader", RoleKind::Leader),
        ("follower", RoleKind::Follower),
        ("candidate", RoleKind::Candidate),
    ] {
        m.role
            .with_label_values(&[role])
            .set(i64::from(st.role == kind));
    }
    let commit = st.commit.saturating_sub(1);
    let applied = shared.backend.applied();
    m.commit_index.set(commit as i64);
    m.applied_index.set(applied as i64);
    m.apply_lag.set(commit.saturating_sub(applied) as i64);
    m.permission_switches.set(st.permission_switches as i64);
    m.fabric_errors.set(st.fabric_errors as i64);
    m.peers_alive
        .set(st.peers.iter().filter(|p| p.alive).count() as i64);
    m.ready.set(i64::from(shared.readiness().is_ok()));
    m.leader.set(st.leader.map_or(0, |l| i64::from(l.0) + 1));
}
