//! Where the other replicas are: a static list, or a memcached registry.
//!
//! The registry is compatible in spirit with the original Mu's
//! `DORY_REGISTRY_IP=host[:port]` (port 11211 by default): every replica
//! publishes its endpoint (whatever string its fabric needs, e.g.
//! `host:port` for `tcp`, QP numbers and GIDs for `rdma`) under
//! `<prefix>endpoint-<id>` and reads the others' until all are there or a
//! deadline passes. Keys carry a prefix (the group name), so several groups
//! can share one memcached; unlike the original, a stale key from an earlier
//! run is overwritten when a replica publishes again, so the registry does
//! not need a restart between runs.

use crate::types::NodeId;
use std::time::Duration;
use thiserror::Error;

/// Environment variable naming the registry, as in the original Mu.
pub const REGISTRY_ENV: &str = "DORY_REGISTRY_IP";
/// memcached's default port.
pub const DEFAULT_REGISTRY_PORT: u16 = 11211;

/// Why discovery failed.
#[derive(Debug, Error)]
pub enum DiscoveryError {
    /// The registry address is malformed.
    #[error("bad registry address {0:?}: expected host[:port]")]
    BadAddress(String),
    /// The registry could not be reached or refused an operation.
    #[error("registry at {addr}: {source}")]
    Registry {
        /// The registry address.
        addr: String,
        /// The client's error.
        #[source]
        source: memcache::MemcacheError,
    },
    /// Not every replica published its endpoint before the deadline.
    #[error("replicas {missing:?} did not publish their endpoints within {waited:?}")]
    Missing {
        /// Replicas still missing.
        missing: Vec<u8>,
        /// How long was waited.
        waited: Duration,
    },
    /// A static list has the wrong length.
    #[error("the static peer list has {got} entries; the group has {want}")]
    WrongCount {
        /// Entries given.
        got: usize,
        /// Group size.
        want: usize,
    },
}

/// Endpoints of every replica, indexed by id.
pub type Endpoints = Vec<String>;

/// A static list of endpoints, checked against the group size.
pub fn static_list(list: &[String], group_size: usize) -> Result<Endpoints, DiscoveryError> {
    if list.len() != group_size {
        return Err(DiscoveryError::WrongCount {
            got: list.len(),
            want: group_size,
        });
    }
    Ok(list.to_vec())
}

/// A memcached registry.
pub struct Registry {
    addr: String,
    prefix: String,
    client: memcache::Client,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Registry {
    /// Connects to the registry at `host[:port]`; keys get `prefix`.
    pub fn connect(addr: &str, prefix: &str) -> Result<Registry, DiscoveryError> {
        let addr = normalise(addr)?;
        let url = format!("memcache://{addr}?timeout=2&tcp_nodelay=true");
        let client =
            memcache::connect(url.as_str()).map_err(|source| DiscoveryError::Registry {
                addr: addr.clone(),
                source,
            })?;
        Ok(Registry {
            addr,
            prefix: prefix.to_string(),
            client,
        })
    }

    /// Connects to the registry named by `DORY_REGISTRY_IP`, if it is set.
    pub fn from_env(prefix: &str) -> Result<Option<Registry>, DiscoveryError> {
        match std::env::var(REGISTRY_ENV) {
            Ok(addr) if !addr.is_empty() => Registry::connect(&addr, prefix).map(Some),
            _ => Ok(None),
        }
    }

    fn key(&self, id: NodeId) -> String {
        format!("{}endpoint-{}", self.prefix, id.0)
    }

    fn fail(&self, source: memcache::MemcacheError) -> DiscoveryError {
        DiscoveryError::Registry {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Publishes this replica's endpoint (replacing a stale one).
    pub fn publish(&self, id: NodeId, endpoint: &str) -> Result<(), DiscoveryError> {
        self.client
            .set(&self.key(id), endpoint, 0)
            .map_err(|e| self.fail(e))
    }

    /// The endpoint replica `id` published, if any.
    pub fn lookup(&self, id: NodeId) -> Result<Option<String>, DiscoveryError> {
        self.client.get(&self.key(id)).map_err(|e| self.fail(e))
    }

    /// Polls every `poll` until all `group_size` replicas published, or
    /// fails after `deadline` naming the missing ones.
    pub fn wait_for_all(
        &self,
        group_size: usize,
        deadline: Duration,
        poll: Duration,
    ) -> Result<Endpoints, DiscoveryError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut found = Vec::with_capacity(group_size);
            let mut missing = Vec::new();
            for id in 0..group_size as u8 {
                match self.lookup(NodeId(id))? {
                    Some(e) => found.push(e),
                    None => missing.push(id),
                }
            }
            if missing.is_empty() {
                return Ok(found);
            }
            if waited >= deadline {
                return Err(DiscoveryError::Missing { missing, waited });
            }
            std::thread::sleep(poll);
            waited += poll;
        }
    }
}

/// `host` or `host:port` → `host:port`.
fn normalise(addr: &str) -> Result<String, DiscoveryError> {
    let addr = addr.trim();
    if addr.is_empty() || addr.contains('/') {
        return Err(DiscoveryError::BadAddress(addr.to_string()));
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(addr.to_string())
        }
        Some(_) => Err(DiscoveryError::BadAddress(addr.to_string())),
        None => Ok(format!("{addr}:{DEFAULT_REGISTRY_PORT}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_the_memcached_port() {
        assert_eq!(normalise("10.0.0.1").unwrap(), "10.0.0.1:11211");
        assert_eq!(normalise(" h:1234 ").unwrap(), "h:1234");
        assert!(normalise("h:notaport").is_err());
        assert!(normalise("").is_err());
        assert!(normalise("memcache://h").is_err());
    }

    #[test]
    fn static_lists_must_cover_the_group() {
        let l = vec!["a:1".to_string(), "b:2".to_string()];
        assert_eq!(static_list(&l, 2).unwrap(), l);
        assert!(matches!(
            static_list(&l, 3),
            Err(DiscoveryError::WrongCount { got: 2, want: 3 })
        ));
    }
}
