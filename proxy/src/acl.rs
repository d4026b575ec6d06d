//! The client's permissions, for what the sidecar runs on its behalf.
//!
//! A client's reads run on its own connection to the local server,
//! authenticated as the client's own user, so the server checks them. Its
//! writes, transactions and WATCHes are different: they run on every node,
//! through the sidecar's own connections and as the sidecar's user. Before
//! one is accepted, the client's user must be allowed to run it, so that a
//! user limited to reads, or to some keys, stays limited through the
//! sidecar.
//!
//! A user with every permission (`+@all`, `~*`, `&*`, as most deployments
//! run the `default` user) is found with `ACL GETUSER` and remembered for
//! [`REMEMBER`]; its requests cost nothing more. Every request of any other
//! user is checked with `ACL DRYRUN` on the local server, pipelined per
//! batch of requests, before anything of it runs anywhere. The sidecar's
//! user (`--backend-user`) therefore needs `+acl|getuser` and
//! `+acl|dryrun`; when a check cannot be made, the request is refused
//! (nothing is let through unchecked).
//!
//! Replicated scripts (`EVAL`, `EVALSHA`, `FCALL` with `--trust-scripts`)
//! run their commands as the sidecar's user, out of `ACL DRYRUN`'s sight:
//! only a user with every permission may run them.
//!
//! A permission taken from a user at the server itself applies to that
//! user's writes through the sidecar within [`REMEMBER`]; one changed with
//! `ACL` through this sidecar applies at once. While the server cannot be
//! asked (it is down; writes still go through the log), a user last seen
//! with every permission keeps them, and every other user's requests are
//! refused.

use crate::client_redis::LocalConn;
use crate::state::Shared;
use bytes::Bytes;
use mu_protocols::resp::{Frame, Request};
use mu_protocols::table::lookup;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a user's `ACL GETUSER` verdict is trusted.
pub const REMEMBER: Duration = Duration::from_secs(1);

/// Spare checking connections kept open.
const SPARE_CONNS: usize = 4;

