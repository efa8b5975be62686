//! Expiry commands: `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` (with
//! `NX|XX|GT|LT`), `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `PERSIST`,
//! `GETEX`; `SET`'s
//! `EX|PX|EXAT|PXAT|KEEPTTL` are parsed here and applied by
//! [`super::strings`].
//!
//! Semantics are Redis's where they can be, on the CRDT underneath
//! (docs/maps-and-expiry.md section 2):
//! * A deadline is computed by the node from its own clock when the write
//!   is applied, never from a client's. A relative time at or below 0, or
//!   an absolute one in the past, expires the key at once (Redis deletes
//!   it); `SET`/`GETEX` refuse non-positive times, as Redis does.
//! * A Redis key may hold several kinds here (concurrent creation, see
//!   [`super::data`]): `EXPIRE`/`PERSIST` apply to every kind present,
//!   as `DEL` does; `TTL` reports the first kind present in `TYPE`'s order.
//! * `NX|XX|GT|LT` are evaluated on what the command's level reads (at
//!   `local`, the contacted replica), not under a lock: two regions can
//!   both set a deadline. Concurrent deadlines all fire: the shorter one
//!   wins, everywhere, and a `PERSIST` cancels only the deadlines its
//!   replica had seen (the reverse of Redis Active-Active, on purpose: an
//!   expiry that happened never comes back).

use bytes::Bytes;
use meridian_client::wire::{Deadline, Kind, Operation, ReplyValue, Ttl};

use super::data::{Data, Failed};
use super::frame::Reply;
use super::parse::int;
use super::strings::opt;

/// `EXPIRE`'s `NX|XX|GT|LT` options (`XX` combines with `GT` or `LT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    /// Only when the key has no TTL.
    pub nx: bool,
    /// Only when it has one.
    pub xx: bool,
    /// Only when the new deadline is later (no TTL counts as infinite).
    pub gt: bool,
    /// Only when the new deadline is earlier (no TTL counts as infinite).
    pub lt: bool,
}

impl Condition {
    /// `before` (the options given so far) with `option` added, with
    /// Redis's errors.
    pub fn parse(option: &str, before: Option<Condition>) -> Result<Condition, String> {
        let mut c = before.unwrap_or_default();
        match option.to_ascii_lowercase().as_str() {
            "nx" => c.nx = true,
            "xx" => c.xx = true,
            "gt" => c.gt = true,
            "lt" => c.lt = true,
            _ => return Err(format!("ERR Unsupported option {option}")),
        }
        if c.nx && (c.xx || c.gt || c.lt) {
            return Err(
                "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
            );
        }
        if c.gt && c.lt {
            return Err("ERR GT and LT options at the same time are not compatible".into());
        }
        Ok(c)
    }

    /// Whether a key whose deadline is `current` (Unix ms, `None`: no
    /// TTL) takes the deadline `new`.
    pub fn allows(self, current: Option<u64>, new: u64) -> bool {
        (!self.nx || current.is_none())
            && (!self.xx || current.is_some())
            && (!self.gt || current.is_some_and(|c| new > c))
            && (!self.lt || current.is_none_or(|c| new < c))
    }
}

/// An expiry time argument: `value` in units of `unit_ms` milliseconds,
/// a Unix time when `absolute`, else from the node's now. `positive`:
/// values at or below 0 are refused (`SET`, `GETEX`); otherwise they
/// expire the key at once (`EXPIRE` and friends). Redis's errors: not an
/// integer, or `ERR invalid expire time in '<command>' command` when the
/// time does not fit 64-bit milliseconds.
pub fn parse_deadline(
    value: &[u8],
    unit_ms: i64,
    absolute: bool,
    positive: bool,
    command: &str,
) -> Result<Deadline, String> {
    let invalid = || format!("ERR invalid expire time in '{command}' command");
    let v = int(value)?;
    if positive && v <= 0 {
        return Err(invalid());
    }
    let ms = v.checked_mul(unit_ms).ok_or_else(invalid)?;
    if absolute {
        return Ok(Deadline::At(u64::try_from(ms).unwrap_or(0)));
    }
    // Redis refuses a relative time that overflows once the current time
    // is added; the node's clock is within seconds of this one.
    let now_ms = i64::try_from(meridian_engine::clock::PhysicalTime::system(0).unix_ms())
        .unwrap_or(i64::MAX);
    if ms > i64::MAX - now_ms {
        return Err(invalid());
    }
    Ok(Deadline::In(u64::try_from(ms).unwrap_or(0)))
}

