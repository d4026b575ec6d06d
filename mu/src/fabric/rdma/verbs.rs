//! Thin RAII wrappers over libibverbs: device, protection domain,
//! completion queue, memory region over memory this crate owns, and RC
//! queue pairs with one-sided WRITE/READ and access-flag changes.
//!
//! ## Resource lifetimes
//! A [`Region`] is page-aligned memory allocated here and freed only when
//! the last [`MemoryRegion`] registered over it is gone. A [`QueuePair`]
//! holds the memory regions it may post from and its completion queue, so
//! neither can be deregistered or destroyed while the queue pair exists;
//! destroying the queue pair (on drop) flushes its outstanding work first.
//! Posting checks every local range against its registered region, so
//! [`QueuePair::post`] is safe to call.
//!
//! ## Thread safety
//! libibverbs objects may be used from several threads; the wrappers are
//! `Send` and `Sync`. Each completion queue should be polled by one thread.
//!
//! ## Errors
//! Every failing verb maps to [`VerbsError::Call`] naming the C function and
//! carrying `errno`; a failed queue pair transition names both states.

use ibverbs_sys as ffi;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ffi::CStr;
use std::io;
use std::ptr;
use std::sync::Arc;
use thiserror::Error;

/// The port every device here uses (Soft-RoCE and most NICs have one).
pub const PORT: u8 = 1;

/// What went wrong in a verb.
#[derive(Debug, Error)]
pub enum VerbsError {
    /// The named device does not exist.
    #[error(
        "no RDMA device named {name:?} (found {found:?}); create a Soft-RoCE device with \
         `rdma link add rxe0 type rxe netdev <interface>` or run under scripts/rdma-vm"
    )]
    NoDevice {
        /// The requested name.
        name: String,
        /// Devices that exist.
        found: Vec<String>,
    },
    /// A verb failed.
    #[error("{call} failed: {source}")]
    Call {
        /// The C function.
        call: &'static str,
        /// `errno` as an I/O error.
        #[source]
        source: io::Error,
    },
    /// A queue pair transition failed.
    #[error("queue pair transition {from} -> {to} failed: {source}")]
    Transition {
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
        /// `errno`.
        #[source]
        source: io::Error,
    },
    /// A local range lies outside its registered region.
    #[error("local range {offset}+{len} is outside the {size}-byte memory region")]
    OutOfRange {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
        /// Region size.
        size: u64,
    },
}

fn call(name: &'static str, rc: i32) -> Result<(), VerbsError> {
    if rc == 0 {
        Ok(())
    } else {
        // Verbs return either -1 with errno set, or the error number itself.
        let source = if rc > 0 {
            io::Error::from_raw_os_error(rc)
        } else {
            io::Error::last_os_error()
        };
        Err(VerbsError::Call { call: name, source })
    }
}

