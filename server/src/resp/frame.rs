//! RESP request parsing and reply encoding, over a buffer (never a socket).
//!
//! Requests are either RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`,
//! what every client library sends) or inline commands (`PING\r\n`, what
//! telnet and `redis-benchmark`'s `PING_INLINE` send).
//!
//! [`check`] walks the buffered bytes and either finds one complete request
//! (its length), says more bytes are needed, or refuses it with a
//! [`ProtocolError`]. It allocates nothing: every declared length is checked
//! against the limits below *before* the bytes arrive, so a client declaring
//! a 2 GB bulk string is refused at its header. [`parse`] then splits a
//! checked request into its arguments (slices of one frozen buffer, no
//! copies).
//!
//! [`Reply`] encodes for RESP2 or RESP3 ([`Reply::encode`]): RESP3's null,
//! map, set, double and boolean types become their RESP2 equivalents (`$-1`,
//! flat array, array, bulk string, integer) on a RESP2 connection.

use bytes::{BufMut, Bytes, BytesMut};
use meridian_client::wire::{MAX_FRAME_BYTES, MAX_VALUE_BYTES};

/// Largest bulk string a request may carry, in bytes: the engine's largest
/// value (a register value or set member), so anything longer could never be
/// stored anyway. Keys are checked against `MAX_KEY_BYTES` per command.
/// (Redis: `proto-max-bulk-len`, 512 MB by default.)
pub const MAX_BULK_BYTES: usize = MAX_VALUE_BYTES;

/// Most arguments one command may have (command name included). A set
/// write of this many one-byte members is far below the object limit;
/// bounding the count bounds the per-argument bookkeeping a header can
/// make the node expect. (Redis: 1024*1024 multibulk items.)
pub const MAX_ARGS: usize = 1 << 16;

/// Largest request (all of one command's bytes), in bytes: the same bound
/// the QUIC client protocol puts on one request frame. Checked on the
/// declared lengths, so it holds while the request is still arriving.
pub const MAX_REQUEST_BYTES: usize = MAX_FRAME_BYTES;

/// Longest inline command line, in bytes (Redis: `PROTO_INLINE_MAX_SIZE`,
/// 64 KiB). Inline commands are typed by people; anything longer is a
/// client that forgot to send a newline.
pub const MAX_INLINE_BYTES: usize = 64 << 10;

/// Longest `*<n>` / `$<len>` header line: a sign and 19 digits fit an i64.
const MAX_HEADER_BYTES: usize = 24;

/// A request the node refuses. The connection answers `-ERR Protocol
/// error: <message>` and is closed, as Redis does: after a framing error
/// the byte stream cannot be resynchronised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol(message: &str) -> ProtocolError {
    ProtocolError(message.to_owned())
}

/// Finds the `\r\n`-terminated line starting at `at`: its end (the index of
/// `\r`), or `None` if it is not complete yet. Refuses lines longer than
/// `max` (complete or not).
fn line(buf: &[u8], at: usize, max: usize, too_long: &str) -> Result<Option<usize>, ProtocolError> {
    let window = &buf[at..buf.len().min(at + max + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= max => Ok(Some(at + i)),
        Some(_) => Err(protocol(too_long)),
        None if window.len() >= max + 2 => Err(protocol(too_long)),
        None => Ok(None),
    }
}

/// Parses a decimal header number (`-1`, `0`, `42`).
fn number(digits: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(digits).ok()?;
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    s.parse().ok()
}

/// What [`check`] found at the start of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// One complete request of this many bytes.
    Complete(usize),
    /// The request is not complete yet.
    Incomplete,
}

