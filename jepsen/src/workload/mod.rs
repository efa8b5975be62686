//! Workloads: what each logical process asks the database to do.
//!
//! A [`Workload`] plans the next op for a process (pure bookkeeping, seeded
//! RNG passed in) and hears about completions; [`execute`] turns a planned op
//! into a [`Db`] call and the call's [`Outcome`] into a history completion.
//! Keys are `<workload>-<n>` (see [`crate::history::WorkloadKind`]); every
//! written value is unique, which is what lets the checkers attribute each
//! observed value to exactly one write.

pub mod counter;
pub mod expiry;
pub mod large;
pub mod map;
pub mod register;
pub mod set;

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::db::{Db, ExpiryCmd, ExpiryReply, Meta, Outcome};
use crate::history::{F, Level, OpType, WorkloadKind};

/// An op a workload wants to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub workload: WorkloadKind,
    pub f: F,
    pub key: String,
    /// The invocation value: delta, member, written value, or null for reads.
    pub value: Value,
    /// Extra invocation meta (e.g. the add-wins scenario tag).
    pub meta: Option<Value>,
}

/// A completion, ready for the history.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    pub kind: OpType,
    pub value: Value,
    pub error: Option<String>,
    pub meta: Option<Value>,
}

/// A workload's planning state, shared by all its processes.
pub trait Workload: Send + Sync {
    fn kind(&self) -> WorkloadKind;
    /// The next op for `process`, which is pinned to `node`.
    fn plan(&self, process: u64, node: &str, rng: &mut ChaCha8Rng) -> Planned;
    /// Called with every completion of an op this workload planned.
    fn completed(&self, process: u64, node: &str, op: &Planned, done: &Completion) {
        let _ = (process, node, op, done);
    }
    /// Every key used so far (final reads read them all).
    fn keys(&self) -> Vec<String>;
}

fn meta_json(m: &Meta) -> Option<Value> {
    if m.node.is_none() && m.hlc.is_none() {
        return None;
    }
    let mut v = json!({});
    if let Some(n) = &m.node {
        v["node"] = json!(n);
    }
    if let Some(h) = &m.hlc {
        v["hlc"] = json!(h);
    }
    Some(v)
}

fn complete<T>(o: Outcome<T>, value_of: impl FnOnce(T) -> Value, echo: &Value) -> Completion {
    match o {
        Outcome::Ok(v, m) => Completion {
            kind: OpType::Ok,
            value: value_of(v),
            error: None,
            meta: meta_json(&m),
        },
        Outcome::Fail(e) => Completion {
            kind: OpType::Fail,
            value: echo.clone(),
            error: Some(e),
            meta: None,
        },
        Outcome::Info(e) => Completion {
            kind: OpType::Info,
            value: echo.clone(),
            error: Some(e),
            meta: None,
        },
    }
}

