//! Incremental decoder for memcached replies (what a backend sends).

use bytes::{Bytes, BytesMut};

use super::request::tokens;
use super::types::*;
use crate::error::{Limit, ProtocolError};
use crate::line::{find_line, parse_u64};
use crate::Limits;

/// Decodes memcached replies, text and meta.
///
/// Multi-line replies come out whole: `VALUE` items up to `END` as
/// [`McReply::Values`], `STAT` lines up to `END` as [`McReply::Stats`].
/// Follows the `tokio_util::codec::Decoder` contract (see the crate docs);
/// a partial multi-line reply is rescanned from its start on the next call,
/// bounded by [`Limits::array_len_max`] items.
#[derive(Debug, Default)]
pub struct McReplyDecoder {
    limits: Limits,
    toks: Vec<(usize, usize)>,
}

/// A value whose byte ranges point into the buffer.
struct RawValue {
    key: (usize, usize),
    flags: u32,
    data: (usize, usize),
    cas: Option<u64>,
}

impl McReplyDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            toks: Vec::new(),
        }
    }

    /// Decodes the next reply from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<McReply>, ProtocolError> {
        let Some(line) = find_line(buf, 0, self.limits.line_len_max, false)? else {
            return Ok(None);
        };
        let first = &buf[line.start..line.end];
        let word = first.split(|&b| b == b' ').next().unwrap_or_default();
        if word == b"VALUE" || word == b"END" {
            return self.values(buf);
        }
        if word == b"STAT" {
            return self.stats(buf);
        }
        if word == b"VA" {
            return self.meta_value(buf, line.start, line.end, line.next);
        }
        let rest = |n: usize| -> (usize, usize) { ((line.start + n + 1).min(line.end), line.end) };
        let simple = match first {
            b"STORED" => Some(McReply::Stored),
            b"NOT_STORED" => Some(McReply::NotStored),
            b"EXISTS" => Some(McReply::Exists),
            b"NOT_FOUND" => Some(McReply::NotFound),
            b"DELETED" => Some(McReply::Deleted),
            b"TOUCHED" => Some(McReply::Touched),
            b"OK" => Some(McReply::Ok),
            b"RESET" => Some(McReply::Reset),
            _ => None,
        };
        let frame = |buf: &mut BytesMut| buf.split_to(line.next).freeze();
        if let Some(reply) = simple {
            frame(buf);
            return Ok(Some(reply));
        }
        let text = |buf: &mut BytesMut, n: usize| {
            let (s, e) = rest(n);
            frame(buf).slice(s..e)
        };
        let reply = match word {
            b"VERSION" => McReply::Version(text(buf, 7)),
            b"ERROR" => McReply::Error(text(buf, 5)),
            b"CLIENT_ERROR" => McReply::ClientError(text(buf, 12)),
            b"SERVER_ERROR" => McReply::ServerError(text(buf, 12)),
            b"HD" | b"EN" | b"NF" | b"NS" | b"EX" | b"MN" | b"ME" => {
                let status = match word {
                    b"HD" => MetaStatus::Hd,
                    b"EN" => MetaStatus::En,
                    b"NF" => MetaStatus::Nf,
                    b"NS" => MetaStatus::Ns,
                    b"EX" => MetaStatus::Ex,
                    b"MN" => MetaStatus::Mn,
                    _ => MetaStatus::Me,
                };
                tokens(buf, line.start, line.end, &mut self.toks);
                let toks: Vec<(usize, usize)> = self.toks[1..].to_vec();
                let f = frame(buf);
                let tokens = toks.into_iter().map(|(s, e)| f.slice(s..e)).collect();
                McReply::Meta(MetaReply {
                    status,
                    tokens,
                    data: None,
                })
            }
            _ => match parse_u64(first) {
                Some(n) => {
                    frame(buf);
                    McReply::Number(n)
                }
                None => return Err(ProtocolError::malformed("unknown reply", 0)),
            },
        };
        Ok(Some(reply))
    }

    fn data_len(&self, tok: &[u8], pos: usize) -> Result<usize, ProtocolError> {
        let len = parse_u64(tok).ok_or(ProtocolError::malformed("invalid length", pos))?;
        if len > self.limits.bulk_len_max {
            let max = self.limits.bulk_len_max;
            return Err(ProtocolError::limit(Limit::BulkLen, len, max, pos));
        }
        usize::try_from(len).map_err(|_| ProtocolError::malformed("length overflows usize", pos))
    }

    /// Checks the data block at `start..start+len` and its CRLF; returns
    /// the position after it, or `None` if it has not fully arrived.
    fn block(buf: &[u8], start: usize, len: usize) -> Result<Option<usize>, ProtocolError> {
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::malformed(
                "data block not followed by CRLF",
                end,
            ));
        }
        Ok(Some(end + 2))
    }

    fn meta_value(
        &mut self,
        buf: &mut BytesMut,
        start: usize,
        end: usize,
        next: usize,
    ) -> Result<Option<McReply>, ProtocolError> {
        tokens(buf, start, end, &mut self.toks);
        let Some(&(s, e)) = self.toks.get(1) else {
            return Err(ProtocolError::malformed("VA without a size", end));
        };
        let len = self.data_len(&buf[s..e], s)?;
        let Some(after) = Self::block(buf, next, len)? else {
            return Ok(None);
        };
        let toks: Vec<(usize, usize)> = self.toks[2..].to_vec();
        let f = buf.split_to(after).freeze();
        let tokens = toks.into_iter().map(|(s, e)| f.slice(s..e)).collect();
        let data = Some(f.slice(next..next + len));
        Ok(Some(McReply::Meta(MetaReply {
            status: MetaStatus::Va,
            tokens,
            data,
        })))
    }

    fn values(&mut self, buf: &mut BytesMut) -> Result<Option<McReply>, ProtocolError> {
        let mut pos = 0;
        let mut items: Vec<RawValue> = Vec::new();
        loop {
            let Some(line) = find_line(buf, pos, self.limits.line_len_max, false)? else {
                return Ok(None);
            };
            tokens(buf, line.start, line.end, &mut self.toks);
            let tok = |i: usize| self.toks.get(i).map(|&(s, e)| &buf[s..e]);
            if tok(0) == Some(b"END") && self.toks.len() == 1 {
                let f = buf.split_to(line.next).freeze();
                let values = items
                    .into_iter()
                    .map(|v| Value {
                        key: f.slice(v.key.0..v.key.1),
                        flags: v.flags,
                        data: f.slice(v.data.0..v.data.1),
                        cas: v.cas,
                    })
                    .collect();
                return Ok(Some(McReply::Values(values)));
            }
            if tok(0) != Some(b"VALUE") || !(4..=5).contains(&self.toks.len()) {
                return Err(ProtocolError::malformed(
                    "expected VALUE or END",
                    line.start,
                ));
            }
            if items.len() as u64 >= self.limits.array_len_max {
                let max = self.limits.array_len_max;
                return Err(ProtocolError::limit(
                    Limit::ArrayLen,
                    max + 1,
                    max,
                    line.start,
                ));
            }
            let bad = |i: usize| ProtocolError::malformed("invalid number", self.toks[i].0);
            let flags = tok(2)
                .and_then(parse_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or(bad(2))?;
            let len = self.data_len(tok(3).unwrap_or_default(), self.toks[3].0)?;
            let cas = match tok(4) {
                Some(t) => Some(parse_u64(t).ok_or(bad(4))?),
                None => None,
            };
            let key = self.toks[1];
            let Some(after) = Self::block(buf, line.next, len)? else {
                return Ok(None);
            };
            items.push(RawValue {
                key,
                flags,
                data: (line.next, line.next + len),
                cas,
            });
            pos = after;
        }
    }

    fn stats(&mut self, buf: &mut BytesMut) -> Result<Option<McReply>, ProtocolError> {
        let mut pos = 0;
        let mut items: Vec<((usize, usize), (usize, usize))> = Vec::new();
        loop {
            let Some(line) = find_line(buf, pos, self.limits.line_len_max, false)? else {
                return Ok(None);
            };
            let text = &buf[line.start..line.end];
            if text == b"END" {
                let f: Bytes = buf.split_to(line.next).freeze();
                let stats = items
                    .into_iter()
                    .map(|(n, v)| (f.slice(n.0..n.1), f.slice(v.0..v.1)))
                    .collect();
                return Ok(Some(McReply::Stats(stats)));
            }
            // `STAT <name> <value>`: the value may contain spaces.
            let name_start = line.start + 5;
            let name_end = buf[name_start.min(line.end)..line.end]
                .iter()
                .position(|&b| b == b' ')
                .map(|i| name_start + i);
            let (Some(name_end), true) = (name_end, text.starts_with(b"STAT ")) else {
                return Err(ProtocolError::malformed("expected STAT or END", line.start));
            };
            if items.len() as u64 >= self.limits.array_len_max {
                let max = self.limits.array_len_max;
                return Err(ProtocolError::limit(
                    Limit::ArrayLen,
                    max + 1,
                    max,
                    line.start,
                ));
            }
            items.push(((name_start, name_end), (name_end + 1, line.end)));
            pos = line.next;
        }
    }
}