/// Checks the request at the start of `buf` against the grammar and the
/// limits, without allocating.
pub fn check(buf: &[u8]) -> Result<Checked, ProtocolError> {
    if buf.is_empty() {
        return Ok(Checked::Incomplete);
    }
    if buf[0] != b'*' {
        return check_inline(buf);
    }
    let Some(end) = line(buf, 1, MAX_HEADER_BYTES, "invalid multibulk length")? else {
        return Ok(Checked::Incomplete);
    };
    let count = number(&buf[1..end]).ok_or_else(|| protocol("invalid multibulk length"))?;
    if count > MAX_ARGS as i64 {
        return Err(protocol("invalid multibulk length"));
    }
    let mut at = end + 2;
    // `*0` and `*-1` are empty requests: Redis skips them.
    for _ in 0..count.max(0) {
        if at >= buf.len() {
            return Ok(Checked::Incomplete);
        }
        if buf[at] != b'$' {
            return Err(ProtocolError(format!(
                "expected '$', got '{}'",
                char::from(buf[at]).escape_default()
            )));
        }
        let Some(end) = line(buf, at + 1, MAX_HEADER_BYTES, "invalid bulk length")? else {
            return Ok(Checked::Incomplete);
        };
        let len = number(&buf[at + 1..end]).ok_or_else(|| protocol("invalid bulk length"))?;
        if !(0..=MAX_BULK_BYTES as i64).contains(&len) {
            return Err(protocol("invalid bulk length"));
        }
        let start = end + 2;
        let next = start + len as usize + 2;
        if next > MAX_REQUEST_BYTES {
            return Err(protocol("request too large"));
        }
        if buf.len() < next {
            return Ok(Checked::Incomplete);
        }
        if &buf[next - 2..next] != b"\r\n" {
            return Err(protocol("bulk string not terminated by CRLF"));
        }
        at = next;
    }
    Ok(Checked::Complete(at))
}

fn check_inline(buf: &[u8]) -> Result<Checked, ProtocolError> {
    // An inline request ends at `\n` (telnet may omit the `\r`).
    let window = &buf[..buf.len().min(MAX_INLINE_BYTES + 1)];
    match window.iter().position(|b| *b == b'\n') {
        Some(i) => Ok(Checked::Complete(i + 1)),
        None if window.len() > MAX_INLINE_BYTES => Err(protocol("too big inline request")),
        None => Ok(Checked::Incomplete),
    }
}

/// Splits a request [`check`] found complete into its arguments. An empty
/// request (`*0`, a blank inline line) has none: skip it.
pub fn parse(frame: Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    if frame.first() != Some(&b'*') {
        return parse_inline(frame);
    }
    let header_end = frame
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| protocol("invalid multibulk length"))?;
    let count =
        number(&frame[1..header_end]).ok_or_else(|| protocol("invalid multibulk length"))?;
    let mut args = Vec::with_capacity(count.clamp(0, MAX_ARGS as i64) as usize);
    let mut at = header_end + 2;
    for _ in 0..count.max(0) {
        let end = at
            + frame[at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| protocol("invalid bulk length"))?;
        let len = number(&frame[at + 1..end]).ok_or_else(|| protocol("invalid bulk length"))?;
        let start = end + 2;
        let stop = start + usize::try_from(len).map_err(|_| protocol("invalid bulk length"))?;
        if stop + 2 > frame.len() {
            return Err(protocol("invalid bulk length"));
        }
        args.push(frame.slice(start..stop));
        at = stop + 2;
    }
    Ok(args)
}

