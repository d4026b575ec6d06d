//! Redis command lookup, classification and key positions.

use super::spec::{BeginSearch, CommandSpec, FindKeys};
use super::REDIS_COMMANDS;
use crate::line::parse_i64;
use crate::resp::Request;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// What a command does, which decides where the sidecar sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandClass {
    /// Reads data: served by the local backend.
    Read,
    /// Changes data: rewritten into a replicated entry.
    Write,
    /// Changes only the connection's own state (`SELECT`, `HELLO`,
    /// `MULTI`, `WATCH`, `CLIENT SETNAME`, ...): handled per connection.
    ConnectionState,
    /// Inspects or manages one server (`INFO`, `CONFIG GET`, `SLOWLOG`,
    /// ...): served by the local backend, never replicated.
    Admin,
    /// Publish/subscribe.
    PubSub,
    /// Can block the connection waiting for data (`BLPOP`, `XREAD BLOCK`,
    /// `WAIT`).
    Blocking,
    /// Runs server-side scripts or manages them (`EVAL`, `FCALL`,
    /// `SCRIPT`, `FUNCTION`).
    Scripting,
    /// Has no meaning behind the sidecar or would break replication
    /// (`SYNC`, `REPLICAOF`, `CLUSTER`, `DEBUG`, `SHUTDOWN`, ...): refused.
    Unsupported,
}

impl CommandClass {
    /// A short lower-case label, e.g. for metrics.
    pub fn label(self) -> &'static str {
        match self {
            CommandClass::Read => "read",
            CommandClass::Write => "write",
            CommandClass::ConnectionState => "connection-state",
            CommandClass::Admin => "admin",
            CommandClass::PubSub => "pubsub",
            CommandClass::Blocking => "blocking",
            CommandClass::Scripting => "scripting",
            CommandClass::Unsupported => "unsupported",
        }
    }
}

/// Commands that only change the state of the client's connection.
const CONNECTION_STATE: &[&str] = &[
    "auth",
    "hello",
    "select",
    "reset",
    "quit",
    "ping",
    "echo",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "client|caching",
    "client|getname",
    "client|getredir",
    "client|id",
    "client|info",
    "client|no-evict",
    "client|reply",
    "client|setname",
    "client|tracking",
    "client|trackinginfo",
    "client|help",
];

/// Pub/sub commands the server does not flag as `pubsub` itself.
const PUBSUB: &[&str] = &["publish", "spublish"];

/// Script execution and script/function management.
const SCRIPTING: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

/// Commands refused outright: replication and cluster plumbing, process
/// control, and debugging hooks that would make replicas diverge.
const UNSUPPORTED: &[&str] = &[
    "sync",
    "psync",
    "replconf",
    "replicaof",
    "slaveof",
    "failover",
    "shutdown",
    "debug",
    "monitor",
    "asking",
    "readonly",
    "readwrite",
    "migrate",
    "pfdebug",
    "pfselftest",
    "module|load",
    "module|loadex",
    "module|unload",
    "restore-asking",
];

/// Looks up the table entry for a request: the subcommand entry for
/// container commands (`CONFIG GET` → `config|get`), else the command.
/// `None` for unknown commands and unknown subcommands.
pub fn lookup(req: &Request) -> Option<&'static CommandSpec> {
    lookup_args(&req.args)
}

/// [`lookup`] for a command given as its arguments (the name first).
pub fn lookup_args(args: &[impl AsRef<[u8]>]) -> Option<&'static CommandSpec> {
    let name = args.first()?.as_ref();
    let mut key = [0u8; NAME_MAX];
    let len = lower_into(&mut key, 0, name)?;
    let spec = find_bytes(&key[..len])?;
    if !spec.has_subcommands {
        return Some(spec);
    }
    key[len] = b'|';
    let len = lower_into(&mut key, len + 1, args.get(1)?.as_ref())?;
    find_bytes(&key[..len])
}

