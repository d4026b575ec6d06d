//! Relative times become absolute: the leader's clock decides once, and
//! every replica applies the same instant.

use bytes::Bytes;

/// Parses an integer exactly as redis-server's `string2ll` does: no sign
/// other than a leading `-`, no leading zeros, no `-0`. Anything Redis
/// would reject is left unrewritten, so the backend still rejects it.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    if digits.is_empty() || (digits[0] == b'0' && (s.len() > 1)) {
        return None;
    }
    crate::line::parse_i64(s)
}

/// Memcached's cut-over: an exptime above 30 days is an absolute Unix time.
pub const MEMCACHED_RELATIVE_MAX_S: i64 = 60 * 60 * 24 * 30;

fn int_arg(v: i64) -> Bytes {
    Bytes::from(v.to_string())
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

/// Absolute milliseconds for a positive relative amount, or `None` when it
/// is not a positive integer or overflows (the command then goes to the
/// backend unchanged, where its error is the same on every replica).
fn absolute_ms(arg: &[u8], unit_ms: i64, now_ms: i64) -> Option<i64> {
    let v = parse_i64(arg)?;
    if v <= 0 {
        return None;
    }
    v.checked_mul(unit_ms)?.checked_add(now_ms)
}

/// `EXPIRE k s [opt]` / `PEXPIRE k ms [opt]` → `PEXPIREAT k abs [opt]`.
/// Non-positive amounts delete the key at once on every replica; they
/// are replicated unchanged.
pub(crate) fn expire(args: &[Bytes], unit_ms: i64, now_ms: i64) -> Option<Vec<Bytes>> {
    let v = parse_i64(args.get(2)?)?;
    let abs = v.checked_mul(unit_ms)?.checked_add(now_ms)?;
    let mut out = vec![
        Bytes::from_static(b"PEXPIREAT"),
        args[1].clone(),
        int_arg(abs),
    ];
    out.extend_from_slice(&args[3..]);
    Some(out)
}

/// `SETEX k s v` / `PSETEX k ms v` → `SET k v PXAT abs`.
pub(crate) fn setex(args: &[Bytes], unit_ms: i64, now_ms: i64) -> Option<Vec<Bytes>> {
    if args.len() != 4 {
        return None;
    }
    let abs = absolute_ms(&args[2], unit_ms, now_ms)?;
    Some(vec![
        Bytes::from_static(b"SET"),
        args[1].clone(),
        args[3].clone(),
        Bytes::from_static(b"PXAT"),
        int_arg(abs),
    ])
}

/// `SET`/`GETEX` options `EX s` / `PX ms` → `PXAT abs`, scanning options
/// from `first`. Other options are kept in place.
pub(crate) fn ex_px_options(args: &[Bytes], first: usize, now_ms: i64) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = args.to_vec();
    let mut i = first;
    while i + 1 < out.len() {
        let unit = if eq(&out[i], "ex") {
            1000
        } else if eq(&out[i], "px") {
            1
        } else {
            i += 1;
            continue;
        };
        if let Some(abs) = absolute_ms(&out[i + 1], unit, now_ms) {
            out[i] = Bytes::from_static(b"PXAT");
            out[i + 1] = int_arg(abs);
        }
        i += 2;
    }
    out
}

/// `RESTORE k ttl payload [opts]`: a positive relative TTL becomes
/// absolute and `ABSTTL` is appended.
pub(crate) fn restore(args: &[Bytes], now_ms: i64) -> Vec<Bytes> {
    let already_abs = args.iter().skip(4).any(|a| eq(a, "absttl"));
    let mut out = args.to_vec();
    if already_abs || out.len() < 4 {
        return out;
    }
    if let Some(abs) = absolute_ms(&out[2], 1, now_ms) {
        out[2] = int_arg(abs);
        out.push(Bytes::from_static(b"ABSTTL"));
    }
    out
}

/// `XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] n [LIMIT c]] * ...`: the
/// auto ID `*` becomes `<now_ms>-*`, so every replica derives the same ID
/// (the sequence part is still chosen by the server, deterministically).
pub(crate) fn xadd(args: &[Bytes], now_ms: i64) -> Vec<Bytes> {
    let mut out = args.to_vec();
    let mut i = 2;
    while i < out.len() {
        let a = &out[i];
        if eq(a, "nomkstream") {
            i += 1;
        } else if eq(a, "maxlen") || eq(a, "minid") {
            i += 1;
            if out.get(i).is_some_and(|t| &t[..] == b"=" || &t[..] == b"~") {
                i += 1;
            }
            i += 1;
        } else if eq(a, "limit") {
            i += 2;
        } else {
            if &a[..] == b"*" {
                out[i] = Bytes::from(format!("{now_ms}-*"));
            }
            break;
        }
    }
    out
}

/// memcached exptime: 0 < t <= 30 days is relative and becomes the
/// absolute Unix second `now_s + t`; 0, negative and absolute values are
/// kept.
pub fn memcached_exptime(t: i64, now_s: i64) -> i64 {
    if t > 0 && t <= MEMCACHED_RELATIVE_MAX_S {
        now_s + t
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn rewrites() {
        assert_eq!(
            expire(&b(&["EXPIRE", "k", "10", "NX"]), 1000, 5),
            Some(b(&["PEXPIREAT", "k", "10005", "NX"]))
        );
        assert_eq!(expire(&b(&["EXPIRE", "k", "x"]), 1000, 5), None);
        assert_eq!(expire(&b(&["EXPIRE", "k", "010"]), 1000, 5), None);
        assert_eq!(expire(&b(&["EXPIRE", "k", "-0"]), 1000, 5), None);
        assert_eq!(
            expire(&b(&["EXPIRE", "k", "0"]), 1000, 5),
            Some(b(&["PEXPIREAT", "k", "5"]))
        );
        assert_eq!(
            setex(&b(&["SETEX", "k", "2", "v"]), 1000, 5),
            Some(b(&["SET", "k", "v", "PXAT", "2005"]))
        );
        assert_eq!(setex(&b(&["SETEX", "k", "0", "v"]), 1000, 5), None);
        assert_eq!(
            ex_px_options(&b(&["SET", "k", "v", "NX", "ex", "3"]), 3, 5),
            b(&["SET", "k", "v", "NX", "PXAT", "3005"])
        );
        assert_eq!(
            ex_px_options(&b(&["SET", "k", "v", "PX", "-3"]), 3, 5),
            b(&["SET", "k", "v", "PX", "-3"])
        );
        assert_eq!(
            restore(&b(&["RESTORE", "k", "7", "p"]), 5),
            b(&["RESTORE", "k", "12", "p", "ABSTTL"])
        );
        assert_eq!(
            restore(&b(&["RESTORE", "k", "0", "p"]), 5),
            b(&["RESTORE", "k", "0", "p"])
        );
        assert_eq!(
            xadd(&b(&["XADD", "s", "MAXLEN", "~", "10", "*", "f", "v"]), 5),
            b(&["XADD", "s", "MAXLEN", "~", "10", "5-*", "f", "v"])
        );
        assert_eq!(
            xadd(&b(&["XADD", "s", "1-1", "f", "v"]), 5),
            b(&["XADD", "s", "1-1", "f", "v"])
        );
        assert_eq!(memcached_exptime(10, 100), 110);
        assert_eq!(
            memcached_exptime(MEMCACHED_RELATIVE_MAX_S + 1, 100),
            MEMCACHED_RELATIVE_MAX_S + 1
        );
        assert_eq!(memcached_exptime(-1, 100), -1);
        assert_eq!(memcached_exptime(0, 100), 0);
    }
}
