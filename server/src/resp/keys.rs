//! Key commands: `DEL`/`UNLINK`, `EXISTS`, `TYPE`, over every object a
//! key may hold (see [`super::data`]); and the keyspace listing commands
//! `SCAN`, `KEYS`, `DBSIZE`, `RANDOMKEY`.
//!
//! # Listing: what this node stores
//! The listing commands list the keys the serving node stores, whatever
//! the connection's level: a node stores only the keys its placement gives
//! it, so a key pinned to other regions is listed only by its replicas
//! (ask a node of that region). Every type is listed through one function
//! ([`redis_type`]) over the wire's `Kind`, so a type added to the store
//! is listed with no change here but its name.
//!
//! * `SCAN` lists one page per call, in the store's order (type, then key
//!   length, then key bytes). Each call visits at most `COUNT` objects
//!   (default 10, at most [`MAX_SCAN_COUNT`]); a page may be empty before
//!   the end. Its cursor stands for a position in that order
//!   ([`super::cursors`]), so every key present from the first call to the
//!   last is returned at least once, whatever is added or removed
//!   meanwhile (Redis's guarantee). A key that concurrent writes gave two
//!   types is returned once per type. `MATCH` with a literal prefix
//!   (`user:*`) seeks to the keys with that prefix instead of visiting all.
//! * `KEYS` runs the same scan to its end in steps of [`MAX_SCAN_COUNT`]
//!   objects (each one bounded job on the node) and answers each key once;
//!   more than [`MAX_KEYS_REPLY_KEYS`] keys or [`MAX_KEYS_REPLY_BYTES`] is
//!   refused (use `SCAN`).
//! * `DBSIZE` counts what the scan lists, in the same steps: a key holding
//!   two types counts twice.
//! * `RANDOMKEY` scans from a random position (wrapping at the end) to the
//!   first present key: any key can be answered, not uniformly. Nil when
//!   [`MAX_RANDOMKEY_VISITS`] objects in a row are absent (deleted).

use std::collections::BTreeSet;

use bytes::Bytes;
use meridian_client::wire::{DEFAULT_SCAN_COUNT, Kind, MAX_SCAN_COUNT};

use super::cursors::Scope;
use super::data::{Data, Failed};
use super::frame::Reply;
use super::glob::Glob;

/// Most keys `KEYS` answers with: a reply a client can hold (Redis has no
/// bound and blocks the server instead); past it, `SCAN`.
pub const MAX_KEYS_REPLY_KEYS: usize = 100_000;

/// Most key bytes `KEYS` answers with: a quarter of a connection's output
/// limit (64 MiB), so the reply always fits it.
pub const MAX_KEYS_REPLY_BYTES: usize = 16 << 20;

/// Most objects `RANDOMKEY` visits looking for a present one: ten full
/// scan steps. Only a store dominated by deleted objects answers nil
/// while keys exist.
pub const MAX_RANDOMKEY_VISITS: u32 = 10 * MAX_SCAN_COUNT;

/// The Redis type name of an object type: the one place a type is named
/// (`TYPE`, `SCAN ... TYPE`).
pub fn redis_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter | Kind::Register => "string",
        Kind::Set => "set",
        Kind::Map => "hash",
    }
}

/// `DEL`/`UNLINK`: deletes every object present at each key (an
/// observed-remove: what a concurrent write adds elsewhere survives), and
/// counts each key once.
pub async fn del(d: &mut Data<'_>, keys: Vec<Bytes>) -> Result<Reply, Failed> {
    let mut deleted = 0;
    for key in keys {
        let p = d.probe(&key).await?;
        if p.any() {
            d.delete(&key, &p).await?;
            deleted += 1;
        }
    }
    Ok(Reply::Integer(deleted))
}

/// `EXISTS`: how many of the arguments hold something of any type; a key
/// named twice counts twice, as in Redis.
pub async fn exists(d: &mut Data<'_>, keys: Vec<Bytes>) -> Result<Reply, Failed> {
    let mut n = 0;
    for key in keys {
        if d.probe(&key).await?.any() {
            n += 1;
        }
    }
    Ok(Reply::Integer(n))
}

/// `TYPE`: `string` (a register or a counter) before `hash` before `set`
/// when concurrent writes created several.
pub async fn type_of(d: &mut Data<'_>, key: Bytes) -> Result<Reply, Failed> {
    let p = d.probe(&key).await?;
    let t = p.kinds().first().map_or("none", |k| redis_type(*k));
    Ok(Reply::Simple(t.into()))
}

