//! The command tables checked against live servers, so they cannot drift
//! from what the installed redis-server and memcached actually do.
//!
//! Steps (redis): start redis-server on a free loopback port; read
//! `COMMAND` (RESP2) and `COMMAND DOCS`; compare every command and
//! subcommand (name, arity, flags, key specs) with the built-in table;
//! check that our classes agree with the server's `write`/`readonly`
//! flags; check key positions of sample commands against `COMMAND GETKEYS`.

mod support;

use mu_protocols::resp::{Frame, Request};
use mu_protocols::table::verify::{diff_against_table, parse_command_reply};
use mu_protocols::table::{class_of, key_positions, lookup, CommandClass, REDIS_COMMANDS};
use support::server::{Kind, Server};

#[test]
fn redis_table_matches_live_command_info() {
    let srv = Server::start(Kind::Redis);
    let mut c = srv.connect();
    let live = parse_command_reply(&c.call(&["COMMAND"])).expect("COMMAND reply parses");
    assert!(
        live.len() > 300,
        "suspiciously few commands: {}",
        live.len()
    );
    let diff = diff_against_table(&live);
    assert!(
        diff.is_empty(),
        "built-in table differs from the live server (+ live only, - table only); regenerate with \
         `cargo run -p mu-protocols --example gen_redis_table > protocols/src/table/redis_data.rs`:\n{}",
        diff.join("\n")
    );

    // COMMAND DOCS lists the same commands and subcommands.
    let docs = c.call(&["COMMAND", "DOCS"]);
    let mut doc_names = Vec::new();
    let Frame::Array(items) = &docs else {
        panic!("COMMAND DOCS: {docs:?}")
    };
    for pair in items.chunks(2) {
        let (Frame::Bulk(name), Frame::Array(doc)) = (&pair[0], &pair[1]) else {
            panic!("{pair:?}")
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        doc_names.push(name.clone());
        for kv in doc.chunks(2) {
            if kv[0] == Frame::bulk("subcommands") {
                let Frame::Array(subs) = &kv[1] else {
                    panic!("subcommands: {:?}", kv[1])
                };
                for sub in subs.chunks(2) {
                    let Frame::Bulk(s) = &sub[0] else {
                        panic!("{sub:?}")
                    };
                    doc_names.push(String::from_utf8_lossy(s).to_ascii_lowercase());
                }
            }
        }
    }
    doc_names.sort();
    let ours: Vec<String> = REDIS_COMMANDS.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(doc_names, ours, "COMMAND DOCS names differ from the table");
}

#[test]
fn classes_agree_with_server_flags() {
    let mut problems = Vec::new();
    for spec in REDIS_COMMANDS {
        let class = class_of(spec);
        let write = spec.has_flag("write");
        let readonly = spec.has_flag("readonly");
        // A command the server may let change data is never served as a
        // plain local read.
        if write && class == CommandClass::Read {
            problems.push(format!(
                "{} is write-flagged but classified read",
                spec.name
            ));
        }
        // Something we replicate must be a write per the server (or a
        // script/pubsub, which have their own policies).
        if class == CommandClass::Write && !write {
            problems.push(format!(
                "{} classified write without the write flag",
                spec.name
            ));
        }
        if readonly && class == CommandClass::Write {
            problems.push(format!("{} is readonly but classified write", spec.name));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn key_positions_match_command_getkeys() {
    let srv = Server::start(Kind::Redis);
    let mut c = srv.connect();
    let samples: &[&[&str]] = &[
        &["SET", "k", "v", "EX", "10"],
        &["MSET", "a", "1", "b", "2", "c", "3"],
        &["MGET", "a", "b"],
        &["DEL", "a", "b", "c"],
        &["LMOVE", "src", "dst", "LEFT", "RIGHT"],
        &["LMPOP", "2", "l1", "l2", "LEFT", "COUNT", "3"],
        &["ZUNIONSTORE", "dst", "2", "z1", "z2", "WEIGHTS", "1", "2"],
        &["ZINTER", "2", "z1", "z2"],
        &["SINTERCARD", "3", "s1", "s2", "s3", "LIMIT", "1"],
        &["EVAL", "return 1", "2", "k1", "k2", "arg"],
        &["FCALL", "f", "1", "k1", "arg"],
        &["GEORADIUS", "g", "0", "0", "1", "km", "STORE", "dst"],
        &[
            "GEOSEARCHSTORE",
            "dst",
            "src",
            "FROMLONLAT",
            "0",
            "0",
            "BYRADIUS",
            "1",
            "km",
        ],
        &["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "s1",
            "s2",
            ">",
            ">",
        ],
        &["BLPOP", "a", "b", "0"],
        &["RENAME", "a", "b"],
        &["OBJECT", "ENCODING", "k"],
        &["MEMORY", "USAGE", "k"],
        &["BITOP", "AND", "dst", "a", "b"],
        &["COPY", "a", "b", "DB", "1"],
        &["SORT", "k", "BY", "w_*", "STORE", "dst"],
        &["XADD", "s", "*", "f", "v"],
        &["PFMERGE", "dst", "a", "b"],
        &["MSETNX", "a", "1", "b", "2"],
        &["GETEX", "k", "PX", "5"],
        &["SMOVE", "a", "b", "m"],
        &["ZRANGESTORE", "dst", "src", "0", "-1"],
        &["BZMPOP", "1", "2", "z1", "z2", "MIN"],
    ];
    for args in samples {
        let mut cmd = vec!["COMMAND", "GETKEYS"];
        cmd.extend_from_slice(args);
        let reply = c.call(&cmd);
        let Frame::Array(keys) = reply else {
            panic!("{args:?}: {reply:?}")
        };
        let mut live: Vec<String> = keys
            .iter()
            .map(|k| match k {
                Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                other => panic!("{other:?}"),
            })
            .collect();
        let req = Request::new(*args);
        let spec = lookup(&req).unwrap_or_else(|| panic!("{args:?} not in table"));
        let mut ours: Vec<String> = key_positions(spec, &req.args)
            .into_iter()
            .map(|i| args[i].to_string())
            .collect();
        live.sort();
        ours.sort();
        assert_eq!(ours, live, "keys of {args:?}");
    }
}

/// Every verb in the memcached table is one the live server accepts (it
/// does not answer `ERROR`), and our decoder parses each sample; an
/// unknown verb is answered `ERROR`, so the check can fail.
#[test]
fn memcached_table_matches_live_server() {
    use bytes::BytesMut;
    use mu_protocols::memcached::{McReply, McRequestDecoder};
    use mu_protocols::table::{mc_class, MEMCACHED_VERBS};

    let srv = Server::start(Kind::Memcached);
    let samples: &[(&str, &[u8])] = &[
        ("add", b"add k2 0 0 1\r\na\r\n"),
        ("append", b"append k 0 0 1\r\na\r\n"),
        ("cas", b"cas k 0 0 1 1\r\na\r\n"),
        ("decr", b"decr n 1\r\n"),
        ("delete", b"delete k3\r\n"),
        ("flush_all", b"flush_all 1000000\r\n"),
        ("gat", b"gat 100 k\r\n"),
        ("gats", b"gats 100 k\r\n"),
        ("get", b"get k\r\n"),
        ("gets", b"gets k\r\n"),
        ("incr", b"incr n 1\r\n"),
        ("ma", b"ma n\r\n"),
        ("md", b"md k4\r\n"),
        ("me", b"me k\r\n"),
        ("mg", b"mg k v\r\n"),
        ("mn", b"mn\r\n"),
        ("ms", b"ms k5 1\r\na\r\n"),
        ("prepend", b"prepend k 0 0 1\r\na\r\n"),
        ("replace", b"replace k 0 0 1\r\na\r\n"),
        ("set", b"set k 0 0 1\r\na\r\n"),
        ("stats", b"stats\r\n"),
        ("touch", b"touch k 10\r\n"),
        ("verbosity", b"verbosity 0\r\n"),
        ("version", b"version\r\n"),
    ];
    let mut names: Vec<&str> = samples.iter().map(|s| s.0).collect();
    // `quit` closes the connection; it is checked last.
    names.push("quit");
    names.sort();
    let table: Vec<&str> = MEMCACHED_VERBS.iter().map(|v| v.name).collect();
    assert_eq!(names, table, "samples cover exactly the table");
    let mut c = srv.connect();
    c.send(b"set n 0 0 1\r\n5\r\nset k 0 0 1\r\nv\r\n");
    assert_eq!(c.read_mc(), McReply::Stored);
    assert_eq!(c.read_mc(), McReply::Stored);
    for (name, bytes) in samples {
        let mut buf = BytesMut::from(*bytes);
        let req = McRequestDecoder::default()
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(req.verb_name(), *name);
        let _ = mc_class(&req);
        c.send(bytes);
        let reply = c.read_mc();
        assert!(
            !matches!(reply, McReply::Error(_) | McReply::ClientError(_)),
            "memcached rejected {name}: {reply:?}"
        );
    }
    c.send(b"nosuchverb k\r\n");
    assert!(
        matches!(c.read_mc(), McReply::Error(_)),
        "unknown verbs must be rejected"
    );
    c.send(b"quit\r\n");
    c.expect_closed();
}
