//! Running a core against a fabric.
//!
//! [`execute`] is the one place where a core's actions meet a fabric; the
//! production thread ([`replica`]) and the simulator both use it.

pub mod replica;

use crate::core::{Action, Core};
use crate::error::OpError;
use crate::fabric::{Completion, Fabric};

/// Executes every pending action of `core` on `fabric`, in order. A post the
/// fabric refuses is fed back to the core as a failed completion, so its
/// bookkeeping never waits for an operation that was never sent.
pub fn execute<F: Fabric>(core: &mut Core, fabric: &mut F) {
    // Allocates only when a post is refused, which is rare.
    let mut refused = Vec::new();
    loop {
        for action in core.actions() {
            let result = match action {
                Action::Write {
                    peer,
                    op,
                    local,
                    remote,
                    len,
                } => fabric
                    .post_write(peer, op, local, remote, len)
                    .map_err(|_| (peer, op)),
                Action::Read {
                    peer,
                    op,
                    remote,
                    local,
                    len,
                } => fabric
                    .post_read(peer, op, remote, local, len)
                    .map_err(|_| (peer, op)),
                Action::Grant {
                    peer,
                    revoke_others,
                } => {
                    // A grant that fails leaves the previous holder in place,
                    // which is safe: the candidate times out and asks again.
                    let _ = if revoke_others {
                        fabric.grant(peer)
                    } else {
                        fabric.grant_keeping_previous(peer)
                    };
                    Ok(())
                }
            };
            if let Err((peer, op)) = result {
                refused.push(Completion {
                    op,
                    peer,
                    result: Err(OpError::Unreachable),
                });
            }
        }
        if refused.is_empty() {
            return;
        }
        let now = core.now();
        for c in refused.drain(..) {
            core.on_completion(now, c, fabric.memory());
        }
    }
}
