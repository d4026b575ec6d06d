//! Inline (telnet-style) commands: one line split into arguments the way
//! redis-server splits them (`sdssplitargs`): spaces separate arguments,
//! `"..."` allows `\n \r \t \b \a \\ \" \xHH` escapes, `'...'` allows `\'`,
//! and a closing quote must be followed by a space or the end of the line.

use bytes::Bytes;

use crate::error::ProtocolError;

/// Splits an inline line (terminator excluded) into arguments. `base` is
/// the line's offset in the buffer, for error positions.
pub(crate) fn split_inline(line: &Bytes, base: usize) -> Result<Vec<Bytes>, ProtocolError> {
    let s = &line[..];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < s.len() && is_space(s[i]) {
            i += 1;
        }
        if i >= s.len() {
            return Ok(args);
        }
        match s[i] {
            b'"' => {
                let (arg, next) = double_quoted(s, i + 1, base)?;
                args.push(Bytes::from(arg));
                i = next;
            }
            b'\'' => {
                let (arg, next) = single_quoted(s, i + 1, base)?;
                args.push(Bytes::from(arg));
                i = next;
            }
            _ => {
                let start = i;
                while i < s.len() && !is_space(s[i]) {
                    i += 1;
                }
                args.push(line.slice(start..i));
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

fn after_quote(s: &[u8], i: usize, base: usize) -> Result<usize, ProtocolError> {
    match s.get(i) {
        None => Ok(i),
        Some(&b) if is_space(b) => Ok(i),
        Some(_) => Err(ProtocolError::malformed(
            "closing quote must be followed by a space",
            base + i,
        )),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn double_quoted(s: &[u8], mut i: usize, base: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut out = Vec::new();
    loop {
        let Some(&b) = s.get(i) else {
            return Err(ProtocolError::malformed(
                "unbalanced quotes in request",
                base + i,
            ));
        };
        match b {
            b'"' => return Ok((out, after_quote(s, i + 1, base)?)),
            b'\\' if s.get(i + 1) == Some(&b'x') => {
                match (
                    s.get(i + 2).and_then(|&c| hex(c)),
                    s.get(i + 3).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 4;
                    }
                    _ => {
                        out.push(b'x');
                        i += 2;
                    }
                }
            }
            b'\\' if i + 1 < s.len() => {
                out.push(match s[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    c => c,
                });
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}

fn single_quoted(s: &[u8], mut i: usize, base: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    let mut out = Vec::new();
    loop {
        let Some(&b) = s.get(i) else {
            return Err(ProtocolError::malformed(
                "unbalanced quotes in request",
                base + i,
            ));
        };
        match b {
            b'\'' => return Ok((out, after_quote(s, i + 1, base)?)),
            b'\\' if s.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
}
