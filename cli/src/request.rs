//! `meridian cli`: one client operation per invocation — the contract the
//! partition harness and scripts rely on.
//!
//! ```text
//! meridian cli [--config DIR/client.toml] [--node NAME|ADDR] [--consistency local|leader|quorum|all|replicas-N]
//!              [--timeout-ms N] [--json] COMMAND ...
//!   incr KEY [DELTA]      counter add (DELTA may be negative; default 1)
//!   count KEY             counter read
//!   sadd KEY MEMBER...    set add
//!   srem KEY MEMBER...    set remove
//!   smembers KEY [--paged] set read (--paged: page by page, for sets of any size)
//!   put KEY VALUE [--ex S|--px MS|--exat S|--pxat MS|--keepttl]
//!                         register write (alias `set`), with a TTL; a plain
//!                         put clears the TTL, as Redis's SET
//!   get KEY               register read
//!   expire KEY TIME [--kind K] [--ms] [--at]
//!                         expire the object (default kind register) TIME
//!                         seconds from the node's now (--ms: milliseconds;
//!                         --at: TIME is a Unix time); 0 expires it now
//!   ttl KEY [--kind K]    whether it exists and its time to live
//!   persist KEY [--kind K] remove its TTL
//!   hset KEY FIELD VALUE [FIELD VALUE ...]   map: set fields
//!   hincrby KEY FIELD DELTA                  map: add to a field's integer
//!   hdel KEY FIELD...                        map: remove fields
//!   hgetall KEY                              map read
//!   hget KEY FIELD                           map read, one field
//!   del counter|set|register|map KEY
//!   scan [PREFIX] [--count N] [--cursor HEX] [--all]
//!                         one page of the keys the node stores (--all: every page)
//! ```
//!
//! `scan` lists what the serving node stores (placement: keys pinned to
//! other regions are listed only by their replicas), at every level. Its
//! JSON `value` is `{"keys":[{"type":"counter|set|register","key":"…"}],
//! "cursor":"HEX"|null}`; pass `cursor` back as `--cursor` for the next
//! page (null: done). Text output is one `TYPE KEY` line per key, then
//! `(next page: --cursor HEX)` while more follow. `smembers --paged` prints
//! what `smembers` prints, read page by page ([`Operation::SetPage`]).
//!
//! With `--json`, exactly one JSON object is printed on stdout:
//! `{"ok":true,"value":…,"node":"…","consistency":"…"}` or
//! `{"ok":false,"error":"unavailable|timeout|…","definite":true|false,"message":"…"}`.
//! `value` is an integer for counters, a sorted array of strings for sets,
//! a string or null for registers, an object `{field: value}` for maps
//! (`hget`: the field's value or null), `{"exists":…,"ttl_ms":N|null,
//! "deadline_ms":N|null}` for `ttl`, `expire` and `persist`; writes show
//! the new state (a map write: the fields it touched). Bytes that
//! are not UTF-8 are shown escaped (`\xNN`, with `\` itself as `\\`),
//! never dropped.
//!
//! Exit codes: 0 success; 2 definite failure (no effect); 3 indeterminate
//! (e.g. a timeout: the write may have taken effect); 1 usage or local
//! errors (bad arguments, unreadable config).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use meridian_client::wire::{Deadline, Operation, Reply, ReplyValue, Request, Ttl};
use meridian_client::{Client, ClientConfig, Consistency, Error, Kind};

/// Default client config path when `--config` is not given.
pub const DEFAULT_CLIENT_CONFIG: &str = "client.toml";

#[derive(Debug, Args)]
pub struct CliArgs {
    /// The client config written by `meridian init`.
    #[arg(long, default_value = DEFAULT_CLIENT_CONFIG)]
    pub config: PathBuf,
    /// Talk to this node only (name from client.toml, or host:port).
    #[arg(long)]
    pub node: Option<String>,
    /// Consistency level of the request: local, leader, quorum, all or
    /// replicas-N (also replicas(N), replicas:N).
    #[arg(long, value_parser = parse_consistency)]
    pub consistency: Option<Consistency>,
    /// Request timeout in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CliCommand,
}

