//! String commands: `GET`, `SET` (with `EX|PX|EXAT|PXAT|KEEPTTL`, see
//! [`super::expire`]), `MGET`, `MSET`, `INCRBY` (and `INCR`, `DECR`,
//! `DECRBY`), `STRLEN`, `GETDEL`. A string is a last-writer-wins
//! register (`SET`) or a counter (`INCR` family); see [`super::data`] for
//! how they share a key.

use bytes::Bytes;
use meridian_client::wire::{Kind, Operation, ReplyValue, Ttl};

use super::data::{Data, Failed, Present, WRONGTYPE};
use super::frame::Reply;
use super::parse::NOT_INTEGER;

pub(super) fn opt(v: Option<Bytes>) -> Reply {
    v.map_or(Reply::Null, Reply::Bulk)
}

pub async fn get(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    p.want_string()?;
    Ok(opt(p.string()))
}

pub async fn strlen(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    p.want_string()?;
    Ok(Reply::Integer(p.string().map_or(0, |s| s.len() as i64)))
}

/// What `SET` does, given what the key holds.
pub(super) enum SetPlan {
    /// Answer this without writing (`NX`/`XX` not met).
    Answer(Reply),
    /// Write the value, then answer this.
    Write(Reply),
}

/// `SET`'s type rule and `NX`/`XX`/`GET` options on what the key holds.
pub(super) fn plan_set(p: Present, nx: bool, xx: bool, get: bool) -> Result<SetPlan, Failed> {
    if p.has_collection() || p.counter != 0 {
        return Err(WRONGTYPE.into());
    }
    let exists = p.register.is_some();
    let old = opt(p.register.map(Bytes::from));
    if (nx && exists) || (xx && !exists) {
        return Ok(SetPlan::Answer(if get { old } else { Reply::Null }));
    }
    Ok(SetPlan::Write(if get { old } else { Reply::ok() }))
}

/// `SET`'s write: a plain register write (which clears the TTL), or one
/// that sets or keeps it.
pub(super) fn set_op(key: &Bytes, value: &Bytes, ttl: Ttl) -> Operation {
    match ttl {
        Ttl::Persist => Operation::RegisterPut {
            key: key.to_vec(),
            value: value.to_vec(),
        },
        ttl => Operation::RegisterPutTtl {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl,
        },
    }
}

/// `SET`: `NX`/`XX` are evaluated on what the contacted replica (or the
/// level's read) shows, not under a lock: two regions can both succeed.
pub async fn set(
    d: &mut Data<'_>,
    key: Bytes,
    value: Bytes,
    (nx, xx, get): (bool, bool, bool),
    ttl: Ttl,
) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    match plan_set(p, nx, xx, get)? {
        SetPlan::Answer(reply) => Ok(reply),
        SetPlan::Write(reply) => {
            d.write(set_op(&key, &value, ttl)).await?;
            Ok(reply)
        }
    }
}

pub async fn mget(d: &mut Data<'_>, keys: Vec<Bytes>) -> Result<Reply, Failed> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(mget_one(&d.probe(&key).await?));
    }
    Ok(Reply::Array(out))
}

/// One key's `MGET` answer: like Redis, nil for a key of another type.
pub(super) fn mget_one(p: &Present) -> Reply {
    if p.has_collection() {
        Reply::Null
    } else {
        opt(p.string())
    }
}

/// `MSET`'s type rule for one of its keys: a register or nothing.
pub(super) fn check_mset(p: &Present) -> Result<(), Failed> {
    if p.has_collection() || p.counter != 0 {
        return Err(WRONGTYPE.into());
    }
    Ok(())
}

/// `MSET`: every key's type is checked first (a wrong type changes
/// nothing), then the keys are written one by one: not atomic.
pub async fn mset(d: &mut Data<'_>, pairs: Vec<(Bytes, Bytes)>) -> Result<Reply, Failed> {
    for (key, _) in &pairs {
        check_mset(&d.probe(key).await?)?;
    }
    for (key, value) in pairs {
        d.write(Operation::RegisterPut {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await?;
    }
    Ok(Reply::ok())
}

/// `INCRBY`'s type rule and overflow check on what the key holds.
pub(super) fn check_incr(p: &Present, delta: i64) -> Result<(), Failed> {
    p.want_string()?;
    if p.register.is_some() {
        return Err(NOT_INTEGER.into());
    }
    if p.counter.checked_add(delta).is_none() {
        return Err("ERR increment or decrement would overflow".into());
    }
    Ok(())
}

/// `INCRBY`'s answer from the increment's reply.
pub(super) fn incr_reply(value: Option<ReplyValue>) -> Result<Reply, Failed> {
    match value {
        Some(ReplyValue::Counter { value }) => Ok(Reply::Integer(value)),
        // The write took effect: whatever went wrong after it is not a
        // clean failure (a prefix no client retries).
        other => Err(format!(
            "INDETERMINATE the increment took effect but its reply was {other:?}"
        )
        .into()),
    }
}

pub async fn incr_by(d: &mut Data<'_>, key: Bytes, delta: i64) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    check_incr(&p, delta)?;
    let value = d
        .write(Operation::CounterIncr {
            key: key.to_vec(),
            delta,
        })
        .await?;
    incr_reply(Some(value))
}

pub async fn getdel(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    p.want_string()?;
    let value = p.string();
    for kind in p.kinds() {
        if kind != Kind::Set {
            d.write(Operation::Delete {
                kind,
                key: key.to_vec(),
            })
            .await?;
        }
    }
    Ok(opt(value))
}