/// The pattern to filter with (`None`: every key) and the prefix a scan
/// may seek to.
fn pattern_of(pattern: Option<&[u8]>) -> (Option<Glob>, Vec<u8>) {
    let glob = Glob::of_option(pattern);
    let prefix = glob.as_ref().map_or_else(Vec::new, Glob::literal_prefix);
    (glob, prefix)
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]` (see the module
/// docs).
pub async fn scan(
    d: &mut Data<'_>,
    cursor: u64,
    pattern: Option<Bytes>,
    count: Option<u32>,
    type_name: Option<String>,
) -> Result<Reply, Failed> {
    let position = d.cursors.take(&Scope::Keys, cursor)?;
    let (glob, prefix) = pattern_of(pattern.as_deref());
    let count = count.unwrap_or(DEFAULT_SCAN_COUNT).min(MAX_SCAN_COUNT);
    let (keys, next) = d
        .scan_page(position.unwrap_or_default(), prefix, count)
        .await?;
    let listed = keys
        .into_iter()
        .filter(|k| glob.as_ref().is_none_or(|g| g.matches(&k.key)))
        .filter(|k| type_name.as_deref().is_none_or(|t| t == redis_type(k.kind)))
        .map(|k| Reply::Bulk(k.key.into()))
        .collect();
    let cursor = match next {
        Some(position) => d.cursors.issue(Scope::Keys, position),
        None => 0,
    };
    Ok(Reply::Array(vec![
        Reply::Bulk(cursor.to_string().into()),
        Reply::Array(listed),
    ]))
}

/// The keys `KEYS` gathers: each once, within its bounds.
struct Gathered {
    keys: BTreeSet<Vec<u8>>,
    bytes: usize,
    max_keys: usize,
    max_bytes: usize,
}

impl Gathered {
    fn new(max_keys: usize, max_bytes: usize) -> Gathered {
        Gathered {
            keys: BTreeSet::new(),
            bytes: 0,
            max_keys,
            max_bytes,
        }
    }

    /// Adds a key (a repeat changes nothing); the error past the bounds.
    fn add(&mut self, key: Vec<u8>) -> Result<(), String> {
        let len = key.len();
        if self.keys.insert(key) {
            self.bytes += len;
        }
        if self.keys.len() > self.max_keys || self.bytes > self.max_bytes {
            return Err(format!(
                "ERR KEYS would answer more than {} keys or {} bytes: use SCAN",
                self.max_keys, self.max_bytes
            ));
        }
        Ok(())
    }
}

/// `KEYS pattern` (see the module docs).
pub async fn keys(d: &mut Data<'_>, pattern: Bytes) -> Result<Reply, Failed> {
    let (glob, prefix) = pattern_of(Some(&pattern));
    let mut found = Gathered::new(MAX_KEYS_REPLY_KEYS, MAX_KEYS_REPLY_BYTES);
    let mut position = Vec::new();
    loop {
        let (keys, next) = d
            .scan_page(position, prefix.clone(), MAX_SCAN_COUNT)
            .await?;
        for k in keys {
            if glob.as_ref().is_none_or(|g| g.matches(&k.key)) {
                found.add(k.key)?;
            }
        }
        match next {
            Some(p) => position = p,
            None => break,
        }
    }
    Ok(Reply::Array(
        found
            .keys
            .into_iter()
            .map(|k| Reply::Bulk(k.into()))
            .collect(),
    ))
}

/// `DBSIZE` (see the module docs).
pub async fn dbsize(d: &mut Data<'_>) -> Result<Reply, Failed> {
    let mut n = 0i64;
    let mut position = Vec::new();
    loop {
        let (keys, next) = d.scan_page(position, Vec::new(), MAX_SCAN_COUNT).await?;
        n += keys.len() as i64;
        match next {
            Some(p) => position = p,
            None => return Ok(Reply::Integer(n)),
        }
    }
}

/// A random place to start `RANDOMKEY`'s scan: a random type and a random
/// key of up to 16 bytes. Every store position is after some such place or
/// reached by wrapping, so every present key can be chosen.
fn random_position() -> Vec<u8> {
    use rand::Rng;
    let kinds: Vec<meridian_engine::Kind> = (1..=u8::MAX)
        .filter_map(meridian_engine::Kind::from_tag)
        .collect();
    let mut rng = rand::rng();
    let kind = kinds[rng.random_range(0..kinds.len())];
    let len = rng.random_range(0..=16usize);
    let key: Vec<u8> = (0..len).map(|_| rng.random()).collect();
    match meridian_engine::ObjectKey::new(kind, key) {
        Ok(object) => meridian_engine::scan_position(&object),
        Err(_) => Vec::new(),
    }
}

/// `RANDOMKEY` (see the module docs).
pub async fn randomkey(d: &mut Data<'_>) -> Result<Reply, Failed> {
    // Small pages: the first present key ends the search.
    const PAGE: u32 = 16;
    let mut position = random_position();
    let mut wrapped = false;
    let mut visited = 0;
    while visited < MAX_RANDOMKEY_VISITS {
        let (keys, next) = d.scan_page(position, Vec::new(), PAGE).await?;
        visited += PAGE;
        if let Some(k) = keys.into_iter().next() {
            return Ok(Reply::Bulk(k.key.into()));
        }
        position = match next {
            Some(p) => p,
            None if !wrapped => {
                wrapped = true;
                Vec::new()
            }
            None => break,
        };
    }
    Ok(Reply::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_gathers_each_key_once_within_its_bounds() {
        let mut g = Gathered::new(3, 100);
        for k in ["b", "a", "b", "c", "a"] {
            g.add(k.as_bytes().to_vec()).unwrap();
        }
        assert_eq!(g.keys.len(), 3);
        assert_eq!(g.bytes, 3);
        let e = g.add(b"d".to_vec()).unwrap_err();
        assert!(e.starts_with("ERR KEYS would answer more than 3 keys") && e.contains("SCAN"));
        let mut g = Gathered::new(10, 8);
        g.add(vec![1; 8]).unwrap();
        assert!(g.add(vec![2]).is_err(), "bytes are bounded too");
    }

    #[test]
    fn every_type_has_a_redis_name() {
        assert_eq!(redis_type(Kind::Counter), "string");
        assert_eq!(redis_type(Kind::Register), "string");
        assert_eq!(redis_type(Kind::Set), "set");
    }
}
