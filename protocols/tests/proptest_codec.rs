//! Property tests: encode → decode round trips and split invariance for
//! every codec, and the entry format's round trip.

use bytes::{Bytes, BytesMut};
use mu_protocols::entry::{Entry, RedisEntry, WatchGuard};
use mu_protocols::memcached::*;
use mu_protocols::resp::{encode_request, Frame, FrameDecoder, RequestDecoder};
use mu_protocols::ProtocolError;
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Text without CR or LF (simple strings, errors).
fn line_text() -> impl Strategy<Value = Bytes> {
    "[^\r\n]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()))
}

fn token() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9_.:=-]{1,12}".prop_map(|s| Bytes::from(s.into_bytes()))
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        bytes(40).prop_map(Frame::Bulk),
        Just(Frame::NullBulk),
        Just(Frame::NullArray),
        Just(Frame::Null),
        any::<bool>().prop_map(Frame::Boolean),
        prop_oneof![
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("nan".to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:?}")),
        ]
        .prop_map(|s| Frame::Double(Bytes::from(s))),
        "-?[0-9]{1,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        bytes(40).prop_map(Frame::BulkError),
        ("[a-z]{3}", bytes(20)).prop_map(|(f, t)| Frame::Verbatim {
            format: [f.as_bytes()[0], f.as_bytes()[1], f.as_bytes()[2]],
            text: t
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        let items = proptest::collection::vec(inner.clone(), 0..6);
        let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            items.clone().prop_map(Frame::Array),
            items.clone().prop_map(Frame::Set),
            items.prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (
                proptest::collection::vec((inner.clone(), inner.clone()), 1..3),
                inner
            )
                .prop_map(|(attributes, f)| Frame::Attributed {
                    attributes,
                    frame: Box::new(f)
                }),
        ]
    })
}

