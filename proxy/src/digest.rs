//! Continuous divergence detection.
//!
//! Every node applies the same entries in the same order, so the backend
//! answers each one the same way everywhere. The applier folds each
//! entry's reply into a digest per *range* of log indices (`--digest-every`
//! entries: range `r` holds indices `r*K+1 ..= (r+1)*K`). A range is
//! *complete* on a node when it applied every entry of it itself (not
//! through a state transfer). Nodes ask each other for their recent
//! complete ranges over the peer port (mode byte `D`) every
//! `--digest-interval-ms`, and compare: a range whose digests differ means
//! some backend answered differently, so the data differ (a write behind
//! the sidecar's back, a lost or doubled write, a bug).
//!
//! A difference is counted, logged with the first differing range and the
//! nodes involved, and when this node is the odd one out (a majority of
//! the nodes that reported the range agree, without it) the `diverged`
//! gauge is set; with `--on-divergence fence` the node then also stops
//! serving reads and reports not ready, and with `resync` it also replaces
//! its data with a peer's copy at once. A state transfer replaces the
//! node's data and clears the mark.
//!
//! Only what every replica's backend answers identically is folded: the
//! client's reply of each Redis entry (RESP encoding); for memcached, the
//! reply without the parts that are per server or per reader (CAS values,
//! remaining TTLs, hit and access flags of meta replies).
//!
//! Wire format (after the handshake and the mode byte):
//! ```text
//! request:  u64 first range wanted
//! response: u32 count, count × (u64 range, u64 digest)
//! ```

use crate::pending::Applied;
use crate::state::Shared;
use bytes::BytesMut;
use mu::NodeId;
use mu_protocols::memcached::{McReply, MetaStatus};
use mu_protocols::resp::Frame;
use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Complete ranges kept for peers to ask about.
const KEEP: usize = 1024;
/// Most ranges sent in one answer.
const MAX_ANSWER: u32 = 4096;

/// What this node knows about its digests and its peers'.
#[derive(Debug)]
pub struct Digests {
    every: u64,
    state: Mutex<Folding>,
    diverged: AtomicBool,
    /// The first range found to differ on this node, for messages.
    first_bad: AtomicU64,
}

#[derive(Debug, Default)]
struct Folding {
    /// Last index folded.
    last: u64,
    /// The open range: number, digest so far, and whether every entry of
    /// it so far was folded here.
    range: u64,
    digest: u64,
    whole: bool,
    /// Complete ranges: number → digest.
    done: BTreeMap<u64, u64>,
    /// (range, peer) pairs already reported.
    reported: HashSet<(u64, u8)>,
    /// Scratch for a reply's canonical bytes (no allocation per fold).
    buf: BytesMut,
}

