//! Incremental, iterative decoder for any RESP2/RESP3 frame (replies).

use bytes::{Buf, Bytes, BytesMut};

use super::head::{parse_head, AggKind, Head};
use super::Frame;
use crate::error::{Limit, ProtocolError};
use crate::Limits;

/// An aggregate still open while scanning.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// A fixed-length aggregate with this many children still to come.
    Counted(u64),
    /// A streamed aggregate and how many children it has so far.
    Streamed(AggKind, u64),
    /// A streamed string and its length so far.
    StreamedString(u64),
}

/// Decodes RESP2 and RESP3 frames of every type, as a server sends them.
///
/// Follows the `tokio_util::codec::Decoder` contract: `Ok(Some(frame))`
/// removes the frame's bytes from the buffer, `Ok(None)` means the buffer
/// holds only part of a frame (nothing is removed; call again once more
/// bytes were appended), and `Err` means the stream is corrupt.
///
/// The decoder first scans the buffer without allocating, using an explicit
/// stack bounded by [`Limits::depth_max`]; a partial frame's scan resumes
/// where it stopped on the next call, so a large frame that arrives in many
/// reads is scanned once. Only a complete frame is split off, frozen and
/// turned into a [`Frame`] of zero-copy slices.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    limits: Limits,
    /// Where the resumable scan stopped (the start of an incomplete element).
    pos: usize,
    stack: Vec<Open>,
    /// Every header the scan accepted for the current frame, in order, so
    /// that building the frame does not parse them again.
    heads: Vec<Head>,
    /// Aggregates under construction while building (kept for its capacity).
    builders: Vec<Builder>,
}

impl FrameDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pos: 0,
            stack: Vec::new(),
            heads: Vec::new(),
            builders: Vec::new(),
        }
    }

    /// Decodes the next frame from the front of `buf`; see the type docs for
    /// the contract.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if self.pos > buf.len() {
            // The caller replaced the buffer; a resumed scan would be wrong.
            self.reset();
        }
        // The reply to nearly every write, taken without a scan or a copy.
        if self.pos == 0 && buf.starts_with(b"+OK\r\n") {
            buf.advance(5);
            return Ok(Some(Frame::simple("OK")));
        }
        let end = match self.scan(buf) {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        let bytes = buf.split_to(end).freeze();
        self.builders.clear();
        let frame = build(&bytes, &self.heads, &mut self.builders);
        self.reset();
        frame.map(Some)
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
        self.heads.clear();
    }

    /// Advances the scan; returns the frame's length once it is complete.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let pos = self.pos;
            let Some((head, next)) = parse_head(buf, pos, &self.limits)? else {
                return Ok(None);
            };
            let value_done = self.scan_head(head, pos)?;
            self.heads.push(head);
            self.pos = next;
            if value_done && self.complete_value(pos)? {
                return Ok(Some(next));
            }
        }
    }

    /// Applies one header to the stack; true when it completed a value.
    fn scan_head(&mut self, head: Head, pos: usize) -> Result<bool, ProtocolError> {
        let in_string = matches!(self.stack.last(), Some(Open::StreamedString(_)));
        match head {
            Head::Chunk(s, e) => {
                let Some(Open::StreamedString(total)) = self.stack.last_mut() else {
                    return Err(ProtocolError::malformed(
                        "';' chunk outside a streamed string",
                        pos,
                    ));
                };
                if s == e {
                    self.stack.pop();
                    return Ok(true);
                }
                *total += (e - s) as u64;
                if *total > self.limits.bulk_len_max {
                    let max = self.limits.bulk_len_max;
                    return Err(ProtocolError::limit(Limit::BulkLen, *total, max, pos));
                }
                Ok(false)
            }
            _ if in_string => Err(ProtocolError::malformed(
                "expected ';' chunk in streamed string",
                pos,
            )),
            Head::End => match self.stack.last() {
                Some(Open::Streamed(kind, n)) => {
                    if *kind == AggKind::Map && n % 2 == 1 {
                        return Err(ProtocolError::malformed(
                            "streamed map ends after a key",
                            pos,
                        ));
                    }
                    self.stack.pop();
                    Ok(true)
                }
                _ => Err(ProtocolError::malformed(
                    "'.' outside a streamed aggregate",
                    pos,
                )),
            },
            Head::Aggregate(_, 0) => Ok(true),
            Head::Aggregate(_, n) => self.push(Open::Counted(n), pos),
            Head::StreamedAggregate(kind) => self.push(Open::Streamed(kind, 0), pos),
            Head::StreamedString => self.push(Open::StreamedString(0), pos),
            _ => Ok(true),
        }
    }

    fn push(&mut self, open: Open, pos: usize) -> Result<bool, ProtocolError> {
        if self.stack.len() >= self.limits.depth_max {
            let depth = self.stack.len() as u64 + 1;
            return Err(ProtocolError::limit(
                Limit::Depth,
                depth,
                self.limits.depth_max as u64,
                pos,
            ));
        }
        self.stack.push(open);
        Ok(false)
    }

    /// Counts a finished value against the open aggregates; true when the
    /// outermost frame is complete.
    fn complete_value(&mut self, pos: usize) -> Result<bool, ProtocolError> {
        loop {
            match self.stack.last_mut() {
                None => return Ok(true),
                Some(Open::Counted(remaining)) => {
                    *remaining -= 1;
                    if *remaining > 0 {
                        return Ok(false);
                    }
                    self.stack.pop();
                }
                Some(Open::Streamed(kind, n)) => {
                    *n += 1;
                    let max = match kind {
                        AggKind::Map => self.limits.array_len_max.saturating_mul(2),
                        _ => self.limits.array_len_max,
                    };
                    if *n > max {
                        let limit = self.limits.array_len_max;
                        return Err(ProtocolError::limit(Limit::ArrayLen, *n, limit, pos));
                    }
                    return Ok(false);
                }
                Some(Open::StreamedString(_)) => {
                    return Err(ProtocolError::malformed(
                        "expected ';' chunk in streamed string",
                        pos,
                    ))
                }
            }
        }
    }
}

