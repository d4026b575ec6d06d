//! Entry points for the cargo-fuzz targets in `protocols/fuzz/` (compiled
//! only with `--cfg fuzzing`). Each checks, for arbitrary input, that
//! decoding never panics, that every decoded value stays within the
//! [`Limits`] it was decoded with, and that encoding a decoded value and
//! decoding it again gives the same value.

use bytes::BytesMut;

use crate::entry::Entry;
use crate::memcached::{McReplyDecoder, McRequestDecoder};
use crate::resp::{encode_request, Frame, FrameDecoder, RequestDecoder};
use crate::rewrite::{rewrite_memcached, Action, ApplyPlan, Context, RedisApplier, RedisSession};
use crate::Limits;

/// Small limits so that the fuzzer reaches them quickly.
pub const LIMITS: Limits = Limits {
    bulk_len_max: 4096,
    array_len_max: 64,
    depth_max: 8,
    line_len_max: 512,
};

/// Feeds `data` in two pieces (split at its first byte's value) so that
/// the incremental paths are exercised too.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let at = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    data.split_at(at)
}

fn drive<T>(
    data: &[u8],
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, crate::ProtocolError>,
    mut check: impl FnMut(T),
) {
    let (first, second) = split(data);
    let mut buf = BytesMut::new();
    for chunk in [first, second] {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf) {
                Ok(Some(v)) => check(v),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn frame_within_limits(f: &Frame, depth: usize) {
    assert!(depth <= LIMITS.depth_max);
    let check_len = |n: usize| assert!(n as u64 <= LIMITS.array_len_max);
    match f {
        Frame::Bulk(b) | Frame::BulkError(b) => assert!(b.len() as u64 <= LIMITS.bulk_len_max),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            check_len(items.len());
            items.iter().for_each(|i| frame_within_limits(i, depth + 1));
        }
        Frame::Map(pairs) => {
            check_len(pairs.len());
            pairs.iter().for_each(|(k, v)| {
                frame_within_limits(k, depth + 1);
                frame_within_limits(v, depth + 1);
            });
        }
        Frame::Attributed { attributes, frame } => {
            check_len(attributes.len());
            attributes.iter().for_each(|(k, v)| {
                frame_within_limits(k, depth + 1);
                frame_within_limits(v, depth + 1);
            });
            frame_within_limits(frame, depth + 1);
        }
        _ => {}
    }
}

/// RESP requests (multibulk and inline).
pub fn resp_request(data: &[u8]) {
    let mut dec = RequestDecoder::new(LIMITS);
    drive(
        data,
        |b| dec.decode(b),
        |req| {
            assert!(!req.args.is_empty() && req.args.len() as u64 <= LIMITS.array_len_max);
            let mut wire = BytesMut::new();
            encode_request(&req.args, &mut wire);
            let again = RequestDecoder::new(LIMITS)
                .decode(&mut wire)
                .unwrap()
                .unwrap();
            assert_eq!(again.args, req.args);
            assert!(wire.is_empty());
        },
    );
}

/// RESP2/RESP3 replies.
pub fn resp_reply(data: &[u8]) {
    let mut dec = FrameDecoder::new(LIMITS);
    drive(
        data,
        |b| dec.decode(b),
        |frame| {
            frame_within_limits(&frame, 0);
            let mut wire = frame.to_bytes();
            let again = FrameDecoder::new(LIMITS)
                .decode(&mut wire)
                .unwrap()
                .unwrap();
            assert_eq!(again, frame);
            assert!(wire.is_empty());
        },
    );
}

/// memcached requests.
pub fn memcached_request(data: &[u8]) {
    let mut dec = McRequestDecoder::new(LIMITS);
    drive(
        data,
        |b| dec.decode(b),
        |req| {
            let mut wire = BytesMut::new();
            req.encode(&mut wire);
            let again = McRequestDecoder::new(LIMITS)
                .decode(&mut wire)
                .unwrap()
                .unwrap();
            assert_eq!(again, req);
            assert!(wire.is_empty());
        },
    );
}

/// memcached replies.
pub fn memcached_reply(data: &[u8]) {
    let mut dec = McReplyDecoder::new(LIMITS);
    drive(
        data,
        |b| dec.decode(b),
        |reply| {
            let mut wire = BytesMut::new();
            reply.encode(&mut wire);
            let again = McReplyDecoder::new(LIMITS)
                .decode(&mut wire)
                .unwrap()
                .unwrap();
            assert_eq!(again, reply);
            assert!(wire.is_empty());
        },
    );
}

/// The rewriters: every request stream goes through a Redis session (or
/// the memcached rewriter, chosen by the first byte); every entry must
/// survive its wire format, and applying it must produce requests that
/// decode back to the entry's commands.
pub fn rewriter(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let ctx = Context {
        now_ms: 1_700_000_000_000,
        applied_index: 7,
    };
    if mode & 1 == 1 {
        let mut dec = McRequestDecoder::new(LIMITS);
        drive(
            rest,
            |b| dec.decode(b),
            |req| {
                if let Action::Replicate(entry) = rewrite_memcached(&req, &ctx) {
                    let Entry::Memcached(wire) = Entry::decode(&entry.to_bytes()).unwrap() else {
                        panic!("kind")
                    };
                    let mut buf = BytesMut::from(&wire[..]);
                    McRequestDecoder::new(LIMITS)
                        .decode(&mut buf)
                        .unwrap()
                        .unwrap();
                    assert!(buf.is_empty());
                }
            },
        );
        return;
    }
    let mut session = RedisSession::new(16, mode & 2 == 2);
    let mut applier = RedisApplier::new(64);
    let mut index = 0;
    let mut dec = RequestDecoder::new(LIMITS);
    drive(
        rest,
        |b| dec.decode(b),
        |req| {
            if let Action::Replicate(entry) = session.rewrite(&req, &ctx) {
                let decoded = Entry::decode(&entry.to_bytes()).unwrap();
                assert_eq!(decoded, entry);
                let Entry::Redis(e) = decoded else {
                    panic!("kind")
                };
                index += 1;
                let mut out = BytesMut::new();
                if let ApplyPlan::Send {
                    replies,
                    client_reply,
                } = applier.apply(index, &e, &mut out)
                {
                    assert!(client_reply < replies);
                    let mut dec = RequestDecoder::new(Limits::default());
                    let mut sent = Vec::new();
                    while let Some(r) = dec.decode(&mut out).unwrap() {
                        sent.push(r.args);
                    }
                    assert_eq!(sent.len(), replies);
                    for cmd in &e.commands {
                        assert!(sent.contains(cmd));
                    }
                }
            }
        },
    );
}
