//! Hash commands over Meridian's map (`OrMap`, docs/maps-and-expiry.md):
//! `HSET`/`HMSET`, `HSETNX`, `HGET`, `HMGET`, `HGETALL`, `HDEL`, `HINCRBY`,
//! `HEXISTS`, `HLEN`, `HKEYS`, `HVALS`, `HSTRLEN`, `HSCAN`.
//!
//! Concurrent `HSET`s of one field resolve by the register rule (the
//! larger HLC, then node); concurrent `HINCRBY`s add up; an `HDEL` removes
//! only the writes it observed, so a concurrent `HSET` wins. The point
//! commands (`HGET`, `HMGET`, `HEXISTS`, `HSTRLEN`, `HLEN`) are answered
//! by the type check's own `Probe`: at `local`, a few point reads whatever
//! the map's size. `HSETNX` checks the field on the probe, not under a
//! lock (two regions can both set it; the register rule then picks one),
//! like `SET NX`.

use bytes::Bytes;
use meridian_client::wire::{Operation, ReplyValue};

use super::data::{Data, Failed, Present};
use super::frame::Reply;
use super::glob::Glob;
use super::sets::distinct;

/// The type check, and the values of `fields`.
async fn probe(d: &mut Data<'_>, key: &Bytes, fields: &[Bytes]) -> Result<Present, Failed> {
    let p = d.probe_fields(key, fields).await?;
    p.want_map()?;
    Ok(p)
}

fn bulk(v: Option<Vec<u8>>) -> Reply {
    v.map_or(Reply::Null, |v| Reply::Bulk(v.into()))
}

/// The distinct field names of an `HSET`, in argument order (what its
/// type check asks about).
pub(super) fn hset_fields(pairs: &[(Bytes, Bytes)]) -> Vec<Bytes> {
    let names: Vec<Bytes> = pairs.iter().map(|(f, _)| f.clone()).collect();
    distinct(&names).into_iter().cloned().collect()
}

/// `HSET`'s type rule and answer, given what the probe of
/// [`hset_fields`] found: the number of new fields, or `+OK` for `HMSET`.
pub(super) fn hset_reply(p: &Present, hmset: bool) -> Result<Reply, Failed> {
    p.want_map()?;
    let new = p.map_values.iter().filter(|v| v.is_none()).count();
    Ok(if hmset {
        Reply::ok()
    } else {
        Reply::Integer(new as i64)
    })
}

/// The write of an `HSET`.
pub(super) fn hset_op(key: &Bytes, pairs: Vec<(Bytes, Bytes)>) -> Operation {
    Operation::MapSet {
        key: key.to_vec(),
        pairs: pairs
            .into_iter()
            .map(|(f, v)| (f.to_vec(), v.to_vec()))
            .collect(),
    }
}

/// `HSET` (the number of fields that were new) and `HMSET` (`+OK`).
pub async fn hset(
    d: &mut Data<'_>,
    key: Bytes,
    pairs: Vec<(Bytes, Bytes)>,
    hmset: bool,
) -> Result<Reply, Failed> {
    let p = d.probe_fields(&key, &hset_fields(&pairs)).await?;
    let reply = hset_reply(&p, hmset)?;
    d.write(hset_op(&key, pairs)).await?;
    Ok(reply)
}

pub async fn hsetnx(
    d: &mut Data<'_>,
    key: Bytes,
    field: Bytes,
    value: Bytes,
) -> Result<Reply, Failed> {
    let p = probe(d, &key, std::slice::from_ref(&field)).await?;
    if p.map_values.first().is_some_and(Option::is_some) {
        return Ok(Reply::Integer(0));
    }
    d.write(Operation::MapSet {
        key: key.to_vec(),
        pairs: vec![(field.to_vec(), value.to_vec())],
    })
    .await?;
    Ok(Reply::Integer(1))
}

pub async fn hget(d: &mut Data<'_>, key: Bytes, field: Bytes) -> Result<Reply, Failed> {
    let p = probe(d, &key, std::slice::from_ref(&field)).await?;
    Ok(bulk(p.map_values.into_iter().next().flatten()))
}

pub async fn hmget(d: &mut Data<'_>, key: Bytes, fields: Vec<Bytes>) -> Result<Reply, Failed> {
    let p = probe(d, &key, &fields).await?;
    Ok(Reply::Array(p.map_values.into_iter().map(bulk).collect()))
}

pub async fn hexists(d: &mut Data<'_>, key: Bytes, field: Bytes) -> Result<Reply, Failed> {
    let p = probe(d, &key, std::slice::from_ref(&field)).await?;
    Ok(Reply::Integer(i64::from(
        p.map_values.first().is_some_and(Option::is_some),
    )))
}

