//! RDMA over libibverbs (feature `rdma`).
//!
//! [`verbs`] is this crate's own thin layer over `ibverbs-sys` 0.3 (the FFI
//! crate of the `ibverbs` family). The safe `ibverbs` 0.9 API offers only
//! two-sided SEND/RECV, fixes a queue pair's access flags at the handshake
//! and hides every raw handle, so it cannot do one-sided WRITE/READ or
//! Mu's permission switch; `ibverbs-sys` exposes the verbs themselves, and
//! `ibv_post_send`/`ibv_poll_cq` (static inline in `verbs.h`) are called
//! through the context's operation table.
//!
//! ## How Mu's fencing maps onto verbs
//! Remote access needs both the queue pair's access flags and the memory
//! region's. A replica registers its log area only in a *log* protection
//! domain, and each peer's log queue pair lives in that domain: granting
//! the log to a peer sets REMOTE_WRITE on that peer's queue pair
//! (`ibv_modify_qp` with `IBV_QP_ACCESS_FLAGS`, the pair stays in RTS) and
//! clears it on the previous holder's. The control area is registered in a
//! second domain with its own always-writable queue pairs, which cannot
//! reach the log memory at all. A write that arrives after a revocation
//! fails; on Soft-RoCE it completes with `IBV_WC_REM_INV_REQ_ERR` and both
//! queue pairs go to the error state, so every failed completion means
//! "permission lost" and regranting means a reset and a new handshake.

pub mod verbs;
