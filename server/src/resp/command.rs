//! The command table: a request's arguments to a typed [`Command`], with
//! Redis's arity, syntax and unknown-command errors. Parsing never touches
//! data, so `MULTI` can refuse a malformed command when it is queued.

use bytes::Bytes;
use meridian_client::wire::{Consistency, Deadline, Ttl};

use super::expire::{Condition, parse_deadline};
use super::parse::{Args, SYNTAX};

/// Largest `count` of `SRANDMEMBER`/`SPOP`: bounds the reply one command
/// can build (a negative `SRANDMEMBER` count repeats members).
pub const MAX_COUNT: i64 = 1 << 20;

/// The Meridian command that runs one data command at another level:
/// `MERIDIAN.AT quorum SET k v`.
pub const AT: &str = "meridian.at";

/// One parsed command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    // Connection and server.
    Hello {
        proto: Option<i64>,
        auth: Option<(Bytes, Bytes)>,
        setname: Option<Bytes>,
    },
    Auth {
        user: Option<Bytes>,
        password: Bytes,
    },
    Ping(Option<Bytes>),
    Echo(Bytes),
    Quit,
    Select(i64),
    ClientSetName(Bytes),
    ClientGetName,
    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`.
    ClientSetInfo {
        attr: String,
        value: String,
    },
    ClientId,
    ClientInfo,
    Info(Vec<String>),
    Command(CommandSub),
    ConfigGet(Vec<Bytes>),
    Time,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Wait {
        replicas: i64,
        timeout_ms: i64,
    },
    /// `WAITAOF numlocal numreplicas timeout`.
    WaitAof {
        local: i64,
        replicas: i64,
        timeout_ms: i64,
    },
    /// `MERIDIAN.AT <level> <data command>`.
    At {
        level: LevelName,
        inner: Box<Command>,
    },
    // Strings (registers and counters).
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        nx: bool,
        xx: bool,
        get: bool,
        /// `EX|PX|EXAT|PXAT` ([`Ttl::Expire`]), `KEEPTTL` ([`Ttl::Keep`]),
        /// or neither ([`Ttl::Persist`]: a `SET` clears the TTL).
        ttl: Ttl,
    },
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    StrLen(Bytes),
    GetDel(Bytes),
    /// `GETEX key [EX|PX|EXAT|PXAT t | PERSIST]`: `ttl` `None` changes
    /// nothing.
    GetEx {
        key: Bytes,
        ttl: Option<Ttl>,
    },
    // Expiry (any type).
    /// `EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT` with `NX|XX|GT|LT`.
    Expire {
        key: Bytes,
        deadline: Deadline,
        condition: Option<Condition>,
    },
    /// `TTL` (`ms` false) and `PTTL`; with `absolute`, `EXPIRETIME` and
    /// `PEXPIRETIME` (the deadline as a Unix time).
    Ttl {
        key: Bytes,
        ms: bool,
        absolute: bool,
    },
    Persist(Bytes),
    // Sets.
    SAdd {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SRem {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SMembers(Bytes),
    SIsMember {
        key: Bytes,
        member: Bytes,
    },
    SMIsMember {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SCard(Bytes),
    SRandMember {
        key: Bytes,
        count: Option<i64>,
    },
    SPop {
        key: Bytes,
        count: Option<i64>,
    },
    /// `SSCAN key cursor [MATCH pattern] [COUNT count]`.
    SScan {
        key: Bytes,
        cursor: u64,
        pattern: Option<Bytes>,
        count: Option<u32>,
    },
    // Hashes.
    /// `HSET` (answers the number of new fields) and `HMSET` (`+OK`).
    HSet {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
        hmset: bool,
    },
    HSetNx {
        key: Bytes,
        field: Bytes,
        value: Bytes,
    },
    HGet {
        key: Bytes,
        field: Bytes,
    },
    HMGet {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    HGetAll(Bytes),
    /// `HSCAN key cursor [MATCH pattern] [COUNT count] [NOVALUES]`: the
    /// whole hash in one page, cursor 0 (see `hashes::hscan`).
    HScan {
        key: Bytes,
        pattern: Option<Bytes>,
        novalues: bool,
    },
    HDel {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    HIncrBy {
        key: Bytes,
        field: Bytes,
        delta: i64,
    },
    HExists {
        key: Bytes,
        field: Bytes,
    },
    HLen(Bytes),
    HKeys(Bytes),
    HVals(Bytes),
    HStrLen {
        key: Bytes,
        field: Bytes,
    },
    // Keys.
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    Type(Bytes),
    /// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
    Scan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: Option<u32>,
        type_name: Option<String>,
    },
    Keys(Bytes),
    DbSize,
    RandomKey,
}

/// `COMMAND` and its subcommands.
#[derive(Clone, Debug, PartialEq)]
pub enum CommandSub {
    All,
    Count,
    Docs,
    Info(Vec<String>),
    /// Anything else: answered with an empty array (never fails).
    Other,
}

/// A consistency level as named by an AUTH user or `MERIDIAN.AT`:
/// `default` is the node's configured default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelName {
    Default,
    Level(Consistency),
}

impl LevelName {
    /// `default`, or a level's text form (`local`, `leader`, `quorum`,
    /// `all`, `replicas-N` and its aliases `replicas(N)`/`replicas:N`),
    /// any case. `replicas-N` is the spelling to use: it is a legal user
    /// name everywhere (`redis-cli --user`, a `redis://user:pass@` URL).
    pub fn parse(name: &[u8]) -> Option<LevelName> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        if name == "default" {
            return Some(LevelName::Default);
        }
        name.parse().ok().map(LevelName::Level)
    }

    pub fn resolve(self, default: Consistency) -> Consistency {
        match self {
            LevelName::Default => default,
            LevelName::Level(l) => l,
        }
    }
}

