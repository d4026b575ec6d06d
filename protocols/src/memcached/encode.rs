//! Encoding memcached requests and replies to their wire form.

use bytes::{BufMut, BytesMut};

use super::types::*;
use crate::resp::{put_int, put_uint};

fn sp(dst: &mut BytesMut) {
    dst.put_u8(b' ');
}

fn crlf(dst: &mut BytesMut) {
    dst.extend_from_slice(b"\r\n");
}

fn flags(dst: &mut BytesMut, flags: &[MetaFlag]) {
    for f in flags {
        sp(dst);
        dst.put_u8(f.flag);
        dst.extend_from_slice(&f.token);
    }
}

fn noreply(dst: &mut BytesMut, on: bool) {
    if on {
        dst.extend_from_slice(b" noreply");
    }
}

impl McRequest {
    /// Appends this request's wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        if let McRequest::Other { line } | McRequest::Invalid { line, .. } = self {
            dst.extend_from_slice(line);
            crlf(dst);
            return;
        }
        dst.extend_from_slice(self.verb_name().as_bytes());
        match self {
            McRequest::Storage(s) => {
                sp(dst);
                dst.extend_from_slice(&s.key);
                sp(dst);
                put_uint(dst, u64::from(s.flags));
                sp(dst);
                put_int(dst, s.exptime);
                sp(dst);
                put_uint(dst, s.data.len() as u64);
                if let Some(cas) = s.cas {
                    sp(dst);
                    put_uint(dst, cas);
                }
                noreply(dst, s.noreply);
                crlf(dst);
                dst.extend_from_slice(&s.data);
            }
            McRequest::Get { exptime, keys, .. } => {
                if let Some(t) = exptime {
                    sp(dst);
                    put_int(dst, *t);
                }
                for k in keys {
                    sp(dst);
                    dst.extend_from_slice(k);
                }
            }
            McRequest::Delete { key, noreply: n } => {
                sp(dst);
                dst.extend_from_slice(key);
                noreply(dst, *n);
            }
            McRequest::Arith {
                key,
                delta,
                noreply: n,
                ..
            } => {
                sp(dst);
                dst.extend_from_slice(key);
                sp(dst);
                put_uint(dst, *delta);
                noreply(dst, *n);
            }
            McRequest::Touch {
                key,
                exptime,
                noreply: n,
            } => {
                sp(dst);
                dst.extend_from_slice(key);
                sp(dst);
                put_int(dst, *exptime);
                noreply(dst, *n);
            }
            McRequest::FlushAll { delay, noreply: n } => {
                if let Some(d) = delay {
                    sp(dst);
                    put_int(dst, *d);
                }
                noreply(dst, *n);
            }
            McRequest::Verbosity { level, noreply: n } => {
                sp(dst);
                put_uint(dst, *level);
                noreply(dst, *n);
            }
            McRequest::Stats { args } => {
                for a in args {
                    sp(dst);
                    dst.extend_from_slice(a);
                }
            }
            McRequest::Version
            | McRequest::Quit
            | McRequest::Other { .. }
            | McRequest::Invalid { .. } => {}
            McRequest::Meta(m) => {
                if m.verb != MetaVerb::Noop {
                    sp(dst);
                    dst.extend_from_slice(&m.key);
                }
                if let Some(data) = &m.data {
                    sp(dst);
                    put_uint(dst, data.len() as u64);
                }
                flags(dst, &m.flags);
                if let Some(data) = &m.data {
                    crlf(dst);
                    dst.extend_from_slice(data);
                }
            }
        }
        crlf(dst);
    }
}

impl McReply {
    /// Appends this reply's wire form to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        let word: &[u8] = match self {
            McReply::Values(values) => {
                for v in values {
                    dst.extend_from_slice(b"VALUE ");
                    dst.extend_from_slice(&v.key);
                    sp(dst);
                    put_uint(dst, u64::from(v.flags));
                    sp(dst);
                    put_uint(dst, v.data.len() as u64);
                    if let Some(cas) = v.cas {
                        sp(dst);
                        put_uint(dst, cas);
                    }
                    crlf(dst);
                    dst.extend_from_slice(&v.data);
                    crlf(dst);
                }
                b"END"
            }
            McReply::Stats(stats) => {
                for (name, value) in stats {
                    dst.extend_from_slice(b"STAT ");
                    dst.extend_from_slice(name);
                    sp(dst);
                    dst.extend_from_slice(value);
                    crlf(dst);
                }
                b"END"
            }
            McReply::Stored => b"STORED",
            McReply::NotStored => b"NOT_STORED",
            McReply::Exists => b"EXISTS",
            McReply::NotFound => b"NOT_FOUND",
            McReply::Deleted => b"DELETED",
            McReply::Touched => b"TOUCHED",
            McReply::Ok => b"OK",
            McReply::Reset => b"RESET",
            McReply::Number(n) => {
                put_uint(dst, *n);
                b""
            }
            McReply::Version(t) => return with_text(dst, b"VERSION", t, false),
            McReply::Error(t) => return with_text(dst, b"ERROR", t, true),
            McReply::ClientError(t) => return with_text(dst, b"CLIENT_ERROR", t, false),
            McReply::ServerError(t) => return with_text(dst, b"SERVER_ERROR", t, false),
            McReply::Meta(m) => return meta_reply(dst, m),
        };
        dst.extend_from_slice(word);
        crlf(dst);
    }
}

fn with_text(dst: &mut BytesMut, word: &[u8], text: &[u8], optional: bool) {
    dst.extend_from_slice(word);
    if !(optional && text.is_empty()) {
        sp(dst);
        dst.extend_from_slice(text);
    }
    crlf(dst);
}

fn meta_reply(dst: &mut BytesMut, m: &MetaReply) {
    dst.extend_from_slice(match m.status {
        MetaStatus::Hd => b"HD",
        MetaStatus::Va => b"VA",
        MetaStatus::En => b"EN",
        MetaStatus::Nf => b"NF",
        MetaStatus::Ns => b"NS",
        MetaStatus::Ex => b"EX",
        MetaStatus::Mn => b"MN",
        MetaStatus::Me => b"ME",
    });
    if let (MetaStatus::Va, Some(data)) = (m.status, &m.data) {
        sp(dst);
        put_uint(dst, data.len() as u64);
    }
    for t in &m.tokens {
        sp(dst);
        dst.extend_from_slice(t);
    }
    crlf(dst);
    if let (MetaStatus::Va, Some(data)) = (m.status, &m.data) {
        dst.extend_from_slice(data);
        crlf(dst);
    }
}