fn null_check<T>(name: &'static str, p: *mut T) -> Result<*mut T, VerbsError> {
    if p.is_null() {
        Err(VerbsError::Call {
            call: name,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(p)
    }
}

/// Access rights of a queue pair or memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(pub u32);

impl Access {
    /// Local write only: no remote access.
    pub const LOCAL: Access = Access(ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0);
    /// Remote reads allowed, remote writes refused.
    pub const READ: Access = Access(
        ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0,
    );
    /// Remote reads and writes allowed.
    pub const READ_WRITE: Access = Access(
        ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0,
    );
}

/// Names of the RDMA devices present.
pub fn devices() -> Vec<String> {
    let mut n = 0i32;
    // SAFETY: ibv_get_device_list writes the count and returns an array of
    // `n` device pointers (or null); it is freed below and the names are
    // copied before that.
    unsafe {
        let list = ffi::ibv_get_device_list(&mut n);
        if list.is_null() {
            return Vec::new();
        }
        let names = (0..n as usize)
            .map(|i| {
                CStr::from_ptr(ffi::ibv_get_device_name(*list.add(i)))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        ffi::ibv_free_device_list(list);
        names
    }
}

/// An open device.
#[derive(Debug)]
pub struct Context {
    raw: *mut ffi::ibv_context,
    name: String,
    gid_index: u8,
    gid: [u8; 16],
}

// SAFETY: a libibverbs context may be used from any thread.
unsafe impl Send for Context {}
// SAFETY: as above; the wrapper never mutates through `&self` itself.
unsafe impl Sync for Context {}

impl Context {
    /// Opens device `name` and reads the GID at `gid_index` of port 1
    /// (RoCE v2 over IPv4 is usually index 1).
    pub fn open(name: &str, gid_index: u8) -> Result<Arc<Context>, VerbsError> {
        let mut n = 0i32;
        // SAFETY: the device list is read while alive, the matching device is
        // opened before the list is freed (an open context stays valid), and
        // the GID is written into a properly sized local.
        unsafe {
            let list = ffi::ibv_get_device_list(&mut n);
            if list.is_null() {
                return Err(VerbsError::NoDevice {
                    name: name.into(),
                    found: Vec::new(),
                });
            }
            let mut found = Vec::new();
            let mut chosen = ptr::null_mut();
            for i in 0..n as usize {
                let d = *list.add(i);
                let dn = CStr::from_ptr(ffi::ibv_get_device_name(d))
                    .to_string_lossy()
                    .into_owned();
                if dn == name {
                    chosen = d;
                }
                found.push(dn);
            }
            if chosen.is_null() {
                ffi::ibv_free_device_list(list);
                return Err(VerbsError::NoDevice {
                    name: name.into(),
                    found,
                });
            }
            let raw = ffi::ibv_open_device(chosen);
            ffi::ibv_free_device_list(list);
            let raw = null_check("ibv_open_device", raw)?;
            let mut gid = ffi::ibv_gid::default();
            if let Err(e) = call(
                "ibv_query_gid",
                ffi::ibv_query_gid(raw, PORT, i32::from(gid_index), &mut gid),
            ) {
                ffi::ibv_close_device(raw);
                return Err(e);
            }
            Ok(Arc::new(Context {
                raw,
                name: name.into(),
                gid_index,
                gid: gid.raw,
            }))
        }
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The GID used for addressing.
    pub fn gid(&self) -> [u8; 16] {
        self.gid
    }

    /// The raw context.
    pub fn as_raw(&self) -> *mut ffi::ibv_context {
        self.raw
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object created from the context holds an Arc to it,
        // so none is left when the context is closed.
        let rc = unsafe { ffi::ibv_close_device(self.raw) };
        assert_eq!(rc, 0, "ibv_close_device refused to close {}", self.name);
    }
}

/// Page-aligned, zeroed memory owned by this crate, for registration.
#[derive(Debug)]
pub struct Region {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the memory is plain bytes accessed only through raw copies.
unsafe impl Send for Region {}
// SAFETY: as above: concurrent raw copies are what the NIC does too.
unsafe impl Sync for Region {}

impl Region {
    /// Allocates `len` zeroed bytes aligned to 4 KiB.
    pub fn new(len: usize) -> Arc<Region> {
        let layout = Layout::from_size_align(len.max(1), 4096).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        Arc::new(Region { ptr, layout })
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.layout.size() as u64
    }

    /// Whether the region is empty (never: at least one byte is allocated).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), VerbsError> {
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(VerbsError::OutOfRange {
                offset,
                len,
                size: self.len(),
            });
        }
        Ok(())
    }

    /// Copies bytes out. The NIC may be writing concurrently; callers
    /// verify what they read (entries carry checksums).
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        self.check(offset, buf.len() as u64)
            .expect("read inside the region");
        // SAFETY: the range is inside the allocation (checked) and `buf` is
        // a distinct Rust buffer.
        unsafe {
            ptr::copy_nonoverlapping(self.ptr.add(offset as usize), buf.as_mut_ptr(), buf.len())
        }
    }

    /// Copies bytes in.
    pub fn write(&self, offset: u64, data: &[u8]) {
        self.check(offset, data.len() as u64)
            .expect("write inside the region");
        // SAFETY: the range is inside the allocation (checked).
        unsafe {
            ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset as usize), data.len())
        }
    }

    /// Address of byte `offset`, for remote peers.
    pub fn addr(&self, offset: u64) -> u64 {
        self.ptr as u64 + offset
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; every registration
        // holds an Arc, so none is left.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A protection domain.
#[derive(Debug)]
pub struct ProtectionDomain {
    ctx: Arc<Context>,
    raw: *mut ffi::ibv_pd,
}

// SAFETY: see Context.
unsafe impl Send for ProtectionDomain {}
// SAFETY: see Context.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<ProtectionDomain>, VerbsError> {
        // SAFETY: the context is open for as long as the Arc lives.
        let raw = null_check("ibv_alloc_pd", unsafe { ffi::ibv_alloc_pd(ctx.raw) })?;
        Ok(Arc::new(ProtectionDomain {
            ctx: ctx.clone(),
            raw,
        }))
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: memory regions and queue pairs hold Arcs to their domain.
        let rc = unsafe { ffi::ibv_dealloc_pd(self.raw) };
        assert_eq!(
            rc, 0,
            "ibv_dealloc_pd refused: objects still use the domain"
        );
    }
}

/// A registration of part of a [`Region`] in a protection domain.
#[derive(Debug)]
pub struct MemoryRegion {
    _pd: Arc<ProtectionDomain>,
    region: Arc<Region>,
    raw: *mut ffi::ibv_mr,
    offset: u64,
    len: u64,
}

// SAFETY: see Context.
unsafe impl Send for MemoryRegion {}
// SAFETY: see Context.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Registers `[offset, offset + len)` of `region` with `access`.
    pub fn new(
        pd: &Arc<ProtectionDomain>,
        region: &Arc<Region>,
        offset: u64,
        len: u64,
        access: Access,
    ) -> Result<Arc<MemoryRegion>, VerbsError> {
        region.check(offset, len)?;
        // SAFETY: the range is inside the region (checked), and the region
        // outlives the registration (held by the returned value).
        let raw = unsafe {
            ffi::ibv_reg_mr(
                pd.raw,
                region.ptr.add(offset as usize).cast(),
                len as usize,
                access.0 as i32,
            )
        };
        let raw = null_check("ibv_reg_mr", raw)?;
        Ok(Arc::new(MemoryRegion {
            _pd: pd.clone(),
            region: region.clone(),
            raw,
            offset,
            len,
        }))
    }

    /// Key for local access.
    pub fn lkey(&self) -> u32 {
        // SAFETY: the registration is alive.
        unsafe { (*self.raw).lkey }
    }

    /// Key a peer uses to access this memory.
    pub fn rkey(&self) -> u32 {
        // SAFETY: the registration is alive.
        unsafe { (*self.raw).rkey }
    }

    /// Remote address of region byte `offset` (must lie inside this registration).
    pub fn addr(&self, offset: u64) -> u64 {
        debug_assert!(offset >= self.offset && offset <= self.offset + self.len);
        self.region.addr(offset)
    }

    fn local(&self, offset: u64, len: u64) -> Result<ffi::ibv_sge, VerbsError> {
        if offset < self.offset || offset + len > self.offset + self.len {
            return Err(VerbsError::OutOfRange {
                offset,
                len,
                size: self.len,
            });
        }
        Ok(ffi::ibv_sge {
            addr: self.region.addr(offset),
            length: len as u32,
            lkey: self.lkey(),
        })
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: queue pairs that post from this registration hold an Arc
        // to it, so no work referencing it is outstanding.
        let rc = unsafe { ffi::ibv_dereg_mr(self.raw) };
        assert_eq!(rc, 0, "ibv_dereg_mr refused");
    }
}