/// Redis's unknown-command error: the name and the first arguments, each
/// cut at 128 bytes.
pub fn unknown_command(name: &[u8], args: &[Bytes]) -> String {
    let cut = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned();
    let mut out = format!(
        "ERR unknown command '{}', with args beginning with: ",
        cut(name)
    );
    let mut budget = 128usize;
    for a in args {
        if budget == 0 {
            break;
        }
        let part = cut(&a[..a.len().min(budget)]);
        budget = budget.saturating_sub(a.len());
        out.push_str(&format!("'{part}' "));
    }
    out
}

fn unknown_subcommand(sub: &[u8], command: &str) -> String {
    format!(
        "ERR unknown subcommand '{}'. Try {command} HELP.",
        String::from_utf8_lossy(&sub[..sub.len().min(128)])
    )
}

impl Command {
    /// Parses a request (`request[0]` is the command name).
    pub fn parse(mut request: Vec<Bytes>) -> Result<Command, String> {
        if request.is_empty() {
            return Err(SYNTAX.into());
        }
        let name_bytes = request.remove(0);
        let name = String::from_utf8_lossy(&name_bytes).to_ascii_lowercase();
        let mut a = Args::new(name.clone(), request);
        let cmd = match name.as_str() {
            "hello" => {
                let mut proto = None;
                let mut auth = None;
                let mut setname = None;
                if a.remaining() > 0 {
                    proto = Some(a.int().map_err(|_| {
                        "ERR Protocol version is not an integer or out of range".to_owned()
                    })?);
                }
                while a.remaining() > 0 {
                    let opt = a.text()?.to_ascii_lowercase();
                    match opt.as_str() {
                        "auth" if a.remaining() >= 2 => {
                            let user = a.bytes()?;
                            let pass = a.bytes()?;
                            auth = Some((user, pass));
                        }
                        "setname" if a.remaining() >= 1 => setname = Some(a.bytes()?),
                        _ => return Err(format!("ERR Syntax error in HELLO option '{opt}'")),
                    }
                }
                Command::Hello {
                    proto,
                    auth,
                    setname,
                }
            }
            "auth" => match a.remaining() {
                1 => Command::Auth {
                    user: None,
                    password: a.bytes()?,
                },
                2 => Command::Auth {
                    user: Some(a.bytes()?),
                    password: a.bytes()?,
                },
                0 => return Err(a.arity()),
                _ => return Err(SYNTAX.into()),
            },
            "ping" => match a.remaining() {
                0 => Command::Ping(None),
                1 => Command::Ping(Some(a.bytes()?)),
                _ => return Err(a.arity()),
            },
            "echo" => {
                let m = a.bytes()?;
                a.finish()?;
                Command::Echo(m)
            }
            "quit" => Command::Quit,
            "select" => {
                let db = a.bytes()?;
                a.finish()?;
                Command::Select(super::parse::int(&db)?)
            }
            "client" => {
                let sub = a.bytes()?;
                match sub.to_ascii_lowercase().as_slice() {
                    b"setname" => {
                        let n = a.bytes()?;
                        a.finish()?;
                        if n.iter().any(|b| !(b'!'..=b'~').contains(b)) {
                            return Err("ERR Client names cannot contain spaces, newlines or special characters.".into());
                        }
                        Command::ClientSetName(n)
                    }
                    b"getname" => Command::ClientGetName,
                    b"setinfo" => {
                        let attr = a.text()?.to_ascii_lowercase();
                        let value = a.text()?;
                        a.finish()?;
                        if attr != "lib-name" && attr != "lib-ver" {
                            return Err(format!("ERR Unrecognized option '{attr}'"));
                        }
                        Command::ClientSetInfo { attr, value }
                    }
                    b"id" => Command::ClientId,
                    b"info" => Command::ClientInfo,
                    _ => return Err(unknown_subcommand(&sub, "CLIENT")),
                }
            }
            "info" => {
                let mut sections = Vec::new();
                while a.remaining() > 0 {
                    sections.push(a.text()?.to_ascii_lowercase());
                }
                Command::Info(sections)
            }
            "command" => {
                if a.remaining() == 0 {
                    Command::Command(CommandSub::All)
                } else {
                    let sub = a.text()?.to_ascii_lowercase();
                    Command::Command(match sub.as_str() {
                        "count" => CommandSub::Count,
                        "docs" => CommandSub::Docs,
                        "info" => {
                            let mut names = Vec::new();
                            while a.remaining() > 0 {
                                names.push(a.text()?.to_ascii_lowercase());
                            }
                            CommandSub::Info(names)
                        }
                        _ => CommandSub::Other,
                    })
                }
            }
            "config" => {
                let sub = a.bytes()?;
                if sub.to_ascii_lowercase() != b"get" {
                    return Err(unknown_subcommand(&sub, "CONFIG"));
                }
                Command::ConfigGet(a.rest()?)
            }
            "time" => {
                a.finish()?;
                Command::Time
            }
            "multi" => {
                a.finish()?;
                Command::Multi
            }
            "exec" => {
                a.finish()?;
                Command::Exec
            }
            "discard" => {
                a.finish()?;
                Command::Discard
            }
            "watch" => {
                a.keys()?;
                Command::Watch
            }
            "unwatch" => {
                a.finish()?;
                Command::Unwatch
            }
            "waitaof" => {
                let local = a.int()?;
                let replicas = a.int()?;
                let timeout_ms = a
                    .int()
                    .map_err(|_| "ERR timeout is not an integer or out of range".to_owned())?;
                a.finish()?;
                if timeout_ms < 0 {
                    return Err("ERR timeout is negative".into());
                }
                if !(0..=1).contains(&local) {
                    return Err("ERR WAITAOF numlocal must be 0 or 1 (one local copy)".into());
                }
                Command::WaitAof {
                    local,
                    replicas,
                    timeout_ms,
                }
            }
            "wait" => {
                let replicas = a.int()?;
                let timeout_ms = a
                    .int()
                    .map_err(|_| "ERR timeout is not an integer or out of range".to_owned())?;
                a.finish()?;
                if timeout_ms < 0 {
                    return Err("ERR timeout is negative".into());
                }
                Command::Wait {
                    replicas,
                    timeout_ms,
                }
            }
            AT => {
                let level = a.bytes()?;
                let level = LevelName::parse(&level).ok_or_else(|| {
                    format!(
                        "ERR unknown consistency level '{}': expected local, leader, quorum, all, replicas-N or default",
                        String::from_utf8_lossy(&level)
                    )
                })?;
                let inner = Command::parse(a.rest()?)?;
                if !inner.is_data() {
                    return Err(format!(
                        "ERR {} wraps one data command (strings, sets, keys)",
                        AT.to_ascii_uppercase()
                    ));
                }
                Command::At {
                    level,
                    inner: Box::new(inner),
                }
            }
            "get" => {
                let k = a.key()?;
                a.finish()?;
                Command::Get(k)
            }
            "set" => {
                let key = a.key()?;
                let value = a.bytes()?;
                let (mut nx, mut xx, mut get) = (false, false, false);
                let mut ttl = None;
                while a.remaining() > 0 {
                    let opt = a.text()?.to_ascii_lowercase();
                    match opt.as_str() {
                        "nx" if !xx => nx = true,
                        "xx" if !nx => xx = true,
                        "get" => get = true,
                        "keepttl" if ttl.is_none() => ttl = Some(Ttl::Keep),
                        "ex" | "px" | "exat" | "pxat" if ttl.is_none() && a.remaining() > 0 => {
                            ttl = Some(Ttl::Expire(expire_option(&mut a, &opt, "set")?));
                        }
                        _ => return Err(SYNTAX.into()),
                    }
                }
                Command::Set {
                    key,
                    value,
                    nx,
                    xx,
                    get,
                    ttl: ttl.unwrap_or(Ttl::Persist),
                }
            }
            "mget" => Command::MGet(a.keys()?),
            "mset" => {
                if a.remaining() == 0 || !a.remaining().is_multiple_of(2) {
                    return Err(a.arity());
                }
                let mut pairs = Vec::with_capacity(a.remaining() / 2);
                while a.remaining() > 0 {
                    let k = a.key()?;
                    pairs.push((k, a.bytes()?));
                }
                Command::MSet(pairs)
            }
            "incr" | "decr" => {
                let key = a.key()?;
                a.finish()?;
                let delta = if name == "incr" { 1 } else { -1 };
                Command::IncrBy { key, delta }
            }
            "incrby" | "decrby" => {
                let key = a.key()?;
                let by = a.int()?;
                a.finish()?;
                let delta = if name == "incrby" {
                    by
                } else {
                    by.checked_neg()
                        .ok_or_else(|| "ERR decrement would overflow".to_owned())?
                };
                Command::IncrBy { key, delta }
            }
            "strlen" => {
                let k = a.key()?;
                a.finish()?;
                Command::StrLen(k)
            }
            "getdel" => {
                let k = a.key()?;
                a.finish()?;
                Command::GetDel(k)
            }
            "getex" => {
                let key = a.key()?;
                let mut ttl = None;
                while a.remaining() > 0 {
                    let opt = a.text()?.to_ascii_lowercase();
                    match opt.as_str() {
                        "persist" if ttl.is_none() => ttl = Some(Ttl::Persist),
                        "ex" | "px" | "exat" | "pxat" if ttl.is_none() && a.remaining() > 0 => {
                            ttl = Some(Ttl::Expire(expire_option(&mut a, &opt, "getex")?));
                        }
                        _ => return Err(SYNTAX.into()),
                    }
                }
                Command::GetEx { key, ttl }
            }
            "expire" | "pexpire" | "expireat" | "pexpireat" => {
                let key = a.key()?;
                let when = a.bytes()?;
                let unit_ms = if name.starts_with('p') { 1 } else { 1000 };
                let deadline = parse_deadline(&when, unit_ms, name.ends_with("at"), false, &name)?;
                let mut condition: Option<Condition> = None;
                while a.remaining() > 0 {
                    let opt = a.text()?;
                    condition = Some(Condition::parse(&opt, condition)?);
                }
                Command::Expire {
                    key,
                    deadline,
                    condition,
                }
            }
            "ttl" | "pttl" | "expiretime" | "pexpiretime" => {
                let key = a.key()?;
                a.finish()?;
                Command::Ttl {
                    key,
                    ms: name.starts_with('p'),
                    absolute: name.ends_with("expiretime"),
                }
            }
            "persist" => {
                let key = a.key()?;
                a.finish()?;
                Command::Persist(key)
            }
            "sadd" | "srem" | "smismember" => {
                let key = a.key()?;
                let members = a.rest()?;
                match name.as_str() {
                    "sadd" => Command::SAdd { key, members },
                    "srem" => Command::SRem { key, members },
                    _ => Command::SMIsMember { key, members },
                }
            }
            "smembers" | "scard" => {
                let k = a.key()?;
                a.finish()?;
                if name == "smembers" {
                    Command::SMembers(k)
                } else {
                    Command::SCard(k)
                }
            }
            "sismember" => {
                let key = a.key()?;
                let member = a.bytes()?;
                a.finish()?;
                Command::SIsMember { key, member }
            }
            "srandmember" | "spop" => {
                let key = a.key()?;
                let count = if a.remaining() > 0 {
                    let c = a.int()?;
                    if name == "spop" && c < 0 {
                        return Err("ERR value is out of range, must be positive".into());
                    }
                    if c.unsigned_abs() > MAX_COUNT as u64 {
                        return Err(format!(
                            "ERR count is out of range: at most {MAX_COUNT} members per call"
                        ));
                    }
                    Some(c)
                } else {
                    None
                };
                a.finish()?;
                if name == "spop" {
                    Command::SPop { key, count }
                } else {
                    Command::SRandMember { key, count }
                }
            }
            "scan" | "sscan" | "hscan" => {
                let key = if name == "scan" { None } else { Some(a.key()?) };
                let cursor = super::cursors::parse(&a.bytes()?)?;
                let (mut pattern, mut count, mut type_name) = (None, None, None);
                let mut novalues = false;
                while a.remaining() > 0 {
                    let opt = a.text()?.to_ascii_lowercase();
                    if opt == "novalues" && name == "hscan" {
                        novalues = true;
                        continue;
                    }
                    if a.remaining() == 0 {
                        return Err(SYNTAX.into());
                    }
                    match opt.as_str() {
                        "match" => pattern = Some(a.bytes()?),
                        "count" => {
                            let n = a.int()?;
                            if n < 1 {
                                return Err(SYNTAX.into());
                            }
                            // Larger counts are capped where they are used
                            // (`wire::MAX_SCAN_COUNT`, `MAX_SET_PAGE_MEMBERS`);
                            // `HSCAN` takes it as a hint, as Redis does.
                            count = Some(u32::try_from(n).unwrap_or(u32::MAX));
                        }
                        "type" if key.is_none() => {
                            type_name = Some(a.text()?.to_ascii_lowercase());
                        }
                        _ => return Err(SYNTAX.into()),
                    }
                }
                match key {
                    // Any cursor: the reply is the whole hash either way.
                    Some(key) if name == "hscan" => Command::HScan {
                        key,
                        pattern,
                        novalues,
                    },
                    Some(key) => Command::SScan {
                        key,
                        cursor,
                        pattern,
                        count,
                    },
                    None => Command::Scan {
                        cursor,
                        pattern,
                        count,
                        type_name,
                    },
                }
            }
            "keys" => {
                let pattern = a.bytes()?;
                a.finish()?;
                Command::Keys(pattern)
            }
            "dbsize" | "randomkey" => {
                a.finish()?;
                if name == "dbsize" {
                    Command::DbSize
                } else {
                    Command::RandomKey
                }
            }
            "hset" | "hmset" => {
                let key = a.key()?;
                if a.remaining() == 0 || !a.remaining().is_multiple_of(2) {
                    return Err(a.arity());
                }
                let mut pairs = Vec::with_capacity(a.remaining() / 2);
                while a.remaining() > 0 {
                    let field = a.bytes()?;
                    pairs.push((field, a.bytes()?));
                }
                Command::HSet {
                    key,
                    pairs,
                    hmset: name == "hmset",
                }
            }
            "hsetnx" => {
                let key = a.key()?;
                let field = a.bytes()?;
                let value = a.bytes()?;
                a.finish()?;
                Command::HSetNx { key, field, value }
            }
            "hget" | "hexists" | "hstrlen" => {
                let key = a.key()?;
                let field = a.bytes()?;
                a.finish()?;
                match name.as_str() {
                    "hget" => Command::HGet { key, field },
                    "hexists" => Command::HExists { key, field },
                    _ => Command::HStrLen { key, field },
                }
            }
            "hmget" | "hdel" => {
                let key = a.key()?;
                let fields = a.rest()?;
                if name == "hmget" {
                    Command::HMGet { key, fields }
                } else {
                    Command::HDel { key, fields }
                }
            }
            "hgetall" | "hlen" | "hkeys" | "hvals" => {
                let k = a.key()?;
                a.finish()?;
                match name.as_str() {
                    "hgetall" => Command::HGetAll(k),
                    "hlen" => Command::HLen(k),
                    "hkeys" => Command::HKeys(k),
                    _ => Command::HVals(k),
                }
            }
            "hincrby" => {
                let key = a.key()?;
                let field = a.bytes()?;
                let delta = a.int()?;
                a.finish()?;
                Command::HIncrBy { key, field, delta }
            }
            "del" | "unlink" => Command::Del(a.keys()?),
            "exists" => Command::Exists(a.keys()?),
            "type" => {
                let k = a.key()?;
                a.finish()?;
                Command::Type(k)
            }
            _ => {
                let rest: Vec<Bytes> = std::iter::from_fn(|| a.bytes().ok()).collect();
                return Err(unknown_command(&name_bytes, &rest));
            }
        };
        Ok(cmd)
    }