fn parse_consistency(s: &str) -> Result<Consistency, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    s.parse()
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Add DELTA (default 1, may be negative) to a counter.
    Incr {
        key: OsString,
        #[arg(allow_negative_numbers = true)]
        delta: Option<i64>,
    },
    /// Read a counter.
    Count { key: OsString },
    /// Add members to a set.
    Sadd {
        key: OsString,
        #[arg(required = true)]
        members: Vec<OsString>,
    },
    /// Remove members from a set.
    Srem {
        key: OsString,
        #[arg(required = true)]
        members: Vec<OsString>,
    },
    /// Read a set's members.
    Smembers {
        key: OsString,
        /// Read page by page (any size of set; one replica: local or leader).
        #[arg(long)]
        paged: bool,
    },
    /// Write a register (a plain write clears its TTL, as Redis's SET).
    #[command(visible_alias = "set")]
    Put {
        key: OsString,
        value: OsString,
        #[command(flatten)]
        ttl: TtlArgs,
    },
    /// Read a register.
    Get { key: OsString },
    /// Set map fields: FIELD VALUE pairs.
    Hset {
        key: OsString,
        #[arg(required = true, num_args = 2.., value_names = ["FIELD", "VALUE"])]
        pairs: Vec<OsString>,
    },
    /// Add DELTA (may be negative) to a map field's integer value.
    Hincrby {
        key: OsString,
        field: OsString,
        #[arg(allow_negative_numbers = true)]
        delta: i64,
    },
    /// Remove map fields.
    Hdel {
        key: OsString,
        #[arg(required = true)]
        fields: Vec<OsString>,
    },
    /// Read a map's fields and values.
    Hgetall { key: OsString },
    /// Read one map field (the map is read whole, then the field picked).
    Hget { key: OsString, field: OsString },
    /// Expire an object TIME seconds from the node's now (0: now).
    Expire {
        key: OsString,
        time: u64,
        /// The object's type.
        #[arg(long, value_parser = parse_kind, default_value = "register")]
        kind: Kind,
        /// TIME is in milliseconds.
        #[arg(long)]
        ms: bool,
        /// TIME is a Unix time, not a duration.
        #[arg(long)]
        at: bool,
    },
    /// Whether an object exists, and its time to live.
    Ttl {
        key: OsString,
        #[arg(long, value_parser = parse_kind, default_value = "register")]
        kind: Kind,
    },
    /// Remove an object's time to live.
    Persist {
        key: OsString,
        #[arg(long, value_parser = parse_kind, default_value = "register")]
        kind: Kind,
    },
    /// Delete an object.
    Del {
        #[arg(value_parser = parse_kind)]
        kind: Kind,
        key: OsString,
    },
    /// List one page of the keys the node stores (with PREFIX: only those).
    Scan {
        prefix: Option<OsString>,
        /// Most objects the node visits for the page (default 10, at most 1000).
        #[arg(long, default_value_t = 0)]
        count: u32,
        /// The previous page's cursor (hex).
        #[arg(long, value_parser = parse_cursor)]
        cursor: Option<HexCursor>,
        /// Every page, to the end of the scan.
        #[arg(long)]
        all: bool,
    },
}

/// A register write's TTL options (at most one).
#[derive(Debug, Default, Args)]
#[group(multiple = false)]
pub struct TtlArgs {
    /// Expire this many seconds from the node's now.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ex: Option<u64>,
    /// Expire this many milliseconds from the node's now.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub px: Option<u64>,
    /// Expire at this Unix time (seconds).
    #[arg(long, value_name = "UNIX_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub exat: Option<u64>,
    /// Expire at this Unix time (milliseconds).
    #[arg(long, value_name = "UNIX_MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub pxat: Option<u64>,
    /// Keep the register's TTL.
    #[arg(long)]
    pub keepttl: bool,
}

impl TtlArgs {
    /// The write's TTL change (`Persist` when none is given).
    fn ttl(&self) -> Ttl {
        let s = |v: u64| v.saturating_mul(1000);
        match (self.ex, self.px, self.exat, self.pxat) {
            (Some(v), ..) => Ttl::Expire(Deadline::In(s(v))),
            (_, Some(v), ..) => Ttl::Expire(Deadline::In(v)),
            (_, _, Some(v), _) => Ttl::Expire(Deadline::At(s(v))),
            (.., Some(v)) => Ttl::Expire(Deadline::At(v)),
            _ if self.keepttl => Ttl::Keep,
            _ => Ttl::Persist,
        }
    }
}