/// An inline line: arguments separated by spaces or tabs; `"..."` and
/// `'...'` quote an argument (with `\"`, `\\`, `\n`, `\r`, `\t` and `\xHH`
/// escapes inside double quotes), as `redis-cli` and Redis's
/// `sdssplitargs` do.
fn parse_inline(frame: Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let mut line = &frame[..];
    if let Some(l) = line.strip_suffix(b"\n") {
        line = l;
    }
    if let Some(l) = line.strip_suffix(b"\r") {
        line = l;
    }
    let unbalanced = || protocol("unbalanced quotes in request");
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && matches!(line[i], b' ' | b'\t') {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let c = *line.get(i).ok_or_else(unbalanced)?;
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' => {
                            let e = *line.get(i).ok_or_else(unbalanced)?;
                            i += 1;
                            match e {
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'x' => {
                                    let hex = line.get(i..i + 2).and_then(|h| {
                                        u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
                                    });
                                    match hex {
                                        Some(b) => {
                                            arg.push(b);
                                            i += 2;
                                        }
                                        None => arg.push(b'x'),
                                    }
                                }
                                other => arg.push(other),
                            }
                        }
                        other => arg.push(other),
                    }
                }
                if i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    return Err(unbalanced());
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let c = *line.get(i).ok_or_else(unbalanced)?;
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        other => arg.push(other),
                    }
                }
                if i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    return Err(unbalanced());
                }
            }
            _ => {
                while i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// Takes the next complete request off the front of `buf`: `Ok(None)` if
/// none is complete yet. Empty requests are returned as empty vectors.
pub fn next_request(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match check(buf)? {
        Checked::Incomplete => Ok(None),
        Checked::Complete(n) => parse(buf.split_to(n).freeze()).map(Some),
    }
}

/// A reply, encoded for the connection's protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-PREFIX message`: the text after `-`, prefix included.
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// RESP2 `$-1`, RESP3 `_`.
    Null,
    /// RESP2 `*-1` (a null array, e.g. an aborted `EXEC`), RESP3 `_`.
    NullArray,
    Array(Vec<Reply>),
    /// RESP3 `%`; RESP2 a flat array of keys and values.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`; RESP2 an array.
    Set(Vec<Reply>),
    /// RESP3 `,`; RESP2 a bulk string.
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2 `:1`/`:0`.
    Bool(bool),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// An error; `message` starts with its prefix (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoding for protocol version `proto` (2 or 3) to `out`.
    pub fn encode(&self, proto: u8, out: &mut BytesMut) {
        let resp3 = proto >= 3;
        match self {
            Reply::Simple(s) => line_of(out, b'+', &one_line(s)),
            Reply::Error(s) => line_of(out, b'-', &one_line(s)),
            Reply::Integer(i) => line_of(out, b':', &i.to_string()),
            Reply::Bulk(b) => {
                line_of(out, b'$', &b.len().to_string());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Null if resp3 => out.put_slice(b"_\r\n"),
            Reply::Null => out.put_slice(b"$-1\r\n"),
            Reply::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::NullArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                line_of(out, b'*', &items.len().to_string());
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line_of(out, b'%', &pairs.len().to_string());
                } else {
                    line_of(out, b'*', &(pairs.len() * 2).to_string());
                }
                for (k, v) in pairs {
                    k.encode(proto, out);
                    v.encode(proto, out);
                }
            }
            Reply::Set(items) => {
                line_of(
                    out,
                    if resp3 { b'~' } else { b'*' },
                    &items.len().to_string(),
                );
                for i in items {
                    i.encode(proto, out);
                }
            }
            Reply::Double(d) => {
                let text = if d.is_nan() {
                    "nan".to_owned()
                } else if d.is_infinite() {
                    if *d > 0.0 { "inf" } else { "-inf" }.to_owned()
                } else {
                    d.to_string()
                };
                if resp3 {
                    line_of(out, b',', &text);
                } else {
                    Reply::Bulk(Bytes::from(text)).encode(proto, out);
                }
            }
            Reply::Bool(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
            Reply::Bool(b) => line_of(out, b':', if *b { "1" } else { "0" }),
        }
    }
}

fn line_of(out: &mut BytesMut, tag: u8, text: &str) {
    out.put_u8(tag);
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

/// Simple strings and errors cannot contain CR or LF: replace them.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into()
    } else {
        s.into()
    }
}

