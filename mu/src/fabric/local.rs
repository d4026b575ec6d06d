//! An in-process fabric for threads of one process: each node's region sits
//! behind a mutex together with its permission holder, so a write is
//! checked and applied atomically and a grant takes effect for every write
//! that lands after it returns. Operations complete as soon as they are
//! posted, in post order. Useful for tests and single-host demos; the
//! `tcp` and `shm` backends are the ones for separate processes.

use crate::config::Config;
use crate::error::{FabricError, OpError};
use crate::fabric::{Completion, Fabric, Memory, OpId};
use crate::log::layout::Layout;
use crate::types::NodeId;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct NodeState {
    region: Vec<u8>,
    holder: Option<NodeId>,
    up: bool,
}

#[derive(Debug)]
struct Shared {
    layout: Layout,
    nodes: Vec<Mutex<NodeState>>,
}

impl Shared {
    fn lock(&self, id: NodeId) -> MutexGuard<'_, NodeState> {
        self.nodes[id.idx()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A group of in-process regions.
#[derive(Clone, Debug)]
pub struct LocalNetwork {
    shared: Arc<Shared>,
}

impl LocalNetwork {
    /// One region per configuration (all must share ring and payload sizes).
    pub fn new(configs: &[Config]) -> Self {
        let c = &configs[0];
        let layout = Layout::new(c.ring_capacity, c.max_payload, usize::from(c.group_size));
        let nodes = (0..usize::from(c.group_size))
            .map(|_| {
                Mutex::new(NodeState {
                    region: vec![0; layout.region_len() as usize],
                    holder: None,
                    up: true,
                })
            })
            .collect();
        LocalNetwork {
            shared: Arc::new(Shared { layout, nodes }),
        }
    }

    /// The endpoint of node `id`.
    pub fn endpoint(&self, id: NodeId) -> LocalEndpoint {
        LocalEndpoint {
            shared: self.shared.clone(),
            id,
            region: LocalRegion {
                shared: self.shared.clone(),
                id,
            },
            done: Vec::with_capacity(1024),
            buf: Vec::new(),
        }
    }

    /// Marks a node dead (`false`) or alive: operations to a dead node fail.
    pub fn set_up(&self, id: NodeId, up: bool) {
        self.shared.lock(id).up = up;
    }
}

/// A node's own region on a [`LocalNetwork`].
#[derive(Debug)]
pub struct LocalRegion {
    shared: Arc<Shared>,
    id: NodeId,
}

impl Memory for LocalRegion {
    fn read(&self, offset: u64, buf: &mut [u8]) {
        self.shared.lock(self.id).region.read(offset, buf)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.shared.lock(self.id).region.write(offset, data)
    }
}

/// One node's endpoint on a [`LocalNetwork`].
#[derive(Debug)]
pub struct LocalEndpoint {
    shared: Arc<Shared>,
    id: NodeId,
    region: LocalRegion,
    done: Vec<Completion>,
    buf: Vec<u8>,
}

impl LocalEndpoint {
    fn check(&self, peer: NodeId, a: u64, b: u64, len: u64) -> Result<(), FabricError> {
        let max = self.shared.layout.region_len();
        if a + len > max || b + len > max || peer.idx() >= self.shared.nodes.len() {
            return Err(FabricError::Post {
                peer,
                reason: format!("range outside the {max}-byte region"),
            });
        }
        Ok(())
    }
}

impl Fabric for LocalEndpoint {
    type Mem = LocalRegion;

    fn node(&self) -> NodeId {
        self.id
    }

    fn memory(&mut self) -> &mut LocalRegion {
        &mut self.region
    }

    fn post_write(
        &mut self,
        peer: NodeId,
        op: OpId,
        local: u64,
        remote: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.check(peer, local, remote, len)?;
        self.buf.resize(len as usize, 0);
        self.shared.lock(self.id).region.read(local, &mut self.buf);
        let mut target = self.shared.lock(peer);
        let result = if !target.up {
            Err(OpError::Unreachable)
        } else if self.shared.layout.touches_log(remote, len) && target.holder != Some(self.id) {
            Err(OpError::Permission)
        } else {
            target.region.write(remote, &self.buf);
            Ok(())
        };
        drop(target);
        self.done.push(Completion { op, peer, result });
        Ok(())
    }

    fn post_read(
        &mut self,
        peer: NodeId,
        op: OpId,
        remote: u64,
        local: u64,
        len: u64,
    ) -> Result<(), FabricError> {
        self.check(peer, local, remote, len)?;
        self.buf.resize(len as usize, 0);
        let target = self.shared.lock(peer);
        let result = if target.up {
            target.region.read(remote, &mut self.buf);
            Ok(())
        } else {
            Err(OpError::Unreachable)
        };
        drop(target);
        if result.is_ok() {
            self.shared.lock(self.id).region.write(local, &self.buf);
        }
        self.done.push(Completion { op, peer, result });
        Ok(())
    }

    fn poll(&mut self, out: &mut Vec<Completion>) -> usize {
        let k = self.done.len();
        out.append(&mut self.done);
        k
    }

    fn grant(&mut self, peer: NodeId) -> Result<(), FabricError> {
        self.shared.lock(self.id).holder = Some(peer);
        Ok(())
    }
}
