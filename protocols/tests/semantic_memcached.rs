//! Replaying memcached writes and their rewritten entries gives the same
//! dataset.
//!
//! Steps:
//! 1. Start memcached A and B. For every request of the corpus, at the same
//!    moment: send the original to A; rewrite it (leader clock = now),
//!    round-trip the entry through its wire format and send it to B;
//!    compare the replies.
//! 2. Wait until the wall clock moved on by `GAP`, start C, send every
//!    entry to C.
//! 3. Compare `lru_crawler metadump all` (keys and absolute expiry
//!    seconds) plus each value and its client flags: A and B within
//!    `A_B_TOLERANCE_S`, B and C exactly. A relative exptime left in place
//!    would differ between B and C by `GAP`.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mu_protocols::entry::Entry;
use mu_protocols::memcached::{McReply, McRequestDecoder, MetaStatus};
use mu_protocols::rewrite::{rewrite_memcached, Action, Context};
use support::server::{Client, Kind, Server};

const GAP: Duration = Duration::from_millis(3000);
const A_B_TOLERANCE_S: i64 = 2;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug, Clone, PartialEq)]
struct Item {
    key: String,
    exp: i64,
    value: String,
}

fn dataset(srv: &Server) -> Vec<Item> {
    let mut dump = srv.connect();
    dump.send(b"lru_crawler metadump all\r\n");
    let text = String::from_utf8(dump.read_until(b"END\r\n")).unwrap();
    let mut c = srv.connect();
    let mut items = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("key=")) {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {line}"))
        };
        let key = field("key=").to_string();
        let exp: i64 = field("exp=").parse().unwrap();
        c.send(format!("mg {key} v f\r\n").as_bytes());
        let value = match c.read_mc() {
            McReply::Meta(m) if m.status == MetaStatus::Va => {
                format!(
                    "{} {:?}",
                    String::from_utf8_lossy(&m.data.unwrap()),
                    m.tokens
                )
            }
            other => format!("{other:?}"),
        };
        items.push(Item { key, exp, value });
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

fn corpus(now_s: i64) -> Vec<Vec<u8>> {
    let abs = now_s + 5000;
    let lines = [
        "set a 0 100 1\r\nx\r\n".to_string(),
        "set b 5 0 1\r\ny\r\n".to_string(),
        "add c 0 200 1\r\nz\r\n".to_string(),
        "add c 0 200 1\r\nq\r\n".to_string(),
        "replace a 1 150 2\r\nxx\r\n".to_string(),
        "replace missing 0 10 1\r\nm\r\n".to_string(),
        "append b 0 0 1\r\n+\r\n".to_string(),
        "prepend b 0 0 1\r\n-\r\n".to_string(),
        format!("set absolute 0 {abs} 1\r\nA\r\n"),
        "set gone 0 -1 1\r\ng\r\n".to_string(),
        "set forever 0 0 1\r\nf\r\n".to_string(),
        "touch c 300\r\n".to_string(),
        "gat 400 a\r\n".to_string(),
        "set num 0 0 2\r\n10\r\n".to_string(),
        "incr num 5\r\n".to_string(),
        "decr num 3\r\n".to_string(),
        "set d 0 0 1\r\nd\r\n".to_string(),
        "delete d\r\n".to_string(),
        "set quiet 0 60 1 noreply\r\nq\r\n".to_string(),
        "ms m1 1 T100 F3\r\nz\r\n".to_string(),
        "ms m2 2\r\nzz\r\n".to_string(),
        "mg m2 T250 v\r\n".to_string(),
        "ma num2 N100 J10\r\n".to_string(),
        "ms m3 1 T50\r\nw\r\n".to_string(),
        "md m3\r\n".to_string(),
        "verbosity 0\r\n".to_string(),
    ];
    lines.into_iter().map(String::into_bytes).collect()
}

fn decode(bytes: &[u8]) -> mu_protocols::memcached::McRequest {
    let mut buf = BytesMut::from(bytes);
    let req = McRequestDecoder::default()
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty());
    req
}

