//! The memcached rewriter.

use bytes::{Bytes, BytesMut};

use super::expiry::memcached_exptime;
use super::{Action, Context, Refusal};
use crate::entry::Entry;
use crate::line::parse_i64;
use crate::memcached::{McRequest, Meta, MetaFlag, StorageVerb};
use crate::table::{mc_class, CommandClass};

const CAS_REASON: &str =
    "CAS uniques are assigned independently by each memcached, so a CAS check \
     could pass on one replica and fail on another; use add/replace or a single writer per key";

/// Decides what to do with one memcached request (memcached has no
/// connection state that replication depends on).
pub fn rewrite_memcached(req: &McRequest, ctx: &Context) -> Action {
    if let McRequest::Invalid { error, .. } = req {
        return Action::Refuse(Refusal::bad_memcached_line(error));
    }
    match mc_class(req) {
        CommandClass::Write => {}
        CommandClass::Unsupported => return Action::Refuse(Refusal::unknown(req.verb_name())),
        _ => return Action::Local,
    }
    let now_s = ctx.now_ms.div_euclid(1000);
    let rewritten = match req {
        McRequest::Storage(s) if s.verb == StorageVerb::Cas => {
            return Action::Refuse(Refusal::new("cas", CAS_REASON));
        }
        McRequest::Storage(s) => {
            let mut s = s.clone();
            s.exptime = memcached_exptime(s.exptime, now_s);
            McRequest::Storage(s)
        }
        McRequest::Touch {
            key,
            exptime,
            noreply,
        } => McRequest::Touch {
            key: key.clone(),
            exptime: memcached_exptime(*exptime, now_s),
            noreply: *noreply,
        },
        McRequest::Get {
            verb,
            exptime,
            keys,
        } => McRequest::Get {
            verb: *verb,
            exptime: exptime.map(|t| memcached_exptime(t, now_s)),
            keys: keys.clone(),
        },
        McRequest::FlushAll { delay, noreply } => McRequest::FlushAll {
            delay: delay.map(|t| memcached_exptime(t, now_s)),
            noreply: *noreply,
        },
        McRequest::Meta(m) => {
            if m.flag(b'C').is_some() {
                return Action::Refuse(Refusal::new(req.verb_name(), CAS_REASON));
            }
            McRequest::Meta(meta_times(m, now_s))
        }
        other => other.clone(),
    };
    let mut wire = BytesMut::new();
    rewritten.encode(&mut wire);
    Action::Replicate(Entry::Memcached(wire.freeze()))
}

/// `T<ttl>` and `N<ttl>` tokens become absolute.
fn meta_times(m: &Meta, now_s: i64) -> Meta {
    let flags = m
        .flags
        .iter()
        .map(|f| match (f.flag, parse_i64(&f.token)) {
            (b'T' | b'N', Some(t)) => MetaFlag {
                flag: f.flag,
                token: Bytes::from(memcached_exptime(t, now_s).to_string()),
            },
            _ => f.clone(),
        })
        .collect();
    Meta {
        verb: m.verb,
        key: m.key.clone(),
        flags,
        data: m.data.clone(),
    }
}