/// The error Redis itself answers for a request [`lookup`] does not
/// know: an unknown subcommand of a container command (`ERR unknown
/// subcommand 'x'. Try CONFIG HELP.`), a container command without one
/// (wrong number of arguments), or an unknown command, echoed with the
/// start of its arguments as the server does (each quoted, until the
/// echo reaches 128 bytes).
pub fn unknown_error(args: &[impl AsRef<[u8]>]) -> String {
    const ECHO_MAX: usize = 128;
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(ECHO_MAX)]).into_owned();
    let name = args.first().map_or(&b""[..], |a| a.as_ref());
    let container = name
        .len()
        .lt(&NAME_MAX)
        .then(|| find_bytes(&name.to_ascii_lowercase()))
        .flatten()
        .filter(|spec| spec.has_subcommands);
    if let Some(spec) = container {
        return match args.get(1) {
            Some(sub) => format!(
                "ERR unknown subcommand '{}'. Try {} HELP.",
                text(sub.as_ref()),
                spec.name.to_ascii_uppercase()
            ),
            None => format!("ERR wrong number of arguments for '{}' command", spec.name),
        };
    }
    let mut echo = String::new();
    for arg in &args[1.min(args.len())..] {
        if echo.len() >= ECHO_MAX {
            break;
        }
        let arg = arg.as_ref();
        let room = ECHO_MAX - echo.len();
        echo.push('\'');
        echo.push_str(&String::from_utf8_lossy(&arg[..arg.len().min(room)]));
        echo.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {echo}",
        text(name)
    )
}

/// Longer names are in no table entry.
const NAME_MAX: usize = 64;

/// Copies `name` lower-cased into `key` at `at`; the end, or `None` when it
/// does not fit (so it names no command).
fn lower_into(key: &mut [u8; NAME_MAX], at: usize, name: &[u8]) -> Option<usize> {
    let end = at.checked_add(name.len()).filter(|&e| e < NAME_MAX)?;
    for (k, b) in key[at..end].iter_mut().zip(name) {
        *k = b.to_ascii_lowercase();
    }
    Some(end)
}

/// The class of a request; unknown commands and subcommands are
/// [`CommandClass::Unsupported`].
pub fn classify(req: &Request) -> CommandClass {
    lookup(req).map_or(CommandClass::Unsupported, class_of)
}

/// The table entry named `name` (lower case; `container|sub`).
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    find_bytes(name.as_bytes())
}

fn find_bytes(name: &[u8]) -> Option<&'static CommandSpec> {
    index().by_name.get(name).map(|&i| &REDIS_COMMANDS[i])
}

/// The table indexed once per process: every request is looked up (on the
/// leader's client path and again by every applier), so by hash, and each
/// entry's class is computed once.
struct Index {
    by_name: HashMap<&'static [u8], usize, BuildHasherDefault<Fnv>>,
    classes: Vec<CommandClass>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| Index {
        by_name: REDIS_COMMANDS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_bytes(), i))
            .collect(),
        classes: REDIS_COMMANDS.iter().map(compute_class).collect(),
    })
}

/// FNV-1a: command names are short, and SipHash's setup costs more than
/// hashing them; the keys are the table's own names, not client input
/// that could be chosen to collide.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Our classification of a command. Explicit lists first, then the
/// server's own flags: `blocking`, `pubsub`, `admin`, `write`, `readonly`;
/// what remains (`INFO`, `TIME`, `COMMAND`, `LOLWUT`, ...) is served
/// locally as [`CommandClass::Admin`].
pub fn class_of(spec: &CommandSpec) -> CommandClass {
    // A table entry's class is in the index, at the entry's position.
    let base = REDIS_COMMANDS.as_ptr() as usize;
    let at = (spec as *const CommandSpec as usize).wrapping_sub(base)
        / std::mem::size_of::<CommandSpec>().max(1);
    match REDIS_COMMANDS.get(at) {
        Some(c) if std::ptr::eq(c, spec) => index().classes[at],
        _ => compute_class(spec),
    }
}

fn compute_class(spec: &CommandSpec) -> CommandClass {
    let n = spec.name;
    let container = n.split('|').next().unwrap_or(n);
    if CONNECTION_STATE.contains(&n) {
        CommandClass::ConnectionState
    } else if UNSUPPORTED.contains(&n) || container == "cluster" {
        CommandClass::Unsupported
    } else if SCRIPTING.contains(&n) || container == "script" || container == "function" {
        CommandClass::Scripting
    } else if PUBSUB.contains(&n) || spec.has_flag("pubsub") {
        CommandClass::PubSub
    } else if spec.has_flag("blocking") || n == "wait" {
        CommandClass::Blocking
    } else if spec.has_flag("admin") {
        CommandClass::Admin
    } else if spec.has_flag("write") {
        CommandClass::Write
    } else if spec.has_flag("readonly") {
        CommandClass::Read
    } else {
        CommandClass::Admin
    }
}

