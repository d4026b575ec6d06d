//! The writer's and reader's side of the `shm` fabric: mapping a peer's
//! objects, following its log generations, and the write and read paths
//! (see the parent module for the protocol and why it fences).

use super::map::{monotonic_ns, Mapping};
use super::{
    pieces, Place, ShmConfig, ShmEndpoint, FOLLOW_LIMIT, MAGIC_CTL, MAGIC_LOG, PAGE,
    PERM_HOLDER_MASK, W_ABANDONED, W_ALIVE, W_BUSY, W_GEN, W_LEASE, W_MAGIC, W_PERM,
};
use crate::error::OpError;
use crate::fabric::Memory;
use crate::log::layout::LOG;
use crate::types::NodeId;
use std::sync::atomic::{fence, Ordering};

/// A mapped view of a peer's objects.
#[derive(Debug)]
pub(super) struct PeerView {
    ctl: Mapping,
    log: Option<(u64, Mapping)>,
}

impl ShmEndpoint {
    pub(super) fn remote_write(
        &mut self,
        peer: NodeId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), OpError> {
        let me = u64::from(self.config.id.0) + 1;
        self.buf.resize(len as usize, 0);
        self.region.read(local, &mut self.buf);
        let layout = self.region.layout;
        let touches_log = layout.touches_log(remote, len);
        let view = view(&self.config, peer, &mut self.peers[peer.idx()])?;
        if touches_log {
            current_log(&self.config, peer, view)?;
        }
        let log = view.log.as_ref().map(|(_, m)| m).filter(|_| touches_log);
        let mut perm = 0;
        if let Some(log) = log {
            log.word(W_BUSY).fetch_add(1, Ordering::SeqCst);
            perm = log.word(W_PERM).load(Ordering::SeqCst);
            if perm & PERM_HOLDER_MASK != me || log.word(W_ABANDONED).load(Ordering::SeqCst) != 0 {
                log.word(W_BUSY).fetch_sub(1, Ordering::SeqCst);
                return Err(OpError::Permission);
            }
        }
        for (place, at, from, n) in pieces(&layout, remote, len) {
            let data = &self.buf[from..from + n];
            match (place, log) {
                (Place::Ctl, _) => view.ctl.write(at, data),
                (Place::Log, Some(log)) => log.write(at, data),
                (Place::Log, None) => return Err(OpError::Permission),
            }
        }
        if let Some(log) = log {
            // Pairs with the owner's fence after it changes `perm`: either
            // we see the change, or the owner sees every byte we stored.
            fence(Ordering::SeqCst);
            let kept = log.word(W_PERM).load(Ordering::SeqCst) == perm;
            log.word(W_BUSY).fetch_sub(1, Ordering::SeqCst);
            if !kept {
                return Err(OpError::Permission);
            }
        }
        Ok(())
    }

    pub(super) fn remote_read(
        &mut self,
        peer: NodeId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Result<(), OpError> {
        let layout = self.region.layout;
        let touches_log = layout.touches_log(remote, len);
        self.buf.resize(len as usize, 0);
        let mut buf = std::mem::take(&mut self.buf);
        let (config, slot) = (&self.config, &mut self.peers[peer.idx()]);
        let result = (|| {
            for _ in 0..FOLLOW_LIMIT * 1024 {
                let view = view(config, peer, slot)?;
                if touches_log {
                    current_log(config, peer, view)?;
                }
                let log = view.log.as_ref().map(|(_, m)| m);
                for (place, at, from, n) in pieces(&layout, remote, len) {
                    match (place, log) {
                        (Place::Ctl, _) => view.ctl.read(at, &mut buf[from..from + n]),
                        (Place::Log, Some(log)) => log.read(at, &mut buf[from..from + n]),
                        (Place::Log, None) => return Err(OpError::Unreachable),
                    }
                }
                // Bytes read from an abandoned object may include a stalled
                // writer's late stores: read the new generation instead.
                fence(Ordering::SeqCst);
                match log.filter(|_| touches_log) {
                    Some(log) if log.word(W_ABANDONED).load(Ordering::SeqCst) != 0 => {
                        std::hint::spin_loop();
                    }
                    _ => return Ok(()),
                }
            }
            Err(OpError::Unreachable)
        })();
        if result.is_ok() {
            self.region.write(local, &buf);
        }
        self.buf = buf;
        result
    }
}

/// The view of `peer` (in `slot`) if the peer is alive, mapping its
/// control object on first use.
fn view<'a>(
    config: &ShmConfig,
    peer: NodeId,
    slot: &'a mut Option<PeerView>,
) -> Result<&'a mut PeerView, OpError> {
    if slot.is_none() {
        let ctl = Mapping::open(&config.ctl_path(peer)).map_err(|_| OpError::Unreachable)?;
        if ctl.len() < PAGE + config.layout.region_len() as usize
            || ctl.word(W_MAGIC).load(Ordering::Acquire) != MAGIC_CTL
        {
            return Err(OpError::Unreachable);
        }
        *slot = Some(PeerView { ctl, log: None });
    }
    let v = slot.as_ref().expect("mapped above");
    let lease = v.ctl.word(W_LEASE).load(Ordering::Acquire);
    let alive = v.ctl.word(W_ALIVE).load(Ordering::Acquire) == 1;
    let timeout = config.lease_timeout.as_nanos() as u64;
    if !alive || monotonic_ns().saturating_sub(lease) > timeout {
        // Forget the view: a restarted node has a new control object.
        *slot = None;
        return Err(OpError::Unreachable);
    }
    Ok(slot.as_mut().expect("kept"))
}

/// Makes sure `view.log` maps the peer's current log generation.
fn current_log(config: &ShmConfig, peer: NodeId, view: &mut PeerView) -> Result<(), OpError> {
    for _ in 0..FOLLOW_LIMIT {
        let gen = view.ctl.word(W_GEN).load(Ordering::Acquire);
        if view.log.as_ref().is_some_and(|(g, _)| *g == gen) {
            return Ok(());
        }
        view.log = None;
        // The owner may have moved on and unlinked this generation already:
        // read the generation again and follow.
        let want = PAGE + (config.layout.log_end() - LOG) as usize;
        if let Ok(m) = Mapping::open(&config.log_path(peer, gen)) {
            // A log of another layout (a misconfigured peer) is unusable.
            if m.len() >= want && m.word(W_MAGIC).load(Ordering::Acquire) == MAGIC_LOG {
                view.log = Some((gen, m));
            }
        }
    }
    Err(OpError::Unreachable)
}
