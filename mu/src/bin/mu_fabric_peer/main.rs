//! `mu-fabric-peer`: one node of a fabric group in its own process, for
//! the multi-process checks of the fabric conformance suite.
//!
//! ```text
//! mu-fabric-peer paused-writer --fabric tcp --group N --node W --target T --peers A0,A1,...
//! mu-fabric-peer paused-writer --fabric shm --group N --node W --target T --shm-dir DIR --shm-group NAME
//! mu-fabric-peer serve --fabric tcp --group N --node W --peers A0,A1,...
//! mu-fabric-peer paused-writer --fabric rdma --group N --node W --target T --peers A0,A1,... --rdma-device DEV [--gid-index G]
//! mu-fabric-peer replica --fabric tcp|shm|rdma --group N --node W ...(as above)
//! mu-fabric-peer latency
//! mu-fabric-peer rdma-latency DEVICE_A DEVICE_B [GID_INDEX]
//! ```
//!
//! Each joins the group as node `W` with the suite's region layout.
//! `paused-writer` runs [`mu::fabric::conformance::paused_writer_child`]
//! against node `T`: one output line per completed write. `serve` prints
//! `ready`, then obeys lines on stdin: `grant K` grants its log to node `K`
//! and answers `granted K`; it exits when stdin closes. The tcp cluster
//! secret comes from the environment variable `MU_FABRIC_SECRET`; so does the
//! rdma one, whose `--peers` are the nodes' control-channel addresses
//! (built with feature `rdma`). Exit code
//! 64 on bad arguments.
//!
//! `replica` runs a whole replica on the fabric, driven through stdin
//! (see `replica.rs`: propose, bench; reports status and applied entries).
//!
//! `rdma-latency` (feature `rdma`) measures the `rdma` fabric from a node
//! on `DEVICE_A` to one on `DEVICE_B`: writes and reads, post to
//! completion, and the duration of a grant (`rdma_latency.rs`).
//!
//! `latency` measures, in this process, the time from posting a write or
//! read to polling its completion on the `tcp` (loopback) and `shm`
//! (/dev/shm) fabrics for several sizes beside a raw loopback TCP
//! ping-pong, round trips through `shm` between two threads, and the
//! duration of an `shm` grant for two ring sizes; it
//! prints one line per figure.

mod latency;
#[cfg(feature = "rdma")]
mod rdma_latency;
mod replica;

use mu::fabric::conformance::{paused_writer_child, suite_layout};
use mu::fabric::shm::{ShmConfig, ShmEndpoint, DEFAULT_LEASE_TIMEOUT};
use mu::fabric::tcp::{TcpConfig, TcpEndpoint, TcpOptions};
use mu::fabric::Fabric;
use mu::NodeId;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

const EX_USAGE: u8 = 64;