/// Positions (indices into `args`, the name being 0) of the keys `args`
/// names, per the server's key specs; sorted and without duplicates.
/// Commands whose key specs are incomplete (`unknown`) report what the
/// specs do find.
pub fn key_positions(spec: &CommandSpec, args: &[impl AsRef<[u8]>]) -> Vec<usize> {
    let mut out = Vec::new();
    key_positions_into(spec, args, &mut out);
    out
}

/// [`key_positions`] into `out` (cleared first), for callers that reuse
/// one buffer for every command.
pub fn key_positions_into(spec: &CommandSpec, args: &[impl AsRef<[u8]>], out: &mut Vec<usize>) {
    out.clear();
    let argc = args.len() as i64;
    for ks in spec.key_specs {
        let first = match ks.begin {
            BeginSearch::Index(i) => i64::from(i),
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => {
                let kw = keyword.as_bytes();
                let hit = |i: &i64| args[*i as usize].as_ref().eq_ignore_ascii_case(kw);
                let found = if start_from >= 0 {
                    (i64::from(start_from)..argc).find(hit)
                } else {
                    let start = argc + i64::from(start_from);
                    (1..=start.min(argc - 1)).rev().find(hit)
                };
                match found {
                    Some(i) => i + 1,
                    None => continue,
                }
            }
            BeginSearch::Unknown => continue,
        };
        let (first, last, step) = match ks.find {
            FindKeys::Range {
                last_key,
                step,
                limit,
            } => {
                let last = if last_key >= 0 {
                    first + i64::from(last_key)
                } else if limit <= 1 {
                    argc + i64::from(last_key)
                } else {
                    first + (argc - first) / i64::from(limit) + i64::from(last_key)
                };
                (first, last, i64::from(step))
            }
            FindKeys::KeyNum {
                key_num_idx,
                first_key,
                step,
            } => {
                let idx = first + i64::from(key_num_idx);
                let Some(n) = args.get(idx as usize).and_then(|a| parse_i64(a.as_ref())) else {
                    continue;
                };
                let start = first + i64::from(first_key);
                (start, start + (n - 1) * i64::from(step), i64::from(step))
            }
            FindKeys::Unknown => continue,
        };
        let mut i = first;
        while i <= last && i < argc && i >= 1 && step > 0 {
            out.push(i as usize);
            i += step;
        }
    }
    if spec.name == "sort" {
        sort_store_key(args, out);
    }
    out.sort_unstable();
    out.dedup();
}