/// Decodes `wire` fed in the pieces given by `cuts` (sorted offsets).
fn decode_in_pieces<T>(
    wire: &[u8],
    cuts: &[usize],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
) -> Vec<T> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.sort_unstable();
    points.push(wire.len());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for p in points {
        buf.extend_from_slice(&wire[from..p]);
        from = p;
        while let Some(v) = decode(&mut buf).expect("valid encoding decodes") {
            out.push(v);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    out
}

fn key() -> impl Strategy<Value = Bytes> {
    "[a-zA-Z0-9_:.-]{1,40}".prop_map(|s| Bytes::from(s.into_bytes()))
}

fn meta_flags() -> impl Strategy<Value = Vec<MetaFlag>> {
    proptest::collection::vec(
        ("[a-zA-Z]", "[a-zA-Z0-9]{0,6}").prop_map(|(f, t)| MetaFlag {
            flag: f.as_bytes()[0],
            token: Bytes::from(t),
        }),
        0..5,
    )
}

fn mc_request() -> impl Strategy<Value = McRequest> {
    let storage = (
        prop_oneof![
            Just(StorageVerb::Set),
            Just(StorageVerb::Add),
            Just(StorageVerb::Replace),
            Just(StorageVerb::Append),
            Just(StorageVerb::Prepend),
            Just(StorageVerb::Cas)
        ],
        key(),
        any::<u32>(),
        any::<i64>(),
        bytes(60),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(verb, key, flags, exptime, data, cas, noreply)| {
            let cas = (verb == StorageVerb::Cas).then_some(cas);
            McRequest::Storage(Storage {
                verb,
                key,
                flags,
                exptime,
                data,
                cas,
                noreply,
            })
        });
    let get = (
        prop_oneof![
            Just(GetVerb::Get),
            Just(GetVerb::Gets),
            Just(GetVerb::Gat),
            Just(GetVerb::Gats)
        ],
        any::<i64>(),
        proptest::collection::vec(key(), 1..5),
    )
        .prop_map(|(verb, t, keys)| {
            let exptime = matches!(verb, GetVerb::Gat | GetVerb::Gats).then_some(t);
            McRequest::Get {
                verb,
                exptime,
                keys,
            }
        });
    let meta = (
        prop_oneof![
            Just(MetaVerb::Get),
            Just(MetaVerb::Set),
            Just(MetaVerb::Delete),
            Just(MetaVerb::Arithmetic),
            Just(MetaVerb::Noop),
            Just(MetaVerb::Debug)
        ],
        key(),
        meta_flags(),
        bytes(30),
    )
        .prop_map(|(verb, key, flags, data)| {
            let key = if verb == MetaVerb::Noop {
                Bytes::new()
            } else {
                key
            };
            let flags = if verb == MetaVerb::Debug {
                Vec::new()
            } else {
                flags
            };
            let data = (verb == MetaVerb::Set).then_some(data);
            McRequest::Meta(Meta {
                verb,
                key,
                flags,
                data,
            })
        });
    prop_oneof![
        storage,
        get,
        meta,
        (key(), any::<bool>()).prop_map(|(key, noreply)| McRequest::Delete { key, noreply }),
        (key(), any::<u64>(), any::<bool>(), any::<bool>()).prop_map(
            |(key, delta, incr, noreply)| {
                let verb = if incr {
                    ArithVerb::Incr
                } else {
                    ArithVerb::Decr
                };
                McRequest::Arith {
                    verb,
                    key,
                    delta,
                    noreply,
                }
            }
        ),
        (key(), any::<i64>(), any::<bool>()).prop_map(|(key, exptime, noreply)| McRequest::Touch {
            key,
            exptime,
            noreply
        }),
        (proptest::option::of(any::<i64>()), any::<bool>())
            .prop_map(|(delay, noreply)| McRequest::FlushAll { delay, noreply }),
        Just(McRequest::Version),
        Just(McRequest::Quit),
        (any::<u64>(), any::<bool>())
            .prop_map(|(level, noreply)| McRequest::Verbosity { level, noreply }),
        proptest::collection::vec(token(), 0..3).prop_map(|args| McRequest::Stats { args }),
        "(zz[a-z]{0,6})( [a-z0-9]{1,5}){0,3}".prop_map(|l| McRequest::Other {
            line: Bytes::from(l)
        }),
    ]
}

fn mc_reply() -> impl Strategy<Value = McReply> {
    let value = (
        key(),
        any::<u32>(),
        bytes(40),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(key, flags, data, cas)| Value {
            key,
            flags,
            data,
            cas,
        });
    let status = prop_oneof![
        Just(MetaStatus::Hd),
        Just(MetaStatus::Va),
        Just(MetaStatus::En),
        Just(MetaStatus::Nf),
        Just(MetaStatus::Ns),
        Just(MetaStatus::Ex),
        Just(MetaStatus::Mn),
        Just(MetaStatus::Me)
    ];
    let text = "[a-zA-Z0-9 ._-]{0,20}".prop_map(|s| Bytes::from(s.into_bytes()));
    prop_oneof![
        proptest::collection::vec(value, 0..4).prop_map(McReply::Values),
        proptest::collection::vec((token(), text.clone()), 1..4).prop_map(McReply::Stats),
        Just(McReply::Stored),
        Just(McReply::NotStored),
        Just(McReply::Exists),
        Just(McReply::NotFound),
        Just(McReply::Deleted),
        Just(McReply::Touched),
        Just(McReply::Ok),
        Just(McReply::Reset),
        any::<u64>().prop_map(McReply::Number),
        token().prop_map(McReply::Version),
        text.clone().prop_map(McReply::Error),
        text.clone().prop_map(McReply::ClientError),
        text.prop_map(McReply::ServerError),
        (status, proptest::collection::vec(token(), 0..4), bytes(30)).prop_map(
            |(status, tokens, data)| {
                let data = (status == MetaStatus::Va).then_some(data);
                McReply::Meta(MetaReply {
                    status,
                    tokens,
                    data,
                })
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn resp_frames_round_trip_at_any_split(frames in proptest::collection::vec(frame(), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut wire = BytesMut::new();
        for f in &frames { f.encode(&mut wire); }
        let mut dec = FrameDecoder::default();
        let got = decode_in_pieces(&wire, &cuts, |b| dec.decode(b));
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn resp_requests_round_trip_at_any_split(reqs in proptest::collection::vec(proptest::collection::vec(bytes(30), 1..6), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut wire = BytesMut::new();
        for r in &reqs { encode_request(r, &mut wire); }
        let mut dec = RequestDecoder::default();
        let got: Vec<Vec<Bytes>> = decode_in_pieces(&wire, &cuts, |b| dec.decode(b)).into_iter().map(|r| r.args).collect();
        prop_assert_eq!(got, reqs);
    }

    #[test]
    fn memcached_requests_round_trip_at_any_split(reqs in proptest::collection::vec(mc_request(), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut wire = BytesMut::new();
        for r in &reqs { r.encode(&mut wire); }
        let mut dec = McRequestDecoder::default();
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, |b| dec.decode(b)), reqs);
    }

    #[test]
    fn memcached_replies_round_trip_at_any_split(replies in proptest::collection::vec(mc_reply(), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let mut wire = BytesMut::new();
        for r in &replies { r.encode(&mut wire); }
        let mut dec = McReplyDecoder::default();
        prop_assert_eq!(decode_in_pieces(&wire, &cuts, |b| dec.decode(b)), replies);
    }

    #[test]
    fn entries_round_trip(db in any::<u32>(), transaction in any::<bool>(), resp3 in any::<bool>(),
                          guards in proptest::collection::vec((any::<u32>(), bytes(20), any::<u64>()), 0..3),
                          commands in proptest::collection::vec(proptest::collection::vec(bytes(20), 1..5), 0..4),
                          wire in bytes(60)) {
        let guards = guards.into_iter().map(|(db, key, seen_index)| WatchGuard { db, key, seen_index }).collect();
        for e in [Entry::Redis(RedisEntry { db, transaction, resp3, guards, commands }), Entry::Memcached(wire)] {
            prop_assert_eq!(Entry::decode(&e.to_bytes()).unwrap(), e);
        }
    }

    #[test]
    fn garbage_never_panics(data in bytes(200)) {
        let mut b = BytesMut::from(&data[..]);
        let _ = FrameDecoder::default().decode(&mut b);
        let mut b = BytesMut::from(&data[..]);
        let _ = RequestDecoder::default().decode(&mut b);
        let mut b = BytesMut::from(&data[..]);
        let _ = McRequestDecoder::default().decode(&mut b);
        let mut b = BytesMut::from(&data[..]);
        let _ = McReplyDecoder::default().decode(&mut b);
        let _ = Entry::decode(&data);
    }
}
