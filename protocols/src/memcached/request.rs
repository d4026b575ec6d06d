//! Incremental decoder for memcached text and meta requests.

use bytes::{Bytes, BytesMut};

use super::types::*;
use crate::error::{Limit, ProtocolError};
use crate::line::{find_line, parse_i64, parse_u64};
use crate::Limits;

/// Splits a command line on spaces (runs of spaces count as one, as in
/// memcached's tokenizer) into `(start, end)` ranges.
pub(crate) fn tokens(buf: &[u8], start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut i = start;
    while i < end {
        while i < end && buf[i] == b' ' {
            i += 1;
        }
        let s = i;
        while i < end && buf[i] != b' ' {
            i += 1;
        }
        if s < i {
            out.push((s, i));
        }
    }
}

/// Decodes memcached requests (text protocol and meta protocol).
///
/// Follows the `tokio_util::codec::Decoder` contract (see the crate docs).
/// A line with an unknown verb is [`McRequest::Other`] (memcached answers
/// it with `ERROR` and carries on). A line of a known command without a
/// data block that memcached would reject (bad number, key over 250
/// bytes, missing argument) is [`McRequest::Invalid`] (memcached answers
/// `CLIENT_ERROR` and carries on). Such a line of a storage command
/// (`set` ... `cas`, `ms`) is a [`ProtocolError`]: its data block's length
/// is then unknown, and the stream cannot be followed any further.
#[derive(Debug, Default)]
pub struct McRequestDecoder {
    limits: Limits,
    toks: Vec<(usize, usize)>,
}

/// The parsed command line plus where its data block starts.
pub(crate) struct Ctx<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) toks: &'a [(usize, usize)],
    pub(crate) limits: &'a Limits,
}

impl Ctx<'_> {
    pub(crate) fn tok(&self, i: usize) -> &[u8] {
        let (s, e) = self.toks[i];
        &self.buf[s..e]
    }
    pub(crate) fn pos(&self, i: usize) -> usize {
        self.toks
            .get(i)
            .map_or_else(|| self.toks.last().map_or(0, |t| t.1), |t| t.0)
    }
    pub(crate) fn need(&self, n: usize) -> Result<(), ProtocolError> {
        if self.toks.len() < n {
            return Err(ProtocolError::malformed(
                "too few arguments",
                self.pos(self.toks.len()),
            ));
        }
        Ok(())
    }
    pub(crate) fn key(&self, i: usize) -> Result<(usize, usize), ProtocolError> {
        self.need(i + 1)?;
        let (s, e) = self.toks[i];
        if e - s > KEY_LEN_MAX {
            return Err(ProtocolError::malformed("key longer than 250 bytes", s));
        }
        if self.buf[s..e].iter().any(|b| b.is_ascii_control()) {
            return Err(ProtocolError::malformed(
                "key contains a control character",
                s,
            ));
        }
        Ok((s, e))
    }
    fn u64(&self, i: usize) -> Result<u64, ProtocolError> {
        self.need(i + 1)?;
        parse_u64(self.tok(i)).ok_or(ProtocolError::malformed("invalid number", self.pos(i)))
    }
    fn i64(&self, i: usize) -> Result<i64, ProtocolError> {
        self.need(i + 1)?;
        parse_i64(self.tok(i)).ok_or(ProtocolError::malformed("invalid number", self.pos(i)))
    }
    fn u32(&self, i: usize) -> Result<u32, ProtocolError> {
        u32::try_from(self.u64(i)?)
            .map_err(|_| ProtocolError::malformed("invalid flags", self.pos(i)))
    }
    /// `noreply` as the last token at index `i`; anything else is an error.
    fn noreply(&self, i: usize) -> Result<bool, ProtocolError> {
        match self.toks.len() {
            n if n == i => Ok(false),
            n if n == i + 1 && self.tok(i) == b"noreply" => Ok(true),
            _ => Err(ProtocolError::malformed("unexpected argument", self.pos(i))),
        }
    }
    pub(crate) fn data_len(&self, i: usize) -> Result<usize, ProtocolError> {
        let len = self.u64(i)?;
        if len > self.limits.bulk_len_max {
            let max = self.limits.bulk_len_max;
            return Err(ProtocolError::limit(Limit::BulkLen, len, max, self.pos(i)));
        }
        usize::try_from(len)
            .map_err(|_| ProtocolError::malformed("length overflows usize", self.pos(i)))
    }
}