#[test]
fn rewritten_entries_reproduce_the_dataset() {
    let a_srv = Server::start(Kind::Memcached);
    let b_srv = Server::start(Kind::Memcached);
    let (mut a, mut b): (Client, Client) = (a_srv.connect(), b_srv.connect());
    let t0 = now_ms();
    let mut entries = Vec::new();
    for raw in corpus(t0 / 1000) {
        let req = decode(&raw);
        let ctx = Context {
            now_ms: now_ms(),
            applied_index: 0,
        };
        a.send(&raw);
        let to_b = match rewrite_memcached(&req, &ctx) {
            Action::Replicate(entry) => {
                let entry = Entry::decode(&entry.to_bytes()).unwrap();
                let Entry::Memcached(wire) = &entry else {
                    panic!("{entry:?}")
                };
                let wire = wire.to_vec();
                entries.push(wire.clone());
                wire
            }
            Action::Local => raw.clone(),
            other => panic!("{raw:?}: {other:?}"),
        };
        b.send(&to_b);
        if !req.noreply() {
            let (ra, rb) = (a.read_mc(), b.read_mc());
            assert_eq!(ra, rb, "reply to {:?}", String::from_utf8_lossy(&raw));
        }
    }
    let (da, db) = (dataset(&a_srv), dataset(&b_srv));
    assert!(
        da.len() >= 10,
        "corpus produced only {} items: {da:?}",
        da.len()
    );
    assert_eq!(da.len(), db.len(), "A {da:#?}\nB {db:#?}");
    for (x, y) in da.iter().zip(&db) {
        assert_eq!((&x.key, &x.value), (&y.key, &y.value));
        let close = (x.exp == -1) == (y.exp == -1) && (x.exp - y.exp).abs() <= A_B_TOLERANCE_S;
        assert!(close, "expiry of {}: A {} B {}", x.key, x.exp, y.exp);
    }

    while now_ms() < t0 + GAP.as_millis() as i64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let c_srv = Server::start(Kind::Memcached);
    let mut c = c_srv.connect();
    for wire in &entries {
        c.send(wire);
        if !decode(wire).noreply() {
            c.read_mc();
        }
    }
    assert_eq!(dataset(&c_srv), db, "replica started later differs");
}

#[test]
fn cas_is_refused() {
    let ctx = Context {
        now_ms: 1_700_000_000_000,
        applied_index: 0,
    };
    for raw in [
        &b"cas k 0 0 1 5\r\nv\r\n"[..],
        b"ms k 1 C5\r\nv\r\n",
        b"md k C7\r\n",
    ] {
        let Action::Refuse(r) = rewrite_memcached(&decode(raw), &ctx) else {
            panic!("{raw:?} not refused")
        };
        assert!(matches!(r.to_memcached(), McReply::ClientError(_)));
    }
    // flush_all with a relative delay becomes absolute.
    let Action::Replicate(Entry::Memcached(wire)) =
        rewrite_memcached(&decode(b"flush_all 10\r\n"), &ctx)
    else {
        panic!()
    };
    assert_eq!(&wire[..], b"flush_all 1700000010\r\n");
}

/// The reply expectation matches what a live memcached sends: a quiet
/// `ms` stays silent on success, so the `mn` after it answers first.
#[test]
fn reply_expectations_match_the_server() {
    use mu_protocols::memcached::ReplyExpectation;
    let srv = Server::start(Kind::Memcached);
    let mut c = srv.connect();
    let cases: &[(&[u8], ReplyExpectation)] = &[
        (b"set k 0 0 1 noreply\r\na\r\n", ReplyExpectation::None),
        (b"get k\r\n", ReplyExpectation::One),
        (b"ms k 1 q\r\nb\r\n", ReplyExpectation::Quiet),
        (b"incr n 1 noreply\r\n", ReplyExpectation::None),
        (b"mg k v\r\n", ReplyExpectation::One),
    ];
    for (raw, want) in cases {
        assert_eq!(
            decode(raw).reply_expectation(),
            *want,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
        c.send(raw);
        c.send(b"mn\r\n");
        let first = c.read_mc();
        let is_mn = matches!(&first, McReply::Meta(m) if m.status == MetaStatus::Mn);
        match want {
            ReplyExpectation::One => {
                assert!(!is_mn, "{raw:?} should answer before mn");
                assert!(matches!(c.read_mc(), McReply::Meta(m) if m.status == MetaStatus::Mn));
            }
            _ => assert!(is_mn, "{raw:?} should stay silent, got {first:?}"),
        }
    }
    assert_eq!(
        decode(b"quit\r\n").reply_expectation(),
        ReplyExpectation::None
    );
}
