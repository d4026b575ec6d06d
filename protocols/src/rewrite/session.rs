//! Per-connection state and the Redis rewriter.

use bytes::Bytes;

use super::expiry;
use super::policy::{node_local_config, policy, reason, Policy};
use super::{Action, Context, Refusal};
use crate::entry::{Entry, RedisEntry, WatchGuard};
use crate::line::parse_i64;
use crate::resp::{Frame, Request};
use crate::table::{self, CommandSpec};

/// Databases redis-server has by default (`databases 16`).
pub const DEFAULT_DATABASES: u32 = 16;

/// An open MULTI block.
#[derive(Debug, Default)]
struct Multi {
    /// Database when MULTI was issued.
    db: u32,
    commands: Vec<Vec<Bytes>>,
    /// A queued command was rejected: EXEC answers EXECABORT.
    failed: bool,
    /// Database after the queued SELECTs, applied to the session on EXEC.
    db_after: u32,
}

/// The state of one Redis client connection that replication depends on.
#[derive(Debug)]
pub struct RedisSession {
    db: u32,
    databases: u32,
    trust_scripts: bool,
    multi: Option<Multi>,
    watched: Vec<WatchGuard>,
    protocol: u8,
}

impl Default for RedisSession {
    fn default() -> Self {
        Self::new(DEFAULT_DATABASES, false)
    }
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// The RESP version a `HELLO` request asks for, when it names one the
/// server speaks (2 or 3).
pub fn hello_version(req: &Request) -> Option<u8> {
    match req.args.get(1).and_then(|v| parse_i64(v)) {
        Some(v @ 2..=3) => Some(v as u8),
        _ => None,
    }
}

impl RedisSession {
    /// A session for a server with `databases` databases. `trust_scripts`
    /// is the operator's promise that every EVAL/EVALSHA/FCALL script is
    /// deterministic; without it, those are refused.
    pub fn new(databases: u32, trust_scripts: bool) -> Self {
        Self {
            db: 0,
            databases,
            trust_scripts,
            multi: None,
            watched: Vec::new(),
            protocol: 2,
        }
    }

    /// The selected database.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// The RESP version the client negotiated with `HELLO` (2 until then);
    /// the leader answers the client in this version.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// Puts back the RESP version after a `HELLO` the backend refused
    /// (the session took the new version when it saw the request, as the
    /// requests pipelined after it are answered in it).
    pub fn set_protocol(&mut self, version: u8) {
        self.protocol = version;
    }