/// Builds a request from the frozen frame bytes.
pub(crate) type Make = Box<dyn FnOnce(&Bytes) -> McRequest>;
/// Builds a request from the frozen frame bytes and its data block.
pub(crate) type MakeWithData = Box<dyn FnOnce(&Bytes, Bytes) -> McRequest>;

/// A parsed request whose byte ranges still point into the buffer.
pub(crate) enum Parsed {
    Done(Make),
    /// A command with a data block of this length at the line's end.
    WithData(usize, MakeWithData),
}

impl McRequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            toks: Vec::new(),
        }
    }

    /// Decodes the next request from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<McRequest>, ProtocolError> {
        let Some(line) = find_line(buf, 0, self.limits.line_len_max, false)? else {
            return Ok(None);
        };
        tokens(buf, line.start, line.end, &mut self.toks);
        if self.toks.is_empty() {
            let frame = buf.split_to(line.next).freeze();
            return Ok(Some(McRequest::Other {
                line: frame.slice(..line.end),
            }));
        }
        if self.toks.len() as u64 > self.limits.array_len_max.saturating_add(2) {
            let max = self.limits.array_len_max;
            return Err(ProtocolError::limit(
                Limit::ArrayLen,
                self.toks.len() as u64,
                max,
                0,
            ));
        }
        let ctx = Ctx {
            buf,
            toks: &self.toks,
            limits: &self.limits,
        };
        let parsed = match parse(&ctx) {
            Ok(p) => p,
            Err(e) if !has_data_block(ctx.tok(0)) => {
                let end = self.toks.last().map_or(0, |t| t.1);
                let noreply = ctx.tok(self.toks.len() - 1) == b"noreply";
                let frame = buf.split_to(line.next).freeze();
                return Ok(Some(McRequest::Invalid {
                    line: frame.slice(..end),
                    error: e.detail(),
                    noreply,
                }));
            }
            Err(e) => return Err(e),
        };
        match parsed {
            Parsed::Done(make) => {
                let frame = buf.split_to(line.next).freeze();
                Ok(Some(make(&frame)))
            }
            Parsed::WithData(len, make) => {
                let end = line.next + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(ProtocolError::malformed(
                        "data block not followed by CRLF",
                        end,
                    ));
                }
                let frame = buf.split_to(end + 2).freeze();
                let data = frame.slice(line.next..end);
                Ok(Some(make(&frame, data)))
            }
        }
    }
}

/// The verbs whose line announces a data block.
fn has_data_block(verb: &[u8]) -> bool {
    matches!(
        verb,
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" | b"ms"
    )
}

fn slice(r: (usize, usize)) -> impl Fn(&Bytes) -> Bytes {
    move |f: &Bytes| f.slice(r.0..r.1)
}

fn parse(c: &Ctx<'_>) -> Result<Parsed, ProtocolError> {
    let verb = c.tok(0);
    let storage = match verb {
        b"set" => Some(StorageVerb::Set),
        b"add" => Some(StorageVerb::Add),
        b"replace" => Some(StorageVerb::Replace),
        b"append" => Some(StorageVerb::Append),
        b"prepend" => Some(StorageVerb::Prepend),
        b"cas" => Some(StorageVerb::Cas),
        _ => None,
    };
    if let Some(sv) = storage {
        return parse_storage(c, sv);
    }
    let get = match verb {
        b"get" => Some(GetVerb::Get),
        b"gets" => Some(GetVerb::Gets),
        b"gat" => Some(GetVerb::Gat),
        b"gats" => Some(GetVerb::Gats),
        _ => None,
    };
    if let Some(gv) = get {
        return parse_get(c, gv);
    }
    let meta = match verb {
        b"mg" => Some(MetaVerb::Get),
        b"ms" => Some(MetaVerb::Set),
        b"md" => Some(MetaVerb::Delete),
        b"ma" => Some(MetaVerb::Arithmetic),
        b"mn" => Some(MetaVerb::Noop),
        b"me" => Some(MetaVerb::Debug),
        _ => None,
    };
    if let Some(mv) = meta {
        return super::meta::parse_meta(c, mv);
    }
    parse_other(c, verb)
}