/// A scan cursor given in hex (a newtype: clap reads a `Vec` as many
/// values).
#[derive(Clone, Debug)]
pub struct HexCursor(Vec<u8>);

fn parse_cursor(s: &str) -> Result<HexCursor, String> {
    parse_hex(s).map(HexCursor)
}

/// Hex to bytes (a scan cursor).
fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("a cursor is an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("{s:?} is not a hex cursor"))
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn bytes(s: &OsString) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl CliCommand {
    fn operation(&self) -> Operation {
        match self {
            CliCommand::Incr { key, delta } => Operation::CounterIncr {
                key: bytes(key),
                delta: delta.unwrap_or(1),
            },
            CliCommand::Count { key } => Operation::CounterRead { key: bytes(key) },
            CliCommand::Sadd { key, members } => Operation::SetAdd {
                key: bytes(key),
                members: members.iter().map(bytes).collect(),
            },
            CliCommand::Srem { key, members } => Operation::SetRemove {
                key: bytes(key),
                members: members.iter().map(bytes).collect(),
            },
            CliCommand::Smembers { key, paged: false } => Operation::SetRead { key: bytes(key) },
            CliCommand::Smembers { key, paged: true } => Operation::SetPage {
                key: bytes(key),
                after: None,
                count: 0,
            },
            CliCommand::Put { key, value, ttl } => match ttl.ttl() {
                Ttl::Persist => Operation::RegisterPut {
                    key: bytes(key),
                    value: bytes(value),
                },
                ttl => Operation::RegisterPutTtl {
                    key: bytes(key),
                    value: bytes(value),
                    ttl,
                },
            },
            CliCommand::Expire {
                key,
                time,
                kind,
                ms,
                at,
            } => {
                let ms = if *ms {
                    *time
                } else {
                    time.saturating_mul(1000)
                };
                Operation::Expire {
                    kind: *kind,
                    key: bytes(key),
                    deadline: if *at {
                        Deadline::At(ms)
                    } else {
                        Deadline::In(ms)
                    },
                }
            }
            CliCommand::Ttl { key, kind } => Operation::Ttl {
                kind: *kind,
                key: bytes(key),
            },
            CliCommand::Persist { key, kind } => Operation::Persist {
                kind: *kind,
                key: bytes(key),
            },
            CliCommand::Get { key } => Operation::RegisterGet { key: bytes(key) },
            CliCommand::Hset { key, pairs } => Operation::MapSet {
                key: bytes(key),
                pairs: pairs
                    .chunks(2)
                    .map(|p| (bytes(&p[0]), p.get(1).map(bytes).unwrap_or_default()))
                    .collect(),
            },
            CliCommand::Hincrby { key, field, delta } => Operation::MapIncr {
                key: bytes(key),
                field: bytes(field),
                delta: *delta,
            },
            CliCommand::Hdel { key, fields } => Operation::MapRemove {
                key: bytes(key),
                fields: fields.iter().map(bytes).collect(),
            },
            CliCommand::Hgetall { key } | CliCommand::Hget { key, .. } => {
                Operation::MapRead { key: bytes(key) }
            }
            CliCommand::Del { kind, key } => Operation::Delete {
                kind: *kind,
                key: bytes(key),
            },
            CliCommand::Scan {
                prefix,
                count,
                cursor,
                ..
            } => Operation::Scan {
                cursor: cursor.clone().map(|c| c.0).unwrap_or_default(),
                prefix: prefix.as_ref().map(bytes).unwrap_or_default(),
                count: *count,
            },
        }
    }

    /// Whether the command reads every page of a paged read.
    fn walks(&self) -> bool {
        matches!(
            self,
            CliCommand::Smembers { paged: true, .. } | CliCommand::Scan { all: true, .. }
        )
    }
}

/// Sends `request`, then (a paged read) each next page, to the end: the
/// pages joined into one reply (a set's as a set read's, so `smembers
/// --paged` prints what `smembers` does).
async fn walk(client: &Client, mut request: Request) -> Result<Reply, Error> {
    let mut keys = Vec::new();
    let mut members = Vec::new();
    loop {
        let reply = client.execute(request.clone()).await?;
        let more = match (reply.value.clone(), &mut request.op) {
            (ReplyValue::Keys { keys: page, cursor }, Operation::Scan { cursor: next, .. }) => {
                keys.extend(page);
                cursor.map(|c| *next = c)
            }
            (
                ReplyValue::SetPage {
                    members: page,
                    next,
                },
                Operation::SetPage { after, .. },
            ) => {
                members.extend(page);
                next.map(|n| *after = Some(n))
            }
            _ => return Ok(reply),
        };
        if more.is_none() {
            let value = match request.op {
                Operation::Scan { .. } => ReplyValue::Keys { keys, cursor: None },
                _ => ReplyValue::Set {
                    count: members.len() as u64,
                    members,
                },
            };
            return Ok(Reply { value, ..reply });
        }
    }
}

/// Shows bytes as text: UTF-8 as is; otherwise printable ASCII as is, `\`
/// as `\\` and every other byte as `\xNN`, so nothing is dropped.
pub fn show_bytes(b: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(b) {
        return s.to_string();
    }
    let mut out = String::with_capacity(b.len() * 2);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out
}

/// The JSON `value` of a reply.
pub fn json_value(v: &ReplyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        ReplyValue::Counter { value } => J::from(*value),
        ReplyValue::Set { members, .. } => {
            let mut shown: Vec<String> = members.iter().map(|m| show_bytes(m)).collect();
            shown.sort();
            J::from(shown)
        }
        ReplyValue::Register { value, .. } => match value {
            Some(v) => J::from(show_bytes(v)),
            None => J::Null,
        },
        ReplyValue::Status(s) => J::from(format!("{s:?}")),
        ReplyValue::Done => J::Null,
        ReplyValue::Keys { keys, cursor } => serde_json::json!({
            "keys": keys
                .iter()
                .map(|k| serde_json::json!({"type": k.kind.as_str(), "key": show_bytes(&k.key)}))
                .collect::<Vec<_>>(),
            "cursor": cursor.as_deref().map(hex),
        }),
        ReplyValue::SetPage { members, next } => serde_json::json!({
            "members": members.iter().map(|m| show_bytes(m)).collect::<Vec<_>>(),
            "next": next.as_deref().map(show_bytes),
        }),
        ReplyValue::Map { fields, .. } => J::Object(
            fields
                .iter()
                .map(|(f, v)| (show_bytes(f), J::from(show_bytes(v))))
                .collect(),
        ),
        ReplyValue::Ttl {
            exists,
            deadline_ms,
            remaining_ms,
        } => serde_json::json!({
            "exists": exists,
            "ttl_ms": remaining_ms,
            "deadline_ms": deadline_ms,
        }),
        // Not operations this command sends (the RESP door's type check).
        ReplyValue::Inspect { .. } | ReplyValue::Probe { .. } => J::from(format!("{v:?}")),
    }
}