/// A finished work request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkCompletion {
    /// The id given at post time.
    pub wr_id: u64,
    /// `None` on success, else the `ibv_wc_status` and vendor syndrome.
    pub error: Option<(u32, u32)>,
}

/// A completion queue.
#[derive(Debug)]
pub struct CompletionQueue {
    ctx: Arc<Context>,
    raw: *mut ffi::ibv_cq,
}

// SAFETY: see Context.
unsafe impl Send for CompletionQueue {}
// SAFETY: see Context.
unsafe impl Sync for CompletionQueue {}

impl CompletionQueue {
    /// Creates a queue with room for `depth` completions.
    pub fn new(ctx: &Arc<Context>, depth: i32) -> Result<Arc<CompletionQueue>, VerbsError> {
        // SAFETY: the context is open; no channel or context pointer is used.
        let raw =
            unsafe { ffi::ibv_create_cq(ctx.raw, depth, ptr::null_mut(), ptr::null_mut(), 0) };
        let raw = null_check("ibv_create_cq", raw)?;
        Ok(Arc::new(CompletionQueue {
            ctx: ctx.clone(),
            raw,
        }))
    }

    /// Appends up to `max` completions to `out`; returns how many.
    pub fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize, VerbsError> {
        let mut wcs = [ffi::ibv_wc::default(); 16];
        let mut total = 0;
        while total < max {
            let want = (max - total).min(wcs.len()) as i32;
            // SAFETY: `poll_cq` is the provider's implementation of the inline
            // ibv_poll_cq; it writes at most `want` entries into `wcs`.
            let n = unsafe {
                let poll = (*self.ctx.raw)
                    .ops
                    .poll_cq
                    .expect("provider implements poll_cq");
                poll(self.raw, want, wcs.as_mut_ptr())
            };
            if n < 0 {
                return Err(VerbsError::Call {
                    call: "ibv_poll_cq",
                    source: io::Error::other(format!("returned {n}")),
                });
            }
            for wc in &wcs[..n as usize] {
                out.push(WorkCompletion {
                    wr_id: wc.wr_id(),
                    error: wc.error(),
                });
            }
            total += n as usize;
            if n < want {
                break;
            }
        }
        Ok(total)
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: queue pairs hold an Arc to their completion queue.
        let rc = unsafe { ffi::ibv_destroy_cq(self.raw) };
        assert_eq!(rc, 0, "ibv_destroy_cq refused: queue pairs still use it");
    }
}

