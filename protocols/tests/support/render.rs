//! Compact, stable text renderings of decoded values for golden files, and
//! the split-invariance check every golden case goes through.

use bytes::BytesMut;
use mu_protocols::resp::{Frame, Request};
use mu_protocols::ProtocolError;

use super::datadriven::quote;

/// Renders a frame on one line, e.g. `array[bulk "GET", bulk "k"]`.
pub fn frame(f: &Frame) -> String {
    let list = |items: &[Frame]| items.iter().map(frame).collect::<Vec<_>>().join(", ");
    let pairs = |items: &[(Frame, Frame)]| {
        items
            .iter()
            .map(|(k, v)| format!("{}: {}", frame(k), frame(v)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match f {
        Frame::Simple(s) => format!("simple {}", quote(s)),
        Frame::Error(s) => format!("error {}", quote(s)),
        Frame::Integer(v) => format!("integer {v}"),
        Frame::Bulk(s) => format!("bulk {}", quote(s)),
        Frame::NullBulk => "null-bulk".into(),
        Frame::NullArray => "null-array".into(),
        Frame::Null => "null".into(),
        Frame::Array(items) => format!("array[{}]", list(items)),
        Frame::Boolean(b) => format!("boolean {b}"),
        Frame::Double(s) => format!("double {}", quote(s)),
        Frame::BigNumber(s) => format!("big-number {}", quote(s)),
        Frame::BulkError(s) => format!("bulk-error {}", quote(s)),
        Frame::Verbatim { format, text } => {
            format!("verbatim {} {}", quote(&format[..]), quote(text))
        }
        Frame::Map(p) => format!("map{{{}}}", pairs(p)),
        Frame::Set(items) => format!("set[{}]", list(items)),
        Frame::Push(items) => format!("push[{}]", list(items)),
        Frame::Attributed {
            attributes,
            frame: inner,
        } => {
            format!("attributes{{{}}} {}", pairs(attributes), frame(inner))
        }
    }
}

/// Renders a request, e.g. `request "SET" "k" "v"` (`inline ...` when it
/// arrived inline).
pub fn request(r: &Request) -> String {
    let args: Vec<String> = r.args.iter().map(|a| quote(a)).collect();
    format!(
        "{} {}",
        if r.inline { "inline" } else { "request" },
        args.join(" ")
    )
}

/// Feeds `chunks` one after another to a fresh decoder, decoding after
/// each, and renders every value, the first error, or the leftover bytes.
pub fn decode_chunks<T>(
    mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
    chunks: &[&[u8]],
    render: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decode(&mut buf) {
                Ok(Some(v)) => out.push(render(&v)),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }
    if !buf.is_empty() {
        out.push(format!("incomplete: {} bytes buffered", buf.len()));
    }
    out
}

/// Decodes `input` in one piece, then checks that every two-way split and
/// a byte-at-a-time feed give the same output; returns the output.
pub fn split_invariant<D, T>(
    new_decoder: impl Fn() -> D,
    input: &[u8],
    render: impl Fn(&T) -> String + Copy,
) -> String
where
    D: FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
{
    let whole = decode_chunks(new_decoder(), &[input], render);
    for i in 0..=input.len() {
        let split = decode_chunks(new_decoder(), &[&input[..i], &input[i..]], render);
        assert_eq!(whole, split, "split at byte {i} of {}", quote(input));
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let trickled = decode_chunks(new_decoder(), &bytes, render);
    assert_eq!(whole, trickled, "byte-at-a-time feed of {}", quote(input));
    whole.join("\n")
}