fn human_value(v: &ReplyValue) -> String {
    match v {
        ReplyValue::Counter { value } => value.to_string(),
        ReplyValue::Set { members, count } => {
            let mut shown: Vec<String> = members.iter().map(|m| show_bytes(m)).collect();
            shown.sort();
            if shown.is_empty() && *count > 0 {
                // A write's reply carries only the count past a bound
                // (`SetValue::is_complete`); `smembers` lists them.
                format!("({count} members; `smembers` lists them)")
            } else if shown.is_empty() {
                "(empty set)".to_string()
            } else {
                format!("{}\n({count} members)", shown.join("\n"))
            }
        }
        ReplyValue::Register { value, .. } => match value {
            Some(v) => show_bytes(v),
            None => "(nil)".to_string(),
        },
        ReplyValue::Status(s) => format!("{s:?}"),
        ReplyValue::Done => "OK".to_string(),
        ReplyValue::Keys { keys, cursor } => {
            let mut lines: Vec<String> = keys
                .iter()
                .map(|k| format!("{} {}", k.kind, show_bytes(&k.key)))
                .collect();
            if let Some(c) = cursor {
                lines.push(format!("(next page: --cursor {})", hex(c)));
            } else if lines.is_empty() {
                lines.push("(no keys)".into());
            }
            lines.join("\n")
        }
        ReplyValue::SetPage { members, next } => {
            let mut lines: Vec<String> = members.iter().map(|m| show_bytes(m)).collect();
            if next.is_some() {
                lines.push("(more members follow)".into());
            }
            lines.join("\n")
        }
        ReplyValue::Map { fields, count } => {
            let shown: Vec<String> = fields
                .iter()
                .map(|(f, v)| format!("{} = {}", show_bytes(f), show_bytes(v)))
                .collect();
            if shown.is_empty() && *count == 0 {
                "(empty map)".to_string()
            } else {
                format!("{}\n({count} fields)", shown.join("\n"))
            }
        }
        ReplyValue::Ttl { exists: false, .. } => "(absent)".to_string(),
        ReplyValue::Ttl {
            remaining_ms: None, ..
        } => "(no ttl)".to_string(),
        ReplyValue::Ttl {
            remaining_ms: Some(ms),
            ..
        } => format!("{ms} ms"),
        ReplyValue::Inspect { .. } | ReplyValue::Probe { .. } => format!("{v:?}"),
    }
}

