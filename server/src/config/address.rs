//! `host:port` addresses as written in configs ([`HostPort`]): parsing,
//! validation of host names, resolution, and listen-socket conflicts.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// A `host:port` address as written in a config: an IP address or a DNS
/// name, and a port. IPv6 addresses are written in brackets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl HostPort {
    /// Parses `host:port` (`127.0.0.1:7100`, `[::1]:7100`, `db1.example:7100`).
    pub fn parse(s: &str) -> Result<HostPort, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(HostPort::from(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{s:?} has no valid port"))?;
        if host.starts_with('[') || host.contains(':') {
            return Err(format!("{s:?} is not a valid address"));
        }
        validate_hostname(host).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HostPort {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }

    /// `host` (an IP address, IPv6 with or without brackets, or a DNS
    /// name) with `port`.
    pub fn with_port(host: &str, port: u16) -> Result<HostPort, String> {
        let unbracketed = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(HostPort {
                host: Host::Ip(ip),
                port,
            });
        }
        validate_hostname(host)?;
        Ok(HostPort {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The IP address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        }
    }

    /// The host as written (an IPv6 address without brackets).
    pub fn host(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// The socket address: the IP itself, or the first address the system
    /// resolver gives for the name (done at each call: DNS may change).
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.port)),
            Host::Name(name) => (name.as_str(), self.port)
                .to_socket_addrs()?
                .next()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("{name} has no address"))
                }),
        }
    }
}

impl From<SocketAddr> for HostPort {
    fn from(addr: SocketAddr) -> Self {
        HostPort {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// Checks a DNS host name (for `--host`, `--hosts` and addresses).
pub fn validate_hostname(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a valid IP address or host name"))
    }
}

/// Parses a listen address and resolves it to the socket to bind.
pub(super) fn listen_address(s: &str) -> Result<(HostPort, SocketAddr), String> {
    let written = HostPort::parse(s)?;
    let addr = written
        .resolve()
        .map_err(|e| format!("cannot resolve {written}: {e}"))?;
    Ok((written, addr))
}

/// Whether two listen sockets would collide (port 0 means "any free port").
pub(super) fn addresses_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
