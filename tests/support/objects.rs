//! The object types as plain test values: what an object is
//! ([`Obj`]), what a read of it returns ([`Val`]), read through a client at
//! any level or straight from a node's engine.

use meridian_client::{Client, Consistency, Error};
use meridian_engine::{Kind, ObjectKey, Value};
use meridian_server::node::Node;

/// An object: type and key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Obj {
    Counter(Vec<u8>),
    Set(Vec<u8>),
    Register(Vec<u8>),
    Map(Vec<u8>),
}

/// An object's value as a read returns it. Sets are sorted; a register
/// that was never written or was deleted is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Counter(i64),
    Set(Vec<Vec<u8>>),
    Register(Option<Vec<u8>>),
    /// Fields and values, sorted by field.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Obj {
    pub fn counter(key: impl Into<Vec<u8>>) -> Obj {
        Obj::Counter(key.into())
    }

    pub fn set(key: impl Into<Vec<u8>>) -> Obj {
        Obj::Set(key.into())
    }

    pub fn register(key: impl Into<Vec<u8>>) -> Obj {
        Obj::Register(key.into())
    }

    pub fn map(key: impl Into<Vec<u8>>) -> Obj {
        Obj::Map(key.into())
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Obj::Counter(k) | Obj::Set(k) | Obj::Register(k) | Obj::Map(k) => k,
        }
    }

    /// The engine's identity of this object.
    pub fn object_key(&self) -> ObjectKey {
        let kind = match self {
            Obj::Counter(_) => Kind::Counter,
            Obj::Set(_) => Kind::Set,
            Obj::Register(_) => Kind::Register,
            Obj::Map(_) => Kind::Map,
        };
        ObjectKey::new(kind, self.key().to_vec()).expect("test keys are within the limit")
    }

    /// Reads the object through `client` at `level`.
    pub async fn read(&self, client: &Client, level: Consistency) -> Result<Val, Error> {
        Ok(match self {
            Obj::Counter(k) => Val::Counter(
                client
                    .counter(k.clone())
                    .read()
                    .consistency(level)
                    .await?
                    .value,
            ),
            Obj::Set(k) => Val::Set(
                client
                    .set(k.clone())
                    .members()
                    .consistency(level)
                    .await?
                    .value
                    .members,
            ),
            Obj::Register(k) => Val::Register(
                client
                    .register(k.clone())
                    .get()
                    .consistency(level)
                    .await?
                    .value
                    .value,
            ),
            Obj::Map(k) => Val::Map(
                client
                    .map(k.clone())
                    .all()
                    .consistency(level)
                    .await?
                    .value
                    .fields,
            ),
        })
    }

    /// Deletes the object through `client` at `level`.
    pub async fn delete(&self, client: &Client, level: Consistency) -> Result<(), Error> {
        match self {
            Obj::Counter(k) => client
                .counter(k.clone())
                .delete()
                .consistency(level)
                .await
                .map(drop),
            Obj::Set(k) => client
                .set(k.clone())
                .delete()
                .consistency(level)
                .await
                .map(drop),
            Obj::Register(k) => client
                .register(k.clone())
                .delete()
                .consistency(level)
                .await
                .map(drop),
            Obj::Map(k) => client
                .map(k.clone())
                .delete()
                .consistency(level)
                .await
                .map(drop),
        }
    }

    /// The object's value in `node`'s own store, read without the network.
    pub fn stored(&self, node: &Node) -> Val {
        let value = node
            .engine()
            .read(&self.object_key())
            .unwrap_or_else(|e| panic!("{}: reading {self:?}: {e}", node.name));
        match value {
            Value::Counter(v) => Val::Counter(v),
            Value::Set(mut members) => {
                members.sort();
                Val::Set(members)
            }
            Value::Register(r) => Val::Register(r.and_then(|r| r.value)),
            Value::Map { fields, .. } => Val::Map(fields),
        }
    }
}

/// Reads every object in `objects` through `client` at `level`.
pub async fn read_all(
    client: &Client,
    objects: &[Obj],
    level: Consistency,
) -> Result<Vec<Val>, Error> {
    let mut out = Vec::with_capacity(objects.len());
    for obj in objects {
        out.push(obj.read(client, level).await?);
    }
    Ok(out)
}

/// Reads `objects` at `local` level on every node of `clients` and checks
/// that all nodes agree; returns the agreed values. The error names the
/// first disagreement.
pub async fn agreed(clients: &[(String, Client)], objects: &[Obj]) -> Result<Vec<Val>, String> {
    let mut first: Option<(&str, Vec<Val>)> = None;
    for (name, client) in clients {
        let values = read_all(client, objects, Consistency::Local)
            .await
            .map_err(|e| format!("local read on {name}: {e}"))?;
        match &first {
            None => first = Some((name, values)),
            Some((first_name, expected)) => {
                for (i, (a, b)) in expected.iter().zip(&values).enumerate() {
                    if a != b {
                        return Err(format!(
                            "{:?}: {first_name} has {a:?}, {name} has {b:?}",
                            objects[i]
                        ));
                    }
                }
            }
        }
    }
    Ok(first.map(|(_, v)| v).unwrap_or_default())
}

/// Waits (within [`crate::CONVERGE`]) until every node of `clients` reads
/// `objects` as `expected` at `local` level; panics otherwise.
pub async fn converge_to(clients: &[(String, Client)], objects: &[Obj], expected: &[Val]) {
    crate::eventually(
        "every node reads the expected values",
        crate::CONVERGE,
        || async {
            let values = agreed(clients, objects).await?;
            if values == expected {
                Ok(())
            } else {
                Err(format!("agreed on {values:?}, expected {expected:?}"))
            }
        },
    )
    .await;
}

/// The client of node `name` in `clients`.
pub fn client_of<'a>(clients: &'a [(String, Client)], name: &str) -> &'a Client {
    &clients
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no client for {name}"))
        .1
}

/// The fields and values as a map value (sorted by field).
pub fn map_of<I, F, V>(pairs: I) -> Val
where
    I: IntoIterator<Item = (F, V)>,
    F: Into<Vec<u8>>,
    V: Into<Vec<u8>>,
{
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .into_iter()
        .map(|(f, v)| (f.into(), v.into()))
        .collect();
    fields.sort();
    Val::Map(fields)
}

/// The members as a sorted set value.
pub fn set_of<I, M>(members: I) -> Val
where
    I: IntoIterator<Item = M>,
    M: Into<Vec<u8>>,
{
    let mut members: Vec<Vec<u8>> = members.into_iter().map(Into::into).collect();
    members.sort();
    members.dedup();
    Val::Set(members)
}