/// `SORT ... STORE dst`: the one key the server's specs leave `unknown`.
/// Options are skipped with their argument counts, as redis-server does.
fn sort_store_key(args: &[impl AsRef<[u8]>], out: &mut Vec<usize>) {
    let mut j = 2;
    let mut store = None;
    while j < args.len() {
        let a = args[j].as_ref();
        if a.eq_ignore_ascii_case(b"limit") {
            j += 2;
        } else if a.eq_ignore_ascii_case(b"get") || a.eq_ignore_ascii_case(b"by") {
            j += 1;
        } else if a.eq_ignore_ascii_case(b"store") && j + 1 < args.len() {
            store = Some(j + 1);
            j += 1;
        }
        j += 1;
    }
    out.extend(store);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_requests_get_the_servers_own_error() {
        // Each expected line is what redis-server 7.0 answers.
        let cases: &[(&[&str], &str)] = &[
            (
                &["FOO"],
                "ERR unknown command 'FOO', with args beginning with: ",
            ),
            (
                &["foo", "a", "b"],
                "ERR unknown command 'foo', with args beginning with: 'a' 'b' ",
            ),
            (
                &["CONFIG"],
                "ERR wrong number of arguments for 'config' command",
            ),
            (
                &["config", "frob", "x"],
                "ERR unknown subcommand 'frob'. Try CONFIG HELP.",
            ),
            (
                &["Object", "Nope"],
                "ERR unknown subcommand 'Nope'. Try OBJECT HELP.",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(unknown_error(args), *want, "{args:?}");
            assert!(lookup_args(args).is_none(), "{args:?} is unknown");
        }
        // The echo stops once it reaches 128 bytes, cutting the argument
        // that crosses it.
        let (x, y) = ("x".repeat(100), "y".repeat(100));
        assert_eq!(
            unknown_error(&["foo", &x, &y, "zzz"]),
            format!(
                "ERR unknown command 'foo', with args beginning with: '{x}' '{}' ",
                &y[..25]
            )
        );
    }

    fn keys(args: &[&str]) -> Vec<String> {
        let req = Request::new(args);
        let spec = lookup(&req).expect("known command");
        key_positions(spec, &req.args)
            .into_iter()
            .map(|i| args[i].to_string())
            .collect()
    }

    #[test]
    fn every_entry_is_found_by_its_name_in_any_case() {
        for spec in REDIS_COMMANDS {
            let args: Vec<String> = spec.name.split('|').map(str::to_ascii_uppercase).collect();
            let found = lookup_args(&args);
            if spec.has_subcommands {
                // A container alone names no entry; with a subcommand it
                // names the subcommand's.
                assert!(found.is_none(), "{}", spec.name);
                continue;
            }
            assert!(std::ptr::eq(found.expect(spec.name), spec), "{}", spec.name);
            // The cached class is the computed one, for a copy too.
            let copy = CommandSpec { ..*spec };
            assert_eq!(class_of(spec), compute_class(spec), "{}", spec.name);
            assert_eq!(class_of(&copy), compute_class(spec), "{}", spec.name);
        }
        let long = "x".repeat(NAME_MAX * 2);
        assert!(lookup_args(&[long.as_str()]).is_none());
        assert!(lookup_args(&["CONFIG", long.as_str()]).is_none());
        let none: [&str; 0] = [];
        assert!(lookup_args(&none).is_none());
        assert_eq!(
            lookup_args(&["cOnFiG", "GeT"]).map(|s| s.name),
            Some("config|get")
        );
    }

    #[test]
    fn key_positions_follow_the_specs() {
        assert_eq!(keys(&["SET", "k", "v", "EX", "10"]), ["k"]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]), ["a", "b"]);
        assert_eq!(keys(&["DEL", "a", "b", "c"]), ["a", "b", "c"]);
        assert_eq!(keys(&["LMPOP", "2", "l1", "l2", "LEFT"]), ["l1", "l2"]);
        assert_eq!(keys(&["EVAL", "return 1", "1", "k", "arg"]), ["k"]);
        assert_eq!(
            keys(&["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"]),
            ["g", "dst"]
        );
        assert_eq!(
            keys(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "STREAMS",
                "s1",
                "s2",
                ">",
                ">"
            ]),
            ["s1", "s2"]
        );
        assert_eq!(keys(&["OBJECT", "ENCODING", "k"]), ["k"]);
        assert_eq!(keys(&["PING"]), Vec::<String>::new());
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]), ["a", "b"]);
    }

    #[test]
    fn classes() {
        let class = |args: &[&str]| class_of(lookup(&Request::new(args)).unwrap());
        assert_eq!(class(&["GET", "k"]), CommandClass::Read);
        assert_eq!(class(&["set", "k", "v"]), CommandClass::Write);
        assert_eq!(class(&["SELECT", "1"]), CommandClass::ConnectionState);
        assert_eq!(class(&["CONFIG", "GET", "x"]), CommandClass::Admin);
        assert_eq!(class(&["BLPOP", "k", "0"]), CommandClass::Blocking);
        assert_eq!(class(&["SUBSCRIBE", "c"]), CommandClass::PubSub);
        assert_eq!(class(&["EVAL", "x", "0"]), CommandClass::Scripting);
        assert_eq!(
            class(&["REPLICAOF", "no", "one"]),
            CommandClass::Unsupported
        );
        assert!(lookup(&Request::new(["NOSUCH"])).is_none());
        assert_eq!(
            classify(&Request::new(["NOSUCH"])),
            CommandClass::Unsupported
        );
        assert_eq!(classify(&Request::new(["Get", "k"])), CommandClass::Read);
        assert!(lookup(&Request::new(["CONFIG", "NOSUCH"])).is_none());
    }
}
