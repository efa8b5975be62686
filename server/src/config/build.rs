//! What a loaded [`NodeConfig`] makes of itself for the layers below: the
//! cluster's placement, the engine's config and the mesh's config, so that
//! `Node::start` reads as its start order and nothing else translates
//! settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_engine::{EngineConfig, PhysicalTime};
use meridian_replication::mesh::{FrameTap, Link, MeshConfig, PeerAddress};
use meridian_replication::{NodeInfo, Placement, ProtocolConfig, Rule};

use super::{Durability, NodeConfig};

impl NodeConfig {
    /// The cluster's placement, as every node must see it. (The rule count
    /// was checked at load, so [`Placement::new`] cannot refuse it.)
    pub fn cluster_placement(&self) -> Placement {
        let nodes = self
            .all_nodes()
            .into_iter()
            .map(|n| NodeInfo {
                name: n.name,
                region: n.region,
            })
            .collect();
        let rules = self
            .placement
            .iter()
            .map(|r| Rule {
                prefix: r.prefix.as_bytes().to_vec(),
                regions: r.regions.clone(),
                home: r.home.clone(),
            })
            .collect();
        Placement::new(nodes, rules).expect("placement rule count checked at load")
    }

    /// The storage engine's settings; `placement` numbers its groups.
    pub fn engine_config(&self, placement: &Arc<Placement>) -> EngineConfig {
        let mut engine = EngineConfig::new(&self.data_dir);
        engine.durability = match self.durability() {
            Durability::Sync => meridian_engine::Durability::Sync,
            Durability::Periodic { interval_ms } => {
                meridian_engine::Durability::Periodic(Duration::from_millis(interval_ms))
            }
        };
        engine.max_clock_offset = Duration::from_millis(self.storage.max_clock_offset_ms);
        engine.segment_bytes = self.storage.log_segment_bytes;
        engine.group_of = placement.group_fn();
        engine
    }

    /// The peer mesh's settings. `protocol`: timers (`None` for the
    /// defaults with this config's `[replication]` settings; a given one is
    /// used as it is, retention included); `clock`: the node's physical
    /// clock; `tap`: a test hook.
    pub fn mesh_config(
        &self,
        placement: Arc<Placement>,
        protocol: Option<ProtocolConfig>,
        clock: Arc<dyn Fn() -> PhysicalTime + Send + Sync>,
        tap: Option<FrameTap>,
    ) -> MeshConfig {
        // Link conditioning (WAN emulation) only where the config allows it.
        let links: BTreeMap<String, Link> = if self.debug.allow_link_conditioning {
            self.debug
                .link
                .iter()
                .map(|l| {
                    let link = Link {
                        delay_ms: l.delay_ms,
                        cut: l.cut,
                    };
                    (l.region.clone(), link)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        MeshConfig {
            node: self.node.clone(),
            region: self.region.clone(),
            listen: self.peer_listen,
            peers: self
                .peers
                .iter()
                .map(|p| PeerAddress {
                    name: p.name.clone(),
                    region: p.region.clone(),
                    address: p.address.to_string(),
                })
                .collect(),
            ca_pem: self.tls.ca_pem.clone(),
            cert_pem: self.tls.cert_pem.clone(),
            key_pem: self.tls.key_pem.clone(),
            protocol: protocol.unwrap_or_else(|| {
                let mut protocol = ProtocolConfig::new(self.node.clone());
                protocol.retention_ms = self.replication.retention_ms;
                protocol
            }),
            placement,
            links,
            clock,
            tap,
        }
    }
}
