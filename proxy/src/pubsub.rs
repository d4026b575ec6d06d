//! Pub/Sub on a client's own backend connection.
//!
//! `SUBSCRIBE` and its kin are served on the client's connection to its
//! local server, which then sends the published messages there; `PUBLISH`
//! is replicated, so a message published through any node reaches the
//! subscribers of every node. A subscription command gets no reply of the
//! usual kind: the server confirms each channel with a frame of its own
//! (`["subscribe", channel, count]`, a push under RESP3), or answers the
//! whole command with one error. [`Subscriptions`] follows what the
//! connection is subscribed to, from those confirmations, so that the
//! sidecar knows how many frames a command is owed (an `UNSUBSCRIBE`
//! without arguments is confirmed once per channel it leaves, or once when
//! there is none) and whether the connection is in RESP2's subscribed
//! mode, where the server accepts only a few commands.

use bytes::Bytes;
use mu_protocols::resp::{Frame, Request};
use mu_protocols::table::lookup;
use std::collections::HashSet;

/// What a subscription command subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `SUBSCRIBE` / `UNSUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE` / `PUNSUBSCRIBE`.
    Pattern,
    /// `SSUBSCRIBE` / `SUNSUBSCRIBE`.
    Shard,
}

/// A subscription command's kind and whether it leaves (unsubscribes).
fn command_of(name: &[u8]) -> Option<(Kind, bool)> {
    const COMMANDS: [(&[u8], Kind, bool); 6] = [
        (b"subscribe", Kind::Channel, false),
        (b"unsubscribe", Kind::Channel, true),
        (b"psubscribe", Kind::Pattern, false),
        (b"punsubscribe", Kind::Pattern, true),
        (b"ssubscribe", Kind::Shard, false),
        (b"sunsubscribe", Kind::Shard, true),
    ];
    COMMANDS
        .iter()
        .find(|(n, ..)| name.eq_ignore_ascii_case(n))
        .map(|&(_, k, leave)| (k, leave))
}

/// True for `SUBSCRIBE`, `UNSUBSCRIBE` and their pattern and shard kin.
pub fn is_subscription(req: &Request) -> bool {
    command_of(req.name()).is_some()
}

/// The elements of an array or push frame.
fn elements(f: &Frame) -> Option<&[Frame]> {
    match f {
        Frame::Array(v) | Frame::Push(v) => Some(v),
        _ => None,
    }
}

/// The first element of an array or push, when it is a string.
fn head(f: &Frame) -> Option<&[u8]> {
    match elements(f)?.first()? {
        Frame::Bulk(b) | Frame::Simple(b) => Some(b),
        _ => None,
    }
}

/// True for a published message (`message`, `pmessage`, `smessage`).
fn is_message(f: &Frame) -> bool {
    head(f).is_some_and(|h| [&b"message"[..], b"pmessage", b"smessage"].contains(&h))
}

/// A confirmation's kind, whether it confirms leaving, and its channel
/// (none when an unsubscription found nothing to leave).
fn confirmation(f: &Frame) -> Option<(Kind, bool, Option<Bytes>)> {
    let v = elements(f)?;
    if v.len() != 3 || !matches!(v[2], Frame::Integer(_)) {
        return None;
    }
    let (kind, leave) = command_of(head(f)?)?;
    let channel = match &v[1] {
        Frame::Bulk(b) => Some(b.clone()),
        _ => None,
    };
    Some((kind, leave, channel))
}

/// The error the server gives a command it does not accept in RESP2's
/// subscribed mode, or `None` when it accepts the command there. An
/// unknown command or a wrong number of arguments is not answered here:
/// the server reports those first, as it would outside the mode.
pub fn refused_while_subscribed(req: &Request) -> Option<Frame> {
    let name = req.name();
    let allowed = is_subscription(req)
        || [&b"ping"[..], b"quit", b"reset"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
    let spec = lookup(req).filter(|s| !allowed && s.arity_ok(req.len()))?;
    let why = format!(
        "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
         are allowed in this context",
        spec.name
    );
    // The server answers a refused EXEC as an aborted transaction.
    Some(Frame::error(if spec.name == "exec" {
        format!("EXECABORT Transaction discarded because of: {why}")
    } else {
        format!("ERR {why}")
    }))
}

/// What one backend connection is subscribed to.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shards: HashSet<Bytes>,
}

