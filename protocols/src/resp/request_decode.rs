//! Incremental decoder for client requests: RESP multibulk or inline.

use bytes::{Buf, BytesMut};

use super::inline::split_inline;
use super::Request;
use crate::error::{Limit, ProtocolError};
use crate::line::{find_line, parse_i64, parse_u64};
use crate::Limits;

/// A multibulk request whose arguments have only partly arrived.
#[derive(Debug, Clone, Copy)]
struct Partial {
    count: usize,
    /// Start of the next argument header.
    pos: usize,
}

/// Decodes client requests the way redis-server accepts them: a RESP array
/// of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or an inline line
/// (`GET k\r\n`) when the first byte is not `*`. Empty requests (`*0`,
/// `*-1`, blank lines) are skipped, as redis-server does.
///
/// Follows the `tokio_util::codec::Decoder` contract like
/// [`FrameDecoder`](super::FrameDecoder). A partially received request
/// resumes at its first missing argument on the next call, so no byte is
/// scanned twice except the header of that argument.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    partial: Option<Partial>,
    /// Payload ranges of the arguments found so far (reused between calls).
    ranges: Vec<(usize, usize)>,
}

impl RequestDecoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
            ranges: Vec::new(),
        }
    }

    /// Decodes the next request from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.partial = None;
            self.ranges.clear();
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if self.partial.is_some_and(|p| p.pos > buf.len()) {
            self.partial = None;
        }
        loop {
            let partial = match self.partial {
                Some(p) => p,
                None => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first != b'*' {
                        match self.inline(buf)? {
                            Step::NeedMore => return Ok(None),
                            Step::Skipped => continue,
                            Step::Done(request) => return Ok(Some(request)),
                        }
                    }
                    match self.header(buf)? {
                        Step::NeedMore => return Ok(None),
                        Step::Skipped => continue,
                        Step::Done(p) => p,
                    }
                }
            };
            return self.arguments(buf, partial);
        }
    }

    /// Reads `*<n>\r\n`.
    fn header(&mut self, buf: &mut BytesMut) -> Result<Step<Partial>, ProtocolError> {
        let Some(line) = find_line(buf, 1, self.limits.line_len_max, true)? else {
            return Ok(Step::NeedMore);
        };
        let n = parse_i64(&buf[line.start..line.end]).ok_or(ProtocolError::malformed(
            "invalid multibulk length",
            line.start,
        ))?;
        if n <= 0 {
            buf.advance(line.next);
            return Ok(Step::Skipped);
        }
        let n = n as u64;
        if n > self.limits.array_len_max {
            let max = self.limits.array_len_max;
            return Err(ProtocolError::limit(Limit::ArrayLen, n, max, line.start));
        }
        self.ranges.clear();
        Ok(Step::Done(Partial {
            count: n as usize,
            pos: line.next,
        }))
    }

    /// Reads `$<len>\r\n<payload>\r\n` until all arguments are present.
    fn arguments(
        &mut self,
        buf: &mut BytesMut,
        mut p: Partial,
    ) -> Result<Option<Request>, ProtocolError> {
        while self.ranges.len() < p.count {
            let Some(&tag) = buf.get(p.pos) else {
                self.partial = Some(p);
                return Ok(None);
            };
            if tag != b'$' {
                return Err(ProtocolError::malformed("expected '$'", p.pos));
            }
            let Some(line) = find_line(buf, p.pos + 1, self.limits.line_len_max, true)? else {
                self.partial = Some(p);
                return Ok(None);
            };
            let len = parse_u64(&buf[line.start..line.end])
                .ok_or(ProtocolError::malformed("invalid bulk length", line.start))?;
            if len > self.limits.bulk_len_max {
                let max = self.limits.bulk_len_max;
                return Err(ProtocolError::limit(Limit::BulkLen, len, max, line.start));
            }
            let start = line.next;
            let end = start + len as usize;
            if buf.len() < end + 2 {
                self.partial = Some(p);
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::malformed(
                    "payload not followed by CRLF",
                    end,
                ));
            }
            self.ranges.push((start, end));
            p.pos = end + 2;
        }
        self.partial = None;
        let frame = buf.split_to(p.pos).freeze();
        let args = self
            .ranges
            .iter()
            .map(|&(s, e)| frame.slice(s..e))
            .collect();
        self.ranges.clear();
        Ok(Some(Request {
            args,
            inline: false,
        }))
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Step<Request>, ProtocolError> {
        let Some(line) = find_line(buf, 0, self.limits.line_len_max, false)? else {
            return Ok(Step::NeedMore);
        };
        let bytes = buf.split_to(line.next).freeze();
        let args = split_inline(&bytes.slice(..line.end), 0)?;
        if args.is_empty() {
            return Ok(Step::Skipped);
        }
        if args.len() as u64 > self.limits.array_len_max {
            let max = self.limits.array_len_max;
            return Err(ProtocolError::limit(
                Limit::ArrayLen,
                args.len() as u64,
                max,
                0,
            ));
        }
        Ok(Step::Done(Request { args, inline: true }))
    }
}

enum Step<T> {
    NeedMore,
    Skipped,
    Done(T),
}
