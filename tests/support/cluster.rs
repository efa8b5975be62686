//! A cluster directory for a test: written by the in-process launcher
//! ([`meridian_cli::cluster`]) on the test's own loopback block, every
//! node's config edited the same way (placement rules must agree on every
//! node).

use std::ops::Deref;

use anyhow::Result;
use meridian_cli::cluster::{self, ClusterFiles, Ports, Workdir};
use meridian_server::config::{DurabilityMode, PlacementRule};

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

    /// The launcher's spec: this block's addresses, every edit.
    fn launcher(&self) -> cluster::Spec {
        let placement = self.placement.clone();
        let log_segment_bytes = self.log_segment_bytes;
        cluster::Spec::new(self.regions.clone())
            .nodes_per_region(self.nodes_per_region)
            .ports(Ports::Hosts {
                hosts: self.hosts(),
                base_port: BASE_PORT,
            })
            .edit(move |_, f| f.placement = placement.clone())
            .durability(self.durability)
            .link_conditioning(self.link_conditioning)
            .edit(move |_, f| {
                if let Some(bytes) = log_segment_bytes {
                    f.storage.log_segment_bytes = bytes;
                }
            })
    }
}

/// A test's cluster files in a temporary directory: the launcher's
/// [`ClusterFiles`] (every method of which it offers) with the test's
/// [`Spec`]. Kept (and its path printed) when the test panics, or always
/// with `MERIDIAN_TEST_KEEP=1`.
#[derive(Debug)]
pub struct TestClusterFiles {
    files: ClusterFiles,
    pub spec: Spec,
}

impl TestClusterFiles {
    /// Runs `meridian init` for `spec` and applies its edits to every node.
    pub fn create(spec: Spec) -> Result<TestClusterFiles> {
        let mut dir = Workdir::temporary(&format!("meridian-e2e-{}", spec.block))?;
        if std::env::var_os("MERIDIAN_TEST_KEEP").is_some() {
            eprintln!("keeping cluster directory {}", dir.keep().display());
        }
        let files = ClusterFiles::create(dir, &spec.launcher())?;
        Ok(TestClusterFiles { files, spec })
    }
}

impl Deref for TestClusterFiles {
    type Target = ClusterFiles;

    fn deref(&self) -> &ClusterFiles {
        &self.files
    }
}

impl Drop for TestClusterFiles {
    fn drop(&mut self) {
        if std::thread::panicking() && self.files.workdir().is_temporary() {
            let path = self.files.workdir_mut().keep();
            eprintln!(
                "test failed: cluster directory (configs, data, process logs) kept in {}",
                path.display()
            );
        }
    }
}