/// An object's presence and TTL, as a `Ttl` request answers.
#[derive(Clone, Copy, Debug)]
struct TtlSeen {
    exists: bool,
    deadline_ms: Option<u64>,
    remaining_ms: Option<u64>,
}

async fn ttl_of(d: &mut Data<'_>, kind: Kind, key: &Bytes) -> Result<TtlSeen, Failed> {
    let op = Operation::Ttl {
        kind,
        key: key.to_vec(),
    };
    match d.request(op).await? {
        ReplyValue::Ttl {
            exists,
            deadline_ms,
            remaining_ms,
        } => Ok(TtlSeen {
            exists,
            deadline_ms,
            remaining_ms,
        }),
        other => Err(Failed(Reply::Error(format!(
            "ERR internal error: unexpected reply {other:?}"
        )))),
    }
}

/// `deadline` in Unix milliseconds by this node's clock now.
fn unix_ms(d: &Data<'_>, deadline: Deadline) -> u64 {
    match deadline {
        Deadline::In(ms) => d
            .server
            .coordinator
            .clock
            .now()
            .unix_ms()
            .saturating_add(ms),
        Deadline::At(ms) => ms,
    }
}

/// `EXPIRE` and friends: 1 when the key exists and the condition holds
/// (every kind present then takes the deadline), else 0.
pub async fn expire(
    d: &mut Data<'_>,
    key: Bytes,
    deadline: Deadline,
    condition: Option<Condition>,
) -> Result<Reply, Failed> {
    let kinds = d.probe(&key).await?.kinds();
    let Some(&first) = kinds.first() else {
        return Ok(Reply::Integer(0));
    };
    if let Some(condition) = condition {
        let current = ttl_of(d, first, &key).await?.deadline_ms;
        if !condition.allows(current, unix_ms(d, deadline)) {
            return Ok(Reply::Integer(0));
        }
    }
    for kind in kinds {
        d.write(Operation::Expire {
            kind,
            key: key.to_vec(),
            deadline,
        })
        .await?;
    }
    Ok(Reply::Integer(1))
}

/// `TTL` (seconds, rounded to the nearest as Redis does) and `PTTL`;
/// with `absolute`, `EXPIRETIME` (Unix seconds) and `PEXPIRETIME` (Unix
/// milliseconds) of the deadline. -2 when the key is absent, -1 when it
/// has no TTL.
pub async fn ttl(d: &mut Data<'_>, key: Bytes, ms: bool, absolute: bool) -> Result<Reply, Failed> {
    let kinds = d.probe(&key).await?.kinds();
    let Some(&first) = kinds.first() else {
        return Ok(Reply::Integer(-2));
    };
    let seen = ttl_of(d, first, &key).await?;
    if absolute {
        return Ok(Reply::Integer(match (seen.exists, seen.deadline_ms) {
            (false, _) => -2,
            (true, None) => -1,
            (true, Some(at)) if ms => i64::try_from(at).unwrap_or(i64::MAX),
            (true, Some(at)) => i64::try_from(at / 1000).unwrap_or(i64::MAX),
        }));
    }
    Ok(Reply::Integer(match (seen.exists, seen.remaining_ms) {
        // Expired between the two reads.
        (false, _) => -2,
        (true, None) => -1,
        (true, Some(r)) if ms => i64::try_from(r).unwrap_or(i64::MAX),
        (true, Some(r)) => i64::try_from(r.saturating_add(500) / 1000).unwrap_or(i64::MAX),
    }))
}

