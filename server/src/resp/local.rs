//! Pipelined commands this node serves alone, batched: one engine-pool job
//! for a run of a connection's pipelined requests instead of an async
//! request (and one or two pool hops) per command.
//!
//! A command qualifies ([`candidate`]) when it is one of `GET`, `SET`,
//! `INCRBY` (`INCR`, `DECR`, `DECRBY`), `SADD`, `MGET`, `MSET` and `HSET`
//! (`HMSET`), at the
//! connection's level, outside `MULTI`, on keys the node serves alone at
//! that level
//! ([`Coordinator::serves_locally`]: `local`, or a key with one replica).
//! [`Coordinator::execute`] would read and write this node's engine alone
//! for those too; here the type check (the `Inspect`) and the write run in
//! the same job, and the job runs the commands of the run in order.
//!
//! What each command answers is what the one-at-a-time path answers (the
//! type rule and options are [`super::strings`]'s, [`super::sets`]'s and
//! [`super::hashes`]'s own
//! functions): a command sees the effect of the commands before it, and
//! replies stay in request order. Writes are acknowledged only once the
//! job's last log position is as durable as the level needs (one
//! group-committed fsync covers the run under `sync`); if that fails, each
//! command that wrote answers the error a write's durability failure
//! answers (`INDETERMINATE ...`).

use std::time::Instant;

use bytes::Bytes;
use meridian_client::wire::{Operation, ReplyValue};

use super::RespServer;
use super::command::Command;
use super::connection::{FLUSH_BYTES, Session};
use super::data::{Failed, Present, after_writes, error_reply};
use super::frame::Reply;
use super::{hashes, sets, strings};
use crate::coordinator::LocalJob;
use crate::metrics::Origin;

/// Most commands one engine job runs: bounds how long a connection holds
/// a pool slot (a few milliseconds of small commands).
pub const MAX_BATCH_COMMANDS: usize = 64;

/// Reply bytes after which a job runs no further commands of its batch:
/// the rest run in the next job, once the replies so far are encoded (and
/// written out past [`FLUSH_BYTES`]), so pending replies stay bounded as on
/// the one-at-a-time path.
pub const MAX_JOB_REPLY_BYTES: usize = FLUSH_BYTES;

/// `request` as a command to batch, if it qualifies (see the module docs).
pub fn candidate(server: &RespServer, session: &Session, request: &[Bytes]) -> Option<Command> {
    if !session.authenticated || session.multi.is_some() {
        return None;
    }
    let name = request.first()?;
    // Cheap refusal before parsing: only these command names qualify.
    if ![
        &b"get"[..],
        b"set",
        b"incr",
        b"decr",
        b"incrby",
        b"decrby",
        b"sadd",
        b"mget",
        b"mset",
        b"hset",
        b"hmset",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
    {
        return None;
    }
    let command = Command::parse(request.to_vec()).ok()?;
    let local = |key: &Bytes| server.coordinator.serves_locally(key, session.level);
    let qualifies = match &command {
        Command::Get(key)
        | Command::Set { key, .. }
        | Command::IncrBy { key, .. }
        | Command::SAdd { key, .. }
        | Command::HSet { key, .. } => local(key),
        Command::MGet(keys) => keys.iter().all(local),
        Command::MSet(pairs) => pairs.iter().all(|(key, _)| local(key)),
        _ => false,
    };
    qualifies.then_some(command)
}

/// Runs `commands` (each from [`candidate`]) in one engine job, in order,
/// until [`MAX_JOB_REPLY_BYTES`] of replies: their replies, in order, and
/// the commands not run yet.
pub async fn execute(
    server: &RespServer,
    session: &mut Session,
    commands: Vec<Command>,
) -> (Vec<Reply>, Vec<Command>) {
    let level = session.level;
    let started = Instant::now();
    let asked = commands.len();
    let done = server
        .coordinator
        .run_local(level, move |job| {
            let mut outcomes = Vec::with_capacity(commands.len());
            let mut bytes = 0usize;
            let mut commands = commands.into_iter();
            for command in commands.by_ref() {
                let before = job.writes();
                let result = run_one(job, command);
                bytes += result.as_ref().map_or(64, reply_bytes);
                outcomes.push((result, job.writes() > before));
                if bytes >= MAX_JOB_REPLY_BYTES {
                    break;
                }
            }
            (outcomes, commands.collect::<Vec<_>>())
        })
        .await;
    let metrics = &server.coordinator.metrics;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            // Shutting down: nothing ran.
            let took = started.elapsed();
            for _ in 0..asked {
                metrics.record(Origin::Resp, false, level, false, took);
            }
            return (vec![error_reply(&e, false); asked], Vec::new());
        }
    };
    let took = started.elapsed();
    let (outcomes, rest) = done.value;
    if let Some(last) = done.last_write {
        session.last_write = last;
    }
    let replies = outcomes
        .into_iter()
        .map(|(result, wrote)| {
            let reply = match (&done.durable, result) {
                (Err(e), Ok(_)) if wrote => error_reply(e, true),
                (_, Ok(reply)) => reply,
                (_, Err(Failed(reply))) => reply,
            };
            metrics.record(Origin::Resp, wrote, level, !reply.is_error(), took);
            reply
        })
        .collect();
    (replies, rest)
}