impl Digests {
    /// Digests over ranges of `every` entries.
    pub fn new(every: u64) -> Digests {
        Digests {
            every: every.max(1),
            state: Mutex::new(Folding {
                whole: true,
                ..Folding::default()
            }),
            diverged: AtomicBool::new(false),
            first_bad: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Folding> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range_of(&self, index: u64) -> u64 {
        index.saturating_sub(1) / self.every
    }

    /// Folds the reply of one payload of the entry at `index` (an entry
    /// may hold several; they come in order). Entries come in log order.
    pub fn fold(&self, index: u64, applied: Option<&Applied>) {
        self.fold_all([(index, applied, &Compare::Whole)]);
    }

    /// [`Digests::fold`] for several payloads in order, under one lock,
    /// each with what of its reply healthy nodes give alike.
    pub fn fold_all<'a>(
        &self,
        applied: impl IntoIterator<Item = (u64, Option<&'a Applied>, &'a Compare)>,
    ) {
        let mut s = self.lock();
        for (index, applied, compare) in applied {
            self.fold_locked(&mut s, index, applied, compare);
        }
    }

    fn fold_locked(
        &self,
        s: &mut Folding,
        index: u64,
        applied: Option<&Applied>,
        compare: &Compare,
    ) {
        let mut buf = std::mem::take(&mut s.buf);
        buf.clear();
        compare.canonical(applied, &mut buf);
        let r = self.range_of(index);
        if r != s.range {
            // Close the open range: complete when every entry of it, up to
            // its last, was folded here.
            if s.whole && s.last == (s.range + 1) * self.every {
                let (range, digest) = (s.range, s.digest);
                s.done.insert(range, digest);
                while s.done.len() > KEEP {
                    s.done.pop_first();
                }
            }
            s.whole = index == r * self.every + 1 && index == s.last + 1;
            s.range = r;
            s.digest = 0;
        } else if index != s.last && index != s.last + 1 {
            // A gap: the entries in between came through a transfer.
            s.whole = false;
        }
        s.digest = xxh3_64_with_seed(&buf, s.digest ^ index);
        s.last = index;
        s.buf = buf;
    }

    /// Entries up to `index` are in the backend through a state transfer:
    /// their replies are unknown here, and the data is a fresh copy.
    pub fn transferred(&self, index: u64) {
        let mut s = self.lock();
        s.last = s.last.max(index);
        s.whole = false;
        // The ranges digested so far describe the data the copy replaced.
        let keep = s.done.split_off(&(self.range_of(index) + 1));
        s.done = keep;
        s.reported.clear();
        self.diverged.store(false, Ordering::Release);
    }

    /// Complete ranges from `from` on, oldest first.
    pub fn complete_from(&self, from: u64, max: usize) -> Vec<(u64, u64)> {
        self.lock()
            .done
            .range(from..)
            .take(max)
            .map(|(&r, &d)| (r, d))
            .collect()
    }

    /// Whether this node was found to disagree with the majority.
    pub fn diverged(&self) -> bool {
        self.diverged.load(Ordering::Acquire)
    }

    /// A message for a node found diverged.
    pub fn diverged_detail(&self, every: u64) -> String {
        let r = self.first_bad.load(Ordering::Acquire);
        format!(
            "this node's backend answered differently from the majority for log entries \
             {}..={} (its data differ from the group's); a state transfer replaces it",
            r * every + 1,
            (r + 1) * every
        )
    }

    /// Entries per range.
    pub fn every(&self) -> u64 {
        self.every
    }
}

/// What of an entry's reply every healthy node gives alike, so the
/// digests compare it. Where it differs (its place in the range is
/// digested, not the reply), the nodes' servers answer by their own hash
/// seeds, clocks, random picks or subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The whole reply.
    Whole,
    /// None of it.
    Nothing,
    /// A transaction's: the results of `EXEC` whose step is `true` here.
    /// An `EXEC` reply that is not one result per step (a transaction
    /// aborted by `WATCH` or refused) is compared whole.
    Steps(Box<[bool]>),
}

impl Compare {
    fn canonical(&self, applied: Option<&Applied>, out: &mut BytesMut) {
        match (self, applied) {
            (Compare::Whole, _) => canonical(applied, out),
            (Compare::Nothing, _) => out.extend_from_slice(b"U"),
            (Compare::Steps(steps), Some(Applied::Redis(Frame::Array(results))))
                if results.len() == steps.len() =>
            {
                out.extend_from_slice(b"T");
                for (result, &same) in results.iter().zip(steps.iter()) {
                    if same {
                        result.encode(out);
                    } else {
                        out.extend_from_slice(b"U");
                    }
                }
            }
            (Compare::Steps(_), _) => canonical(applied, out),
        }
    }
}

/// The bytes of a reply that every replica's backend gives alike.
fn canonical(applied: Option<&Applied>, out: &mut BytesMut) {
    match applied {
        None => out.extend_from_slice(b"-"),
        Some(Applied::Barrier) => out.extend_from_slice(b"B"),
        Some(Applied::NotApplied(_)) => out.extend_from_slice(b"X"),
        Some(Applied::Redis(f)) => {
            out.extend_from_slice(b"R");
            f.encode(out);
        }
        Some(Applied::Memcached(None)) => out.extend_from_slice(b"M"),
        Some(Applied::Memcached(Some(r))) => {
            out.extend_from_slice(b"M");
            match r {
                McReply::Meta(m) => {
                    out.extend_from_slice(meta_name(m.status));
                    if let Some(d) = &m.data {
                        out.extend_from_slice(d);
                    }
                }
                McReply::Values(values) => {
                    for v in values {
                        let mut v = v.clone();
                        v.cas = None;
                        McReply::Values(vec![v]).encode(out);
                    }
                }
                other => other.encode(out),
            }
        }
    }
}

fn meta_name(s: MetaStatus) -> &'static [u8] {
    match s {
        MetaStatus::Hd => b"HD",
        MetaStatus::Va => b"VA",
        MetaStatus::En => b"EN",
        MetaStatus::Nf => b"NF",
        MetaStatus::Ns => b"NS",
        MetaStatus::Ex => b"EX",
        MetaStatus::Mn => b"MN",
        MetaStatus::Me => b"ME",
    }
}

