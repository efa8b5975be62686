//! The guided tour: one chapter per file, each an `impl Tour` with its
//! step; this file holds what they share (the expectations, reads and
//! convergence waits).

use std::io::Write as _;
use std::time::{Duration, Instant};

use meridian_client::wire::ReplyValue;
use meridian_client::{
    Client, Consistency, Error as ClientError, Kind, MapValue, RegisterValue, SetValue,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinHandle;

use super::cluster::DemoCluster;
use super::print::show;
use super::{CONVERGE_TIMEOUT, POLL_INTERVAL, REGIONS, Sizes};

mod conflicts;
mod counters;
mod expiring;
mod latency;
mod partition;

/// One expectation of the tour and whether it held.
#[derive(Clone, Debug)]
pub(super) struct Check {
    pub step: u8,
    pub what: String,
    pub passed: bool,
}

/// Reads `key` at `level` through `client`.
async fn read(
    client: &Client,
    kind: Kind,
    key: &str,
    level: Consistency,
) -> Result<ReplyValue, ClientError> {
    Ok(match kind {
        Kind::Counter => ReplyValue::Counter {
            value: client.counter(key).read().consistency(level).await?.value,
        },
        Kind::Set => {
            let SetValue { members, count } =
                client.set(key).members().consistency(level).await?.value;
            ReplyValue::Set { members, count }
        }
        Kind::Register => {
            let RegisterValue { value, hlc } =
                client.register(key).get().consistency(level).await?.value;
            ReplyValue::Register { value, hlc }
        }
        Kind::Map => {
            let MapValue { fields, count } = client.map(key).all().consistency(level).await?.value;
            ReplyValue::Map { fields, count }
        }
    })
}

/// Prints what each region read: `expected`, or the last thing it read.
fn print_reads(expected: &ReplyValue, arrivals: &[Arrival]) {
    for (i, a) in arrivals.iter().enumerate() {
        match a {
            Ok(_) => say!("  {:<9} reads {}", REGIONS[i], show(expected)),
            Err(last) => say!("  {:<9} reads {last}", REGIONS[i]),
        }
    }
}

/// A counter's value.
fn counter(value: i64) -> ReplyValue {
    ReplyValue::Counter { value }
}

/// A set holding `members` (in the order a read returns them).
fn set_of(members: &[&str]) -> ReplyValue {
    let mut members: Vec<Vec<u8>> = members.iter().map(|m| m.as_bytes().to_vec()).collect();
    members.sort();
    members.dedup();
    ReplyValue::Set {
        count: members.len() as u64,
        members,
    }
}

/// How a region's convergence wait ended: when the expected value showed
/// up (time since `since`), or the last thing it read.
pub(super) type Arrival = Result<Duration, String>;

/// Polls `key` with `local` reads at each of `regions` until it equals
/// `expected` (bounded by [`CONVERGE_TIMEOUT`]); returns each region's
/// [`Arrival`], timed from `since`.
async fn converge(
    clients: &[Client],
    regions: &[usize],
    kind: Kind,
    key: &str,
    expected: &ReplyValue,
    since: Instant,
) -> Vec<Arrival> {
    let handles: Vec<JoinHandle<Arrival>> = regions
        .iter()
        .map(|&r| {
            let client = clients[r].clone();
            let key = key.to_owned();
            let expected = expected.clone();
            tokio::spawn(async move {
                loop {
                    let last = match read(&client, kind, &key, Consistency::Local).await {
                        Ok(v) if v == expected => return Ok(since.elapsed()),
                        Ok(v) => show(&v),
                        Err(e) => format!("error: {e}"),
                    };
                    if since.elapsed() > CONVERGE_TIMEOUT {
                        return Err(last);
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(match h.await {
            Ok(a) => a,
            Err(e) => Err(format!("poller failed: {e}")),
        });
    }
    out
}

/// The guided tour over a running cluster.
pub(super) struct Tour<'a> {
    cluster: &'a DemoCluster,
    sizes: Sizes,
    rng: StdRng,
    pub checks: Vec<Check>,
    step: u8,
}

impl<'a> Tour<'a> {
    pub fn new(cluster: &'a DemoCluster, sizes: Sizes, seed: u64) -> Tour<'a> {
        Tour {
            cluster,
            sizes,
            rng: StdRng::seed_from_u64(seed),
            checks: Vec::new(),
            step: 0,
        }
    }

    fn clients(&self) -> &'a [Client] {
        &self.cluster.clients
    }

    fn client(&self, region: usize) -> &'a Client {
        &self.cluster.clients[region]
    }

    /// Records (and prints) one expectation.
    fn expect(&mut self, passed: bool, what: impl Into<String>) {
        let what = what.into();
        say!("  [{}] {what}", if passed { "PASS" } else { "FAIL" });
        self.checks.push(Check {
            step: self.step,
            what,
            passed,
        });
    }

    /// Runs every step; a step that cannot finish (an unexpected error)
    /// counts as a failed expectation and the tour goes on.
    pub async fn run(&mut self) {
        self.step = 1;
        if let Err(e) = self.counters().await {
            self.expect(false, format!("step 1 finished (it stopped: {e:#})"));
        }
        self.step = 2;
        if let Err(e) = self.latency().await {
            self.expect(false, format!("step 2 finished (it stopped: {e:#})"));
        }
        self.step = 3;
        if let Err(e) = self.conflicts().await {
            self.expect(false, format!("step 3 finished (it stopped: {e:#})"));
        }
        self.step = 4;
        let result = self.partition().await;
        // Heal whatever happened, so the cluster is whole for --serve.
        self.cluster.isolate("ap-south", false);
        if let Err(e) = result {
            self.expect(false, format!("step 4 finished (it stopped: {e:#})"));
        }
    }
}