    /// A command that reads or writes data (and so can be wrapped by
    /// `MERIDIAN.AT`).
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Command::Get(_)
                | Command::Set { .. }
                | Command::MGet(_)
                | Command::MSet(_)
                | Command::IncrBy { .. }
                | Command::StrLen(_)
                | Command::GetDel(_)
                | Command::GetEx { .. }
                | Command::Expire { .. }
                | Command::Ttl { .. }
                | Command::Persist(_)
                | Command::SAdd { .. }
                | Command::SRem { .. }
                | Command::SMembers(_)
                | Command::SIsMember { .. }
                | Command::SMIsMember { .. }
                | Command::SCard(_)
                | Command::SRandMember { .. }
                | Command::SPop { .. }
                | Command::SScan { .. }
                | Command::HSet { .. }
                | Command::HSetNx { .. }
                | Command::HGet { .. }
                | Command::HMGet { .. }
                | Command::HGetAll(_)
                | Command::HScan { .. }
                | Command::HDel { .. }
                | Command::HIncrBy { .. }
                | Command::HExists { .. }
                | Command::HLen(_)
                | Command::HKeys(_)
                | Command::HVals(_)
                | Command::HStrLen { .. }
                | Command::Del(_)
                | Command::Exists(_)
                | Command::Type(_)
                | Command::Scan { .. }
                | Command::Keys(_)
                | Command::DbSize
                | Command::RandomKey
        )
    }
}

