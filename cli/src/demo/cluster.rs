//! The demo's cluster: three nodes on loopback, one per region, started by
//! the in-process launcher with the simulated WAN delays in their configs,
//! and one client per region pinned to that region's node.

use std::io::Write as _;

use anyhow::{Context, Result};
use meridian_client::Client;
use meridian_replication::mesh::Link;

use super::{BASE_PORTS, CONNECT_TIMEOUT, REGIONS, REQUEST_TIMEOUT, node_name, one_way_ms};
use crate::cluster::{LocalCluster, Ports, Spec, Workdir};

/// Put at the top of each node's config: the files start the same nodes
/// under `meridian serve`, delays included.
const CONFIG_HEADER: &str = "\
# Meridian node configuration, written by `meridian demo` (the one
# `meridian init` writes, plus simulated WAN latency in [debug]).
# Start the node with `meridian serve --config <this file>`.
# Relative paths are relative to this file's directory.

";

/// The running cluster and one pinned client per region, in [`REGIONS`]
/// order.
pub(super) struct DemoCluster {
    pub local: LocalCluster,
    pub clients: Vec<Client>,
}

impl DemoCluster {
    /// Writes the cluster into `dir` on the first free port range of
    /// [`BASE_PORTS`], starts it, waits until every node is connected to
    /// every other, and connects a client to each node.
    pub async fn start(dir: Workdir) -> Result<DemoCluster> {
        let spec = Spec::new(REGIONS)
            .ports(Ports::Loopback(BASE_PORTS.to_vec()))
            .link_delays(one_way_ms)
            .header(CONFIG_HEADER)
            .connect_timeout(CONNECT_TIMEOUT);
        let local = LocalCluster::start_in(dir, &spec)
            .await
            .context("starting the demo cluster")?;
        let mut cluster = DemoCluster {
            local,
            clients: Vec::new(),
        };
        let config = cluster
            .local
            .client_config()
            .clone()
            .with_timeout(REQUEST_TIMEOUT);
        for region in REGIONS {
            match Client::connect(config.clone().pinned(&node_name(region))).await {
                Ok(client) => cluster.clients.push(client),
                Err(e) => {
                    cluster.shutdown().await;
                    return Err(e).with_context(|| format!("connecting a client to {region}"));
                }
            }
        }
        Ok(cluster)
    }

    /// Cuts (or restores) every link between `region` and the others, on
    /// both sides; the delays stay.
    pub fn isolate(&self, region: &str, cut: bool) {
        self.local.set_links(|from, to| {
            ((from == region) != (to == region)).then(|| Link {
                delay_ms: one_way_ms(from, to),
                cut,
            })
        });
    }

    /// Closes the clients, then stops every node and removes a temporary
    /// directory.
    pub async fn shutdown(self) {
        for client in &self.clients {
            client.close().await;
        }
        if let Err(e) = self.local.shutdown().await {
            say!("warning: stopping the cluster: {e:#}");
        }
    }
}
