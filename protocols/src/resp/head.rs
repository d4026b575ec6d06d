//! Parsing of one RESP element header (and, for leaves, its payload).

use crate::error::{Limit, ProtocolError};
use crate::line::{find_line, parse_i64, parse_u64};
use crate::Limits;

/// The aggregate types, for the decoder's explicit stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    Array,
    Map,
    Set,
    Push,
    Attribute,
}

/// One parsed element header. Leaves carry the byte range of their payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    Simple(usize, usize),
    Error(usize, usize),
    Integer(i64),
    Bulk(usize, usize),
    NullBulk,
    NullArray,
    Null,
    Boolean(bool),
    Double(usize, usize),
    BigNumber(usize, usize),
    BulkError(usize, usize),
    Verbatim(usize, usize),
    /// An aggregate announcing this many child frames (a map of `n` pairs
    /// announces `2n`; attributes announce `2n + 1`, the annotated value
    /// last).
    Aggregate(AggKind, u64),
    /// `*?`, `%?`, `~?`, `>?`: children until [`Head::End`].
    StreamedAggregate(AggKind),
    /// `$?`: chunks until a zero-length chunk.
    StreamedString,
    /// `;n` chunk of a streamed string (`n == 0` ends it).
    Chunk(usize, usize),
    /// `.`: end of a streamed aggregate.
    End,
}

/// Parses the element at `pos`. Returns the header and the position right
/// after the element (after the payload for leaves, after the header line
/// for aggregates), or `Ok(None)` when more bytes are needed.
pub(crate) fn parse_head(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(Head, usize)>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    if !b"+-:_#,(.$!=;*%~>|".contains(&tag) {
        return Err(ProtocolError::malformed("unknown RESP type byte", pos));
    }
    let Some(line) = find_line(buf, pos + 1, limits.line_len_max, true)? else {
        return Ok(None);
    };
    let (s, e) = (line.start, line.end);
    let text = &buf[s..e];
    let head = match tag {
        b'+' => Head::Simple(s, e),
        b'-' => Head::Error(s, e),
        b':' => {
            Head::Integer(parse_i64(text).ok_or(ProtocolError::malformed("invalid integer", s))?)
        }
        b'_' if text.is_empty() => Head::Null,
        b'_' => return Err(ProtocolError::malformed("null carries no payload", s)),
        b'#' => match text {
            b"t" => Head::Boolean(true),
            b"f" => Head::Boolean(false),
            _ => {
                return Err(ProtocolError::malformed(
                    "boolean is neither 't' nor 'f'",
                    s,
                ))
            }
        },
        b',' if super::frame::parse_double(text).is_some() => Head::Double(s, e),
        b',' => return Err(ProtocolError::malformed("invalid double", s)),
        b'(' => {
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(ProtocolError::malformed("invalid big number", s));
            }
            Head::BigNumber(s, e)
        }
        b'.' if text.is_empty() => Head::End,
        b'.' => return Err(ProtocolError::malformed("end marker carries no payload", s)),
        b'$' | b'!' | b'=' | b';' => return blob(buf, tag, line.next, text, s, limits),
        b'*' | b'%' | b'~' | b'>' | b'|' => return aggregate(tag, line.next, text, s, limits),
        _ => return Err(ProtocolError::malformed("unknown RESP type byte", pos)),
    };
    Ok(Some((head, line.next)))
}

/// A length-prefixed string: bulk, bulk error, verbatim or stream chunk.
fn blob(
    buf: &[u8],
    tag: u8,
    body: usize,
    text: &[u8],
    s: usize,
    limits: &Limits,
) -> Result<Option<(Head, usize)>, ProtocolError> {
    match (tag, text) {
        (b'$', b"-1") => return Ok(Some((Head::NullBulk, body))),
        (b'$', b"?") => return Ok(Some((Head::StreamedString, body))),
        _ => {}
    }
    let len = parse_u64(text).ok_or(ProtocolError::malformed("invalid length", s))?;
    if len > limits.bulk_len_max {
        return Err(ProtocolError::limit(
            Limit::BulkLen,
            len,
            limits.bulk_len_max,
            s,
        ));
    }
    // `len` fits in usize: it is at most `bulk_len_max`, which a caller
    // could set above usize::MAX only on a 32-bit target.
    let len =
        usize::try_from(len).map_err(|_| ProtocolError::malformed("length overflows usize", s))?;
    if tag == b';' && len == 0 {
        // The zero-length chunk ends a streamed string and has no payload.
        return Ok(Some((Head::Chunk(body, body), body)));
    }
    let end = body + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(ProtocolError::malformed(
            "payload not followed by CRLF",
            end,
        ));
    }
    let head = match tag {
        b'$' => Head::Bulk(body, end),
        b'!' => Head::BulkError(body, end),
        b';' => Head::Chunk(body, end),
        _ => {
            if len < 4 || buf[body + 3] != b':' {
                return Err(ProtocolError::malformed(
                    "verbatim string lacks 'fmt:' prefix",
                    body,
                ));
            }
            Head::Verbatim(body, end)
        }
    };
    Ok(Some((head, end + 2)))
}

fn aggregate(
    tag: u8,
    next: usize,
    text: &[u8],
    s: usize,
    limits: &Limits,
) -> Result<Option<(Head, usize)>, ProtocolError> {
    let kind = match tag {
        b'*' => AggKind::Array,
        b'%' => AggKind::Map,
        b'~' => AggKind::Set,
        b'>' => AggKind::Push,
        _ => AggKind::Attribute,
    };
    if text == b"?" && kind != AggKind::Attribute {
        return Ok(Some((Head::StreamedAggregate(kind), next)));
    }
    if text == b"-1" && kind == AggKind::Array {
        return Ok(Some((Head::NullArray, next)));
    }
    let n = parse_u64(text).ok_or(ProtocolError::malformed("invalid element count", s))?;
    if n > limits.array_len_max {
        return Err(ProtocolError::limit(
            Limit::ArrayLen,
            n,
            limits.array_len_max,
            s,
        ));
    }
    let children = match kind {
        AggKind::Map => 2 * n,
        AggKind::Attribute => 2 * n + 1,
        _ => n,
    };
    Ok(Some((Head::Aggregate(kind, children), next)))
}