/// `PERSIST`: removes the TTL of every kind present that has one; 1 when
/// one had, else 0.
pub async fn persist(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let kinds = d.probe(&key).await?.kinds();
    let mut removed = false;
    for kind in kinds {
        if ttl_of(d, kind, &key).await?.deadline_ms.is_some() {
            d.write(Operation::Persist {
                kind,
                key: key.to_vec(),
            })
            .await?;
            removed = true;
        }
    }
    Ok(Reply::Integer(i64::from(removed)))
}

/// `GETEX`: the string's value (nil when absent), and when it is present
/// the TTL change asked for, on each string kind present.
pub async fn getex(d: &mut Data<'_>, key: Bytes, change: Option<Ttl>) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    p.want_string()?;
    let value = p.string();
    if value.is_some() {
        for kind in p.kinds() {
            let op = match change {
                None | Some(Ttl::Keep) => continue,
                Some(Ttl::Expire(deadline)) => Operation::Expire {
                    kind,
                    key: key.to_vec(),
                    deadline,
                },
                Some(Ttl::Persist) => {
                    if ttl_of(d, kind, &key).await?.deadline_ms.is_none() {
                        continue;
                    }
                    Operation::Persist {
                        kind,
                        key: key.to_vec(),
                    }
                }
            };
            d.write(op).await?;
        }
    }
    Ok(opt(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_combine_and_compare_like_redis() {
        let c = |opts: &[&str]| {
            opts.iter()
                .try_fold(None, |before, o| Condition::parse(o, before).map(Some))
                .map(Option::unwrap)
        };
        assert!(
            c(&["nx", "xx"])
                .unwrap_err()
                .contains("NX and XX, GT or LT")
        );
        assert!(c(&["GT", "lt"]).unwrap_err().contains("GT and LT"));
        assert_eq!(c(&["bogus"]).unwrap_err(), "ERR Unsupported option bogus");
        let nx = c(&["NX"]).unwrap();
        assert!(nx.allows(None, 5) && !nx.allows(Some(1), 5));
        let xx = c(&["xx"]).unwrap();
        assert!(xx.allows(Some(1), 5) && !xx.allows(None, 5));
        let gt = c(&["gt"]).unwrap();
        assert!(gt.allows(Some(4), 5) && !gt.allows(Some(5), 5) && !gt.allows(None, 5));
        let lt = c(&["lt"]).unwrap();
        assert!(lt.allows(Some(6), 5) && !lt.allows(Some(5), 5) && lt.allows(None, 5));
        // XX LT: only a key with a TTL, and only shortening it.
        let xx_lt = c(&["xx", "lt"]).unwrap();
        assert!(xx_lt.allows(Some(6), 5) && !xx_lt.allows(None, 5));
    }

    #[test]
    fn expire_times_parse_with_redis_errors() {
        assert_eq!(
            parse_deadline(b"2", 1000, false, true, "set"),
            Ok(Deadline::In(2000))
        );
        assert_eq!(
            parse_deadline(b"1700000000000", 1, true, true, "set"),
            Ok(Deadline::At(1_700_000_000_000))
        );
        // EXPIRE: a non-positive or past time expires at once.
        assert_eq!(
            parse_deadline(b"-5", 1000, false, false, "expire"),
            Ok(Deadline::In(0))
        );
        assert_eq!(
            parse_deadline(b"-5", 1000, true, false, "expireat"),
            Ok(Deadline::At(0))
        );
        let invalid = "ERR invalid expire time in 'set' command";
        for bad in [&b"0"[..], b"-1"] {
            assert_eq!(
                parse_deadline(bad, 1000, false, true, "set").unwrap_err(),
                invalid
            );
        }
        assert_eq!(
            parse_deadline(b"9223372036854775807", 1000, false, false, "set").unwrap_err(),
            invalid
        );
        assert_eq!(
            parse_deadline(b"9223372036854775807", 1, false, false, "set").unwrap_err(),
            invalid
        );
        assert_eq!(
            parse_deadline(b"x", 1, false, false, "expire").unwrap_err(),
            super::super::parse::NOT_INTEGER
        );
    }
}
