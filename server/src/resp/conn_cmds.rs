//! Connection and server commands: `HELLO`, `AUTH`, `CLIENT`, `INFO`,
//! `COMMAND`, `CONFIG GET`, `TIME`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::command::{CommandInfo, CommandSub, LevelName, TABLE};
use super::connection::Session;
use super::frame::Reply;
use super::{REDIS_COMPAT_VERSION, RespServer};

/// Redis's wording for a refused AUTH: wrong password or unknown user
/// (here: a user name that is not a consistency level).
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Checks `user`/`password`; on success the connection is authenticated at
/// the level the user names. Never downgrades: an unknown user is refused.
pub fn auth(server: &RespServer, session: &mut Session, user: &[u8], password: &[u8]) -> Reply {
    let Some(level) = LevelName::parse(user) else {
        return Reply::error(WRONGPASS);
    };
    if !(server.token_check)(password) {
        return Reply::error(WRONGPASS);
    }
    session.authenticated = true;
    session.user = String::from_utf8_lossy(user).to_ascii_lowercase();
    session.level = level.resolve(server.default_level);
    Reply::ok()
}

pub fn hello(
    server: &RespServer,
    session: &mut Session,
    proto: Option<i64>,
    auth_with: Option<(Bytes, Bytes)>,
    setname: Option<Bytes>,
) -> Reply {
    if let Some(p) = proto
        && !(2..=3).contains(&p)
    {
        return Reply::error("NOPROTO unsupported protocol version");
    }
    if let Some((user, password)) = auth_with {
        let r = auth(server, session, &user, &password);
        if r.is_error() {
            return r;
        }
    }
    if !session.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = setname {
        if name.iter().any(|b| !(b'!'..=b'~').contains(b)) {
            return Reply::error(
                "ERR Client names cannot contain spaces, newlines or special characters.",
            );
        }
        session.name = Some(name);
    }
    if let Some(p) = proto {
        session.proto = p as u8;
    }
    let s = |t: &str| Reply::bulk(Bytes::copy_from_slice(t.as_bytes()));
    Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_COMPAT_VERSION)),
        (s("proto"), Reply::Integer(i64::from(session.proto))),
        (s("id"), Reply::Integer(session.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ])
}

/// `CLIENT INFO`'s line for this connection.
pub fn client_info(session: &Session) -> Reply {
    let name = session
        .name
        .as_ref()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    Reply::bulk(format!(
        "id={} addr={} laddr={} name={} age={} db=0 multi={} resp={} user={} level={} lib-name={} lib-ver={}\n",
        session.id,
        session.peer,
        session.local,
        name,
        session.connected.elapsed().as_secs(),
        session.multi.as_ref().map_or(-1, |q| q.len() as i64),
        session.proto,
        session.user,
        session.level,
        session.lib_name,
        session.lib_ver,
    ))
}

/// `INFO [section ...]`: never fails; unknown sections are empty.
pub fn info(server: &RespServer, session: &Session, sections: &[String]) -> Reply {
    let all = sections.is_empty()
        || sections
            .iter()
            .any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
    let want = |name: &str| all || sections.iter().any(|s| s == name);
    let c = &server.coordinator;
    let mut out = String::new();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nredis_mode:standalone\r\n\
             meridian_version:{}\r\nmeridian_node:{}\r\nmeridian_region:{}\r\nprocess_id:{}\r\n\
             tcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            c.node,
            c.region,
            std::process::id(),
            server.local_addr.port(),
            server.started.elapsed().as_secs(),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            server.connections(),
            server.max_connections,
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\n\r\n",
            server.connections_total.load(Ordering::Relaxed),
            server.commands_total.load(Ordering::Relaxed),
            server.rejected_connections.load(Ordering::Relaxed),
        );
    }
    if want("replication") {
        let status = c.status();
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmeridian_connection_level:{}\r\n\
             meridian_peers:{}\r\nmeridian_peers_connected:{}\r\n",
            session.level,
            status.peers.len(),
            status.peers.iter().filter(|p| p.connected).count(),
        );
        for (i, p) in status.peers.iter().enumerate() {
            let _ = write!(
                out,
                "peer{i}:node={},region={},link={},lag_deltas={},lag_ms={},clock_offset_ms={},deferred_deltas={}\r\n",
                p.node,
                p.region,
                if p.connected { "up" } else { "down" },
                p.lag_deltas,
                p.lag_ms,
                p.clock_offset_ms,
                p.deferred_deltas,
            );
        }
        out.push_str("\r\n");
    }
    if want("persistence") {
        let sync = matches!(c.engine.durability(), meridian_engine::Durability::Sync);
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nasync_loading:0\r\naof_enabled:1\r\n\
             aof_rewrite_in_progress:0\r\nrdb_bgsave_in_progress:0\r\n\
             meridian_durability:{}\r\nmeridian_log_bytes:{}\r\n\r\n",
            if sync { "sync" } else { "periodic" },
            c.engine.metrics().log_retained_bytes,
        );
    }
    if want("keyspace") {
        // Counting keys would need a scan of every object: not cheap.
        out.push_str("# Keyspace\r\n\r\n");
    }
    Reply::bulk(out)
}

fn command_entry(e: &CommandInfo) -> Reply {
    let (name, arity, flags, first, last, step) = *e;
    Reply::Array(vec![
        Reply::bulk(name.to_owned()),
        Reply::Integer(arity),
        Reply::Set(flags.iter().map(|f| Reply::Simple((*f).into())).collect()),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
    ])
}

/// `COMMAND` and subcommands: minimal, never failing.
pub fn command(sub: &CommandSub) -> Reply {
    match sub {
        CommandSub::All => Reply::Array(TABLE.iter().map(command_entry).collect()),
        CommandSub::Count => Reply::Integer(TABLE.len() as i64),
        // No documentation is served: redis-cli falls back to its own help.
        CommandSub::Docs => Reply::Map(Vec::new()),
        CommandSub::Info(names) => Reply::Array(
            names
                .iter()
                .map(|n| {
                    TABLE
                        .iter()
                        .find(|e| e.0 == n)
                        .map_or(Reply::NullArray, command_entry)
                })
                .collect(),
        ),
        CommandSub::Other => Reply::Array(Vec::new()),
    }
}

/// `CONFIG GET`: `save` is `""` (there are no snapshots to schedule) and
/// `appendonly` is `yes` (every write is in the log before it is
/// acknowledged). Patterns may be exact names or `*`.
pub fn config_get(patterns: &[Bytes]) -> Reply {
    const PARAMS: [(&str, &str); 2] = [("save", ""), ("appendonly", "yes")];
    let mut out = Vec::new();
    for (name, value) in PARAMS {
        if patterns
            .iter()
            .any(|p| p.as_ref() == b"*" || p.eq_ignore_ascii_case(name.as_bytes()))
        {
            out.push((Reply::bulk(name.to_owned()), Reply::bulk(value.to_owned())));
        }
    }
    Reply::Map(out)
}

pub fn time() -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}
