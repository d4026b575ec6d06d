//! One RESP2/RESP3 value, holding zero-copy slices of the received bytes.

use bytes::Bytes;

/// A RESP2 or RESP3 value.
///
/// String payloads are [`Bytes`] slices of the buffer they were decoded
/// from: decoding copies no payload bytes (except to join the chunks of a
/// RESP3 streamed string).
///
/// RESP3 streamed aggregates (`*?`, `%?`, `~?`, `>?`) decode to their
/// fixed-length forms and streamed strings (`$?`) to [`Frame::Bulk`]; the
/// encoder always writes fixed lengths. Every other frame encodes back to
/// exactly the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `+OK`: a simple string (no CR or LF inside).
    Simple(Bytes),
    /// `-ERR message`: a simple error.
    Error(Bytes),
    /// `:42`: a signed 64-bit integer.
    Integer(i64),
    /// `$3\r\nfoo`: a binary-safe bulk string.
    Bulk(Bytes),
    /// RESP2 `$-1`: the null bulk string.
    NullBulk,
    /// RESP2 `*-1`: the null array.
    NullArray,
    /// RESP3 `_`: null.
    Null,
    /// `*2 ...`: an array.
    Array(Vec<Frame>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `,3.14`: a double, kept as its exact text (`inf`, `-inf`,
    /// `nan` included) so that it re-encodes byte for byte.
    Double(Bytes),
    /// RESP3 `(1234...`: a big number, kept as its decimal text.
    BigNumber(Bytes),
    /// RESP3 `!21\r\nSYNTAX invalid syntax`: a binary-safe error.
    BulkError(Bytes),
    /// RESP3 `=15\r\ntxt:Some string`: verbatim string with its 3-byte
    /// format.
    Verbatim {
        /// The format, e.g. `txt` or `mkd` (kept inline: it is three bytes,
        /// and a smaller `Frame` decodes faster).
        format: [u8; 3],
        /// The text after the `format:` prefix.
        text: Bytes,
    },
    /// RESP3 `%2 ...`: key/value pairs in wire order.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~2 ...`: an unordered collection.
    Set(Vec<Frame>),
    /// RESP3 `>3 ...`: out-of-band data (pub/sub messages, invalidations).
    Push(Vec<Frame>),
    /// RESP3 `|1 ...` attributes followed by the value they describe.
    Attributed {
        /// The attribute pairs.
        attributes: Vec<(Frame, Frame)>,
        /// The value the attributes annotate.
        frame: Box<Frame>,
    },
}

impl Frame {
    /// A simple string from static text, e.g. `Frame::simple("OK")`.
    pub fn simple(text: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// A simple error whose text is `message` with every CR and LF
    /// replaced by a space, so that text taken from a client (a command
    /// name, say) can never break the reply stream.
    pub fn error(message: impl AsRef<[u8]>) -> Frame {
        let clean: Vec<u8> = message
            .as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        Frame::Error(Bytes::from(clean))
    }

    /// A bulk string copied from `data`.
    pub fn bulk(data: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data.as_ref()))
    }

    /// True for the three null forms (`$-1`, `*-1`, `_`).
    pub fn is_null(&self) -> bool {
        matches!(self, Frame::Null | Frame::NullBulk | Frame::NullArray)
    }

    /// True for simple and bulk errors.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BulkError(_))
    }

    /// The value of a [`Frame::Double`] as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Frame::Double(text) => parse_double(text),
            _ => None,
        }
    }

    /// A coarse kind name (`simple`, `error`, `integer`, `bulk`, `null`,
    /// `array`, ...), used to compare replies from different replicas.
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Simple(_) => "simple",
            Frame::Error(_) | Frame::BulkError(_) => "error",
            Frame::Integer(_) => "integer",
            Frame::Bulk(_) | Frame::Verbatim { .. } => "bulk",
            Frame::NullBulk | Frame::NullArray | Frame::Null => "null",
            Frame::Array(_) => "array",
            Frame::Boolean(_) => "boolean",
            Frame::Double(_) => "double",
            Frame::BigNumber(_) => "big-number",
            Frame::Map(_) => "map",
            Frame::Set(_) => "set",
            Frame::Push(_) => "push",
            Frame::Attributed { frame, .. } => frame.kind(),
        }
    }
}

/// Parses RESP3 double text: a decimal or exponent form, `inf`, `-inf` or
/// `nan`.
pub(crate) fn parse_double(text: &[u8]) -> Option<f64> {
    match text {
        b"inf" => Some(f64::INFINITY),
        b"-inf" => Some(f64::NEG_INFINITY),
        b"nan" => Some(f64::NAN),
        _ => {
            let ok = !text.is_empty()
                && text
                    .iter()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
            if !ok {
                return None;
            }
            std::str::from_utf8(text).ok()?.parse::<f64>().ok()
        }
    }
}
