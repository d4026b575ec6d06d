//! Turning committed Redis entries into backend requests, on every replica.
//!
//! **Runs of plain SETs.** A backend spends most of a small pipelined
//! write on the command around it (lookup, checks, statistics, the reply),
//! not on the key. [`RedisApplier::apply_joining`] lets consecutive
//! entries that are each one plain `SET key value` in the same database
//! (no options, no transaction) join a run that goes to the backend as one
//! `MSET`, which sets the same keys to the same values in the same order
//! and, like `SET`, drops their TTLs and overwrites any type. `MSET` is
//! atomic and all-or-nothing: its one reply (`+OK`, or an error such as
//! `-OOM` before anything changed) is the reply of every joined entry. A
//! run of one goes as the `SET` it was. What differs on the backend:
//! `INFO commandstats`, `MONITOR` and the slow log count `MSET` calls,
//! and a backend user whose ACL allows `SET` but not `MSET` refuses the
//! run (such a user needs `+mset`, or no joining). A Redis Cluster
//! backend refuses multi-slot `MSET`: join only for a standalone server.

//!
//! **Protocol.** An entry from a RESP3 client runs on a RESP3 connection
//! (a `HELLO 3` first when the connection is in RESP2, and `HELLO 2` back
//! for the next RESP2 entry), so its reply has the types the client's own
//! connection would give it: doubles, maps, sets, nested nulls, also
//! inside a transaction's `EXEC` reply. A run of plain SETs answers `+OK`
//! in either protocol and goes on whichever the connection speaks.

use bytes::{Bytes, BytesMut};

use super::WatchTracker;
use crate::entry::RedisEntry;
use crate::resp::{encode_pairs, encode_request};

/// What applying one entry sends and which reply is the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyPlan {
    /// The bytes appended to the output produce `replies` replies; the
    /// client's answer is the one at `client_reply` (0-based); the others
    /// (`HELLO`, `SELECT`, `MULTI`, `+QUEUED`) are checked for errors and
    /// dropped.
    Send {
        /// Number of replies the backend will send.
        replies: usize,
        /// Index of the reply that answers the client.
        client_reply: usize,
    },
    /// A WATCH guard fired: nothing is sent; answer the client with a null
    /// array (`*-1`), as Redis does for an aborted EXEC.
    Aborted,
}

/// What [`RedisApplier::apply_joining`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The entry joined the open run of plain SETs: nothing is sent for
    /// it yet; its reply is the run's, read when the run is sent (a later
    /// step's `before`, or [`RedisApplier::finish_run`]).
    Joined {
        /// The run sent before a new one began with this entry (another
        /// database, or the last run was full).
        before: Option<Run>,
    },
    /// The entry was sent as [`RedisApplier::apply`] sends it, after the
    /// run that was open (`before`), whose replies come first.
    Plan {
        /// The run sent before the entry, if one was open.
        before: Option<Run>,
        /// The entry's own requests.
        plan: ApplyPlan,
    },
}

/// A run of joined entries as sent: `replies` replies (a `SELECT` when
/// the run's database is not the connection's, then the `MSET` or `SET`),
/// the one at `client_reply` answering each of the run's `members`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Number of replies the backend will send.
    pub replies: usize,
    /// Index of the reply that answers every member.
    pub client_reply: usize,
    /// Number of entries that joined the run.
    pub members: usize,
}

/// Most entries in one run (one `MSET` of this many keys, which the
/// backend executes without serving anyone else).
pub const RUN_MAX: usize = 512;

/// Applies Redis entries in log order over one backend connection,
/// tracking its selected database and the WATCH state.
#[derive(Debug, Default)]
pub struct RedisApplier {
    /// The connection's database; `None` when unknown (start, or after a
    /// transaction that contained SELECT).
    db: Option<u32>,
    /// The connection speaks RESP3 (a new one speaks RESP2).
    resp3: bool,
    tracker: WatchTracker,
    /// The open run of plain SETs: its database and its keys and values.
    run_db: u32,
    run: Vec<(Bytes, Bytes)>,
}

