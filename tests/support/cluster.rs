//! A cluster directory for a test: `meridian init` (the library function)
//! on the test's own loopback block, then edits every node's config the
//! same way (placement rules must agree on every node).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use meridian_cli::init::{InitArgs, PlannedNode, write_cluster};
use meridian_client::{Client, ClientConfig};
use meridian_server::config::{DurabilityMode, NodeConfig, NodeFile, PlacementRule};

/// The regions of a test cluster, in `meridian init` order: node `i` of a
/// one-node-per-region cluster is `<REGIONS[i]>-1`.
pub const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-south"];

/// First port of every node's three (peer, client, metrics). Nodes have
/// addresses of their own, so every test can use the same ports.
pub const BASE_PORT: u16 = 17_100;

/// What cluster to create.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The address block: node `i` listens on `127.31.<block>.<i+1>`.
    pub block: u8,
    pub regions: Vec<String>,
    pub nodes_per_region: usize,
    /// Written into every node's config.
    pub placement: Vec<PlacementRule>,
    pub durability: DurabilityMode,
    /// `[debug] allow_link_conditioning` (process nodes only need it; the
    /// in-process API sets links directly).
    pub link_conditioning: bool,
    /// `[storage] log_segment_bytes` (`None`: the default).
    pub log_segment_bytes: Option<u64>,
}

impl Spec {
    /// Three regions ([`REGIONS`]), one node each, sync durability.
    pub fn new(block: u8) -> Spec {
        Spec {
            block,
            regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            nodes_per_region: 1,
            placement: Vec::new(),
            durability: DurabilityMode::Sync,
            link_conditioning: false,
            log_segment_bytes: None,
        }
    }

    /// Small log segments make truncation (and so full syncs) cheap to reach.
    pub fn log_segment_bytes(mut self, bytes: u64) -> Spec {
        self.log_segment_bytes = Some(bytes);
        self
    }

    pub fn nodes_per_region(mut self, n: usize) -> Spec {
        self.nodes_per_region = n;
        self
    }

    /// Adds a placement rule: keys starting with `prefix` live only in
    /// `regions`.
    pub fn placement(mut self, prefix: &str, regions: &[&str]) -> Spec {
        self.placement.push(PlacementRule {
            prefix: prefix.to_owned(),
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            home: None,
        });
        self
    }

    pub fn durability(mut self, durability: DurabilityMode) -> Spec {
        self.durability = durability;
        self
    }

    fn hosts(&self) -> Vec<String> {
        let count = self.regions.len() * self.nodes_per_region;
        (1..=count)
            .map(|i| format!("127.31.{}.{i}", self.block))
            .collect()
    }
}

/// A cluster directory in a temporary directory. Kept (and its path
/// printed) when the test panics, or always with `MERIDIAN_TEST_KEEP=1`.
#[derive(Debug)]
pub struct ClusterDir {
    path: PathBuf,
    temp: Option<tempfile::TempDir>,
    pub nodes: Vec<PlannedNode>,
    pub spec: Spec,
}

impl ClusterDir {
    /// Runs `meridian init` for `spec` and applies its edits to every node.
    pub fn create(spec: Spec) -> Result<ClusterDir> {
        let temp = tempfile::Builder::new()
            .prefix(&format!("meridian-e2e-{}-", spec.block))
            .tempdir()
            .context("creating a temporary directory")?;
        let path = temp.path().to_owned();
        let nodes = write_cluster(&InitArgs {
            dir: path.clone(),
            regions: spec.regions.clone(),
            nodes_per_region: spec.nodes_per_region,
            host: "127.0.0.1".into(),
            hosts: Some(spec.hosts()),
            base_port: BASE_PORT,
            force: false,
        })
        .context("meridian init")?;
        let keep = std::env::var_os("MERIDIAN_TEST_KEEP").is_some();
        let dir = ClusterDir {
            path,
            temp: if keep { None } else { Some(temp) },
            nodes,
            spec,
        };
        if keep {
            eprintln!("keeping cluster directory {}", dir.path.display());
        }
        for name in dir.names() {
            let spec = dir.spec.clone();
            dir.edit(&name, |f| {
                f.placement = spec.placement.clone();
                f.storage.durability = spec.durability;
                f.debug.allow_link_conditioning = spec.link_conditioning;
                if let Some(bytes) = spec.log_segment_bytes {
                    f.storage.log_segment_bytes = bytes;
                }
            })?;
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Node names in `init` order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn node(&self, name: &str) -> &PlannedNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    pub fn region_of(&self, name: &str) -> &str {
        &self.node(name).region
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.path.join(format!("{name}.toml"))
    }

    pub fn client_config_path(&self) -> PathBuf {
        self.path.join("client.toml")
    }

    /// Rewrites `name`'s config file after `change`.
    pub fn edit(&self, name: &str, change: impl FnOnce(&mut NodeFile)) -> Result<()> {
        let path = self.config_path(name);
        let mut file = NodeFile::read(&path)?;
        change(&mut file);
        std::fs::write(&path, file.to_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// `name`'s config, loaded and validated as `meridian serve` does.
    pub fn config(&self, name: &str) -> Result<NodeConfig> {
        Ok(NodeConfig::load(self.config_path(name))?)
    }

    pub fn data_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.config(name)?.data_dir)
    }

    /// The cluster's `client.toml`.
    pub fn client_config(&self) -> Result<ClientConfig> {
        Ok(ClientConfig::load(self.client_config_path())?)
    }

    /// A client that only ever talks to `name`.
    pub async fn client(&self, name: &str) -> Result<Client> {
        let config = self.client_config()?.pinned(name);
        Client::connect(config)
            .await
            .with_context(|| format!("connecting a client to {name}"))
    }

    /// A pinned client for every node, in `init` order.
    pub async fn clients(&self) -> Result<Vec<(String, Client)>> {
        let mut out = Vec::new();
        for name in self.names() {
            let client = self.client(&name).await?;
            out.push((name, client));
        }
        if out.is_empty() {
            bail!("the cluster has no nodes");
        }
        Ok(out)
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(temp) = self.temp.take()
        {
            let path = temp.keep();
            eprintln!(
                "test failed: cluster directory (configs, data, process logs) kept in {}",
                path.display()
            );
        }
    }
}