    /// True between MULTI and EXEC/DISCARD.
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Notes a request refused before it reached the session (its user may
    /// not run it): inside MULTI the transaction then fails, as after any
    /// command rejected while queueing.
    pub fn reject(&mut self) {
        self.fail_in_multi(Action::Local);
    }

    /// Decides what to do with one request. See the [module docs](super)
    /// for the contract of each [`Action`].
    pub fn rewrite(&mut self, req: &Request, ctx: &Context) -> Action {
        let Some(spec) = table::lookup(req) else {
            return self.fail_in_multi(Action::Refuse(Refusal::unknown_redis(&req.args)));
        };
        if !spec.arity_ok(req.len()) {
            let err = format!("ERR wrong number of arguments for '{}' command", spec.name);
            return self.fail_in_multi(Action::Reply(Frame::error(err)));
        }
        match spec.name {
            "multi" => return self.multi(),
            "exec" => return self.exec(),
            "discard" => return self.discard(),
            "watch" => return self.watch(req, ctx),
            "unwatch" => {
                self.watched.clear();
                return Action::Reply(Frame::simple("OK"));
            }
            "select" => return self.select(req),
            "hello" => {
                // The backend validates HELLO and answers it; the session
                // only notes a well-formed version switch.
                if let Some(v) = hello_version(req) {
                    self.protocol = v;
                }
                return Action::Local;
            }
            "reset" => {
                // The backend connection resets too (db 0, no MULTI, no
                // WATCH, RESP2); the session follows.
                self.protocol = 2;
                self.db = 0;
                self.multi = None;
                self.watched.clear();
                return Action::Local;
            }
            _ => {}
        }
        if self.multi.is_some() && spec.has_flag("no_multi") {
            return self.fail_in_multi(Action::Reply(Frame::error(
                "ERR Command not allowed inside a transaction",
            )));
        }
        if self.multi.is_some() && !queueable(spec) {
            return self.fail_in_multi(Action::Refuse(Refusal::new(
                spec.name,
                reason::NOT_IN_MULTI,
            )));
        }
        let decided = self.decide(spec, req, ctx);
        match (decided, &mut self.multi) {
            (Decision::Refuse(r), Some(_)) => self.fail_in_multi(Action::Refuse(r)),
            (Decision::Refuse(r), None) => Action::Refuse(r),
            (Decision::Local, None) => Action::Local,
            (Decision::Replicate(cmd), None) => Action::Replicate(Entry::Redis(RedisEntry {
                db: self.db,
                transaction: false,
                resp3: self.protocol == 3,
                guards: Vec::new(),
                commands: vec![cmd],
            })),
            (Decision::Local, Some(m)) => {
                m.commands.push(req.args.clone());
                Action::Reply(Frame::simple("QUEUED"))
            }
            (Decision::Replicate(cmd), Some(m)) => {
                m.commands.push(cmd);
                Action::Reply(Frame::simple("QUEUED"))
            }
        }
    }

    /// Marks an open transaction as failed (EXEC will answer EXECABORT)
    /// and passes the action through.
    fn fail_in_multi(&mut self, action: Action) -> Action {
        if let Some(m) = &mut self.multi {
            m.failed = true;
        }
        action
    }

    fn decide(&self, spec: &CommandSpec, req: &Request, ctx: &Context) -> Decision {
        let args = &req.args;
        let now = ctx.now_ms;
        match policy(spec, self.trust_scripts) {
            Policy::Local | Policy::Session(_) => Decision::Local,
            Policy::Replicate => Decision::Replicate(args.clone()),
            Policy::Refuse(why) => Decision::Refuse(Refusal::new(spec.name, why)),
            Policy::Rewrite(_) => Decision::Replicate(match spec.name {
                "expire" => expiry::expire(args, 1000, now).unwrap_or_else(|| args.clone()),
                "pexpire" => expiry::expire(args, 1, now).unwrap_or_else(|| args.clone()),
                "setex" => expiry::setex(args, 1000, now).unwrap_or_else(|| args.clone()),
                "psetex" => expiry::setex(args, 1, now).unwrap_or_else(|| args.clone()),
                "set" => expiry::ex_px_options(args, 3, now),
                "getex" => expiry::ex_px_options(args, 2, now),
                "restore" => expiry::restore(args, now),
                _ => expiry::xadd(args, now),
            }),
            Policy::Depends(_) => depends(spec, args),
        }
    }

    fn multi(&mut self) -> Action {
        if self.multi.is_some() {
            return Action::Reply(Frame::error("ERR MULTI calls can not be nested"));
        }
        self.multi = Some(Multi {
            db: self.db,
            db_after: self.db,
            ..Multi::default()
        });
        Action::Reply(Frame::simple("OK"))
    }

    fn exec(&mut self) -> Action {
        let Some(m) = self.multi.take() else {
            return Action::Reply(Frame::error("ERR EXEC without MULTI"));
        };
        let guards = std::mem::take(&mut self.watched);
        if m.failed {
            return Action::Reply(Frame::error(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        self.db = m.db_after;
        Action::Replicate(Entry::Redis(RedisEntry {
            db: m.db,
            transaction: true,
            resp3: self.protocol == 3,
            guards,
            commands: m.commands,
        }))
    }

    fn discard(&mut self) -> Action {
        if self.multi.take().is_none() {
            return Action::Reply(Frame::error("ERR DISCARD without MULTI"));
        }
        self.watched.clear();
        Action::Reply(Frame::simple("OK"))
    }

    fn watch(&mut self, req: &Request, ctx: &Context) -> Action {
        if self.multi.is_some() {
            // Refused, but the transaction goes on (as MULTI inside MULTI).
            return Action::Reply(Frame::error("ERR WATCH inside MULTI is not allowed"));
        }
        for key in &req.args[1..] {
            self.watched.push(WatchGuard {
                db: self.db,
                key: key.clone(),
                seen_index: ctx.applied_index,
            });
        }
        Action::Reply(Frame::simple("OK"))
    }

    fn select(&mut self, req: &Request) -> Action {
        let db = parse_i64(&req.args[1]);
        let Some(db) = db
            .and_then(|d| u32::try_from(d).ok())
            .filter(|&d| d < self.databases)
        else {
            let msg = if db.is_some() {
                "ERR DB index is out of range"
            } else {
                "ERR value is not an integer or out of range"
            };
            return self.fail_in_multi(Action::Reply(Frame::error(msg)));
        };
        match &mut self.multi {
            Some(m) => {
                m.commands.push(req.args.clone());
                m.db_after = db;
                Action::Reply(Frame::simple("QUEUED"))
            }
            None => {
                self.db = db;
                Action::Reply(Frame::simple("OK"))
            }
        }
    }
}

/// Whether a command may be queued in a transaction: the transaction runs
/// on every replica's apply connection, so only data commands (and `PING`,
/// `ECHO`) may go there.
fn queueable(spec: &CommandSpec) -> bool {
    use crate::table::CommandClass::*;
    match table::class_of(spec) {
        Read | Write | Scripting | Blocking => true,
        PubSub => matches!(spec.name, "publish" | "spublish"),
        ConnectionState => matches!(spec.name, "ping" | "echo"),
        Admin | Unsupported => false,
    }
}

/// The outcome for one command before MULTI handling.
enum Decision {
    Local,
    Replicate(Vec<Bytes>),
    Refuse(Refusal),
}

/// Commands whose treatment depends on their arguments.
fn depends(spec: &CommandSpec, args: &[Bytes]) -> Decision {
    let has = |word: &str| args.iter().skip(1).any(|a| eq(a, word));
    match spec.name {
        "sort" | "georadius" | "georadiusbymember" if has("store") || has("storedist") => {
            Decision::Replicate(args.to_vec())
        }
        "sort" | "georadius" | "georadiusbymember" => Decision::Local,
        "xreadgroup" if has("block") => {
            Decision::Refuse(Refusal::new(spec.name, reason::XREADGROUP_BLOCK))
        }
        "xreadgroup" => Decision::Replicate(args.to_vec()),
        // CONFIG SET p v [p v ...]: a malformed one is the backend's to
        // reject (it changes nothing).
        "config|set" => {
            let params = args.iter().skip(2).step_by(2);
            if args.len() < 4
                || !args.len().is_multiple_of(2)
                || params.clone().all(|p| node_local_config(p))
            {
                Decision::Local
            } else {
                Decision::Refuse(Refusal::new(spec.name, reason::CONFIG_SET))
            }
        }
        // XCLAIM key group consumer min-idle-time ...; XAUTOCLAIM key group
        // consumer min-idle-time start ...: argument 4 either way.
        _ => match args.get(4).and_then(|a| parse_i64(a)) {
            Some(0) => Decision::Replicate(args.to_vec()),
            Some(_) => Decision::Refuse(Refusal::new(spec.name, reason::IDLE_TIME)),
            None => Decision::Replicate(args.to_vec()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            now_ms: 1_000,
            applied_index: 5,
        }
    }

    fn run(s: &mut RedisSession, line: &str) -> Action {
        s.rewrite(&Request::new(line.split(' ')), &ctx())
    }

    #[test]
    fn config_set_is_served_only_for_node_local_settings() {
        let mut s = RedisSession::default();
        for local in [
            "CONFIG SET loglevel debug",
            "config set SLOWLOG-LOG-SLOWER-THAN 0 latency-monitor-threshold 5",
            "CONFIG SET save ",
            // A value missing: the backend rejects it, changing nothing.
            "CONFIG SET loglevel debug maxmemory",
        ] {
            assert_eq!(run(&mut s, local), Action::Local, "{local}");
        }
        for refused in [
            "CONFIG SET maxmemory 1",
            "CONFIG SET loglevel debug proto-max-bulk-len 10",
            "CONFIG SET timeout 1",
            "CONFIG SET requirepass x",
        ] {
            let Action::Refuse(r) = run(&mut s, refused) else {
                panic!("{refused} is refused")
            };
            assert_eq!(r.command, "config|set");
            let Frame::Error(e) = r.to_frame() else {
                panic!("an error frame")
            };
            let e = String::from_utf8_lossy(&e);
            assert!(e.starts_with("ERR mu-sidecar refuses 'config set'"), "{e}");
            assert!(e.contains("set it alike on every backend"), "{e}");
        }
        assert_eq!(run(&mut s, "CONFIG GET maxmemory"), Action::Local);
        assert_eq!(
            run(&mut s, "CONFIG SET maxmemory"),
            Action::Reply(Frame::error(
                "ERR wrong number of arguments for 'config|set' command"
            ))
        );
    }

    #[test]
    fn transactions_carry_db_and_guards() {
        let mut s = RedisSession::default();
        assert_eq!(run(&mut s, "SELECT 2"), Action::Reply(Frame::simple("OK")));
        assert_eq!(run(&mut s, "WATCH a b"), Action::Reply(Frame::simple("OK")));
        assert_eq!(run(&mut s, "MULTI"), Action::Reply(Frame::simple("OK")));
        assert_eq!(
            run(&mut s, "SETEX k 1 v"),
            Action::Reply(Frame::simple("QUEUED"))
        );
        assert_eq!(
            run(&mut s, "SELECT 3"),
            Action::Reply(Frame::simple("QUEUED"))
        );
        assert_eq!(s.db(), 2, "SELECT inside MULTI takes effect at EXEC");
        let Action::Replicate(Entry::Redis(e)) = run(&mut s, "EXEC") else {
            panic!("EXEC")
        };
        assert_eq!(s.db(), 3);
        assert_eq!(
            (e.db, e.transaction, e.guards.len(), e.commands.len()),
            (2, true, 2, 2)
        );
        assert_eq!(e.guards[0].seen_index, 5);
        assert_eq!(
            e.commands[0],
            Request::new(["SET", "k", "v", "PXAT", "2000"]).args
        );
        assert_eq!(
            run(&mut s, "EXEC"),
            Action::Reply(Frame::error("ERR EXEC without MULTI"))
        );
        assert_eq!(
            run(&mut s, "SELECT 16"),
            Action::Reply(Frame::error("ERR DB index is out of range"))
        );
    }

    #[test]
    fn reset_clears_the_session() {
        let mut s = RedisSession::default();
        run(&mut s, "SELECT 4");
        run(&mut s, "MULTI");
        assert_eq!(run(&mut s, "RESET"), Action::Local);
        assert_eq!((s.db(), s.in_multi()), (0, false));
        assert_eq!(run(&mut s, "HELLO 3"), Action::Local);
        assert_eq!(s.protocol(), 3);
        run(&mut s, "HELLO 9");
        assert_eq!(s.protocol(), 3);
        run(&mut s, "RESET");
        assert_eq!(s.protocol(), 2);
        let Action::Replicate(Entry::Redis(e)) = run(&mut s, "SET k v") else {
            panic!()
        };
        assert_eq!((e.db, e.transaction), (0, false));
    }

    #[test]
    fn watch_or_multi_inside_multi_is_refused_and_the_transaction_goes_on() {
        let mut s = RedisSession::default();
        run(&mut s, "MULTI");
        for nested in ["WATCH k", "MULTI"] {
            assert!(
                matches!(run(&mut s, nested), Action::Reply(Frame::Error(_))),
                "{nested}"
            );
        }
        run(&mut s, "SET k v");
        let Action::Replicate(Entry::Redis(e)) = run(&mut s, "EXEC") else {
            panic!("the transaction runs")
        };
        assert!(e.transaction && e.guards.is_empty() && e.commands.len() == 1);
    }

    #[test]
    fn connection_commands_cannot_be_queued() {
        let mut s = RedisSession::default();
        run(&mut s, "MULTI");
        assert_eq!(run(&mut s, "PING"), Action::Reply(Frame::simple("QUEUED")));
        assert!(matches!(
            run(&mut s, "CONFIG SET maxmemory 1"),
            Action::Refuse(_)
        ));
        assert!(matches!(run(&mut s, "SUBSCRIBE ch"), Action::Refuse(_)));
        assert!(matches!(
            run(&mut s, "EXEC"),
            Action::Reply(Frame::Error(_))
        ));
    }
}