fn usage(problem: &str) -> ExitCode {
    eprintln!("mu-fabric-peer: {problem}");
    eprintln!(
        "usage: mu-fabric-peer latency | paused-writer --fabric tcp|shm|rdma --group N --node W --target T \
         [--peers A0,A1,...] [--shm-dir DIR --shm-group NAME] [--rdma-device DEV --gid-index G]"
    );
    ExitCode::from(EX_USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let role = args.first().cloned().unwrap_or_default();
    if role == "latency" {
        return match latency::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mu-fabric-peer latency: {e}");
                ExitCode::FAILURE
            }
        };
    }
    #[cfg(feature = "rdma")]
    if role == "rdma-latency" {
        // rdma-latency DEVICE_A DEVICE_B [GID_INDEX]
        let (Some(a), Some(b)) = (args.get(1), args.get(2)) else {
            return usage("rdma-latency needs two device names");
        };
        let gid = args.get(3).and_then(|g| g.parse().ok()).unwrap_or(1);
        return match rdma_latency::run([a, b], gid) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mu-fabric-peer rdma-latency: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if role != "paused-writer" && role != "serve" && role != "replica" {
        return usage("the role is paused-writer, serve, replica or latency");
    }
    let mut flags = HashMap::new();
    for pair in args[1..].chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                flags.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
            _ => return usage(&format!("unexpected argument {pair:?}")),
        }
    }
    let num = |k: &str| -> Result<u8, String> {
        flags
            .get(k)
            .ok_or(format!("--{k} is required"))?
            .parse()
            .map_err(|e| format!("--{k}: {e}"))
    };
    let target = if role != "paused-writer" {
        Ok(0)
    } else {
        num("target")
    };
    let (n, node, target) = match (num("group"), num("node"), target) {
        (Ok(n), Ok(w), Ok(t)) => (n, NodeId(w), NodeId(t)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return usage(&e),
    };
    let layout = suite_layout(usize::from(n));
    let result = match flags.get("fabric").map(String::as_str) {
        Some("tcp") => {
            let Some(peers) = parse_peers(&flags) else {
                return usage("--peers must list one ip:port per node");
            };
            let Ok(secret) = std::env::var("MU_FABRIC_SECRET") else {
                return usage("MU_FABRIC_SECRET must hold the cluster secret");
            };
            let config = TcpConfig {
                id: node,
                peers,
                secret: secret.into_bytes(),
                layout,
                options: TcpOptions::default(),
            };
            match TcpEndpoint::start(config) {
                Ok(f) if role == "serve" => serve(f),
                Ok(f) if role == "replica" => replica::run(f, node, n),
                Ok(f) => paused_writer_child(f, target),
                Err(e) => return usage(&e.to_string()),
            }
        }
        Some("shm") => {
            let (Some(dir), Some(group)) = (flags.get("shm-dir"), flags.get("shm-group")) else {
                return usage("shm needs --shm-dir and --shm-group");
            };
            let config = ShmConfig {
                dir: dir.into(),
                group: group.clone(),
                id: node,
                layout,
                lease_timeout: DEFAULT_LEASE_TIMEOUT,
            };
            match ShmEndpoint::create(config) {
                Ok(f) if role == "serve" => serve(f),
                Ok(f) if role == "replica" => replica::run(f, node, n),
                Ok(f) => paused_writer_child(f, target),
                Err(e) => return usage(&e.to_string()),
            }
        }
        #[cfg(feature = "rdma")]
        Some("rdma") => {
            let config = match rdma_config(&flags, node, layout) {
                Ok(c) => c,
                Err(e) => return usage(&e),
            };
            match mu::fabric::rdma::RdmaEndpoint::start(config) {
                Ok(f) if role == "serve" => serve(f),
                Ok(f) if role == "replica" => replica::run(f, node, n),
                Ok(f) => paused_writer_child(f, target),
                Err(e) => return usage(&e.to_string()),
            }
        }
        other => return usage(&format!("unknown fabric {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// The `rdma` endpoint configuration from the flags.
#[cfg(feature = "rdma")]
fn rdma_config(
    flags: &HashMap<String, String>,
    node: NodeId,
    layout: mu::log::layout::Layout,
) -> Result<mu::fabric::rdma::RdmaConfig, String> {
    let peers = parse_peers(flags).ok_or("--peers must list one ip:port per node")?;
    let secret = std::env::var("MU_FABRIC_SECRET")
        .map_err(|_| "MU_FABRIC_SECRET must hold the cluster secret")?;
    let device = flags
        .get("rdma-device")
        .ok_or("rdma needs --rdma-device (ibv_devices lists them)")?;
    let gid_index = match flags.get("gid-index") {
        Some(g) => g.parse().map_err(|e| format!("--gid-index: {e}"))?,
        None => 1,
    };
    Ok(mu::fabric::rdma::RdmaConfig {
        id: node,
        peers,
        secret: secret.into_bytes(),
        layout,
        device: device.clone(),
        gid_index,
        options: mu::fabric::rdma::RdmaOptions::default(),
    })
}

/// The `--peers` list.
fn parse_peers(flags: &HashMap<String, String>) -> Option<Vec<SocketAddr>> {
    flags
        .get("peers")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .map(|a| a.parse().ok())
        .collect()
}

/// Serves the node's region and grants its log on command until stdin closes.
fn serve<F: Fabric>(mut fabric: F) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let Some(k) = line
            .strip_prefix("grant ")
            .and_then(|k| k.trim().parse::<u8>().ok())
        else {
            writeln!(out, "unknown command {line:?}")?;
            continue;
        };
        match fabric.grant(NodeId(k)) {
            Ok(()) => writeln!(out, "granted {k}")?,
            Err(e) => writeln!(out, "grant failed: {e}")?,
        }
        out.flush()?;
    }
    Ok(())
}
