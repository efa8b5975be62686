//! Set commands over Meridian's observed-remove set: `SADD`, `SREM`,
//! `SMEMBERS`, `SISMEMBER`, `SMISMEMBER`, `SCARD`, `SRANDMEMBER`, `SPOP`,
//! `SSCAN`. A concurrent add wins over a remove that did not observe it.
//!
//! `SSCAN` lists a set of any size page by page (`SMEMBERS` refuses a set
//! whose reply would pass about 19 MiB and says to use `SSCAN`): members in
//! ascending byte order after the last one listed, `COUNT` per page
//! (default 10, at most `wire::MAX_SET_PAGE_MEMBERS`) and about
//! `wire::MAX_SET_PAGE_BYTES` at most, so every call's cost is bounded.
//! Every member present from the first call to the last is returned
//! exactly once. A page is read from one replica: at `quorum` and `all`
//! `SSCAN` is refused (use `MERIDIAN.AT local|leader SSCAN ...`).

use bytes::Bytes;
use meridian_client::wire::Operation;
use rand::seq::{IndexedRandom, SliceRandom};

use super::cursors::Scope;
use super::data::{Data, Failed};
use super::frame::Reply;
use super::glob::Glob;

/// Distinct members of `members` not yet counted, in argument order.
pub(super) fn distinct(members: &[Bytes]) -> Vec<&Bytes> {
    let mut seen: std::collections::HashSet<&[u8]> = std::collections::HashSet::new();
    members.iter().filter(|m| seen.insert(&m[..])).collect()
}

/// Every member of the set at `key` (after the type check).
async fn members_of(d: &mut Data<'_>, key: &Bytes) -> Result<Vec<Vec<u8>>, Failed> {
    d.probe(key).await?.want_set()?;
    d.set_members(key).await
}

/// The type check, and whether the set at `key` holds each of `members`:
/// point reads, whatever the set's size.
async fn holds(d: &mut Data<'_>, key: &Bytes, members: &[Bytes]) -> Result<Vec<bool>, Failed> {
    let p = d.probe_members(key, members).await?;
    p.want_set()?;
    Ok(p.members_present)
}

pub async fn sadd(d: &mut Data<'_>, key: Bytes, members: Vec<Bytes>) -> Result<Reply, Failed> {
    let asked: Vec<Bytes> = distinct(&members).into_iter().cloned().collect();
    let held = holds(d, &key, &asked).await?;
    let added = held.iter().filter(|h| !**h).count();
    d.write(Operation::SetAdd {
        key: key.to_vec(),
        members: members.iter().map(|m| m.to_vec()).collect(),
    })
    .await?;
    Ok(Reply::Integer(added as i64))
}

pub async fn srem(d: &mut Data<'_>, key: Bytes, members: Vec<Bytes>) -> Result<Reply, Failed> {
    let asked: Vec<Bytes> = distinct(&members).into_iter().cloned().collect();
    let held = holds(d, &key, &asked).await?;
    let observed: Vec<Vec<u8>> = asked
        .iter()
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(m, _)| m.to_vec())
        .collect();
    if observed.is_empty() {
        // Removes only what it observed: nothing.
        return Ok(Reply::Integer(0));
    }
    let n = observed.len();
    d.write(Operation::SetRemove {
        key: key.to_vec(),
        members: observed,
    })
    .await?;
    Ok(Reply::Integer(n as i64))
}

pub async fn smembers(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let members = members_of(d, &key).await?;
    Ok(Reply::Set(
        members.into_iter().map(|m| Reply::Bulk(m.into())).collect(),
    ))
}

pub async fn sismember(d: &mut Data<'_>, key: Bytes, member: Bytes) -> Result<Reply, Failed> {
    let held = holds(d, &key, std::slice::from_ref(&member)).await?;
    Ok(Reply::Integer(i64::from(held.first() == Some(&true))))
}

pub async fn smismember(
    d: &mut Data<'_>,
    key: Bytes,
    members: Vec<Bytes>,
) -> Result<Reply, Failed> {
    let held = holds(d, &key, &members).await?;
    Ok(Reply::Array(
        held.into_iter()
            .map(|h| Reply::Integer(i64::from(h)))
            .collect(),
    ))
}

pub async fn scard(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    p.want_set()?;
    Ok(Reply::Integer(p.set_count as i64))
}

/// `count` distinct members (all if fewer), in random order.
fn pick(members: &[Vec<u8>], count: usize) -> Vec<Vec<u8>> {
    let mut rng = rand::rng();
    let mut out: Vec<Vec<u8>> = members
        .choose_multiple(&mut rng, count.min(members.len()))
        .cloned()
        .collect();
    out.shuffle(&mut rng);
    out
}

pub async fn srandmember(
    d: &mut Data<'_>,
    key: Bytes,
    count: Option<i64>,
) -> Result<Reply, Failed> {
    let members = members_of(d, &key).await?;
    let bulk = |m: Vec<u8>| Reply::Bulk(m.into());
    Ok(match count {
        None => pick(&members, 1).pop().map_or(Reply::Null, bulk),
        Some(c) if c >= 0 => {
            Reply::Array(pick(&members, c as usize).into_iter().map(bulk).collect())
        }
        Some(c) => {
            // Negative: |c| members, repeats allowed.
            let mut rng = rand::rng();
            if members.is_empty() {
                Reply::Array(Vec::new())
            } else {
                Reply::Array(
                    (0..c.unsigned_abs())
                        .filter_map(|_| members.choose(&mut rng).cloned())
                        .map(bulk)
                        .collect(),
                )
            }
        }
    })
}

/// `SPOP`: reads the set, picks, then removes what it picked (an
/// observed-remove): two regions popping concurrently can pop the same
/// member, and a member added concurrently elsewhere survives.
pub async fn spop(d: &mut Data<'_>, key: Bytes, count: Option<i64>) -> Result<Reply, Failed> {
    let members = members_of(d, &key).await?;
    let picked = pick(&members, count.unwrap_or(1).max(0) as usize);
    if !picked.is_empty() {
        d.write(Operation::SetRemove {
            key: key.to_vec(),
            members: picked.clone(),
        })
        .await?;
    }
    let bulk = |m: Vec<u8>| Reply::Bulk(m.into());
    Ok(match count {
        None => picked.into_iter().next().map_or(Reply::Null, bulk),
        Some(_) => Reply::Set(picked.into_iter().map(bulk).collect()),
    })
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]` (see the module docs).
pub async fn sscan(
    d: &mut Data<'_>,
    key: Bytes,
    cursor: u64,
    pattern: Option<Bytes>,
    count: Option<u32>,
) -> Result<Reply, Failed> {
    let scope = Scope::Set(key.clone());
    let after = d.cursors.take(&scope, cursor)?;
    d.probe(&key).await?.want_set()?;
    let glob = Glob::of_option(pattern.as_deref());
    // Redis's default COUNT, as for SCAN.
    let count = count
        .unwrap_or(meridian_client::wire::DEFAULT_SCAN_COUNT)
        .min(meridian_client::wire::MAX_SET_PAGE_MEMBERS);
    let (members, next) = d.set_page(&key, after, count).await?;
    let listed = members
        .into_iter()
        .filter(|m| glob.as_ref().is_none_or(|g| g.matches(m)))
        .map(|m| Reply::Bulk(m.into()))
        .collect();
    let cursor = match next {
        Some(last) => d.cursors.issue(scope, last),
        None => 0,
    };
    Ok(Reply::Array(vec![
        Reply::Bulk(cursor.to_string().into()),
        Reply::Array(listed),
    ]))
}