/// The value of a `SET`/`GETEX` expiry option `opt` (`ex`, `px`, `exat`,
/// `pxat`) as a deadline: positive, as Redis requires there.
fn expire_option(a: &mut Args, opt: &str, command: &str) -> Result<Deadline, String> {
    let value = a.bytes()?;
    let unit_ms = if opt.starts_with('p') { 1 } else { 1000 };
    parse_deadline(&value, unit_ms, opt.ends_with("at"), true, command)
}

/// One `COMMAND` entry: name, arity (negative: at least), flags, first
/// key, last key, key step.
pub type CommandInfo = (&'static str, i64, &'static [&'static str], i64, i64, i64);

/// The commands `COMMAND` lists.
pub const TABLE: &[CommandInfo] = &[
    (
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    (
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast", "no_auth"],
        0,
        0,
        0,
    ),
    ("ping", -1, &["fast"], 0, 0, 0),
    ("echo", 2, &["fast"], 0, 0, 0),
    ("quit", -1, &["fast", "no_auth"], 0, 0, 0),
    ("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    ("client", -2, &["loading", "stale"], 0, 0, 0),
    ("info", -1, &["loading", "stale"], 0, 0, 0),
    ("command", -1, &["loading", "stale"], 0, 0, 0),
    ("config", -2, &["loading", "stale"], 0, 0, 0),
    ("time", 1, &["loading", "stale", "fast"], 0, 0, 0),
    ("multi", 1, &["fast"], 0, 0, 0),
    ("exec", 1, &["slow"], 0, 0, 0),
    ("discard", 1, &["fast"], 0, 0, 0),
    ("unwatch", 1, &["fast"], 0, 0, 0),
    ("wait", 3, &["slow"], 0, 0, 0),
    ("waitaof", 4, &["slow"], 0, 0, 0),
    ("meridian.at", -3, &["slow"], 0, 0, 0),
    ("get", 2, &["readonly", "fast"], 1, 1, 1),
    ("set", -3, &["write", "denyoom"], 1, 1, 1),
    ("mget", -2, &["readonly", "fast"], 1, -1, 1),
    ("mset", -3, &["write", "denyoom"], 1, -1, 2),
    ("incr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("incrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decr", 2, &["write", "denyoom", "fast"], 1, 1, 1),
    ("decrby", 3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("strlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("getdel", 2, &["write", "fast"], 1, 1, 1),
    ("getex", -2, &["write", "fast"], 1, 1, 1),
    ("expire", -3, &["write", "fast"], 1, 1, 1),
    ("pexpire", -3, &["write", "fast"], 1, 1, 1),
    ("expireat", -3, &["write", "fast"], 1, 1, 1),
    ("pexpireat", -3, &["write", "fast"], 1, 1, 1),
    ("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    ("expiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("pexpiretime", 2, &["readonly", "fast"], 1, 1, 1),
    ("persist", 2, &["write", "fast"], 1, 1, 1),
    ("sadd", -3, &["write", "denyoom", "fast"], 1, 1, 1),
    ("srem", -3, &["write", "fast"], 1, 1, 1),
    ("smembers", 2, &["readonly"], 1, 1, 1),
    ("sismember", 3, &["readonly", "fast"], 1, 1, 1),
    ("smismember", -3, &["readonly", "fast"], 1, 1, 1),
    ("scard", 2, &["readonly", "fast"], 1, 1, 1),
    ("srandmember", -2, &["readonly"], 1, 1, 1),
    ("spop", -2, &["write", "fast"], 1, 1, 1),
    ("hset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hmset", -4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hsetnx", 4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hget", 3, &["readonly", "fast"], 1, 1, 1),
    ("hmget", -3, &["readonly", "fast"], 1, 1, 1),
    ("hgetall", 2, &["readonly"], 1, 1, 1),
    ("hscan", -3, &["readonly"], 1, 1, 1),
    ("hdel", -3, &["write", "fast"], 1, 1, 1),
    ("hincrby", 4, &["write", "denyoom", "fast"], 1, 1, 1),
    ("hexists", 3, &["readonly", "fast"], 1, 1, 1),
    ("hlen", 2, &["readonly", "fast"], 1, 1, 1),
    ("hkeys", 2, &["readonly"], 1, 1, 1),
    ("hvals", 2, &["readonly"], 1, 1, 1),
    ("hstrlen", 3, &["readonly", "fast"], 1, 1, 1),
    ("del", -2, &["write"], 1, -1, 1),
    ("unlink", -2, &["write", "fast"], 1, -1, 1),
    ("exists", -2, &["readonly", "fast"], 1, -1, 1),
    ("type", 2, &["readonly", "fast"], 1, 1, 1),
    ("sscan", -3, &["readonly"], 1, 1, 1),
    ("scan", -2, &["readonly"], 0, 0, 0),
    ("keys", 2, &["readonly"], 0, 0, 0),
    ("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    ("randomkey", 1, &["readonly"], 0, 0, 0),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::parse::NOT_INTEGER;

    fn req(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn unknown_commands_use_redis_wording() {
        assert_eq!(
            Command::parse(req(&["HRANDFIELD", "h", "0", "v"])).unwrap_err(),
            "ERR unknown command 'HRANDFIELD', with args beginning with: 'h' '0' 'v' "
        );
        assert_eq!(
            Command::parse(req(&["flushall"])).unwrap_err(),
            "ERR unknown command 'flushall', with args beginning with: "
        );
    }

    #[test]
    fn commands_parse_with_options_and_arity() {
        assert_eq!(
            Command::parse(req(&["set", "k", "v", "NX", "GET"])).unwrap(),
            Command::Set {
                key: "k".into(),
                value: "v".into(),
                nx: true,
                xx: false,
                get: true,
                ttl: Ttl::Persist,
            }
        );
        assert_eq!(
            Command::parse(req(&["SET", "k", "v", "NX", "XX"])).unwrap_err(),
            SYNTAX
        );
        assert_eq!(
            Command::parse(req(&["GET"])).unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        assert_eq!(
            Command::parse(req(&["INCRBY", "k", "x"])).unwrap_err(),
            NOT_INTEGER
        );
        assert_eq!(
            Command::parse(req(&["decr", "k"])).unwrap(),
            Command::IncrBy {
                key: "k".into(),
                delta: -1
            }
        );
        assert!(Command::parse(req(&["mset", "a", "1", "b"])).is_err());
        assert!(Command::parse(req(&["spop", "k", "-1"])).is_err());
    }

    #[test]
    fn scans_parse_with_their_options() {
        assert_eq!(
            Command::parse(req(&[
                "SCAN", "0", "match", "u:*", "COUNT", "50", "type", "SET"
            ]))
            .unwrap(),
            Command::Scan {
                cursor: 0,
                pattern: Some("u:*".into()),
                count: Some(50),
                type_name: Some("set".into()),
            }
        );
        assert_eq!(
            Command::parse(req(&["sscan", "k", "17"])).unwrap(),
            Command::SScan {
                key: "k".into(),
                cursor: 17,
                pattern: None,
                count: None,
            }
        );
        assert_eq!(
            Command::parse(req(&[
                "HSCAN", "h", "5", "MATCH", "a*", "COUNT", "9", "NOVALUES"
            ]))
            .unwrap(),
            Command::HScan {
                key: "h".into(),
                pattern: Some("a*".into()),
                novalues: true,
            }
        );
        for bad in [
            &["scan", "x"][..],
            &["scan", "-1"],
            &["scan", "0", "count", "0"],
            &["scan", "0", "count"],
            &["scan", "0", "bogus", "1"],
            &["sscan", "k", "0", "type", "set"],
            &["hscan", "h"],
            &["hscan", "h", "x"],
            &["hscan", "h", "0", "count", "0"],
            &["hscan", "h", "0", "match"],
            &["hscan", "h", "0", "type", "hash"],
            &["keys"],
            &["dbsize", "x"],
        ] {
            assert!(Command::parse(req(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(
            Command::parse(req(&["scan", "x"])).unwrap_err(),
            "ERR invalid cursor"
        );
    }

    #[test]
    fn meridian_at_wraps_one_data_command() {
        assert_eq!(
            Command::parse(req(&["MERIDIAN.AT", "quorum", "GET", "k"])).unwrap(),
            Command::At {
                level: LevelName::Level(Consistency::Quorum),
                inner: Box::new(Command::Get("k".into()))
            }
        );
        assert_eq!(
            Command::parse(req(&["MERIDIAN.AT", "replicas-2", "GET", "k"])).unwrap(),
            Command::At {
                level: LevelName::Level(Consistency::Replicas(2)),
                inner: Box::new(Command::Get("k".into()))
            }
        );
        assert!(Command::parse(req(&["meridian.at", "fast", "GET", "k"])).is_err());
        assert!(Command::parse(req(&["meridian.at", "replicas-0", "GET", "k"])).is_err());
        assert!(Command::parse(req(&["meridian.at", "all", "PING"])).is_err());
        assert!(Command::parse(req(&["meridian.at", "all"])).is_err());
    }

    #[test]
    fn level_names_are_the_levels_text_forms() {
        use Consistency::*;
        for (name, level) in [
            ("default", LevelName::Default),
            ("quorum", LevelName::Level(Quorum)),
            ("QUORUM", LevelName::Level(Quorum)),
            ("replicas-2", LevelName::Level(Replicas(2))),
            ("Replicas-3", LevelName::Level(Replicas(3))),
            ("replicas(2)", LevelName::Level(Replicas(2))),
        ] {
            assert_eq!(LevelName::parse(name.as_bytes()), Some(level), "{name}");
        }
        for bad in ["replicas-0", "replicas-300", "replicas", "fast", "\u{ff}"] {
            assert_eq!(LevelName::parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(LevelName::parse(b"\xff"), None);
    }
}
