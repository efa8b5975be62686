//! A minimal RESP2 client: the Redis backend of the load generator.
//!
//! It speaks exactly what the benchmark needs — a command as an array of
//! bulk strings, and the five RESP2 reply types — over one
//! [`tokio::net::TcpStream`] with one request in flight, as a
//! `redis-benchmark -P 1` client does.
//!
//! Why not the `redis` crate: the comparison is only fair if both backends
//! share everything except the codec. The `redis` crate brings its own
//! connection manager, buffering and pipelining (and a dozen transitive
//! crates: url, combine, sha1, tokio-util, ...), whose cost would be
//! measured along with the server. SET, GET and INCR with one outstanding
//! request per connection need a codec of a few dozen lines, written here
//! and unit-tested below.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest bulk string accepted in a reply, in bytes. The benchmark's values
/// are at most a megabyte; anything larger is a broken or hostile server.
pub const MAX_BULK_BYTES: usize = 16 << 20;

/// Largest array accepted in a reply, in elements (the benchmark never asks
/// for arrays; this only bounds a misbehaving server).
pub const MAX_ARRAY_LEN: usize = 1 << 16;

/// Deepest nesting of arrays accepted in a reply.
pub const MAX_DEPTH: usize = 8;

/// Largest unparsed reply buffered, in bytes (one bulk string plus headers).
const MAX_BUFFER_BYTES: usize = MAX_BULK_BYTES + 1024;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 << 10;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR message`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` (`None`: the null bulk string `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None`: the null array `*-1`).
    Array(Option<Vec<Reply>>),
}

/// Why a reply could not be parsed or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// The server sent bytes that are not RESP2 (or exceed the limits).
    #[error("malformed reply: {0}")]
    Protocol(String),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

/// Appends `args` to `out` as a RESP2 command (an array of bulk strings).
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(None)` if `buf` holds only
/// part of one, else the reply and how many bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0)
}

fn protocol(message: impl Into<String>) -> RespError {
    RespError::Protocol(message.into())
}

/// The line starting at `buf[0]` without its CRLF, and the bytes it took.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&buf[..end], end + 2))),
        // A header line is short; a long one without CRLF is garbage.
        None if buf.len() > 1024 => Err(protocol("line without CRLF")),
        None => Ok(None),
    }
}

fn integer(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol(format!("bad integer {:?}", String::from_utf8_lossy(text))))
}

/// A length header: -1 (null) or 0..=max.
fn length(text: &[u8], max: usize) -> Result<Option<usize>, RespError> {
    match integer(text)? {
        -1 => Ok(None),
        n if n >= 0 && (n as u64) <= max as u64 => Ok(Some(n as usize)),
        n => Err(protocol(format!("length {n} out of range"))),
    }
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > MAX_DEPTH {
        return Err(protocol("arrays nested too deeply"));
    }
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some((text, head)) = line(&buf[1..])? else {
        return Ok(None);
    };
    let head = head + 1;
    let text_string = || String::from_utf8_lossy(text).into_owned();
    match tag {
        b'+' => Ok(Some((Reply::Simple(text_string()), head))),
        b'-' => Ok(Some((Reply::Error(text_string()), head))),
        b':' => Ok(Some((Reply::Integer(integer(text)?), head))),
        b'$' => match length(text, MAX_BULK_BYTES)? {
            None => Ok(Some((Reply::Bulk(None), head))),
            Some(n) => {
                if buf.len() < head + n + 2 {
                    return Ok(None);
                }
                if &buf[head + n..head + n + 2] != b"\r\n" {
                    return Err(protocol("bulk string not followed by CRLF"));
                }
                let data = buf[head..head + n].to_vec();
                Ok(Some((Reply::Bulk(Some(data)), head + n + 2)))
            }
        },
        b'*' => match length(text, MAX_ARRAY_LEN)? {
            None => Ok(Some((Reply::Array(None), head))),
            Some(n) => {
                let mut items = Vec::with_capacity(n.min(64));
                let mut used = head;
                for _ in 0..n {
                    match parse_at(&buf[used..], depth + 1)? {
                        Some((item, len)) => {
                            items.push(item);
                            used += len;
                        }
                        None => return Ok(None),
                    }
                }
                Ok(Some((Reply::Array(Some(items)), used)))
            }
        },
        other => Err(protocol(format!("unknown reply type byte 0x{other:02x}"))),
    }
}

/// One connection to a Redis server, one request at a time.
#[derive(Debug)]
pub struct RedisConn {
    stream: TcpStream,
    /// Received bytes not yet parsed.
    input: Vec<u8>,
    /// The command being sent (reused between calls).
    output: Vec<u8>,
}

impl RedisConn {
    /// Connects (with TCP_NODELAY: one small request per round trip).
    pub async fn connect(addr: SocketAddr) -> Result<RedisConn, RespError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RedisConn {
            stream,
            input: Vec::with_capacity(READ_CHUNK_BYTES),
            output: Vec::with_capacity(256),
        })
    }

    /// Sends one command and waits for its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        self.output.clear();
        encode_command(&mut self.output, args);
        self.stream.write_all(&self.output).await?;
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            if let Some((reply, used)) = parse_reply(&self.input)? {
                self.input.drain(..used);
                return Ok(reply);
            }
            if self.input.len() > MAX_BUFFER_BYTES {
                return Err(protocol("reply larger than the buffer limit"));
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(RespError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                )));
            }
            self.input.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"key:1", b"v"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$1\r\nv\r\n");
        out.clear();
        encode_command(&mut out, &[b"GET", b""]);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type_parses() {
        let cases: [(&[u8], Reply); 8] = [
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":42\r\n", Reply::Integer(42)),
            (b":-7\r\n", Reply::Integer(-7)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(Some(b"a\r\n".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n:1\r\n$1\r\nx\r\n",
                Reply::Array(Some(vec![
                    Reply::Integer(1),
                    Reply::Bulk(Some(b"x".to_vec())),
                ])),
            ),
        ];
        for (bytes, expected) in cases {
            let (reply, used) = parse_reply(bytes).unwrap().unwrap();
            assert_eq!(reply, expected, "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn partial_input_waits_and_trailing_input_is_left() {
        let full = b"$5\r\nhello\r\n:1\r\n";
        let first = 11;
        for cut in 0..first {
            assert!(parse_reply(&full[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let (reply, used) = parse_reply(full).unwrap().unwrap();
        assert_eq!(reply, Reply::Bulk(Some(b"hello".to_vec())));
        assert_eq!(used, first);
        assert_eq!(
            parse_reply(&full[used..]).unwrap().unwrap().0,
            Reply::Integer(1)
        );
        assert!(parse_reply(b"*2\r\n:1\r\n").unwrap().is_none());
    }

    #[test]
    fn garbage_is_refused() {
        let bad: [&[u8]; 7] = [
            b"?what\r\n",
            b":12x\r\n",
            b"$-2\r\n",
            b"$3\r\nabcXY",
            b"$99999999999\r\n",
            b"*99999999\r\n",
            &[b'+'; 2000],
        ];
        for bytes in bad {
            assert!(
                matches!(parse_reply(bytes), Err(RespError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(20)])
            );
        }
        let mut deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        deep.extend_from_slice(b":1\r\n");
        assert!(parse_reply(&deep).is_err());
    }
}