/// Runs a planned op against the database. Writes echo their invocation
/// value on completion (Jepsen's convention); reads complete with what they
/// read (set reads sorted, duplicates kept). A database call that overruns
/// `timeout` by more than [`HARNESS_GRACE`] is abandoned as `info`.
pub async fn execute<D: Db>(
    db: &D,
    p: &Planned,
    node: &str,
    level: Level,
    timeout: Duration,
) -> Completion {
    let echo = p.value.clone();
    // Large-workload values: the id recorded, the payload sent.
    let sent = match (p.value.as_str(), large::bytes_of(p.meta.as_ref())) {
        (Some(id), Some(bytes)) => large::payload(id, bytes),
        (Some(v), None) => v.to_string(),
        (None, _) => String::new(),
    };
    let run = async {
        match (p.workload, p.f) {
            (WorkloadKind::Counter, F::Add) => {
                let delta = p.value.as_i64().unwrap_or(0);
                let o = db.counter_add(node, &p.key, delta, level, timeout).await;
                // Keep the value the serving node reported after the add
                // (meta.post-value), for people reading the history.
                let mut post = None;
                let mut c = complete(
                    o,
                    |v| {
                        post = Some(v);
                        echo.clone()
                    },
                    &echo,
                );
                if let (Some(m), Some(v)) = (c.meta.as_mut(), post) {
                    m["post-value"] = json!(v);
                }
                c
            }
            (WorkloadKind::Counter, F::Read) => complete(
                db.counter_read(node, &p.key, level, timeout).await,
                |v| json!(v),
                &Value::Null,
            ),
            (WorkloadKind::Set, F::Add) => complete(
                db.set_add(node, &p.key, &sent, level, timeout).await,
                |_| echo.clone(),
                &echo,
            ),
            (WorkloadKind::Set, F::Remove) => complete(
                db.set_remove(node, &p.key, &sent, level, timeout).await,
                |_| echo.clone(),
                &echo,
            ),
            (WorkloadKind::Set, F::Read) => complete(
                db.set_read(node, &p.key, level, timeout).await,
                |v| {
                    let mut v: Vec<String> = v.iter().map(|m| large::decode(m)).collect();
                    v.sort();
                    json!(v)
                },
                &Value::Null,
            ),
            (WorkloadKind::Register, F::Write) => complete(
                db.register_write(node, &p.key, &sent, level, timeout).await,
                |_| echo.clone(),
                &echo,
            ),
            (WorkloadKind::Register, F::Read) => complete(
                db.register_read(node, &p.key, level, timeout).await,
                |v| json!(v.map(|v| large::decode(&v))),
                &Value::Null,
            ),
            (WorkloadKind::Map, F::Write) => {
                let (field, value) = (map_str(&p.value, "field"), map_str(&p.value, "value"));
                complete(
                    db.map_set(node, &p.key, field, value, level, timeout).await,
                    |_| echo.clone(),
                    &echo,
                )
            }
            (WorkloadKind::Map, F::Add) => {
                let field = map_str(&p.value, "field");
                let delta = p.value["delta"].as_i64().unwrap_or(0);
                complete(
                    db.map_incr(node, &p.key, field, delta, level, timeout)
                        .await,
                    |_| echo.clone(),
                    &echo,
                )
            }
            (WorkloadKind::Map, F::Remove) => complete(
                db.map_remove(node, &p.key, map_str(&p.value, "field"), level, timeout)
                    .await,
                |_| echo.clone(),
                &echo,
            ),
            (WorkloadKind::Map, F::Read) => complete(
                db.map_read(node, &p.key, level, timeout).await,
                |v| json!(v),
                &Value::Null,
            ),
            (WorkloadKind::Expiry, f @ (F::Write | F::Read | F::Expire | F::Persist)) => {
                let ttl = p.value.get("ttl-ms").and_then(Value::as_u64);
                let cmd = match f {
                    F::Write => ExpiryCmd::Set {
                        value: map_str(&p.value, "value"),
                        ttl_ms: ttl,
                    },
                    F::Expire => ExpiryCmd::Expire {
                        ttl_ms: ttl.unwrap_or(0),
                    },
                    F::Persist => ExpiryCmd::Persist,
                    _ => ExpiryCmd::Get,
                };
                let mut changed = None;
                let mut c = complete(
                    db.expiry(node, &p.key, cmd, level, timeout).await,
                    |r| match r {
                        ExpiryReply::Value(v) => json!(v),
                        ExpiryReply::Changed(b) => {
                            changed = Some(b);
                            echo.clone()
                        }
                        ExpiryReply::Done => echo.clone(),
                    },
                    if f == F::Read { &Value::Null } else { &echo },
                );
                // PEXPIRE/PERSIST: whether the node said it changed a TTL,
                // for people reading the history.
                if let (Some(m), Some(b)) = (c.meta.as_mut(), changed) {
                    m["changed"] = json!(b);
                }
                c
            }
            (w, f) => Completion {
                kind: OpType::Fail,
                value: echo.clone(),
                error: Some(format!("{} has no {} op", w.as_str(), f.as_str())),
                meta: None,
            },
        }
    };
    match tokio::time::timeout(timeout + HARNESS_GRACE, run).await {
        Ok(c) => c,
        Err(_) => Completion {
            kind: OpType::Info,
            value: p.value.clone(),
            error: Some("harness timeout".into()),
            meta: None,
        },
    }
}

/// A string member of a map op's invocation value (`""` if absent: the
/// workload always sets it).
fn map_str<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// How long past its own timeout a database call may run before the
/// harness gives up on it (as `info`): the client should time out first.
pub const HARNESS_GRACE: Duration = Duration::from_secs(2);

/// Builds the workloads for a run (`large` sizes the large workload).
pub fn build(kinds: &[WorkloadKind], large: large::LargeConfig) -> Vec<Box<dyn Workload>> {
    kinds
        .iter()
        .map(|k| -> Box<dyn Workload> {
            match k {
                WorkloadKind::Counter => Box::new(counter::CounterWorkload::new()),
                WorkloadKind::Set => Box::new(set::SetWorkload::new()),
                WorkloadKind::Register => Box::new(register::RegisterWorkload::new()),
                WorkloadKind::Large => Box::new(large::LargeWorkload::new(large)),
                WorkloadKind::Map => Box::new(map::MapWorkload::new()),
                WorkloadKind::Expiry => Box::new(expiry::ExpiryWorkload::new()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{MemoryBugs, MemoryDb};

    #[tokio::test]
    async fn execute_maps_outcomes_to_completions() {
        let db = MemoryDb::new(MemoryBugs::default());
        let t = Duration::from_secs(1);
        let add = Planned {
            workload: WorkloadKind::Set,
            f: F::Add,
            key: "set-0".into(),
            value: json!("b"),
            meta: None,
        };
        let c = execute(&db, &add, "n1", Level::Local, t).await;
        assert_eq!((c.kind, c.value.clone()), (OpType::Ok, json!("b")));
        assert_eq!(c.meta.unwrap()["node"], json!("n1"));
        let mut a = add.clone();
        a.value = json!("a");
        execute(&db, &a, "n1", Level::Local, t).await;
        let read = Planned {
            f: F::Read,
            value: Value::Null,
            ..add.clone()
        };
        let c = execute(&db, &read, "n2", Level::Quorum, t).await;
        assert_eq!(c.value, json!(["a", "b"]), "sorted");
        let w = Planned {
            workload: WorkloadKind::Register,
            f: F::Write,
            key: "register-0".into(),
            value: json!("v1"),
            meta: None,
        };
        let c = execute(&db, &w, "n1", Level::Leader, t).await;
        assert!(c.meta.unwrap()["hlc"]["time"].as_u64().is_some());
        let bad = Planned { f: F::Write, ..add };
        assert_eq!(
            execute(&db, &bad, "n1", Level::Local, t).await.kind,
            OpType::Fail
        );
    }
}