/// What a peer needs to connect to a queue pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Queue pair number.
    pub qpn: u32,
    /// GID of its device.
    pub gid: [u8; 16],
    /// Initial packet sequence number.
    pub psn: u32,
}

impl Endpoint {
    /// Encodes as `qpn:psn:gid-hex` for a registry.
    pub fn encode(&self) -> String {
        let gid: String = self.gid.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:x}:{:x}:{gid}", self.qpn, self.psn)
    }

    /// Decodes [`Endpoint::encode`]'s format.
    pub fn decode(s: &str) -> Option<Endpoint> {
        let mut parts = s.split(':');
        let qpn = u32::from_str_radix(parts.next()?, 16).ok()?;
        let psn = u32::from_str_radix(parts.next()?, 16).ok()?;
        let hex = parts.next()?;
        if hex.len() != 32 || parts.next().is_some() {
            return None;
        }
        let mut gid = [0u8; 16];
        for (i, g) in gid.iter_mut().enumerate() {
            *g = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Endpoint { qpn, gid, psn })
    }
}

/// A one-sided operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// RDMA WRITE: local bytes into the peer's memory.
    Write,
    /// RDMA READ: the peer's bytes into local memory.
    Read,
}

/// State of a queue pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpState {
    /// Reset.
    Reset,
    /// Initialised.
    Init,
    /// Ready to receive.
    Rtr,
    /// Ready to send.
    Rts,
    /// In error: must be reset and connected again.
    Error,
    /// Any other state.
    Other(u32),
}

fn state_name(s: u32) -> &'static str {
    use ffi::ibv_qp_state::*;
    match s {
        IBV_QPS_RESET => "RESET",
        IBV_QPS_INIT => "INIT",
        IBV_QPS_RTR => "RTR",
        IBV_QPS_RTS => "RTS",
        IBV_QPS_ERR => "ERR",
        _ => "OTHER",
    }
}

/// A reliable-connected queue pair.
#[derive(Debug)]
pub struct QueuePair {
    raw: *mut ffi::ibv_qp,
    ctx: Arc<Context>,
    _cq: Arc<CompletionQueue>,
    _pd: Arc<ProtectionDomain>,
    /// Registrations work may be posted from; kept alive by the queue pair.
    mrs: Vec<Arc<MemoryRegion>>,
    psn: u32,
    max_inline: u32,
}

