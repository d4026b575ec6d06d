//! The meta protocol's request lines: `mg`, `ms`, `md`, `ma`, `mn`, `me`.

use bytes::Bytes;

use super::request::{Ctx, Parsed};
use super::types::{McRequest, Meta, MetaFlag, MetaVerb};
use crate::error::ProtocolError;

/// A flag letter and the byte range of its token.
pub(crate) type FlagRange = (u8, (usize, usize));

/// Parses the flags from token `first` on: each is a letter followed by
/// an optional token.
pub(crate) fn flag_ranges(c: &Ctx<'_>, first: usize) -> Result<Vec<FlagRange>, ProtocolError> {
    let mut flags = Vec::with_capacity(c.toks.len().saturating_sub(first));
    for i in first..c.toks.len() {
        let (s, e) = c.toks[i];
        let letter = c.buf[s];
        if !letter.is_ascii_alphabetic() {
            return Err(ProtocolError::malformed("meta flag is not a letter", s));
        }
        flags.push((letter, (s + 1, e)));
    }
    Ok(flags)
}

fn build(
    f: &Bytes,
    key: Option<(usize, usize)>,
    flags: Vec<(u8, (usize, usize))>,
) -> (Bytes, Vec<MetaFlag>) {
    let key = key.map_or_else(Bytes::new, |(s, e)| f.slice(s..e));
    let flags = flags
        .into_iter()
        .map(|(flag, (s, e))| MetaFlag {
            flag,
            token: f.slice(s..e),
        })
        .collect();
    (key, flags)
}

pub(crate) fn parse_meta(c: &Ctx<'_>, verb: MetaVerb) -> Result<Parsed, ProtocolError> {
    match verb {
        MetaVerb::Noop => {
            let flags = flag_ranges(c, 1)?;
            Ok(Parsed::Done(Box::new(move |f| {
                let (key, flags) = build(f, None, flags);
                McRequest::Meta(Meta {
                    verb,
                    key,
                    flags,
                    data: None,
                })
            })))
        }
        MetaVerb::Set => {
            let key = c.key(1)?;
            let len = c.data_len(2)?;
            let flags = flag_ranges(c, 3)?;
            Ok(Parsed::WithData(
                len,
                Box::new(move |f, data| {
                    let (key, flags) = build(f, Some(key), flags);
                    McRequest::Meta(Meta {
                        verb,
                        key,
                        flags,
                        data: Some(data),
                    })
                }),
            ))
        }
        MetaVerb::Debug if c.toks.len() > 2 => {
            Err(ProtocolError::malformed("unexpected argument", c.pos(2)))
        }
        _ => {
            let key = c.key(1)?;
            let flags = flag_ranges(c, 2)?;
            Ok(Parsed::Done(Box::new(move |f| {
                let (key, flags) = build(f, Some(key), flags);
                McRequest::Meta(Meta {
                    verb,
                    key,
                    flags,
                    data: None,
                })
            })))
        }
    }
}
