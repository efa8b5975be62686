//! Step 3, last part: an expiring key (Redis `SET … EX`). One region
//! writes it with a time to live; every region learns the deadline, hides
//! the key once its own clock passes it, and never shows it again.

use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use meridian_client::{Consistency, TtlValue};

use super::Tour;
use crate::demo::{CONVERGE_TIMEOUT, POLL_INTERVAL, REGIONS};

/// The key's time to live.
const TTL: Duration = Duration::from_secs(2);

/// How long the regions are watched after all of them hid the key (it
/// must not come back: replication, read repair and the reclamation
/// worker all run meanwhile).
const WATCH_AFTER: Duration = Duration::from_secs(1);

/// The clock bound the docs give (`max_clock_offset`'s default): every
/// region hides the key within it of the deadline.
const CLOCK_BOUND_MS: i64 = 500;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Tour<'_> {
    pub(super) async fn expiring(&mut self) -> Result<()> {
        say!();
        say!(
            "An expiring key (Redis SET … EX 2): {} writes \"session\" with a {} s time to live; \
             the deadline is replicated state, so every region hides the key when its own clock \
             passes it:",
            REGIONS[0],
            TTL.as_secs()
        );
        let session = self.client(0).register("session");
        session
            .put("token-7f3a")
            .ttl(TTL)
            .consistency(Consistency::Local)
            .await
            .context("writing the expiring key")?;
        let deadline = session
            .ttl()
            .consistency(Consistency::Local)
            .await
            .context("reading its TTL")?
            .value
            .deadline_ms
            .context("the key has no deadline")?;
        // Every region holds the key with the same deadline.
        let since = Instant::now();
        let agreed = loop {
            let mut views: Vec<Option<TtlValue>> = Vec::with_capacity(REGIONS.len());
            for r in 0..REGIONS.len() {
                views.push(
                    self.client(r)
                        .register("session")
                        .ttl()
                        .consistency(Consistency::Local)
                        .await
                        .ok()
                        .map(|read| read.value),
                );
            }
            if views.iter().all(|v| {
                v.as_ref()
                    .is_some_and(|v| v.exists && v.deadline_ms == Some(deadline))
            }) {
                break true;
            }
            if since.elapsed() > CONVERGE_TIMEOUT || unix_ms() >= deadline {
                break false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        self.expect(
            agreed,
            "the expiring key and its deadline reach every region before the deadline",
        );
        // Each region hides it: when, relative to the deadline.
        let mut gone_at: Vec<Option<i64>> = vec![None; REGIONS.len()];
        let give_up = Instant::now() + TTL + CONVERGE_TIMEOUT;
        while gone_at.iter().any(Option::is_none) && Instant::now() < give_up {
            for (r, at) in gone_at.iter_mut().enumerate() {
                if at.is_some() {
                    continue;
                }
                let v = self
                    .client(r)
                    .register("session")
                    .get()
                    .consistency(Consistency::Local)
                    .await;
                if v.as_ref().is_ok_and(|v| v.value.value.is_none()) {
                    *at = Some(unix_ms() as i64 - deadline as i64);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (r, at) in gone_at.iter().enumerate() {
            match at {
                Some(ms) => say!(
                    "  {:<9} hides it {:+} ms from the deadline (by this machine's clock)",
                    REGIONS[r],
                    ms
                ),
                None => say!("  {:<9} still shows it", REGIONS[r]),
            }
        }
        // And it stays gone everywhere.
        let mut came_back = Vec::new();
        let watch_until = Instant::now() + WATCH_AFTER;
        while Instant::now() < watch_until {
            for (r, region) in REGIONS.iter().enumerate() {
                let v = self
                    .client(r)
                    .register("session")
                    .get()
                    .consistency(Consistency::Local)
                    .await;
                if !v.as_ref().is_ok_and(|v| v.value.value.is_none()) && !came_back.contains(region)
                {
                    came_back.push(*region);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let all_gone = gone_at.iter().all(Option::is_some);
        self.expect(
            all_gone && came_back.is_empty(),
            format!(
                "the key expires in every region (docs: within {CLOCK_BOUND_MS} ms of the deadline, \
                 the clock bound) and stays gone for {} s after{}",
                WATCH_AFTER.as_secs(),
                if came_back.is_empty() {
                    String::new()
                } else {
                    format!(" (came back in {})", came_back.join(", "))
                }
            ),
        );
        Ok(())
    }
}