/// Answers one peer's request for digests (after the mode byte).
pub async fn serve(shared: Arc<Shared>, mut sock: TcpStream) -> io::Result<()> {
    loop {
        let from = match sock.read_u64_le().await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let list = shared.digests.complete_from(from, MAX_ANSWER as usize);
        let mut out = Vec::with_capacity(4 + list.len() * 16);
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for (r, d) in list {
            out.extend_from_slice(&r.to_le_bytes());
            out.extend_from_slice(&d.to_le_bytes());
        }
        sock.write_all(&out).await?;
    }
}

async fn ask(sock: &mut TcpStream, from: u64) -> io::Result<Vec<(u64, u64)>> {
    sock.write_all(&from.to_le_bytes()).await?;
    let n = sock.read_u32_le().await?;
    if n > MAX_ANSWER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a peer sent {n} digests"),
        ));
    }
    let mut list = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let r = sock.read_u64_le().await?;
        let d = sock.read_u64_le().await?;
        list.push((r, d));
    }
    Ok(list)
}

/// Compares this node's digests with its peers' every `interval`, for as
/// long as the process runs.
pub async fn exchange(shared: Arc<Shared>, interval: Duration) {
    let me = NodeId(shared.opts.id - 1);
    let peers: Vec<NodeId> = (0..shared.opts.mu.nodes)
        .map(NodeId)
        .filter(|&p| p != me)
        .collect();
    let mut links: Vec<Option<TcpStream>> = peers.iter().map(|_| None).collect();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mine = shared.digests.complete_from(0, KEEP);
        let Some(&(from, _)) = mine.first() else {
            continue;
        };
        // Each peer's digests for the ranges this node holds.
        let mut theirs: Vec<(NodeId, BTreeMap<u64, u64>)> = Vec::new();
        for (k, &p) in peers.iter().enumerate() {
            if links[k].is_none() {
                match shared.forward.open(p, crate::forward::MODE_DIGEST).await {
                    Ok(s) => links[k] = Some(s),
                    Err(e) => {
                        tracing::debug!(peer = p.0 + 1, error = %e, "digest exchange: peer unreachable");
                        continue;
                    }
                }
            }
            let sock = links[k].as_mut().expect("connected above");
            match tokio::time::timeout(Duration::from_secs(2), ask(sock, from)).await {
                Ok(Ok(list)) => theirs.push((p, list.into_iter().collect())),
                _ => links[k] = None,
            }
        }
        compare(&shared, &mine, &theirs);
    }
}