pub async fn hstrlen(d: &mut Data<'_>, key: Bytes, field: Bytes) -> Result<Reply, Failed> {
    let p = probe(d, &key, std::slice::from_ref(&field)).await?;
    let len = p
        .map_values
        .first()
        .and_then(Option::as_ref)
        .map_or(0, Vec::len);
    Ok(Reply::Integer(len as i64))
}

pub async fn hlen(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = probe(d, &key, &[]).await?;
    Ok(Reply::Integer(p.map_count as i64))
}

/// Every field and value of the map at `key` (after the type check).
async fn all(d: &mut Data<'_>, key: &Bytes) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Failed> {
    let p = probe(d, key, &[]).await?;
    if !p.has_map() {
        return Ok(Vec::new());
    }
    d.map_fields(key).await
}

pub async fn hgetall(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let fields = all(d, &key).await?;
    Ok(Reply::Map(
        fields
            .into_iter()
            .map(|(f, v)| (Reply::Bulk(f.into()), Reply::Bulk(v.into())))
            .collect(),
    ))
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`: every field
/// (and value, unless `NOVALUES`) matching `pattern`, in one page with
/// cursor 0 whatever the cursor given, as Redis answers for a hash in its
/// compact encoding. So the guarantee of the `SCAN` family (every field
/// present for the whole scan is returned) holds trivially; `COUNT` is a
/// hint, as in Redis; the reply is bounded like `HGETALL`'s.
pub async fn hscan(
    d: &mut Data<'_>,
    key: Bytes,
    pattern: Option<Bytes>,
    novalues: bool,
) -> Result<Reply, Failed> {
    let fields = all(d, &key).await?;
    let glob = Glob::of_option(pattern.as_deref());
    let mut listed = Vec::new();
    for (f, v) in fields {
        if glob.as_ref().is_none_or(|g| g.matches(&f)) {
            listed.push(Reply::Bulk(f.into()));
            if !novalues {
                listed.push(Reply::Bulk(v.into()));
            }
        }
    }
    Ok(Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(b"0")),
        Reply::Array(listed),
    ]))
}

pub async fn hkeys(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let fields = all(d, &key).await?;
    Ok(Reply::Array(
        fields
            .into_iter()
            .map(|(f, _)| Reply::Bulk(f.into()))
            .collect(),
    ))
}

pub async fn hvals(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let fields = all(d, &key).await?;
    Ok(Reply::Array(
        fields
            .into_iter()
            .map(|(_, v)| Reply::Bulk(v.into()))
            .collect(),
    ))
}

/// `HDEL`: removes the fields it observed; answers how many.
pub async fn hdel(d: &mut Data<'_>, key: Bytes, fields: Vec<Bytes>) -> Result<Reply, Failed> {
    let asked: Vec<Bytes> = distinct(&fields).into_iter().cloned().collect();
    let p = probe(d, &key, &asked).await?;
    let observed: Vec<Vec<u8>> = asked
        .iter()
        .zip(&p.map_values)
        .filter(|(_, v)| v.is_some())
        .map(|(f, _)| f.to_vec())
        .collect();
    if observed.is_empty() {
        // Removes only what it observed: nothing.
        return Ok(Reply::Integer(0));
    }
    let n = observed.len();
    d.write(Operation::MapRemove {
        key: key.to_vec(),
        fields: observed,
    })
    .await?;
    Ok(Reply::Integer(n as i64))
}

/// `HINCRBY`: the engine refuses a field that is not an integer (`ERR hash
/// value is not an integer`) or a result out of range (`ERR increment or
/// decrement would overflow`), as Redis words them.
pub async fn hincrby(
    d: &mut Data<'_>,
    key: Bytes,
    field: Bytes,
    delta: i64,
) -> Result<Reply, Failed> {
    probe(d, &key, &[]).await?;
    let value = d
        .write(Operation::MapIncr {
            key: key.to_vec(),
            field: field.to_vec(),
            delta,
        })
        .await?;
    let new = match value {
        ReplyValue::Map { fields, .. } => fields
            .into_iter()
            .find(|(f, _)| f[..] == field[..])
            .and_then(|(_, v)| std::str::from_utf8(&v).ok()?.parse::<i64>().ok()),
        _ => None,
    };
    new.map(Reply::Integer).ok_or_else(|| {
        Failed(Reply::Error(
            "INDETERMINATE internal error: the increment's reply had no integer value".into(),
        ))
    })
}
