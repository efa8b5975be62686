//! Step 3: concurrent conflicting writes: an add-wins set, a
//! last-writer-wins register, a hash (map) with a register field and a
//! counter field; then an expiring key (`expiring.rs`).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use meridian_client::wire::ReplyValue;
use meridian_client::{Consistency, Error as ClientError, Kind, WireHlc};
use rand::Rng;
use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use super::{Tour, converge, print_reads, set_of};
use crate::demo::print::{header, hlc_text, ms};
use crate::demo::{CONCURRENT_ATTEMPTS, REGIONS, one_way_ms};

impl Tour<'_> {
    /// Step 3: add-wins set, last-writer-wins register.
    pub(super) async fn conflicts(&mut self) -> Result<()> {
        header(
            "3. Concurrent conflicting writes: an add-wins set, a last-writer-wins register, a hash",
        );
        let (us, ap) = (0, 2);
        let all: Vec<usize> = (0..REGIONS.len()).collect();

        // The set: add in us-east concurrently with remove in ap-south.
        let delay = Duration::from_millis(one_way_ms(REGIONS[us], REGIONS[ap]));
        let mut proven = None;
        for attempt in 0..CONCURRENT_ATTEMPTS {
            let key = if attempt == 0 {
                "cart".to_owned()
            } else {
                format!("cart-{}", attempt + 1)
            };
            let cart = |r: usize| self.client(r).set(key.as_str());
            cart(us)
                .add(["apple", "bread"])
                .consistency(Consistency::Local)
                .await
                .context("adding to the set")?;
            let both = set_of(&["apple", "bread"]);
            let arrivals =
                converge(self.clients(), &all, Kind::Set, &key, &both, Instant::now()).await;
            if let Some(Err(last)) = arrivals.iter().find(|a| a.is_err()) {
                bail!("set {key:?} did not reach every region (last read {last})");
            }
            if attempt == 0 {
                say!(
                    "us-east adds apple and bread to the set \"{key}\"; all three regions read {{apple, bread}}."
                );
                say!(
                    "Then, at the same moment, us-east adds apple again while ap-south removes \
                     apple and bread (`local` consistency)."
                );
            }
            let barrier = Arc::new(Barrier::new(2));
            let add = {
                let set = cart(us);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    set.add(["apple"]).consistency(Consistency::Local).await?;
                    Ok::<_, ClientError>((start, Instant::now()))
                })
            };
            let remove = {
                let set = cart(ap);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    set.remove(["apple", "bread"])
                        .consistency(Consistency::Local)
                        .await?;
                    Ok::<_, ClientError>((start, Instant::now()))
                })
            };
            let (add_start, add_ack) = add
                .await
                .context("add task")?
                .context("adding apple in us-east")?;
            let (rm_start, rm_ack) = remove
                .await
                .context("remove task")?
                .context("removing in ap-south")?;
            // Each was applied (acknowledged) before the other could have
            // arrived: neither saw the other.
            if rm_ack < add_start + delay && add_ack < rm_start + delay {
                say!(
                    "  Both were acknowledged within {} of starting, before either could cross \
                     the {} ms to the other region: truly concurrent.",
                    ms(add_ack.max(rm_ack) - add_start.min(rm_start)),
                    delay.as_millis()
                );
                proven = Some(key);
                break;
            }
            say!(
                "  (This machine took too long to make the two writes concurrent; trying again \
                 with a fresh set.)"
            );
        }
        match proven {
            None => self.expect(
                false,
                format!(
                    "add wins (could not issue the add and the remove within {} ms of each other \
                     in {CONCURRENT_ATTEMPTS} attempts: machine too busy)",
                    delay.as_millis()
                ),
            ),
            Some(key) => {
                let expected = set_of(&["apple"]);
                let since = Instant::now();
                let arrivals =
                    converge(self.clients(), &all, Kind::Set, &key, &expected, since).await;
                print_reads(&expected, &arrivals);
                self.expect(
                    arrivals.iter().all(Result::is_ok),
                    "add wins: apple (added in us-east concurrently with its removal in ap-south) \
                     is in the set in every region; bread (removed, no concurrent add) is gone",
                );
            }
        }

        // The register: three concurrent puts; the largest HLC wins.
        say!();
        let palette = [
            "blue", "green", "orange", "purple", "red", "saffron", "teal", "yellow",
        ];
        let mut colors: Vec<&str> = Vec::new();
        while colors.len() < REGIONS.len() {
            let c = palette[self.rng.random_range(0..palette.len())];
            if !colors.contains(&c) {
                colors.push(c);
            }
        }
        say!(
            "At the same moment, each region puts a different value into the register \
             \"color\" (`local` consistency):"
        );
        let barrier = Arc::new(Barrier::new(REGIONS.len()));
        // Each put: when it started, when it was acknowledged, its stamp.
        type Put = (Instant, Instant, Option<WireHlc>);
        let handles: Vec<JoinHandle<Result<Put, ClientError>>> = (0..REGIONS.len())
            .map(|r| {
                let reg = self.client(r).register("color");
                let value = colors[r].to_owned();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    let reply = reg.put(value).consistency(Consistency::Local).await?;
                    Ok((start, Instant::now(), reply.value.hlc))
                })
            })
            .collect();
        let mut puts = Vec::new();
        for (r, h) in handles.into_iter().enumerate() {
            let (start, ack, hlc) = h
                .await
                .context("put task")?
                .with_context(|| format!("putting in {}", REGIONS[r]))?;
            let hlc =
                hlc.with_context(|| format!("the put in {} returned no timestamp", REGIONS[r]))?;
            puts.push((start, ack, hlc));
        }
        for (r, (_, _, hlc)) in puts.iter().enumerate() {
            say!(
                "  {:<9} put {:<10} stamped {}",
                REGIONS[r],
                format!("{:?}", colors[r]),
                hlc_text(hlc)
            );
        }
        let concurrent = (0..REGIONS.len()).all(|a| {
            (0..REGIONS.len()).all(|b| {
                a == b
                    || puts[a].1
                        < puts[b].0 + Duration::from_millis(one_way_ms(REGIONS[a], REGIONS[b]))
            })
        });
        if concurrent {
            say!("  Each was acknowledged before the others could arrive: concurrent.");
        }
        let winner = (0..REGIONS.len())
            .max_by_key(|&r| (puts[r].2.time, puts[r].2.node))
            .expect("three puts");
        say!(
            "  The largest timestamp is {}'s {:?} (equal times would be ordered by node id).",
            REGIONS[winner],
            colors[winner]
        );
        let expected = ReplyValue::Register {
            value: Some(colors[winner].as_bytes().to_vec()),
            hlc: Some(puts[winner].2),
        };
        let arrivals = converge(
            self.clients(),
            &all,
            Kind::Register,
            "color",
            &expected,
            Instant::now(),
        )
        .await;
        print_reads(&expected, &arrivals);
        self.expect(
            arrivals.iter().all(Result::is_ok),
            format!(
                "last writer wins: every region reads {:?}, the write with the larger HLC timestamp (LWW winner: {})",
                colors[winner], REGIONS[winner]
            ),
        );

        self.hash().await?;
        self.expiring().await
    }

    /// A hash (map): at the same moment every region sets the field
    /// `owner` to its own name and adds to the counter field `visits`.
    async fn hash(&mut self) -> Result<()> {
        say!();
        say!(
            "A hash (Redis HSET/HINCRBY): at the same moment each region sets the field \"owner\" \
             of the map \"page\" to its own name and adds 1, 2 or 3 to the field \"visits\":"
        );
        let barrier = Arc::new(Barrier::new(REGIONS.len()));
        let handles: Vec<JoinHandle<Result<(), ClientError>>> = (0..REGIONS.len())
            .map(|r| {
                let page = self.client(r).map("page");
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    page.set([("owner", REGIONS[r])])
                        .consistency(Consistency::Local)
                        .await?;
                    page.incr("visits", r as i64 + 1)
                        .consistency(Consistency::Local)
                        .await?;
                    Ok(())
                })
            })
            .collect();
        for (r, h) in handles.into_iter().enumerate() {
            h.await
                .context("hash task")?
                .with_context(|| format!("writing the hash in {}", REGIONS[r]))?;
        }
        let want_visits: i64 = (1..=REGIONS.len() as i64).sum();
        let field = |v: &ReplyValue, name: &str| match v {
            ReplyValue::Map { fields, .. } => fields
                .iter()
                .find(|(f, _)| f == name.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            _ => None,
        };
        // Every region reads the same map, with every increment in it.
        let since = Instant::now();
        let mut last: Vec<String>;
        let agreed = loop {
            let mut reads = Vec::with_capacity(REGIONS.len());
            for r in 0..REGIONS.len() {
                reads.push(
                    super::read(self.client(r), Kind::Map, "page", Consistency::Local)
                        .await
                        .map_err(|e| format!("error: {e}")),
                );
            }
            last = reads
                .iter()
                .map(|v| match v {
                    Ok(v) => crate::demo::print::show(v),
                    Err(e) => e.clone(),
                })
                .collect();
            if let Ok(first) = &reads[0]
                && reads.iter().all(|v| v.as_ref() == Ok(first))
                && field(first, "visits") == Some(want_visits.to_string())
            {
                break Some(first.clone());
            }
            if since.elapsed() > crate::demo::CONVERGE_TIMEOUT {
                break None;
            }
            tokio::time::sleep(crate::demo::POLL_INTERVAL).await;
        };
        for (r, l) in last.iter().enumerate() {
            say!("  {:<9} reads {l}", REGIONS[r]);
        }
        let owner = agreed.as_ref().and_then(|v| field(v, "owner"));
        self.expect(
            owner.as_deref().is_some_and(|o| REGIONS.contains(&o)),
            format!(
                "hash fields converge: every region reads the same \"owner\" ({}), one of the \
                 three values written (the register rule: largest HLC wins)",
                owner.as_deref().unwrap_or("no agreement")
            ),
        );
        self.expect(
            agreed.is_some(),
            format!(
                "hash counters add up: \"visits\" is {want_visits} in every region (1 + 2 + 3, \
                 increments made concurrently in three regions)"
            ),
        );
        Ok(())
    }
}