/// Compares this node's complete ranges with the peers' and reports what
/// differs.
fn compare(shared: &Shared, mine: &[(u64, u64)], theirs: &[(NodeId, BTreeMap<u64, u64>)]) {
    let d = &shared.digests;
    let m = &shared.metrics;
    let me = shared.opts.id;
    let n = usize::from(shared.opts.mu.nodes);
    for &(range, mine_d) in mine {
        let reports: Vec<(NodeId, u64)> = theirs
            .iter()
            .filter_map(|(p, l)| l.get(&range).map(|&x| (*p, x)))
            .collect();
        if reports.is_empty() {
            continue;
        }
        m.digest_ranges_checked.inc();
        let differing: Vec<NodeId> = reports
            .iter()
            .filter(|(_, x)| *x != mine_d)
            .map(|(p, _)| *p)
            .collect();
        if differing.is_empty() {
            continue;
        }
        // Odd one out: more than half the group reported this range and
        // agrees on a digest that is not this node's.
        let agree_without_me = reports
            .iter()
            .filter(|(_, x)| *x != mine_d)
            .filter(|(_, x)| reports.iter().filter(|(_, y)| y == x).count() > n / 2)
            .count()
            > 0;
        let mut s = d.lock();
        let new: Vec<NodeId> = differing
            .into_iter()
            .filter(|p| s.reported.insert((range, p.0)))
            .collect();
        drop(s);
        if new.is_empty() {
            continue;
        }
        m.divergence.inc_by(new.len() as u64);
        let (first, last) = (range * d.every() + 1, (range + 1) * d.every());
        let nodes: Vec<u8> = new.iter().map(|p| p.0 + 1).collect();
        if agree_without_me {
            if !d.diverged.swap(true, Ordering::AcqRel) {
                d.first_bad.store(range, Ordering::Release);
            }
            m.diverged.set(1);
            tracing::error!(entries = %format!("{first}..={last}"), node = me, others = ?nodes,
                action = ?shared.opts.on_divergence,
                "DIVERGENCE: this node's backend answered differently from the majority; \
                 its data differ from the group's");
        } else {
            tracing::error!(entries = %format!("{first}..={last}"), node = me, differing = ?nodes,
                "DIVERGENCE: other nodes' backends answered differently from this node's");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mu_protocols::resp::Frame;

    fn ok() -> Applied {
        Applied::Redis(Frame::Simple("OK".into()))
    }

    /// The digest of one range of `every` 1 holding `applied`.
    fn digest_of(applied: &Applied, compare: &Compare) -> u64 {
        let d = Digests::new(1);
        d.fold_all([(1, Some(applied), compare)]);
        d.fold(2, Some(&ok()));
        d.complete_from(0, 1)[0].1
    }

    #[test]
    fn a_transactions_steps_that_differ_are_left_out_and_the_rest_compared() {
        let exec = |read: &str, incr: i64| {
            Applied::Redis(Frame::Array(vec![Frame::bulk(read), Frame::Integer(incr)]))
        };
        let steps = Compare::Steps(vec![false, true].into());
        // Another read result: the same digest.
        assert_eq!(
            digest_of(&exec("a", 2), &steps),
            digest_of(&exec("b", 2), &steps)
        );
        // Another write result: another digest.
        assert_ne!(
            digest_of(&exec("a", 2), &steps),
            digest_of(&exec("a", 3), &steps)
        );
        // Compared whole, the read counts too.
        assert_ne!(
            digest_of(&exec("a", 2), &Compare::Whole),
            digest_of(&exec("b", 2), &Compare::Whole)
        );
        // Nothing compared: any reply digests alike.
        assert_eq!(
            digest_of(&exec("a", 2), &Compare::Nothing),
            digest_of(&ok(), &Compare::Nothing)
        );
        // A transaction WATCH aborted is compared whole.
        let aborted = Applied::Redis(Frame::NullArray);
        assert_eq!(
            digest_of(&aborted, &steps),
            digest_of(&aborted, &Compare::Whole)
        );
        assert_ne!(
            digest_of(&aborted, &steps),
            digest_of(&exec("a", 2), &steps)
        );
    }

    #[test]
    fn ranges_complete_only_when_every_entry_was_folded_here() {
        let d = Digests::new(4);
        for i in 1..=9 {
            d.fold(i, Some(&ok()));
        }
        let done = d.complete_from(0, 10);
        assert_eq!(done.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
        // Same replies, same digests; a different reply, another digest.
        let e = Digests::new(4);
        for i in 1..=9 {
            let a = if i == 6 {
                Applied::Redis(Frame::Integer(2))
            } else {
                ok()
            };
            e.fold(i, Some(&a));
        }
        let other = e.complete_from(0, 10);
        assert_eq!(done[0], other[0]);
        assert_ne!(done[1], other[1]);
        // A transfer leaves its ranges incomplete.
        let t = Digests::new(4);
        t.fold(1, Some(&ok()));
        t.transferred(6);
        for i in 7..=13 {
            t.fold(i, Some(&ok()));
        }
        let done = t.complete_from(0, 10);
        assert_eq!(done.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(done[0], d_range(2));
        // Ranges digested before a transfer described the replaced data.
        let r = Digests::new(4);
        for i in 1..=9 {
            r.fold(i, Some(&ok()));
        }
        assert_eq!(r.complete_from(0, 10).len(), 2);
        r.transferred(12);
        assert!(r.complete_from(0, 10).is_empty());
    }

    fn d_range(r: u64) -> (u64, u64) {
        let d = Digests::new(4);
        for i in 1..=(r + 1) * 4 + 1 {
            d.fold(i, Some(&ok()));
        }
        d.complete_from(r, 1)[0]
    }

    fn canon(applied: Option<&Applied>) -> BytesMut {
        let mut out = BytesMut::new();
        canonical(applied, &mut out);
        out
    }

    #[test]
    fn memcached_replies_drop_per_server_parts() {
        use bytes::Bytes;
        use mu_protocols::memcached::{MetaReply, Value};
        let meta = |tokens: &[&'static str]| {
            Applied::Memcached(Some(McReply::Meta(MetaReply {
                status: MetaStatus::Hd,
                tokens: tokens
                    .iter()
                    .map(|t| Bytes::from_static(t.as_bytes()))
                    .collect(),
                data: None,
            })))
        };
        assert_eq!(
            canon(Some(&meta(&["c12", "t30"]))),
            canon(Some(&meta(&["c99", "t29"])))
        );
        let value = |cas| {
            Applied::Memcached(Some(McReply::Values(vec![Value {
                key: Bytes::from_static(b"k"),
                flags: 1,
                data: Bytes::from_static(b"v"),
                cas: Some(cas),
            }])))
        };
        assert_eq!(canon(Some(&value(1))), canon(Some(&value(2))));
        assert_ne!(
            canon(Some(&Applied::Memcached(Some(McReply::Stored)))),
            canon(Some(&Applied::Memcached(Some(McReply::NotStored))))
        );
    }
}