/// An aggregate under construction.
#[derive(Debug)]
struct Builder {
    kind: Option<AggKind>,
    items: Vec<Frame>,
    remaining: Option<u64>,
}

/// Builds the frame from the headers the scan accepted (ranges point into
/// `bytes`, the frame's own bytes).
fn build(bytes: &Bytes, heads: &[Head], stack: &mut Vec<Builder>) -> Result<Frame, ProtocolError> {
    // The scan already validated the structure; an error below would mean
    // scan and build disagree, and is reported at the frame's start.
    let pos = 0;
    for &head in heads {
        let mut value = match head {
            Head::Simple(s, e) => Frame::Simple(bytes.slice(s..e)),
            Head::Error(s, e) => Frame::Error(bytes.slice(s..e)),
            Head::Integer(v) => Frame::Integer(v),
            Head::Bulk(s, e) => Frame::Bulk(bytes.slice(s..e)),
            Head::NullBulk => Frame::NullBulk,
            Head::NullArray => Frame::NullArray,
            Head::Null => Frame::Null,
            Head::Boolean(b) => Frame::Boolean(b),
            Head::Double(s, e) => Frame::Double(bytes.slice(s..e)),
            Head::BigNumber(s, e) => Frame::BigNumber(bytes.slice(s..e)),
            Head::BulkError(s, e) => Frame::BulkError(bytes.slice(s..e)),
            Head::Verbatim(s, e) => Frame::Verbatim {
                format: [bytes[s], bytes[s + 1], bytes[s + 2]],
                text: bytes.slice(s + 4..e),
            },
            Head::Aggregate(kind, 0) => finish(Some(kind), Vec::new(), pos)?,
            Head::Aggregate(kind, n) => {
                let items = Vec::with_capacity(n.min(1024) as usize);
                stack.push(Builder {
                    kind: Some(kind),
                    items,
                    remaining: Some(n),
                });
                continue;
            }
            Head::StreamedAggregate(kind) => {
                stack.push(Builder {
                    kind: Some(kind),
                    items: Vec::new(),
                    remaining: None,
                });
                continue;
            }
            Head::StreamedString => {
                stack.push(Builder {
                    kind: None,
                    items: Vec::new(),
                    remaining: None,
                });
                continue;
            }
            Head::Chunk(s, e) if s < e => {
                if let Some(top) = stack.last_mut() {
                    top.items.push(Frame::Bulk(bytes.slice(s..e)));
                }
                continue;
            }
            Head::Chunk(..) | Head::End => match stack.pop() {
                Some(b) => finish(b.kind, b.items, pos)?,
                None => return Err(ProtocolError::malformed("unbalanced end marker", pos)),
            },
        };
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(value);
            };
            top.items.push(value);
            match &mut top.remaining {
                Some(r) if *r == 1 => match stack.pop() {
                    Some(b) => value = finish(b.kind, b.items, pos)?,
                    None => return Err(ProtocolError::malformed("unbalanced aggregate", pos)),
                },
                Some(r) => {
                    *r -= 1;
                    break;
                }
                None => break,
            }
        }
    }
    Err(ProtocolError::malformed("frame ended early", bytes.len()))
}

fn pairs(items: Vec<Frame>) -> Vec<(Frame, Frame)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn finish(
    kind: Option<AggKind>,
    mut items: Vec<Frame>,
    pos: usize,
) -> Result<Frame, ProtocolError> {
    Ok(match kind {
        Some(AggKind::Array) => Frame::Array(items),
        Some(AggKind::Set) => Frame::Set(items),
        Some(AggKind::Push) => Frame::Push(items),
        Some(AggKind::Map) => Frame::Map(pairs(items)),
        Some(AggKind::Attribute) => {
            let frame = items
                .pop()
                .ok_or(ProtocolError::malformed("attribute without a value", pos))?;
            Frame::Attributed {
                attributes: pairs(items),
                frame: Box::new(frame),
            }
        }
        None => {
            let mut joined = BytesMut::new();
            for item in items {
                if let Frame::Bulk(chunk) = item {
                    joined.extend_from_slice(&chunk);
                }
            }
            Frame::Bulk(joined.freeze())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_reply_is_the_same_frame_whole_or_in_pieces() {
        let mut d = FrameDecoder::default();
        let mut whole = BytesMut::from(&b"+OK\r\n+OKAY\r\n+OK\r\n:1\r\n"[..]);
        assert_eq!(d.decode(&mut whole), Ok(Some(Frame::simple("OK"))));
        assert_eq!(d.decode(&mut whole), Ok(Some(Frame::simple("OKAY"))));
        assert_eq!(d.decode(&mut whole), Ok(Some(Frame::simple("OK"))));
        assert_eq!(d.decode(&mut whole), Ok(Some(Frame::Integer(1))));
        assert!(whole.is_empty());
        let mut pieces = BytesMut::from(&b"+O"[..]);
        assert_eq!(d.decode(&mut pieces), Ok(None));
        pieces.extend_from_slice(b"K\r");
        assert_eq!(d.decode(&mut pieces), Ok(None));
        pieces.extend_from_slice(b"\n");
        assert_eq!(d.decode(&mut pieces), Ok(Some(Frame::simple("OK"))));
        assert!(pieces.is_empty());
    }
}