fn exit_for(e: &Error) -> u8 {
    match e {
        Error::Config(_) => 1,
        e if e.is_definite() => 2,
        _ => 3,
    }
}

fn print_error(json: bool, e: &Error) {
    if json {
        let out = serde_json::json!({
            "ok": false,
            "error": e.code(),
            "definite": e.is_definite(),
            "message": e.to_string(),
        });
        println!("{out}");
    } else {
        eprintln!("error: {e}");
        if !e.is_definite() {
            eprintln!("(indeterminate: the operation may still take effect)");
        }
    }
}

/// Runs `meridian cli`; returns the process exit code.
pub fn run(args: CliArgs) -> ExitCode {
    let config = match ClientConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            let e = match e {
                Error::Config(m) => Error::Config(format!(
                    "{m} (pass --config DIR/client.toml, the file `meridian init` wrote)"
                )),
                other => other,
            };
            print_error(args.json, &e);
            return ExitCode::from(1);
        }
    };
    let config = match &args.node {
        Some(n) => config.pinned(n),
        None => config,
    };
    let level = args.consistency.unwrap_or(config.default_consistency);
    let timeout = args
        .timeout_ms
        .map(|ms| Duration::from_millis(ms as u64))
        .unwrap_or(config.default_timeout);
    if let CliCommand::Hset { pairs, .. } = &args.command
        && pairs.len() % 2 != 0
    {
        let e = Error::InvalidArgument("hset takes FIELD VALUE pairs".into());
        print_error(args.json, &e);
        return ExitCode::from(1);
    }
    let walks = args.command.walks();
    let request = Request {
        op: args.command.operation(),
        consistency: level,
        timeout_ms: timeout.as_millis().min(u32::MAX as u128) as u32,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let client = Client::connect(config).await?;
        let reply = if walks {
            walk(&client, request).await
        } else {
            client.execute(request).await
        };
        client.close().await;
        reply
    });
    match result {
        Ok(mut reply) => {
            if let CliCommand::Hget { field, .. } = &args.command {
                reply.value = picked_field(reply.value, &bytes(field));
            }
            if args.json {
                let out = serde_json::json!({
                    "ok": true,
                    "value": json_value(&reply.value),
                    "node": reply.node,
                    "consistency": reply.consistency.to_string(),
                });
                println!("{out}");
            } else {
                println!("{}", human_value(&reply.value));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_error(args.json, &e);
            ExitCode::from(exit_for(&e))
        }
    }
}