/// The key and value of a plain `SET key value`, the only form that joins.
fn plain_set(entry: &RedisEntry) -> Option<(&Bytes, &Bytes)> {
    if entry.transaction || entry.commands.len() != 1 {
        return None;
    }
    match &entry.commands[0][..] {
        [name, key, value] if name.eq_ignore_ascii_case(b"set") => Some((key, value)),
        _ => None,
    }
}

impl RedisApplier {
    /// An applier whose WATCH tracker has `watch_buckets` buckets.
    pub fn new(watch_buckets: usize) -> Self {
        Self {
            db: None,
            resp3: false,
            tracker: WatchTracker::new(watch_buckets),
            run_db: 0,
            run: Vec::new(),
        }
    }

    /// Forgets the connection's selected database and protocol: call after
    /// reconnecting (the WATCH history is kept, it belongs to the log, not
    /// the connection).
    ///
    /// A run still open is dropped with the connection's state: call
    /// [`RedisApplier::finish_run`] before, for entries that must be sent.
    pub fn forget_connection(&mut self) {
        self.db = None;
        self.resp3 = false;
        self.run.clear();
    }

    /// The WATCH history, for a replica that continues from this point
    /// after a state transfer.
    pub fn watch_state(&self) -> Vec<u8> {
        self.tracker.to_bytes()
    }

    /// Continues from a donor's [`RedisApplier::watch_state`]; the
    /// connection's database is forgotten.
    pub fn restore_watch_state(&mut self, state: &[u8]) -> Result<(), String> {
        self.tracker =
            WatchTracker::from_bytes(state).ok_or("the donor's WATCH history does not decode")?;
        self.db = None;
        Ok(())
    }

    /// As [`RedisApplier::apply`], but a plain `SET key value` joins a run
    /// of them that goes to the backend as one `MSET` (module docs). The
    /// run is sent when an entry that cannot join it comes, when it holds
    /// [`RUN_MAX`] entries, or by [`RedisApplier::finish_run`], which the
    /// caller must call before it waits for the replies of what it sent.
    pub fn apply_joining(&mut self, index: u64, entry: &RedisEntry, out: &mut BytesMut) -> Step {
        if let Some((key, value)) = plain_set(entry) {
            let before =
                if !self.run.is_empty() && (self.run_db != entry.db || self.run.len() == RUN_MAX) {
                    self.finish_run(out)
                } else {
                    None
                };
            self.tracker.record(index, entry);
            self.run_db = entry.db;
            self.run.push((key.clone(), value.clone()));
            return Step::Joined { before };
        }
        let before = self.finish_run(out);
        Step::Plan {
            before,
            plan: self.apply(index, entry, out),
        }
    }

    /// Makes `db` the connection's database, sending a `SELECT` when it is
    /// not; returns the replies that adds (0 or 1).
    fn select(&mut self, db: u32, out: &mut BytesMut) -> usize {
        if self.db == Some(db) {
            return 0;
        }
        encode_request(
            &[Bytes::from_static(b"SELECT"), Bytes::from(db.to_string())],
            out,
        );
        self.db = Some(db);
        1
    }

    /// Makes the connection speak RESP3 (`resp3`) or RESP2, sending a
    /// `HELLO` when it does not; returns the replies that adds (0 or 1).
    fn protocol(&mut self, resp3: bool, out: &mut BytesMut) -> usize {
        if self.resp3 == resp3 {
            return 0;
        }
        let version: &[u8] = if resp3 { b"3" } else { b"2" };
        encode_request(&[&b"HELLO"[..], version], out);
        self.resp3 = resp3;
        1
    }

    /// Sends the open run, if any, and says what it reads back.
    pub fn finish_run(&mut self, out: &mut BytesMut) -> Option<Run> {
        if self.run.is_empty() {
            return None;
        }
        let replies = self.select(self.run_db, out);
        let name: &[u8] = if self.run.len() == 1 { b"SET" } else { b"MSET" };
        encode_pairs(name, &self.run, out);
        let members = self.run.len();
        self.run.clear();
        Some(Run {
            replies: replies + 1,
            client_reply: replies,
            members,
        })
    }

