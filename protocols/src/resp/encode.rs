//! Encoding frames and requests to RESP bytes.

use bytes::{BufMut, BytesMut};

use super::Frame;

/// Appends `v` in decimal.
pub(crate) fn put_int(dst: &mut BytesMut, v: i64) {
    if v < 0 {
        dst.put_u8(b'-');
    }
    put_uint(dst, v.unsigned_abs());
}

/// Appends `v` in decimal.
pub(crate) fn put_uint(dst: &mut BytesMut, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    dst.extend_from_slice(&digits[i..]);
}

fn put_header(dst: &mut BytesMut, tag: u8, n: usize) {
    dst.put_u8(tag);
    put_uint(dst, n as u64);
    dst.extend_from_slice(b"\r\n");
}

fn put_blob(dst: &mut BytesMut, tag: u8, data: &[u8]) {
    put_header(dst, tag, data.len());
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

fn put_line(dst: &mut BytesMut, tag: u8, text: &[u8]) {
    dst.put_u8(tag);
    dst.extend_from_slice(text);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `name k1 v1 k2 v2 ...` as a RESP request (as
/// [`encode_request`] would).
pub(crate) fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    name: &[u8],
    pairs: &[(K, V)],
    dst: &mut BytesMut,
) {
    let payload: usize = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 32)
        .sum();
    dst.reserve(payload + name.len() + 32);
    put_header(dst, b'*', 1 + 2 * pairs.len());
    put_blob(dst, b'$', name);
    for (k, v) in pairs {
        put_blob(dst, b'$', k.as_ref());
        put_blob(dst, b'$', v.as_ref());
    }
}

/// Appends a request as a RESP array of bulk strings, the form every
/// server accepts.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], dst: &mut BytesMut) {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    dst.reserve(payload + 16);
    put_header(dst, b'*', args.len());
    for arg in args {
        put_blob(dst, b'$', arg.as_ref());
    }
}

/// What the encoder still has to write.
enum Work<'a> {
    Frame(&'a Frame),
    Pairs(&'a [(Frame, Frame)]),
}

impl Frame {
    /// Appends this frame's RESP encoding to `dst`.
    ///
    /// Iterative, so a deeply nested frame cannot overflow the stack. The
    /// caller keeps simple strings and errors free of CR and LF (use
    /// [`Frame::error`] for text of unknown origin).
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut work = vec![Work::Frame(self)];
        while let Some(item) = work.pop() {
            match item {
                Work::Pairs(pairs) => {
                    for (k, v) in pairs.iter().rev() {
                        work.push(Work::Frame(v));
                        work.push(Work::Frame(k));
                    }
                }
                Work::Frame(frame) => encode_one(frame, dst, &mut work),
            }
        }
    }

    /// This frame's RESP encoding as a new buffer.
    pub fn to_bytes(&self) -> BytesMut {
        let mut dst = BytesMut::new();
        self.encode(&mut dst);
        dst
    }
}

fn encode_one<'a>(frame: &'a Frame, dst: &mut BytesMut, work: &mut Vec<Work<'a>>) {
    match frame {
        Frame::Simple(s) => put_line(dst, b'+', s),
        Frame::Error(s) => put_line(dst, b'-', s),
        Frame::Integer(v) => {
            dst.put_u8(b':');
            put_int(dst, *v);
            dst.extend_from_slice(b"\r\n");
        }
        Frame::Bulk(b) => put_blob(dst, b'$', b),
        Frame::NullBulk => dst.extend_from_slice(b"$-1\r\n"),
        Frame::NullArray => dst.extend_from_slice(b"*-1\r\n"),
        Frame::Null => dst.extend_from_slice(b"_\r\n"),
        Frame::Boolean(b) => dst.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Double(s) => put_line(dst, b',', s),
        Frame::BigNumber(s) => put_line(dst, b'(', s),
        Frame::BulkError(b) => put_blob(dst, b'!', b),
        Frame::Verbatim { format, text } => {
            put_header(dst, b'=', text.len() + 4);
            dst.extend_from_slice(&format[..]);
            dst.put_u8(b':');
            dst.extend_from_slice(text);
            dst.extend_from_slice(b"\r\n");
        }
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let tag = match frame {
                Frame::Array(_) => b'*',
                Frame::Set(_) => b'~',
                _ => b'>',
            };
            put_header(dst, tag, items.len());
            work.extend(items.iter().rev().map(Work::Frame));
        }
        Frame::Map(pairs) => {
            put_header(dst, b'%', pairs.len());
            work.push(Work::Pairs(pairs));
        }
        Frame::Attributed { attributes, frame } => {
            put_header(dst, b'|', attributes.len());
            work.push(Work::Frame(frame));
            work.push(Work::Pairs(attributes));
        }
    }
}
