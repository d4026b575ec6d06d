//! Replaying writes and their rewritten entries gives the same dataset.
//!
//! Steps:
//! 1. Start redis-servers A and B. For every command of the corpus, at
//!    the same moment: run the original on A; rewrite it with a session
//!    (leader clock = now); round-trip any entry through its wire format
//!    and apply it to B through a `RedisApplier`; compare the client's
//!    replies (kind, and value where it is not time-dependent).
//! 2. Wait until the wall clock has moved on by `GAP`, start C, and apply
//!    every entry again to C with a fresh applier.
//! 3. A and B must hold the same keys, types and values, with absolute
//!    expiry times within `A_B_TOLERANCE_MS` (stream IDs likewise); B and C
//!    must be identical, expiry times and stream IDs included. A rewrite
//!    that left a relative time in place would differ between B and C by
//!    `GAP`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use mu_protocols::entry::Entry;
use mu_protocols::resp::{Frame, Request};
use mu_protocols::rewrite::{Action, ApplyPlan, Context, RedisApplier, RedisSession, Step};
use support::server::{Client, Kind, Server};

const GAP: Duration = Duration::from_millis(1500);
const A_B_TOLERANCE_MS: i64 = 300;
const DBS: u32 = 6;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn text(f: &Frame) -> String {
    match f {
        Frame::Bulk(b) | Frame::Simple(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn strings(f: Frame) -> Vec<String> {
    match f {
        Frame::Array(items) => items.iter().map(text).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// One key's state: rendered value (without stream IDs), stream IDs, and
/// the absolute expiry time in ms (-1: none).
#[derive(Debug, Clone, PartialEq)]
struct KeyState {
    db: u32,
    key: String,
    value: String,
    stream_ids: Vec<(i64, i64)>,
    expire_at_ms: i64,
}

fn stream_value(c: &mut Client, key: &str) -> (String, Vec<(i64, i64)>) {
    let Frame::Array(entries) = c.call(&["XRANGE", key, "-", "+"]) else {
        panic!("XRANGE")
    };
    let mut ids = Vec::new();
    let mut fields = Vec::new();
    for e in entries {
        let Frame::Array(parts) = e else {
            panic!("stream entry")
        };
        let id = text(&parts[0]);
        let (ms, seq) = id.split_once('-').unwrap();
        ids.push((ms.parse().unwrap(), seq.parse().unwrap()));
        fields.push(strings(parts[1].clone()).join(","));
    }
    let groups = strings(c.call(&["XINFO", "GROUPS", key]).clone_flat());
    (
        format!("stream[{}] groups{groups:?}", fields.join(";")),
        ids,
    )
}

trait Flat {
    fn clone_flat(self) -> Frame;
}

impl Flat for Frame {
    /// Flattens XINFO GROUPS' array of maps into one array of strings
    /// (pending counts included, the delivered ID's time excluded).
    fn clone_flat(self) -> Frame {
        let Frame::Array(groups) = self else {
            return self;
        };
        let mut out = Vec::new();
        for g in groups {
            let Frame::Array(kv) = g else { continue };
            for pair in kv.chunks(2) {
                let k = text(&pair[0]);
                if k == "last-delivered-id" {
                    continue;
                }
                out.push(Frame::bulk(format!("{k}={}", text(&pair[1]))));
            }
        }
        Frame::Array(out)
    }
}

fn dataset(c: &mut Client) -> Vec<KeyState> {
    let mut out = Vec::new();
    for db in 0..DBS {
        c.call(&["SELECT", &db.to_string()]);
        let mut keys = strings(c.call(&["KEYS", "*"]));
        keys.sort();
        for key in keys {
            let kind = text(&c.call(&["TYPE", &key]));
            let mut stream_ids = Vec::new();
            let value = match kind.as_str() {
                "string" => text(&c.call(&["GET", &key])),
                "list" => strings(c.call(&["LRANGE", &key, "0", "-1"])).join(","),
                "set" => {
                    let mut m = strings(c.call(&["SMEMBERS", &key]));
                    m.sort();
                    m.join(",")
                }
                "zset" => strings(c.call(&["ZRANGE", &key, "0", "-1", "WITHSCORES"])).join(","),
                "hash" => {
                    let kv = strings(c.call(&["HGETALL", &key]));
                    let mut pairs: Vec<String> =
                        kv.chunks(2).map(|p| format!("{}={}", p[0], p[1])).collect();
                    pairs.sort();
                    pairs.join(",")
                }
                "stream" => {
                    let (v, ids) = stream_value(c, &key);
                    stream_ids = ids;
                    v
                }
                other => panic!("unexpected type {other} of {key}"),
            };
            let Frame::Integer(expire_at_ms) = c.call(&["PEXPIRETIME", &key]) else {
                panic!("PEXPIRETIME")
            };
            out.push(KeyState {
                db,
                key,
                value: format!("{kind}:{value}"),
                stream_ids,
                expire_at_ms,
            });
        }
    }
    c.call(&["SELECT", "0"]);
    out
}

/// Applies one entry and returns the client's reply.
fn apply(c: &mut Client, applier: &mut RedisApplier, index: u64, entry: &Entry) -> Frame {
    let Entry::Redis(e) = entry else {
        panic!("not a Redis entry")
    };
    let mut out = BytesMut::new();
    match applier.apply(index, e, &mut out) {
        ApplyPlan::Aborted => Frame::NullArray,
        ApplyPlan::Send {
            replies,
            client_reply,
        } => {
            c.send(&out);
            let mut answer = None;
            for i in 0..replies {
                let f = c.read_frame();
                if i == client_reply {
                    answer = Some(f);
                } else {
                    assert!(!f.is_error(), "apply of {e:?}: {f:?}");
                }
            }
            answer.unwrap()
        }
    }
}

fn corpus(dump: &Bytes) -> Vec<Vec<Bytes>> {
    let lines: &[&str] = &[
        "SET s1 v",
        "SET s2 v EX 100",
        "SET s3 v PX 100000 NX",
        "SET s3b v GET px 50000",
        "SETEX s4 100 v",
        "PSETEX s5 100000 v",
        "SET s6 v",
        "EXPIRE s6 100",
        "SET s7 v",
        "PEXPIRE s7 100000 NX",
        "PEXPIRE s7 200000 GT",
        "GETEX s1 EX 200",
        "SET s8 v EX 100",
        "SET s8 w KEEPTTL",
        "EXPIREAT s8 4000000000",
        "SET s9 v EX 100",
        "PERSIST s9",
        "SETEX bad -5 v",
        "EXPIRE s1 notanumber",
        "INCR n",
        "INCRBY n 5",
        "INCRBYFLOAT f 1.5",
        "APPEND s1 x",
        "SETRANGE s1 2 yy",
        "MSET m1 a m2 b",
        "LPUSH l c b a",
        "RPUSH l d e",
        "LPOP l",
        "LMOVE l l2 LEFT RIGHT",
        "LMPOP 1 l RIGHT",
        "SADD set a b c d",
        "SREM set d",
        "SADD set2 b c x",
        "SINTERSTORE set3 set set2",
        "ZADD z 1 a 2 b 3 c",
        "ZINCRBY z 5 a",
        "ZPOPMIN z",
        "HSET h f1 v1 f2 v2",
        "HINCRBY h n 3",
        "XADD x * f v",
        "XADD x MAXLEN 100 * f v2",
        "XADD x * f v3",
        "XGROUP CREATE x g 0",
        "XREADGROUP GROUP g c1 COUNT 2 STREAMS x >",
        "XAUTOCLAIM x g c2 0 0-0 COUNT 1",
        "RPUSH sortme 3 1 2",
        "SORT sortme STORE sorted",
        "GEOADD geo 13.361389 38.115556 Palermo 15.087269 37.502669 Catania",
        "GEORADIUS geo 15 37 200 km STORE geostore",
        "PFADD hll a b c",
        "PFCOUNT hll",
        "SETBIT bits 7 1",
        "BITOP OR bits2 bits bits",
        "COPY s1 s1copy",
        "RENAME m1 m1renamed",
        "DEL m2",
        "UNLINK s9",
        "SELECT 2",
        "SET d2 v EX 100",
        "HSET d2h a b",
        "SELECT 3",
        "SET gone 1",
        "FLUSHDB",
        "SET kept 2",
        "SELECT 4",
        "SET swapped v PX 90000",
        "SWAPDB 4 5",
        "SELECT 0",
        "MULTI",
        "SET t1 v",
        "EXPIRE t1 100",
        "INCR n",
        "SELECT 1",
        "SET t2 v",
        "EXEC",
        "SET after-exec-db1 v",
        "SELECT 0",
        "WATCH w",
        "SET w 1",
        "MULTI",
        "SET w2 x",
        "EXEC",
        "WATCH w3",
        "MULTI",
        "SET w3 1",
        "EXEC",
        "MULTI",
        "SET q1 v",
        "DISCARD",
        // Runs of plain SETs, which a joining applier sends as one MSET:
        // a key set twice, a list and a key with a TTL overwritten, a
        // database change inside a run, a transaction and a SET with an
        // option ending one.
        "SET r1 a",
        "SET r2 b",
        "SET r1 c",
        "SET l x",
        "SET s8 y",
        "SELECT 1",
        "SET r3 d",
        "set r4 e",
        "SELECT 0",
        "SET r5 f",
        "MULTI",
        "SET r6 g",
        "EXEC",
        "SET r7 h",
        "SET r8 i",
        "SET r9 j NX",
        "SET r10 k",
        "PUBLISH ch msg",
    ];
    let mut out: Vec<Vec<Bytes>> = lines
        .iter()
        .map(|l| {
            l.split(' ')
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect()
        })
        .collect();
    out.push(vec![
        Bytes::from("RESTORE"),
        Bytes::from("r1"),
        Bytes::from("100000"),
        dump.clone(),
    ]);
    out.push(vec![
        Bytes::from("RESTORE"),
        Bytes::from("r2"),
        Bytes::from("0"),
        dump.clone(),
    ]);
    out
}

#[test]
fn rewritten_entries_reproduce_the_dataset() {
    let a_srv = Server::start(Kind::Redis);
    let b_srv = Server::start(Kind::Redis);
    let (mut a, mut b) = (a_srv.connect(), b_srv.connect());
    let mut session = RedisSession::default();
    let mut applier = RedisApplier::default();
    let mut entries: Vec<(u64, Entry)> = Vec::new();
    let mut replies_b: Vec<Frame> = Vec::new();

    a.call(&["SET", "dumpsrc", "payload"]);
    let Frame::Bulk(dump) = a.call(&["DUMP", "dumpsrc"]) else {
        panic!("DUMP")
    };
    a.call(&["DEL", "dumpsrc"]);

    let t0 = now_ms();
    for args in corpus(&dump) {
        let req = Request {
            args: args.clone(),
            inline: false,
        };
        let ctx = Context {
            now_ms: now_ms(),
            applied_index: entries.len() as u64,
        };
        let action = session.rewrite(&req, &ctx);
        let from_a = a.call(&args);
        let from_b = match action {
            Action::Replicate(entry) => {
                let wire = entry.to_bytes();
                let entry = Entry::decode(&wire).expect("entry round trip");
                let index = entries.len() as u64 + 1;
                let reply = apply(&mut b, &mut applier, index, &entry);
                entries.push((index, entry));
                replies_b.push(reply.clone());
                reply
            }
            Action::Reply(frame) => frame,
            Action::Local => b.call(&args),
            Action::Refuse(r) => panic!("{args:?} refused: {r}"),
        };
        assert_eq!(
            from_a.kind(),
            from_b.kind(),
            "reply to {req:?}: A {from_a:?} B {from_b:?}"
        );
        let time_dependent =
            ["xadd", "xreadgroup", "xautoclaim", "set"].contains(&req.name_lower().as_str());
        if !time_dependent && !matches!(from_a, Frame::Error(_)) {
            assert_eq!(from_a, from_b, "reply to {req:?}");
        }
    }
    // The WATCH case above must really have aborted on both sides.
    assert_eq!(a.call(&["EXISTS", "w2"]), Frame::Integer(0));
    assert_eq!(a.call(&["EXISTS", "w3"]), Frame::Integer(1));

    let (da, db) = (dataset(&mut a), dataset(&mut b));
    assert!(da.len() >= 35, "corpus produced only {} keys", da.len());
    assert_eq!(da.len(), db.len(), "key sets differ:\nA {da:#?}\nB {db:#?}");
    for (x, y) in da.iter().zip(&db) {
        assert_eq!((x.db, &x.key, &x.value), (y.db, &y.key, &y.value));
        let close = |p: i64, q: i64| (p == -1) == (q == -1) && (p - q).abs() <= A_B_TOLERANCE_MS;
        assert!(
            close(x.expire_at_ms, y.expire_at_ms),
            "expiry of {}: A {} B {}",
            x.key,
            x.expire_at_ms,
            y.expire_at_ms
        );
        let ms = |s: &KeyState| s.stream_ids.iter().map(|i| i.0).collect::<Vec<_>>();
        assert!(
            ms(x).iter().zip(ms(y)).all(|(p, q)| close(*p, q)),
            "stream IDs of {}",
            x.key
        );
    }

    // Later, on a fresh server: bit-for-bit the same as B.
    while now_ms() < t0 + GAP.as_millis() as i64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let c_srv = Server::start(Kind::Redis);
    let mut c = c_srv.connect();
    let mut applier_c = RedisApplier::default();
    for (index, entry) in &entries {
        apply(&mut c, &mut applier_c, *index, entry);
    }
    let dc = dataset(&mut c);
    assert_eq!(dc, db, "replica started later differs");

    // The whole log in one pipelined batch, plain SETs joined into MSETs:
    // the same replies entry by entry, the same data.
    let d_srv = Server::start(Kind::Redis);
    let mut d = d_srv.connect();
    let (replies_d, msets) = apply_joining_all(&mut d, &entries);
    assert!(
        msets >= 3,
        "the corpus's runs of SETs made only {msets} MSETs"
    );
    for ((index, entry), (b_reply, d_reply)) in entries.iter().zip(replies_b.iter().zip(&replies_d))
    {
        assert_eq!(b_reply, d_reply, "reply to entry {index} {entry:?}");
    }
    assert_eq!(dataset(&mut d), dc, "a replica that joined SETs differs");
    let Frame::Bulk(stats) = d.call(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats")
    };
    assert!(
        String::from_utf8_lossy(&stats).contains("cmdstat_mset:calls="),
        "no MSET reached the server: {}",
        String::from_utf8_lossy(&stats)
    );
}

/// Sends every entry through [`RedisApplier::apply_joining`] in one
/// batch, then reads the replies back; returns each entry's reply and
/// the number of runs of more than one SET.
fn apply_joining_all(c: &mut Client, entries: &[(u64, Entry)]) -> (Vec<Frame>, usize) {
    enum Read {
        Own(ApplyPlan),
        Joined,
        Run(mu_protocols::rewrite::Run),
    }
    let mut applier = RedisApplier::default();
    let mut out = BytesMut::new();
    let mut reads = Vec::new();
    let mut msets = 0;
    let mut push_run = |reads: &mut Vec<Read>, run: Option<mu_protocols::rewrite::Run>| {
        if let Some(r) = run {
            if r.members > 1 {
                msets += 1;
            }
            reads.push(Read::Run(r));
        }
    };
    for (index, entry) in entries {
        let Entry::Redis(e) = entry else {
            panic!("not a Redis entry")
        };
        match applier.apply_joining(*index, e, &mut out) {
            Step::Joined { before } => {
                push_run(&mut reads, before);
                reads.push(Read::Joined);
            }
            Step::Plan { before, plan } => {
                push_run(&mut reads, before);
                reads.push(Read::Own(plan));
            }
        }
    }
    let last = applier.finish_run(&mut out);
    push_run(&mut reads, last);
    c.send(&out);
    let mut replies: Vec<Option<Frame>> = Vec::new();
    let mut waiting = Vec::new();
    for read in reads {
        match read {
            Read::Own(ApplyPlan::Aborted) => replies.push(Some(Frame::NullArray)),
            Read::Own(ApplyPlan::Send {
                replies: n,
                client_reply,
            }) => {
                let mut answer = None;
                for i in 0..n {
                    let f = c.read_frame();
                    if i == client_reply {
                        answer = Some(f);
                    }
                }
                replies.push(answer);
            }
            Read::Joined => {
                waiting.push(replies.len());
                replies.push(None);
            }
            Read::Run(r) => {
                let mut answer = None;
                for i in 0..r.replies {
                    let f = c.read_frame();
                    if i == r.client_reply {
                        answer = Some(f);
                    }
                }
                assert_eq!(waiting.len(), r.members, "members of {r:?}");
                for at in waiting.drain(..) {
                    replies[at] = answer.clone();
                }
            }
        }
    }
    assert!(waiting.is_empty(), "entries left waiting for a run");
    (replies.into_iter().map(Option::unwrap).collect(), msets)
}

#[test]
fn nondeterministic_commands_are_refused_and_change_nothing() {
    let mut s = RedisSession::default();
    let ctx = Context {
        now_ms: 1_700_000_000_000,
        applied_index: 0,
    };
    for line in [
        "SPOP s",
        "BLPOP l 0",
        "EVAL return 1 0",
        "XREADGROUP GROUP g c BLOCK 0 STREAMS x >",
        "XCLAIM x g c 100 0-1",
        "WAIT 1 0",
        "SHUTDOWN",
        "REPLICAOF no one",
    ] {
        let req = Request::new(line.split(' '));
        let Action::Refuse(r) = s.rewrite(&req, &ctx) else {
            panic!("{line} not refused")
        };
        let Frame::Error(msg) = r.to_frame() else {
            panic!()
        };
        let msg = String::from_utf8_lossy(&msg).to_string();
        assert!(msg.contains(&req.name_lower()), "{msg} names the command");
    }
    // Inside MULTI a refusal poisons the transaction: EXEC aborts.
    assert_eq!(
        s.rewrite(&Request::new(["MULTI"]), &ctx),
        Action::Reply(Frame::simple("OK"))
    );
    assert!(matches!(
        s.rewrite(&Request::new(["SPOP", "s"]), &ctx),
        Action::Refuse(_)
    ));
    let Action::Reply(Frame::Error(e)) = s.rewrite(&Request::new(["EXEC"]), &ctx) else {
        panic!()
    };
    assert!(e.starts_with(b"EXECABORT"));
    // Unknown commands and wrong arity never reach a backend.
    assert!(matches!(
        s.rewrite(&Request::new(["NOSUCH", "x"]), &ctx),
        Action::Refuse(_)
    ));
    assert!(matches!(
        s.rewrite(&Request::new(["SET", "k"]), &ctx),
        Action::Reply(Frame::Error(_))
    ));
    // Trusted scripts are replicated.
    let mut trusted = RedisSession::new(16, true);
    assert!(matches!(
        trusted.rewrite(&Request::new(["EVAL", "return 1", "0"]), &ctx),
        Action::Replicate(_)
    ));
}
