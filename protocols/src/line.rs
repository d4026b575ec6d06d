//! Line scanning and integer parsing shared by the RESP and memcached codecs.

use crate::error::{Limit, ProtocolError};

/// A complete protocol line inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    /// First byte of the content.
    pub start: usize,
    /// One past the last content byte (the terminator excluded).
    pub end: usize,
    /// First byte after the terminator.
    pub next: usize,
}

/// Finds the line starting at `from`.
///
/// With `crlf_only` the terminator must be `\r\n` (RESP); otherwise a bare
/// `\n` is accepted too and a preceding `\r` is stripped (inline commands,
/// memcached). Returns `Ok(None)` when the terminator has not arrived yet and
/// the line is still within `max` bytes.
pub(crate) fn find_line(
    buf: &[u8],
    from: usize,
    max: usize,
    crlf_only: bool,
) -> Result<Option<Line>, ProtocolError> {
    let window_end = buf.len().min(from.saturating_add(max).saturating_add(2));
    let window = &buf[from.min(buf.len())..window_end];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let nl = from + i;
            let end = if nl > from && buf[nl - 1] == b'\r' {
                nl - 1
            } else if crlf_only {
                return Err(ProtocolError::malformed("line ends in a bare '\\n'", nl));
            } else {
                nl
            };
            if end - from > max {
                return Err(ProtocolError::limit(
                    Limit::LineLen,
                    (end - from) as u64,
                    max as u64,
                    from,
                ));
            }
            Ok(Some(Line {
                start: from,
                end,
                next: nl + 1,
            }))
        }
        None if window.len() >= max.saturating_add(2) => Err(ProtocolError::limit(
            Limit::LineLen,
            window.len() as u64,
            max as u64,
            from,
        )),
        None => Ok(None),
    }
}

/// Parses a decimal `u64` with no sign, no spaces and no leading `+`.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a decimal `i64` with an optional leading `-`.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => {
            let v = parse_u64(rest)?;
            if v == i64::MIN.unsigned_abs() {
                Some(i64::MIN)
            } else {
                i64::try_from(v).ok().map(|v| -v)
            }
        }
        _ => i64::try_from(parse_u64(s)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_strictly() {
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"+1"), None);
        assert_eq!(parse_i64(b" 1"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
    }

    #[test]
    fn lines_respect_terminator_and_limit() {
        assert_eq!(find_line(b"ab\r\nc", 0, 10, true).unwrap().unwrap().next, 4);
        assert!(find_line(b"ab\nc", 0, 10, true).is_err());
        assert_eq!(find_line(b"ab\nc", 0, 10, false).unwrap().unwrap().end, 2);
        assert_eq!(find_line(b"abc", 0, 10, true).unwrap(), None);
        assert!(matches!(
            find_line(b"abcdefgh", 0, 4, true),
            Err(ProtocolError::LimitExceeded { .. })
        ));
        // Exactly `max` content bytes plus the terminator is accepted.
        assert!(find_line(b"abcd\r\n", 0, 4, true).unwrap().is_some());
        assert!(find_line(b"abcde\r\n", 0, 4, true).is_err());
    }
}