/// About how many bytes `reply` encodes to.
fn reply_bytes(reply: &Reply) -> usize {
    match reply {
        Reply::Bulk(b) => b.len() + 16,
        Reply::Array(items) => items.iter().map(reply_bytes).sum::<usize>() + 16,
        _ => 16,
    }
}

/// What `key` holds, by this replica.
fn probe(job: &LocalJob, key: &Bytes, members: &[Vec<u8>]) -> Result<Present, Failed> {
    job.inspect(key, members)
        .map(Present::from)
        .map_err(|e| Failed(error_reply(&e, false)))
}

fn write(job: &mut LocalJob, op: Operation) -> Result<Option<ReplyValue>, Failed> {
    job.write(op).map_err(|e| Failed(error_reply(&e, true)))
}

/// One command, as [`super::strings`] and [`super::sets`] run it.
fn run_one(job: &mut LocalJob, command: Command) -> Result<Reply, Failed> {
    match command {
        Command::Get(key) => {
            let p = probe(job, &key, &[])?;
            p.want_string()?;
            Ok(strings::opt(p.string()))
        }
        Command::Set {
            key,
            value,
            nx,
            xx,
            get,
            ttl,
        } => match strings::plan_set(probe(job, &key, &[])?, nx, xx, get)? {
            strings::SetPlan::Answer(reply) => Ok(reply),
            strings::SetPlan::Write(reply) => {
                write(job, strings::set_op(&key, &value, ttl))?;
                Ok(reply)
            }
        },
        Command::IncrBy { key, delta } => {
            strings::check_incr(&probe(job, &key, &[])?, delta)?;
            let value = write(
                job,
                Operation::CounterIncr {
                    key: key.to_vec(),
                    delta,
                },
            )?;
            strings::incr_reply(value)
        }
        Command::SAdd { key, members } => {
            let asked: Vec<Vec<u8>> = sets::distinct(&members)
                .into_iter()
                .map(|m| m.to_vec())
                .collect();
            let p = probe(job, &key, &asked)?;
            p.want_set()?;
            let added = p.members_present.iter().filter(|h| !**h).count();
            write(
                job,
                Operation::SetAdd {
                    key: key.to_vec(),
                    members: members.iter().map(|m| m.to_vec()).collect(),
                },
            )?;
            Ok(Reply::Integer(added as i64))
        }
        Command::MGet(keys) => {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(strings::mget_one(&probe(job, &key, &[])?));
            }
            Ok(Reply::Array(out))
        }
        Command::MSet(pairs) => {
            // Every key's type first (a wrong type changes nothing), then
            // the writes in order: one job, one durability wait for all.
            for (key, _) in &pairs {
                strings::check_mset(&probe(job, key, &[])?)?;
            }
            for (done, (key, value)) in pairs.into_iter().enumerate() {
                let op = Operation::RegisterPut {
                    key: key.to_vec(),
                    value: value.to_vec(),
                };
                write(job, op).map_err(|Failed(e)| Failed(after_writes(done, e)))?;
            }
            Ok(Reply::ok())
        }
        Command::HSet { key, pairs, hmset } => {
            let asked: Vec<Vec<u8>> = hashes::hset_fields(&pairs)
                .iter()
                .map(|f| f.to_vec())
                .collect();
            let p = job
                .inspect_fields(&key, &asked)
                .map(Present::from)
                .map_err(|e| Failed(error_reply(&e, false)))?;
            let reply = hashes::hset_reply(&p, hmset)?;
            write(job, hashes::hset_op(&key, pairs))?;
            Ok(reply)
        }
        other => Err(Failed(Reply::error(format!(
            "ERR internal error: {other:?} is not a batched command"
        )))),
    }
}