// SAFETY: see Context. Posting from several threads at once is allowed by
// libibverbs (providers lock their send queue).
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// Creates an RC queue pair in `pd` whose completions go to `cq`, able
    /// to post from the registrations in `mrs` (by index).
    pub fn new(
        pd: &Arc<ProtectionDomain>,
        cq: &Arc<CompletionQueue>,
        mrs: Vec<Arc<MemoryRegion>>,
        depth: u32,
        max_inline: u32,
        psn: u32,
    ) -> Result<QueuePair, VerbsError> {
        let mut attr = ffi::ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: cq.raw,
            recv_cq: cq.raw,
            srq: ptr::null_mut(),
            cap: ffi::ibv_qp_cap {
                max_send_wr: depth,
                max_recv_wr: 1,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: max_inline,
            },
            qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: the domain and queue are alive (held below); `attr` is a
        // valid, initialised struct the call may update.
        let raw = null_check("ibv_create_qp", unsafe {
            ffi::ibv_create_qp(pd.raw, &mut attr)
        })?;
        Ok(QueuePair {
            raw,
            ctx: pd.ctx.clone(),
            _cq: cq.clone(),
            _pd: pd.clone(),
            mrs,
            psn: psn & 0xff_ffff,
            max_inline: attr.cap.max_inline_data,
        })
    }

    /// Sets the packet sequence number the next [`QueuePair::connect`]
    /// starts from (a fresh one for each connection keeps packets of an
    /// earlier connection out).
    pub fn set_psn(&mut self, psn: u32) {
        self.psn = psn & 0xff_ffff;
    }

    /// The raw queue pair.
    pub fn as_raw(&self) -> *mut ffi::ibv_qp {
        self.raw
    }

    /// What the peer needs to connect to this queue pair.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            // SAFETY: the queue pair is alive.
            qpn: unsafe { (*self.raw).qp_num },
            gid: self.ctx.gid,
            psn: self.psn,
        }
    }

    fn modify(
        &self,
        attr: &mut ffi::ibv_qp_attr,
        mask: u32,
        from: &'static str,
        to: &'static str,
    ) -> Result<(), VerbsError> {
        // SAFETY: the queue pair is alive and `attr` is initialised.
        let rc = unsafe { ffi::ibv_modify_qp(self.raw, attr, mask as i32) };
        if rc == 0 {
            return Ok(());
        }
        let source = if rc > 0 {
            io::Error::from_raw_os_error(rc)
        } else {
            io::Error::last_os_error()
        };
        Err(VerbsError::Transition { from, to, source })
    }

    /// Brings the queue pair from RESET to RTS, connected to `remote`, with
    /// `access` as its remote access rights. Timeouts are generous (ack
    /// timeout 14 ≈ 67 ms, 7 retries): software RDMA under emulation is slow.
    pub fn connect(&mut self, remote: &Endpoint, access: Access) -> Result<(), VerbsError> {
        use ffi::ibv_qp_attr_mask as M;
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: PORT,
            qp_access_flags: access.0,
            ..Default::default()
        };
        let mask = M::IBV_QP_STATE | M::IBV_QP_PKEY_INDEX | M::IBV_QP_PORT | M::IBV_QP_ACCESS_FLAGS;
        self.modify(&mut a, mask.0, "RESET", "INIT")?;

        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
            path_mtu: ffi::IBV_MTU_1024,
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 16,
            min_rnr_timer: 12,
            ..Default::default()
        };
        a.ah_attr.is_global = 1;
        a.ah_attr.port_num = PORT;
        a.ah_attr.grh.dgid = ffi::ibv_gid { raw: remote.gid };
        a.ah_attr.grh.sgid_index = self.ctx.gid_index;
        a.ah_attr.grh.hop_limit = 64;
        let mask = M::IBV_QP_STATE
            | M::IBV_QP_AV
            | M::IBV_QP_PATH_MTU
            | M::IBV_QP_DEST_QPN
            | M::IBV_QP_RQ_PSN
            | M::IBV_QP_MAX_DEST_RD_ATOMIC
            | M::IBV_QP_MIN_RNR_TIMER;
        self.modify(&mut a, mask.0, "INIT", "RTR")?;

        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
            sq_psn: self.psn,
            timeout: 14,
            retry_cnt: 7,
            rnr_retry: 7,
            max_rd_atomic: 16,
            ..Default::default()
        };
        let mask = M::IBV_QP_STATE
            | M::IBV_QP_SQ_PSN
            | M::IBV_QP_TIMEOUT
            | M::IBV_QP_RETRY_CNT
            | M::IBV_QP_RNR_RETRY
            | M::IBV_QP_MAX_QP_RD_ATOMIC;
        self.modify(&mut a, mask.0, "RTR", "RTS")
    }

    /// Moves the queue pair to RESET (from any state), dropping its work.
    pub fn reset(&mut self) -> Result<(), VerbsError> {
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_RESET,
            ..Default::default()
        };
        self.modify(
            &mut a,
            ffi::ibv_qp_attr_mask::IBV_QP_STATE.0,
            "ANY",
            "RESET",
        )
    }

    /// Moves the queue pair to the error state: outstanding work completes
    /// with a flush error and nothing more is executed.
    pub fn fail(&mut self) -> Result<(), VerbsError> {
        let mut a = ffi::ibv_qp_attr {
            qp_state: ffi::ibv_qp_state::IBV_QPS_ERR,
            ..Default::default()
        };
        self.modify(&mut a, ffi::ibv_qp_attr_mask::IBV_QP_STATE.0, "ANY", "ERR")
    }

    /// Changes the remote access rights while the queue pair stays in RTS:
    /// the permission switch.
    pub fn set_access(&self, access: Access) -> Result<(), VerbsError> {
        let mut a = ffi::ibv_qp_attr {
            qp_access_flags: access.0,
            ..Default::default()
        };
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0;
        let from = state_name(self.state().map(|s| s.0).unwrap_or(u32::MAX));
        self.modify(&mut a, mask, from, "same state, new access flags")
    }

    fn state(&self) -> Result<(u32, u32), VerbsError> {
        let mut a = ffi::ibv_qp_attr::default();
        let mut init = ffi::ibv_qp_init_attr::default();
        let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE | ffi::ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        // SAFETY: the queue pair is alive; both out-structs are valid.
        call("ibv_query_qp", unsafe {
            ffi::ibv_query_qp(self.raw, &mut a, mask.0 as i32, &mut init)
        })?;
        Ok((a.qp_state, a.qp_access_flags))
    }

    /// Current state and remote access rights.
    pub fn query(&self) -> Result<(QpState, Access), VerbsError> {
        use ffi::ibv_qp_state::*;
        let (s, acc) = self.state()?;
        let state = match s {
            IBV_QPS_RESET => QpState::Reset,
            IBV_QPS_INIT => QpState::Init,
            IBV_QPS_RTR => QpState::Rtr,
            IBV_QPS_RTS => QpState::Rts,
            IBV_QPS_ERR => QpState::Error,
            other => QpState::Other(other),
        };
        Ok((state, Access(acc)))
    }

    /// Posts a one-sided operation on `len` bytes at region offset `local`
    /// of registration `mr` and the peer's `remote_addr` under `rkey`:
    /// [`Op::Write`] sends the local bytes (small writes go inline; the
    /// local bytes may be read until the completion arrives), [`Op::Read`]
    /// fetches the remote ones into the local range.
    #[allow(clippy::too_many_arguments)]
    pub fn post(
        &self,
        op: Op,
        wr_id: u64,
        mr: usize,
        local: u64,
        len: u64,
        remote_addr: u64,
        rkey: u32,
        signaled: bool,
    ) -> Result<(), VerbsError> {
        let opcode = match op {
            Op::Write => ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE,
            Op::Read => ffi::ibv_wr_opcode::IBV_WR_RDMA_READ,
        };
        let mut sge = self.mrs[mr].local(local, len)?;
        let mut flags = if signaled {
            ffi::ibv_send_flags::IBV_SEND_SIGNALED.0
        } else {
            0
        };
        if op == Op::Write && len <= u64::from(self.max_inline) {
            flags |= ffi::ibv_send_flags::IBV_SEND_INLINE.0;
        }
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode,
            send_flags: flags,
            ..Default::default()
        };
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        let mut bad = ptr::null_mut();
        // SAFETY: `post_send` is the provider's implementation of the inline
        // ibv_post_send. The scatter entry points into a registration this
        // queue pair keeps alive (checked bounds), so the memory stays valid
        // until the work completes or the queue pair is destroyed.
        let rc = unsafe {
            let post = (*self.ctx.raw)
                .ops
                .post_send
                .expect("provider implements post_send");
            post(self.raw, &mut wr, &mut bad)
        };
        call("ibv_post_send", rc)
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: destroying a queue pair flushes its outstanding work; the
        // registrations and queue it used are released only after this.
        let rc = unsafe { ffi::ibv_destroy_qp(self.raw) };
        assert_eq!(rc, 0, "ibv_destroy_qp refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_through_their_registry_form() {
        let e = Endpoint {
            qpn: 0x1234,
            gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
            psn: 0xabcdef,
        };
        assert_eq!(Endpoint::decode(&e.encode()), Some(e));
        assert_eq!(Endpoint::decode("zz:1:00"), None);
    }
}