/// `hget`: the one field of a map read, shown as a register's value (the
/// value, or nil when absent).
fn picked_field(value: ReplyValue, field: &[u8]) -> ReplyValue {
    let value = match value {
        ReplyValue::Map { fields, .. } => {
            fields.into_iter().find(|(f, _)| f == field).map(|(_, v)| v)
        }
        _ => None,
    };
    ReplyValue::Register { value, hlc: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_escaped_not_dropped() {
        assert_eq!(show_bytes(b"plain"), "plain");
        assert_eq!(show_bytes("héllo".as_bytes()), "héllo");
        assert_eq!(show_bytes(&[0x61, 0xff, 0x5c, 0x00]), "a\\xff\\\\\\x00");
    }

    #[test]
    fn cursors_print_and_parse_as_hex() {
        let c = vec![0x01, 0x00, 0xff, 0x7a];
        assert_eq!(parse_hex(&hex(&c)), Ok(c));
        assert!(parse_hex("abc").is_err() && parse_hex("zz").is_err());
        let v = json_value(&ReplyValue::Keys {
            keys: vec![meridian_client::ScanKey {
                kind: Kind::Set,
                key: b"k".to_vec(),
            }],
            cursor: Some(vec![2, 0]),
        });
        assert_eq!(
            v,
            serde_json::json!({"keys": [{"type": "set", "key": "k"}], "cursor": "0200"})
        );
    }

    #[test]
    fn json_values_have_the_documented_shapes() {
        assert_eq!(
            json_value(&ReplyValue::Counter { value: -3 }),
            serde_json::json!(-3)
        );
        assert_eq!(
            json_value(&ReplyValue::Set {
                members: vec![b"b".to_vec(), b"a".to_vec()],
                count: 2
            }),
            serde_json::json!(["a", "b"])
        );
        assert_eq!(
            json_value(&ReplyValue::Register {
                value: None,
                hlc: None
            }),
            serde_json::Value::Null
        );
        let map = ReplyValue::Map {
            fields: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![0xff])],
            count: 2,
        };
        assert_eq!(
            json_value(&map),
            serde_json::json!({"a": "1", "b": "\\xff"})
        );
        // `hget`: the field's value, or null.
        assert_eq!(
            json_value(&picked_field(map.clone(), b"a")),
            serde_json::json!("1")
        );
        assert_eq!(
            json_value(&picked_field(map, b"zz")),
            serde_json::Value::Null
        );
        assert_eq!(
            json_value(&ReplyValue::Ttl {
                exists: true,
                deadline_ms: Some(9_000),
                remaining_ms: Some(2_000)
            }),
            serde_json::json!({"exists": true, "ttl_ms": 2000, "deadline_ms": 9000})
        );
    }

    #[test]
    fn ttl_options_become_the_wire_ttl() {
        use clap::Parser;
        #[derive(Parser)]
        struct Top {
            #[command(subcommand)]
            command: CliCommand,
        }
        let op = |args: &[&str]| {
            Top::try_parse_from(std::iter::once("cli").chain(args.iter().copied()))
                .map(|t| t.command.operation())
        };
        assert_eq!(
            op(&["set", "k", "v", "--ex", "10"]).unwrap(),
            Operation::RegisterPutTtl {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ttl: Ttl::Expire(Deadline::In(10_000)),
            }
        );
        assert_eq!(
            op(&["put", "k", "v"]).unwrap(),
            Operation::RegisterPut {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }
        );
        assert!(matches!(
            op(&["put", "k", "v", "--keepttl"]).unwrap(),
            Operation::RegisterPutTtl { ttl: Ttl::Keep, .. }
        ));
        assert!(op(&["put", "k", "v", "--ex", "1", "--px", "5"]).is_err());
        assert!(op(&["put", "k", "v", "--ex", "0"]).is_err());
        assert_eq!(
            op(&["expire", "k", "1500", "--ms", "--kind", "set"]).unwrap(),
            Operation::Expire {
                kind: Kind::Set,
                key: b"k".to_vec(),
                deadline: Deadline::In(1_500),
            }
        );
        assert_eq!(
            op(&["ttl", "k"]).unwrap(),
            Operation::Ttl {
                kind: Kind::Register,
                key: b"k".to_vec(),
            }
        );
        assert!(matches!(
            op(&["persist", "k", "--kind", "map"]).unwrap(),
            Operation::Persist {
                kind: Kind::Map,
                ..
            }
        ));
    }
}
