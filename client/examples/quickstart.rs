//! A first session with Meridian: connect, then use a counter, a set and a
//! register at two consistency levels.
//!
//! ```text
//! cargo run -p meridian-client --example quickstart -- path/to/client.toml
//! ```
//!
//! `client.toml` is the file `meridian init` writes into the cluster
//! directory. Binaries may use `anyhow`; the library's errors are
//! [`meridian_client::Error`].

use std::time::Duration;

use anyhow::Context;
use meridian_client::{Client, ClientConfig, Consistency};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args_os()
        .nth(1)
        .context("usage: quickstart <path/to/client.toml>")?;
    let config = ClientConfig::load(&path)?;
    let client = Client::connect(config).await?;
    println!("connected to {}", client.current_node().unwrap_or_default());

    // A counter: increments from every region add up.
    let likes = client.counter("quickstart:likes");
    let after = likes.incr(1).consistency(Consistency::Quorum).await?;
    println!(
        "likes = {} (quorum write, served by {})",
        after.value, after.node
    );
    let seen = likes.read().await?;
    println!("likes = {} (local read)", seen.value);

    // A set: adds win over concurrent removes.
    let cart = client.set("quickstart:cart");
    cart.add(["apple", "pear"]).await?;
    cart.remove(["pear"]).await?;
    let members = cart.members().consistency(Consistency::Quorum).await?;
    let names: Vec<String> = members
        .value
        .members
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    println!("cart = {names:?}");

    // A register: the last writer (by hybrid logical clock) wins.
    let greeting = client.register("quickstart:greeting");
    greeting
        .put("hello from the quickstart")
        .timeout(Duration::from_secs(2))
        .await?;
    let value = greeting.get().await?.value;
    println!(
        "greeting = {:?} (written at {:?})",
        value.value.as_deref().map(String::from_utf8_lossy),
        value.hlc
    );

    // Errors say whether the request may have taken effect.
    match likes.incr(1).timeout(Duration::from_millis(1)).await {
        Ok(read) => println!("likes = {}", read.value),
        Err(e) if e.is_definite() => println!("not counted ({}): {e}", e.code()),
        Err(e) => println!("may or may not have counted ({}): {e}", e.code()),
    }

    let status = client.status().await?;
    println!(
        "{} in {}: {} peers, {} deltas applied",
        status.node,
        status.region,
        status.peers.len(),
        status.deltas_applied
    );
    client.close().await;
    Ok(())
}