/// Commands that are not checked: they change or end the connection's
/// authentication, which the server answers for itself.
pub fn unchecked(req: &Request) -> bool {
    let name = req.name();
    [&b"auth"[..], b"hello", b"reset", b"quit"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

/// The permission checks of one sidecar.
#[derive(Debug, Default)]
pub struct Acl {
    /// Per user: whether it has every permission, and when that was read.
    users: Mutex<HashMap<Bytes, (Instant, bool)>>,
    /// Idle connections authenticated as the sidecar's user.
    conns: Mutex<Vec<LocalConn>>,
}

impl Acl {
    /// Forgets what is known of every user (after an `ACL` command).
    pub fn forget(&self) {
        self.users.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn remembered(&self, user: &Bytes) -> Option<bool> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users
            .get(user)
            .filter(|(at, _)| at.elapsed() < REMEMBER)
            .map(|(_, all)| *all)
    }

    /// Whether `user` may run each of `reqs`: `None` when it may run them
    /// all, else per request the error to answer instead (`None` where
    /// allowed). Requests in [`unchecked`] are always allowed.
    pub async fn check(
        &self,
        shared: &Shared,
        user: &Bytes,
        reqs: &[Request],
    ) -> Option<Vec<Option<Frame>>> {
        if self.remembered(user) == Some(true) || reqs.iter().all(unchecked) {
            return None;
        }
        let conn = self.conns.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => Ok(c),
            None => connect(shared).await,
        };
        let checked = match conn {
            Ok(mut conn) => {
                let r = self.check_on(&mut conn, user, reqs).await;
                if r.is_ok() {
                    let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
                    if conns.len() < SPARE_CONNS {
                        conns.push(conn);
                    }
                }
                r
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(verdicts) => verdicts,
            // The server cannot be asked (it is down, say; writes still
            // go through the log): a user last seen with every permission
            // keeps them meanwhile, any other is refused.
            Err(_) if self.last_seen_with_all(user) => None,
            Err(e) => Some(refuse_all(user, reqs, &e)),
        }
    }

    fn last_seen_with_all(&self, user: &Bytes) -> bool {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        users.get(user).is_some_and(|(_, all)| *all)
    }

    async fn check_on(
        &self,
        conn: &mut LocalConn,
        user: &Bytes,
        reqs: &[Request],
    ) -> Result<Option<Vec<Option<Frame>>>, String> {
        if self.remembered(user).is_none() {
            let get = Request {
                args: vec![
                    Bytes::from_static(b"ACL"),
                    Bytes::from_static(b"GETUSER"),
                    user.clone(),
                ],
                inline: false,
            };
            let reply = conn.exchange(&[(&get, 0)]).await?.pop();
            let all = match reply {
                Some(Frame::Array(fields)) => has_every_permission(&fields),
                Some(f) if f.is_error() => return Err(crate::apply::frame_text(&f)),
                // No such user: every request is checked, and refused.
                _ => false,
            };
            self.users
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user.clone(), (Instant::now(), all));
            if all {
                return Ok(None);
            }
        }
        let dryruns: Vec<Request> = reqs
            .iter()
            .filter(|r| !unchecked(r))
            .map(|r| {
                let mut args = Vec::with_capacity(r.args.len() + 3);
                args.extend([
                    Bytes::from_static(b"ACL"),
                    Bytes::from_static(b"DRYRUN"),
                    user.clone(),
                ]);
                args.extend(r.args.iter().cloned());
                Request {
                    args,
                    inline: false,
                }
            })
            .collect();
        let batch: Vec<(&Request, u32)> = dryruns.iter().map(|r| (r, 0)).collect();
        let mut replies = conn.exchange(&batch).await?.into_iter();
        let mut verdicts = Vec::with_capacity(reqs.len());
        let mut any = false;
        for req in reqs {
            let v = if unchecked(req) {
                None
            } else {
                verdict(user, req, replies.next().unwrap_or(Frame::NullBulk))
            };
            any |= v.is_some();
            verdicts.push(v);
        }
        Ok(any.then_some(verdicts))
    }
}

/// A connection authenticated as the sidecar's user.
async fn connect(shared: &Shared) -> Result<LocalConn, String> {
    let mut conn = LocalConn::connect(shared).await?;
    let o = &shared.opts;
    if let Some(pass) = &o.backend_password {
        let mut args = vec!["AUTH"];
        args.extend(o.backend_user.as_deref());
        args.push(pass);
        let auth = Request::new(args);
        let reply = conn.exchange(&[(&auth, 0)]).await?.pop();
        if let Some(f) = reply.filter(Frame::is_error) {
            return Err(format!(
                "the sidecar's AUTH was refused: {}",
                crate::apply::frame_text(&f)
            ));
        }
    }
    Ok(conn)
}

/// `ACL GETUSER` fields (RESP2: name, value, ...) of a user with every
/// command, key and channel, and no restriction on top.
fn has_every_permission(fields: &[Frame]) -> bool {
    let field = |name: &[u8]| {
        fields
            .chunks(2)
            .find(|kv| matches!(&kv[0], Frame::Bulk(k) if &k[..] == name))
            .and_then(|kv| kv.get(1))
    };
    let is =
        |name: &[u8], want: &[u8]| matches!(field(name), Some(Frame::Bulk(v)) if &v[..] == want);
    is(b"commands", b"+@all") && is(b"keys", b"~*") && is(b"channels", b"&*")
}

/// The answer to `req` given `ACL DRYRUN`'s reply: `None` when allowed.
fn verdict(user: &Bytes, req: &Request, reply: Frame) -> Option<Frame> {
    match reply {
        Frame::Simple(ok) if &ok[..] == b"OK" && runs_as_sidecar(req) => Some(Frame::error(
            "NOPERM mu-sidecar runs replicated scripts as its own user, so only a user \
             with every permission may run them through it (EVAL_RO and FCALL_RO run \
             as the client's user)",
        )),
        Frame::Simple(ok) if &ok[..] == b"OK" => None,
        // Denied: the reply says why, in the words of the server's NOPERM.
        Frame::Bulk(why) | Frame::Verbatim { text: why, .. } => {
            let mut msg = b"NOPERM ".to_vec();
            msg.extend_from_slice(&why);
            if let Some(c) = msg.get_mut(7) {
                c.make_ascii_lowercase();
            }
            Some(Frame::error(msg))
        }
        // An unknown command or a wrong arity: the sidecar answers it
        // itself, as the server would.
        f if f.is_error() && lookup(req).is_none_or(|s| !s.arity_ok(req.len())) => None,
        f => Some(cannot_check(user, &crate::apply::frame_text(&f))),
    }
}

/// Replicated scripts: the commands inside one run as the sidecar's user,
/// out of `ACL DRYRUN`'s sight.
fn runs_as_sidecar(req: &Request) -> bool {
    let name = req.name();
    [&b"eval"[..], b"evalsha", b"fcall"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}

fn cannot_check(user: &Bytes, why: &str) -> Frame {
    Frame::error(format!(
        "NOPERM mu-sidecar cannot check the permissions of user '{}': {why} \
         (the sidecar's backend user needs +acl|getuser and +acl|dryrun)",
        String::from_utf8_lossy(user)
    ))
}

fn refuse_all(user: &Bytes, reqs: &[Request], why: &str) -> Vec<Option<Frame>> {
    reqs.iter()
        .map(|r| (!unchecked(r)).then(|| cannot_check(user, why)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Frame {
        Frame::bulk(s)
    }

    #[test]
    fn every_permission_means_all_commands_keys_and_channels() {
        let user = |cmds: &str, keys: &str, chans: &str| {
            vec![
                bulk("flags"),
                Frame::Array(vec![bulk("on")]),
                bulk("commands"),
                bulk(cmds),
                bulk("keys"),
                bulk(keys),
                bulk("channels"),
                bulk(chans),
                bulk("selectors"),
                Frame::Array(vec![]),
            ]
        };
        assert!(has_every_permission(&user("+@all", "~*", "&*")));
        assert!(!has_every_permission(&user("-@all +@read", "~*", "&*")));
        assert!(!has_every_permission(&user("+@all -flushall", "~*", "&*")));
        assert!(!has_every_permission(&user("+@all", "~app:*", "&*")));
        assert!(!has_every_permission(&user("+@all", "%R~*", "&*")));
        assert!(!has_every_permission(&user("+@all", "~*", "")));
        assert!(!has_every_permission(&[]));
    }

    #[test]
    fn dryrun_replies_become_answers() {
        let u = Bytes::from_static(b"app");
        let set = Request::new(["SET", "k", "v"]);
        assert_eq!(verdict(&u, &set, Frame::simple("OK")), None);
        assert_eq!(
            verdict(
                &u,
                &set,
                bulk("This user has no permissions to access the 'k' key")
            ),
            Some(Frame::error(
                "NOPERM this user has no permissions to access the 'k' key"
            ))
        );
        // A script's commands would run as the sidecar's user.
        let eval = Request::new(["EVAL", "return 1", "0"]);
        let e = verdict(&u, &eval, Frame::simple("OK")).expect("refused");
        assert!(
            crate::apply::frame_text(&e).starts_with("NOPERM mu-sidecar runs replicated scripts")
        );
        let ro = Request::new(["EVAL_RO", "return 1", "0"]);
        assert_eq!(verdict(&u, &ro, Frame::simple("OK")), None);
        // Unknown command and wrong arity: left to the sidecar's own answer.
        let unknown = Request::new(["NOSUCH"]);
        assert_eq!(
            verdict(&u, &unknown, Frame::error("ERR Command 'nosuch' not found")),
            None
        );
        let short = Request::new(["SET", "k"]);
        assert_eq!(verdict(&u, &short, Frame::error("ERR wrong number")), None);
        // Any other error: the check failed, so the request is refused.
        let e = verdict(&u, &set, Frame::error("NOPERM no acl|dryrun")).expect("refused");
        assert!(crate::apply::frame_text(&e).contains("cannot check the permissions of user 'app'"));
    }

    #[test]
    fn connection_commands_are_not_checked() {
        for r in [
            Request::new(["AUTH", "u", "p"]),
            Request::new(["hello", "3"]),
            Request::new(["RESET"]),
            Request::new(["QUIT"]),
        ] {
            assert!(unchecked(&r));
        }
        assert!(!unchecked(&Request::new(["ACL", "SETUSER", "x"])));
        let u = Bytes::from_static(b"x");
        let v = refuse_all(
            &u,
            &[Request::new(["AUTH", "p"]), Request::new(["GET", "k"])],
            "down",
        );
        assert!(v[0].is_none() && v[1].is_some());
    }
}