impl Subscriptions {
    fn of(&self, kind: Kind) -> &HashSet<Bytes> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shards,
        }
    }

    fn set(&mut self, kind: Kind) -> &mut HashSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shards,
        }
    }

    /// True while the connection is subscribed to anything.
    pub fn any(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty())
    }

    /// Forgets every subscription (`RESET`, which confirms nothing).
    pub fn clear(&mut self) {
        *self = Subscriptions::default();
    }

    /// True when the server sends `f` unasked on a connection with these
    /// subscriptions: a push, or under RESP2 a published message.
    pub fn unasked(&self, f: &Frame) -> bool {
        matches!(f, Frame::Push(_)) || (self.any() && is_message(f))
    }

    /// The number of confirmations the server owes a subscription command
    /// sent now, after everything sent before it was confirmed: one per
    /// channel named, or for an unsubscription naming none, one per
    /// channel of its kind left (at least one). A subscription naming no
    /// channel is owed its error.
    pub fn owed(&self, req: &Request) -> usize {
        let Some((kind, leave)) = command_of(req.name()) else {
            return 0;
        };
        match req.len() - 1 {
            0 if leave => self.of(kind).len().max(1),
            0 => 1,
            n => n,
        }
    }

    /// Takes one frame read while a subscription command is owed `left`
    /// frames: a confirmation counts (and updates the subscriptions), a
    /// published message does not, anything else is the command's error
    /// and ends what it is owed.
    pub fn take(&mut self, f: &Frame, left: &mut usize) {
        if let Some((kind, leave, channel)) = confirmation(f) {
            if let Some(c) = channel {
                if leave {
                    self.set(kind).remove(&c);
                } else {
                    self.set(kind).insert(c);
                }
            }
            *left = left.saturating_sub(1);
        } else if !self.unasked(f) {
            *left = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(kind: &str, ch: Option<&str>, n: i64, push: bool) -> Frame {
        let v = vec![
            Frame::Bulk(Bytes::from(kind.to_owned())),
            ch.map_or(Frame::NullBulk, |c| Frame::Bulk(Bytes::from(c.to_owned()))),
            Frame::Integer(n),
        ];
        if push {
            Frame::Push(v)
        } else {
            Frame::Array(v)
        }
    }

    fn msg(ch: &str) -> Frame {
        Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"message")),
            Frame::Bulk(Bytes::from(ch.to_owned())),
            Frame::Bulk(Bytes::from_static(b"hello")),
        ])
    }

    #[test]
    fn confirmations_are_counted_and_messages_are_not() {
        let mut s = Subscriptions::default();
        let sub = Request::new(vec!["SUBSCRIBE", "a", "b"]);
        let mut left = s.owed(&sub);
        assert_eq!(left, 2);
        assert!(
            !s.unasked(&msg("a")),
            "not subscribed yet: an array is a reply"
        );
        s.take(&conf("subscribe", Some("a"), 1, false), &mut left);
        assert_eq!(left, 1);
        assert!(s.unasked(&msg("a")));
        s.take(&msg("a"), &mut left);
        assert_eq!(left, 1);
        s.take(&conf("subscribe", Some("b"), 2, false), &mut left);
        assert_eq!(left, 0);
        // Leaving all channels is owed one confirmation per channel.
        let mut left = s.owed(&Request::new(vec!["UNSUBSCRIBE"]));
        assert_eq!(left, 2);
        s.take(&conf("unsubscribe", Some("b"), 1, false), &mut left);
        assert!(s.any());
        s.take(&conf("unsubscribe", Some("a"), 0, false), &mut left);
        assert_eq!(left, 0);
        assert!(!s.any());
        // With nothing to leave, one confirmation with no channel.
        assert_eq!(s.owed(&Request::new(vec!["PUNSUBSCRIBE"])), 1);
    }

    #[test]
    fn an_error_ends_what_a_command_is_owed() {
        let mut s = Subscriptions::default();
        let mut left = s.owed(&Request::new(vec!["SUBSCRIBE"]));
        assert_eq!(left, 1);
        let err = Frame::error("ERR wrong number of arguments for 'subscribe' command");
        s.take(&err, &mut left);
        assert_eq!(left, 0);
        let mut left = s.owed(&Request::new(vec!["SSUBSCRIBE", "x", "y"]));
        s.take(&Frame::error("NOPERM no"), &mut left);
        assert_eq!(left, 0);
        assert!(!s.any());
    }

    #[test]
    fn kinds_are_kept_apart() {
        let mut s = Subscriptions::default();
        let mut left = 3;
        s.take(&conf("subscribe", Some("c"), 1, true), &mut left);
        s.take(&conf("psubscribe", Some("c*"), 2, true), &mut left);
        s.take(&conf("ssubscribe", Some("s"), 1, true), &mut left);
        assert_eq!(s.owed(&Request::new(vec!["UNSUBSCRIBE"])), 1);
        assert_eq!(s.owed(&Request::new(vec!["SUNSUBSCRIBE", "s", "t"])), 2);
        s.clear();
        assert!(!s.any());
    }

    #[test]
    fn only_a_few_commands_run_in_resp2_subscribed_mode() {
        for ok in [
            vec!["PING"],
            vec!["ping", "x"],
            vec!["RESET"],
            vec!["QUIT"],
            vec!["SUBSCRIBE", "a"],
            vec!["PUNSUBSCRIBE"],
            // The server's own arity and unknown-command errors come first.
            vec!["SET", "k"],
            vec!["NOSUCHCOMMAND"],
        ] {
            assert_eq!(
                refused_while_subscribed(&Request::new(ok.clone())),
                None,
                "{ok:?}"
            );
        }
        let e = refused_while_subscribed(&Request::new(vec!["SET", "k", "v"])).unwrap();
        assert_eq!(
            e,
            Frame::error(
                "ERR Can't execute 'set': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / \
                 QUIT / RESET are allowed in this context"
            )
        );
        let e = refused_while_subscribed(&Request::new(vec!["EXEC"])).unwrap();
        assert!(matches!(e, Frame::Error(t) if t.starts_with(b"EXECABORT Transaction discarded")));
        let e = refused_while_subscribed(&Request::new(vec!["client", "list"])).unwrap();
        assert!(matches!(e, Frame::Error(t) if t.starts_with(b"ERR Can't execute 'client|list'")));
    }
}
