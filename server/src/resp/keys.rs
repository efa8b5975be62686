//! Key commands: `DEL`/`UNLINK`, `EXISTS`, `TYPE`, over every object a
//! key may hold (see [`super::data`]).

use bytes::Bytes;

use super::data::{Data, Failed};
use super::frame::Reply;

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
    let t = if p.has_string() {
        "string"
    } else if p.has_map() {
        "hash"
    } else if p.has_set() {
        "set"
    } else {
        "none"
    };
    Ok(Reply::Simple(t.into()))
}
