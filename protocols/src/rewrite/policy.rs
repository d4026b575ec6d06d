//! The per-command replication policy, as data: what the rewriter does
//! with each Redis command. `POLICY.md` is rendered from this by a test.

use crate::table::{class_of, CommandClass, CommandSpec};

/// What happens to one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Served by the local backend; never replicated.
    Local,
    /// Handled by the sidecar's per-connection session.
    Session(&'static str),
    /// Replicated exactly as sent.
    Replicate,
    /// Replicated after a deterministic rewrite (described).
    Rewrite(&'static str),
    /// Replicated or served locally depending on its arguments (described).
    Depends(&'static str),
    /// Refused with this reason; nothing changes anywhere.
    Refuse(&'static str),
}

/// Why commands are refused, named in the client's error.
pub mod reason {
    /// `SPOP`.
    pub const RANDOM_MEMBERS: &str =
        "it removes random members, which each replica would pick differently; use SMEMBERS/SRANDMEMBER then SREM";
    /// Blocking writes.
    pub const BLOCKING_WRITE: &str =
        "a blocking write would stall the replicated log on every replica; use the non-blocking form (e.g. LPOP instead of BLPOP)";
    /// `XREADGROUP ... BLOCK`.
    pub const XREADGROUP_BLOCK: &str =
        "BLOCK would stall the replicated log; poll without BLOCK instead";
    /// `XCLAIM`/`XAUTOCLAIM` with a min-idle-time.
    pub const IDLE_TIME: &str =
        "a non-zero min-idle-time is measured by each replica's own clock; use 0 and filter with XPENDING";
    /// Scripts without the trust option.
    pub const SCRIPTS: &str = "scripts may use randomness or the replica's clock, so replicas could diverge; \
         use EVAL_RO/FCALL_RO for reads, or start the sidecar with scripts trusted to be deterministic";
    /// `WAIT`.
    pub const WAIT: &str =
        "replication is done by the sidecar: a write is acknowledged only once a majority holds it";
    /// Unsupported commands.
    pub const UNSUPPORTED: &str =
        "it controls replication, clustering or the server process, which the sidecar manages";
    /// `SCRIPT DEBUG`.
    pub const SCRIPT_DEBUG: &str = "script debugging is not possible through a replicating proxy";
    /// Connection or server commands inside MULTI.
    pub const NOT_IN_MULTI: &str =
        "inside MULTI only data commands are allowed: the transaction runs on every replica";
    /// `CONFIG SET` of a setting that shapes the data or the answers.
    pub const CONFIG_SET: &str =
        "CONFIG SET reaches only this node's backend, and this setting can change what a backend \
         stores or answers, so replicas would diverge; set it alike on every backend (redis.conf, \
         or CONFIG SET on each backend's own port). Served through the sidecar: loglevel, \
         slowlog-*, latency-*, persistence (save, appendonly, appendfsync, auto-aof-rewrite-*, \
         rdbcompression, rdbchecksum), tcp-keepalive, activedefrag and active-defrag-*";
    /// Unknown commands.
    pub const UNKNOWN: &str = "unknown command";
    /// A command line the server would reject as malformed.
    pub const MALFORMED: &str = "malformed command line";
}

/// `CONFIG SET` parameters that only change how one node's backend logs,
/// measures or persists, never what it stores or answers; the rest (e.g.
/// `maxmemory`, `proto-max-bulk-len`, `timeout`, `requirepass`) would make
/// one replica refuse or drop what the others keep.
const NODE_LOCAL_CONFIG: &[&str] = &[
    "loglevel",
    "save",
    "appendonly",
    "appendfsync",
    "no-appendfsync-on-rewrite",
    "rdbcompression",
    "rdbchecksum",
    "tcp-keepalive",
    "activedefrag",
];

/// Prefixes of further node-local `CONFIG SET` parameters.
const NODE_LOCAL_CONFIG_PREFIXES: &[&str] = &[
    "slowlog-",
    "latency-",
    "auto-aof-rewrite-",
    "active-defrag-",
];

/// Whether `CONFIG SET` of `param` changes only how this node's backend
/// logs, measures or persists (ASCII case-insensitive, like the server).
pub(crate) fn node_local_config(param: &[u8]) -> bool {
    let Ok(p) = std::str::from_utf8(param) else {
        return false;
    };
    let p = p.to_ascii_lowercase();
    NODE_LOCAL_CONFIG.contains(&p.as_str())
        || NODE_LOCAL_CONFIG_PREFIXES
            .iter()
            .any(|pre| p.starts_with(pre))
}

/// The policy for one command of the table. `trust_scripts` is the
/// operator's promise that every script is deterministic.
pub fn policy(spec: &CommandSpec, trust_scripts: bool) -> Policy {
    use Policy::*;
    let rewrite = match spec.name {
        "expire" | "pexpire" => {
            Some("relative TTL becomes PEXPIREAT `<absolute ms>`, options kept")
        }
        "setex" | "psetex" => Some("becomes SET key value PXAT `<absolute ms>`"),
        "set" => Some("EX/PX become PXAT `<absolute ms>`"),
        "getex" => Some("EX/PX become PXAT `<absolute ms>`"),
        "restore" => Some("a relative TTL gets ABSTTL with the absolute time"),
        "xadd" => Some("an auto ID `*` becomes `<leader ms>-*`"),
        _ => None,
    };
    if let Some(how) = rewrite {
        return Rewrite(how);
    }
    match spec.name {
        "spop" => return Refuse(reason::RANDOM_MEMBERS),
        "wait" => return Refuse(reason::WAIT),
        "script|debug" => return Refuse(reason::SCRIPT_DEBUG),
        "xclaim" | "xautoclaim" => {
            return Depends(
                "replicated when min-idle-time is 0, else refused: idle times are replica-local",
            )
        }
        "xreadgroup" => return Depends("replicated without BLOCK; refused with BLOCK"),
        "config|set" => {
            return Depends(
                "served locally for node-local settings (logging, slow log, latency monitor, \
                 persistence); refused for settings that change what a backend stores or answers",
            )
        }
        "sort" => return Depends("replicated with STORE, else served locally"),
        "georadius" | "georadiusbymember" => {
            return Depends("replicated with STORE/STOREDIST, else served locally")
        }
        "select" => {
            return Session(
                "the database travels with every entry; validated against the database count",
            )
        }
        "multi" | "exec" | "discard" => {
            return Session("MULTI..EXEC becomes one entry, applied as a unit")
        }
        "watch" | "unwatch" => return Session(
            "WATCH becomes a guard checked when the transaction is applied, on every replica alike",
        ),
        // Flagged readonly, but it rewrites the HyperLogLog's cached
        // cardinality (its key spec says RW): served locally, the raw bytes
        // of the key would differ between replicas.
        "pfcount" => return Replicate,
        "script|load" | "script|flush" | "function|load" | "function|delete" | "function|flush"
        | "function|restore" => return Replicate,
        _ => {}
    }
    match class_of(spec) {
        CommandClass::Read | CommandClass::Admin => Local,
        CommandClass::Write => Replicate,
        CommandClass::ConnectionState => Session("connection state, kept per client"),
        CommandClass::PubSub if matches!(spec.name, "publish" | "spublish") => Replicate,
        CommandClass::PubSub => Local,
        CommandClass::Blocking if spec.has_flag("write") => Refuse(reason::BLOCKING_WRITE),
        CommandClass::Blocking => Local,
        CommandClass::Scripting if spec.name.ends_with("_ro") => Local,
        CommandClass::Scripting if !spec.name.contains('|') && trust_scripts => Replicate,
        CommandClass::Scripting if !spec.name.contains('|') => Refuse(reason::SCRIPTS),
        CommandClass::Scripting => Local,
        CommandClass::Unsupported => Refuse(reason::UNSUPPORTED),
    }
}

/// Renders the whole policy as a Markdown table (the body of `POLICY.md`).
pub fn render_markdown() -> String {
    let mut out = String::from("| command | class | policy (scripts untrusted) |\n|---|---|---|\n");
    for spec in crate::table::REDIS_COMMANDS {
        if spec.has_subcommands {
            continue;
        }
        let p = match policy(spec, false) {
            Policy::Local => "served locally".to_string(),
            Policy::Session(s) => format!("session: {s}"),
            Policy::Replicate => "replicated as-is".to_string(),
            Policy::Rewrite(s) => format!("**rewritten**: {s}"),
            Policy::Depends(s) => format!("depends: {s}"),
            Policy::Refuse(s) => format!("**refused**: {s}"),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            spec.name.replace('|', " "),
            class_of(spec).label(),
            p
        ));
    }
    out
}
