//! `meridian serve --config FILE`: runs one node in the foreground until
//! SIGINT or SIGTERM, then shuts it down cleanly.

use std::path::Path;

use anyhow::{Context, Result};

use meridian_server::config::NodeConfig;
use meridian_server::node::{Node, ServeOptions};

/// Loads the config, starts the node and serves until a signal arrives.
pub fn run(config_path: &Path, allow_debug_clock: bool) -> Result<()> {
    let config = NodeConfig::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meridian")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let node = Node::start(
            config,
            ServeOptions {
                allow_debug_clock,
                ..ServeOptions::default()
            },
        )
        .await?;
        wait_for_signal().await?;
        node.shutdown().await?;
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM (only `main`'s process installs handlers).
async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