    /// Appends the backend requests for the entry at log `index` to `out`.
    /// Must be called for every committed Redis entry, in log order, with
    /// no run open (after [`RedisApplier::finish_run`]).
    pub fn apply(&mut self, index: u64, entry: &RedisEntry, out: &mut BytesMut) -> ApplyPlan {
        debug_assert!(self.run.is_empty(), "apply with a run of SETs open");
        if entry.transaction && self.tracker.conflicts(&entry.guards) {
            return ApplyPlan::Aborted;
        }
        self.tracker.record(index, entry);
        let mut replies = self.protocol(entry.resp3, out);
        replies += self.select(entry.db, out);
        if entry.transaction {
            encode_request(&[&b"MULTI"[..]], out);
            replies += 1;
        }
        for cmd in &entry.commands {
            encode_request(cmd, out);
            replies += 1;
            if cmd
                .first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"select"))
            {
                self.db = None;
            }
        }
        if entry.transaction {
            encode_request(&[&b"EXEC"[..]], out);
            replies += 1;
        }
        ApplyPlan::Send {
            replies,
            client_reply: replies - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::RequestDecoder;

    fn entry(db: u32, transaction: bool, lines: &[&str]) -> RedisEntry {
        RedisEntry {
            db,
            transaction,
            resp3: false,
            guards: Vec::new(),
            commands: lines
                .iter()
                .map(|l| l.split(' ').map(|a| Bytes::from(a.to_string())).collect())
                .collect(),
        }
    }

    fn sent(out: &mut BytesMut) -> Vec<String> {
        let mut dec = RequestDecoder::default();
        let mut cmds = Vec::new();
        while let Some(r) = dec.decode(out).unwrap() {
            let words: Vec<String> = r
                .args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            cmds.push(words.join(" "));
        }
        assert!(out.is_empty());
        cmds
    }

    #[test]
    fn plain_sets_join_one_mset_and_other_writes_end_the_run() {
        let mut a = RedisApplier::default();
        let mut out = BytesMut::new();
        let j = |a: &mut RedisApplier, i, e: &RedisEntry, out: &mut BytesMut| {
            a.apply_joining(i, e, out)
        };
        assert_eq!(
            j(&mut a, 1, &entry(0, false, &["SET a 1"]), &mut out),
            Step::Joined { before: None }
        );
        assert_eq!(
            j(&mut a, 2, &entry(0, false, &["set b 2"]), &mut out),
            Step::Joined { before: None }
        );
        assert!(out.is_empty(), "nothing is sent while the run is open");
        let step = j(&mut a, 3, &entry(0, false, &["SET c 3 EX 5"]), &mut out);
        assert_eq!(
            step,
            Step::Plan {
                before: Some(Run {
                    replies: 2,
                    client_reply: 1,
                    members: 2
                }),
                plan: ApplyPlan::Send {
                    replies: 1,
                    client_reply: 0
                },
            }
        );
        assert_eq!(sent(&mut out), ["SELECT 0", "MSET a 1 b 2", "SET c 3 EX 5"]);
        // A run of one goes as the SET it was; another database ends a run
        // and starts the next.
        j(&mut a, 4, &entry(0, false, &["SET d 4"]), &mut out);
        let step = j(&mut a, 5, &entry(2, false, &["SET e 5"]), &mut out);
        assert_eq!(
            step,
            Step::Joined {
                before: Some(Run {
                    replies: 1,
                    client_reply: 0,
                    members: 1
                })
            }
        );
        assert_eq!(
            a.finish_run(&mut out),
            Some(Run {
                replies: 2,
                client_reply: 1,
                members: 1
            })
        );
        assert_eq!(a.finish_run(&mut out), None);
        assert_eq!(sent(&mut out), ["SET d 4", "SELECT 2", "SET e 5"]);
        // Transactions and several commands do not join.
        j(&mut a, 6, &entry(2, false, &["SET f 6"]), &mut out);
        let step = j(&mut a, 7, &entry(2, true, &["SET g 7"]), &mut out);
        assert!(matches!(step, Step::Plan { before: Some(r), .. } if r.members == 1));
        let step = j(
            &mut a,
            8,
            &entry(2, false, &["SET h 8", "SET i 9"]),
            &mut out,
        );
        assert_eq!(
            step,
            Step::Plan {
                before: None,
                plan: ApplyPlan::Send {
                    replies: 2,
                    client_reply: 1
                }
            }
        );
        assert_eq!(
            sent(&mut out),
            ["SET f 6", "MULTI", "SET g 7", "EXEC", "SET h 8", "SET i 9"]
        );
    }

    #[test]
    fn a_full_run_is_sent_and_the_next_set_starts_another() {
        let mut a = RedisApplier::default();
        let mut out = BytesMut::new();
        for i in 0..RUN_MAX as u64 {
            let e = entry(0, false, &[&format!("SET k{i} v")]);
            assert_eq!(
                a.apply_joining(i + 1, &e, &mut out),
                Step::Joined { before: None }
            );
        }
        let e = entry(0, false, &["SET last v"]);
        let Step::Joined { before: Some(run) } = a.apply_joining(9999, &e, &mut out) else {
            panic!("a full run must be sent")
        };
        assert_eq!(run.members, RUN_MAX);
        let cmds = sent(&mut out);
        assert_eq!(cmds.len(), 2);
        assert!(cmds[1].starts_with("MSET k0 v k1 v"));
        assert_eq!(cmds[1].split(' ').count(), 1 + 2 * RUN_MAX);
        assert_eq!(a.finish_run(&mut out).map(|r| r.members), Some(1));
    }

    #[test]
    fn resp3_entries_run_on_a_resp3_connection() {
        let mut a = RedisApplier::default();
        let mut out = BytesMut::new();
        let resp3 = |db, tx, lines: &[&str]| RedisEntry {
            resp3: true,
            ..entry(db, tx, lines)
        };
        let send = |replies, client_reply| ApplyPlan::Send {
            replies,
            client_reply,
        };
        // HELLO 3, SELECT, the command: the client's reply is the last.
        assert_eq!(
            a.apply(1, &resp3(0, false, &["ZINCRBY z 1 m"]), &mut out),
            send(3, 2)
        );
        assert_eq!(
            a.apply(2, &resp3(0, true, &["HGETALL h"]), &mut out),
            send(3, 2)
        );
        // Plain SETs answer +OK in either protocol: no switch for the run.
        a.apply_joining(3, &entry(0, false, &["SET k v"]), &mut out);
        a.apply_joining(4, &resp3(0, false, &["SET k2 v"]), &mut out);
        a.finish_run(&mut out);
        assert_eq!(
            a.apply(5, &entry(0, false, &["INCR n"]), &mut out),
            send(2, 1)
        );
        assert_eq!(
            sent(&mut out),
            [
                "HELLO 3",
                "SELECT 0",
                "ZINCRBY z 1 m",
                "MULTI",
                "HGETALL h",
                "EXEC",
                "MSET k v k2 v",
                "HELLO 2",
                "INCR n"
            ]
        );
        // A new connection speaks RESP2.
        a.forget_connection();
        assert_eq!(
            a.apply(6, &entry(1, false, &["INCR n"]), &mut out),
            send(2, 1)
        );
        assert_eq!(sent(&mut out), ["SELECT 1", "INCR n"]);
    }

    #[test]
    fn joined_sets_count_for_watch() {
        let mut a = RedisApplier::default();
        let mut out = BytesMut::new();
        let guard = crate::entry::WatchGuard {
            db: 0,
            key: Bytes::from_static(b"w"),
            seen_index: 0,
        };
        a.apply_joining(1, &entry(0, false, &["SET w 1"]), &mut out);
        let mut tx = entry(0, true, &["SET x 1"]);
        tx.guards.push(guard);
        let Step::Plan { before, plan } = a.apply_joining(2, &tx, &mut out) else {
            panic!("a transaction does not join")
        };
        assert_eq!(before.map(|r| r.members), Some(1));
        assert_eq!(plan, ApplyPlan::Aborted);
    }
}