/// Encodes `args` as a RESP request (an array of bulk strings).
pub fn encode_request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn args_of(buf: &[u8]) -> Result<Option<Vec<Vec<u8>>>, ProtocolError> {
        let mut b = BytesMut::from(buf);
        Ok(next_request(&mut b)?.map(|a| a.into_iter().map(|x| x.to_vec()).collect()))
    }

    fn strs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_requests_parse() {
        let req = encode_request(&[b"SET", b"k", b"v\r\nx"]);
        assert_eq!(args_of(&req).unwrap(), Some(strs(&["SET", "k", "v\r\nx"])));
        for cut in 0..req.len() {
            assert_eq!(args_of(&req[..cut]).unwrap(), None, "prefix {cut}");
        }
        assert_eq!(args_of(b"*0\r\n").unwrap(), Some(vec![]));
        assert_eq!(args_of(b"*-1\r\n").unwrap(), Some(vec![]));
    }

    #[test]
    fn pipelined_requests_come_off_one_at_a_time() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&encode_request(&[b"PING"]));
        buf.extend_from_slice(b"ECHO hi\r\n");
        buf.extend_from_slice(&encode_request(&[b"GET", b"k"])[..7]);
        let a = next_request(&mut buf).unwrap().unwrap();
        assert_eq!(a, vec![Bytes::from_static(b"PING")]);
        let b = next_request(&mut buf).unwrap().unwrap();
        assert_eq!(
            b,
            vec![Bytes::from_static(b"ECHO"), Bytes::from_static(b"hi")]
        );
        assert_eq!(next_request(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 7);
    }

    #[test]
    fn inline_requests_parse() {
        assert_eq!(args_of(b"PING\r\n").unwrap(), Some(strs(&["PING"])));
        assert_eq!(
            args_of(b"set  k\t\"a b\\n\\x41\"\n").unwrap(),
            Some(strs(&["set", "k", "a b\nA"]))
        );
        assert_eq!(
            args_of(b"echo 'it\\'s'\r\n").unwrap(),
            Some(strs(&["echo", "it's"]))
        );
        assert_eq!(args_of(b"\r\n").unwrap(), Some(vec![]));
        assert_eq!(args_of(b"PING").unwrap(), None);
        assert!(args_of(b"echo \"open\r\n").is_err());
    }

    #[test]
    fn a_2gb_bulk_header_is_refused_at_the_header() {
        let err = args_of(b"*2\r\n$3\r\nGET\r\n$2147483648\r\n").unwrap_err();
        assert_eq!(err.to_string(), "Protocol error: invalid bulk length");
        // Refused before any of the body arrived.
        let err = check(b"*1\r\n$2147483648\r\n").unwrap_err();
        assert_eq!(err.0, "invalid bulk length");
        let too_big = format!("*1\r\n${}\r\n", MAX_BULK_BYTES + 1);
        assert!(check(too_big.as_bytes()).is_err());
        let fits = format!("*1\r\n${MAX_BULK_BYTES}\r\n");
        assert_eq!(check(fits.as_bytes()).unwrap(), Checked::Incomplete);
    }

    #[test]
    fn limits_are_checked_before_the_bytes_arrive() {
        let many = format!("*{}\r\n", MAX_ARGS + 1);
        assert_eq!(
            check(many.as_bytes()).unwrap_err().0,
            "invalid multibulk length"
        );
        assert!(check(b"*12345678901234567890123456789\r\n").is_err());
        // A header that never ends.
        assert!(check(&[b'*'; 100]).is_err());
        assert!(check(b"*1\r\n$99999999999999999999999999999").is_err());
        // An inline line that never ends.
        assert_eq!(
            check(&vec![b'a'; MAX_INLINE_BYTES + 1]).unwrap_err().0,
            "too big inline request"
        );
        assert_eq!(
            check(&vec![b'a'; MAX_INLINE_BYTES]).unwrap(),
            Checked::Incomplete
        );
        // Declared lengths adding up past the request limit.
        let mut req = format!("*{}\r\n", MAX_ARGS).into_bytes();
        let mut refused = false;
        for _ in 0..(MAX_REQUEST_BYTES / MAX_BULK_BYTES + 2) {
            req.extend_from_slice(format!("${MAX_BULK_BYTES}\r\n").as_bytes());
            req.resize(req.len() + MAX_BULK_BYTES, b'x');
            req.extend_from_slice(b"\r\n");
            if check(&req).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn malformed_requests_are_protocol_errors() {
        assert_eq!(
            check(b"*1\r\n+OK\r\n").unwrap_err().0,
            "expected '+', got '+'".replace("'+', got", "'$', got")
        );
        assert!(check(b"*x\r\n").is_err());
        assert!(check(b"*1\r\n$-1\r\n").is_err());
        assert!(check(b"*1\r\n$1\r\nabc").is_err());
    }

    #[test]
    fn replies_encode_for_both_protocols() {
        let enc = |r: &Reply, proto| {
            let mut b = BytesMut::new();
            r.encode(proto, &mut b);
            String::from_utf8(b.to_vec()).unwrap()
        };
        assert_eq!(enc(&Reply::ok(), 2), "+OK\r\n");
        assert_eq!(enc(&Reply::error("ERR a\r\nb"), 2), "-ERR a  b\r\n");
        assert_eq!(enc(&Reply::Integer(-3), 3), ":-3\r\n");
        assert_eq!(enc(&Reply::bulk("hi"), 2), "$2\r\nhi\r\n");
        assert_eq!(enc(&Reply::Null, 2), "$-1\r\n");
        assert_eq!(enc(&Reply::Null, 3), "_\r\n");
        assert_eq!(enc(&Reply::NullArray, 2), "*-1\r\n");
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(enc(&map, 2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, 3), "%1\r\n$1\r\na\r\n:1\r\n");
        let set = Reply::Set(vec![Reply::bulk("x")]);
        assert_eq!(enc(&set, 2), "*1\r\n$1\r\nx\r\n");
        assert_eq!(enc(&set, 3), "~1\r\n$1\r\nx\r\n");
        assert_eq!(enc(&Reply::Double(1.5), 3), ",1.5\r\n");
        assert_eq!(enc(&Reply::Double(1.5), 2), "$3\r\n1.5\r\n");
        assert_eq!(enc(&Reply::Bool(true), 3), "#t\r\n");
        assert_eq!(enc(&Reply::Bool(false), 2), ":0\r\n");
    }

    /// A minimal reply decoder for the round-trip property.
    fn decode(buf: &[u8], at: &mut usize) -> Reply {
        let end = *at + buf[*at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let tag = buf[*at];
        let text = std::str::from_utf8(&buf[*at + 1..end]).unwrap().to_owned();
        *at = end + 2;
        match tag {
            b'+' => Reply::Simple(text),
            b'-' => Reply::Error(text),
            b':' => Reply::Integer(text.parse().unwrap()),
            b'_' => Reply::Null,
            b'$' => {
                let n: usize = text.parse().unwrap();
                let r = Reply::Bulk(Bytes::copy_from_slice(&buf[*at..*at + n]));
                *at += n + 2;
                r
            }
            b'*' | b'~' | b'%' => {
                let n: usize = text.parse().unwrap();
                let n = if tag == b'%' { 2 * n } else { n };
                let items: Vec<Reply> = (0..n).map(|_| decode(buf, at)).collect();
                match tag {
                    b'*' => Reply::Array(items),
                    b'~' => Reply::Set(items),
                    _ => Reply::Map(
                        items
                            .chunks(2)
                            .map(|c| (c[0].clone(), c[1].clone()))
                            .collect(),
                    ),
                }
            }
            other => panic!("unexpected tag {other}"),
        }
    }

    fn reply_strategy() -> impl Strategy<Value = Reply> {
        let leaf = prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(Reply::Simple),
            "ERR [a-z ]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Reply::Bulk(v.into())),
            Just(Reply::Null),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Array),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Set),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Reply::Map),
            ]
        })
    }

    proptest! {
        /// Arbitrary bytes never panic the parser, and whatever it accepts
        /// lies within the limits.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(args)) = next_request(&mut buf) {
                prop_assert!(args.len() <= MAX_ARGS);
                prop_assert!(args.iter().all(|a| a.len() <= MAX_BULK_BYTES.max(MAX_INLINE_BYTES)));
            }
        }

        /// Arbitrary bytes after a valid header prefix never panic either.
        #[test]
        fn arbitrary_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut req = b"*3\r\n$3\r\nSET\r\n".to_vec();
            req.extend_from_slice(&bytes);
            let mut buf = BytesMut::from(&req[..]);
            let _ = next_request(&mut buf);
        }

        /// Any arguments survive encode then parse.
        #[test]
        fn requests_round_trip(args in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..64), 1..8)
        ) {
            let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
            let mut buf = BytesMut::from(&encode_request(&refs)[..]);
            let parsed = next_request(&mut buf).unwrap().unwrap();
            prop_assert_eq!(parsed.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
            prop_assert!(buf.is_empty());
        }

        /// RESP3 replies decode back to themselves.
        #[test]
        fn replies_round_trip(reply in reply_strategy()) {
            let mut out = BytesMut::new();
            reply.encode(3, &mut out);
            let mut at = 0;
            let back = decode(&out, &mut at);
            prop_assert_eq!(back, reply);
            prop_assert_eq!(at, out.len());
        }
    }
}