fn parse_storage(c: &Ctx<'_>, verb: StorageVerb) -> Result<Parsed, ProtocolError> {
    let key = c.key(1)?;
    let flags = c.u32(2)?;
    let exptime = c.i64(3)?;
    let len = c.data_len(4)?;
    let (cas, next) = if verb == StorageVerb::Cas {
        (Some(c.u64(5)?), 6)
    } else {
        (None, 5)
    };
    let noreply = c.noreply(next)?;
    let key = slice(key);
    Ok(Parsed::WithData(
        len,
        Box::new(move |f, data| {
            McRequest::Storage(Storage {
                verb,
                key: key(f),
                flags,
                exptime,
                data,
                cas,
                noreply,
            })
        }),
    ))
}

fn parse_get(c: &Ctx<'_>, verb: GetVerb) -> Result<Parsed, ProtocolError> {
    let (exptime, first) = match verb {
        GetVerb::Gat | GetVerb::Gats => (Some(c.i64(1)?), 2),
        _ => (None, 1),
    };
    c.need(first + 1)?;
    let mut keys = Vec::with_capacity(c.toks.len() - first);
    for i in first..c.toks.len() {
        keys.push(c.key(i)?);
    }
    Ok(Parsed::Done(Box::new(move |f| McRequest::Get {
        verb,
        exptime,
        keys: keys.into_iter().map(|r| f.slice(r.0..r.1)).collect(),
    })))
}

fn parse_other(c: &Ctx<'_>, verb: &[u8]) -> Result<Parsed, ProtocolError> {
    let req: Make = match verb {
        b"delete" => {
            let key = slice(c.key(1)?);
            // memcached still accepts the legacy `delete <key> 0`.
            let next = if c.toks.len() > 2 && c.tok(2) == b"0" {
                3
            } else {
                2
            };
            let noreply = c.noreply(next)?;
            Box::new(move |f| McRequest::Delete {
                key: key(f),
                noreply,
            })
        }
        b"incr" | b"decr" => {
            let verb = if verb == b"incr" {
                ArithVerb::Incr
            } else {
                ArithVerb::Decr
            };
            let key = slice(c.key(1)?);
            let delta = c.u64(2)?;
            let noreply = c.noreply(3)?;
            Box::new(move |f| McRequest::Arith {
                verb,
                key: key(f),
                delta,
                noreply,
            })
        }
        b"touch" => {
            let key = slice(c.key(1)?);
            let exptime = c.i64(2)?;
            let noreply = c.noreply(3)?;
            Box::new(move |f| McRequest::Touch {
                key: key(f),
                exptime,
                noreply,
            })
        }
        b"flush_all" => {
            let has_delay = c.toks.len() > 1 && c.tok(1) != b"noreply";
            let delay = if has_delay { Some(c.i64(1)?) } else { None };
            let noreply = c.noreply(if has_delay { 2 } else { 1 })?;
            Box::new(move |_| McRequest::FlushAll { delay, noreply })
        }
        b"verbosity" => {
            let level = c.u64(1)?;
            let noreply = c.noreply(2)?;
            Box::new(move |_| McRequest::Verbosity { level, noreply })
        }
        b"version" | b"quit" => {
            c.noreply(1).and_then(|n| match n {
                false => Ok(()),
                true => Err(ProtocolError::malformed("unexpected argument", c.pos(1))),
            })?;
            if verb == b"version" {
                Box::new(|_| McRequest::Version)
            } else {
                Box::new(|_| McRequest::Quit)
            }
        }
        b"stats" => {
            let args: Vec<(usize, usize)> = c.toks[1..].to_vec();
            Box::new(move |f| McRequest::Stats {
                args: args.into_iter().map(|r| f.slice(r.0..r.1)).collect(),
            })
        }
        _ => {
            let end = c.toks.last().map_or(0, |t| t.1);
            Box::new(move |f| McRequest::Other {
                line: f.slice(..end),
            })
        }
    };
    Ok(Parsed::Done(req))
}
