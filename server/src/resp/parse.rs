//! A cursor over one request's arguments (after the command name).

use bytes::Bytes;
use meridian_client::wire::MAX_KEY_BYTES;

/// Redis's wording for an argument that is not a 64-bit integer.
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// Redis's wording for an unknown option.
pub const SYNTAX: &str = "ERR syntax error";

/// The arguments of one command, consumed front to back. Errors are the
/// reply's text (prefix included).
#[derive(Debug)]
pub struct Args {
    /// Lowercase command name, for error messages.
    pub name: String,
    args: std::vec::IntoIter<Bytes>,
}

impl Args {
    pub fn new(name: impl Into<String>, args: Vec<Bytes>) -> Args {
        Args {
            name: name.into(),
            args: args.into_iter(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.args.len()
    }

    /// Redis's arity error.
    pub fn arity(&self) -> String {
        format!("ERR wrong number of arguments for '{}' command", self.name)
    }

    pub fn bytes(&mut self) -> Result<Bytes, String> {
        self.args.next().ok_or_else(|| self.arity())
    }

    /// A key: at most `MAX_KEY_BYTES`.
    pub fn key(&mut self) -> Result<Bytes, String> {
        let k = self.bytes()?;
        check_key(&k)?;
        Ok(k)
    }

    /// Every remaining argument as a key; at least one.
    pub fn keys(&mut self) -> Result<Vec<Bytes>, String> {
        if self.remaining() == 0 {
            return Err(self.arity());
        }
        let mut out = Vec::with_capacity(self.remaining());
        while self.remaining() > 0 {
            out.push(self.key()?);
        }
        Ok(out)
    }

    /// Every remaining argument; at least one.
    pub fn rest(&mut self) -> Result<Vec<Bytes>, String> {
        if self.remaining() == 0 {
            return Err(self.arity());
        }
        Ok(self.args.by_ref().collect())
    }

    /// The next argument as text (lossy).
    pub fn text(&mut self) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }

    pub fn int(&mut self) -> Result<i64, String> {
        int(&self.bytes()?)
    }

    /// Fails with the arity error unless every argument was consumed.
    pub fn finish(&self) -> Result<(), String> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.arity())
        }
    }
}

/// A 64-bit integer argument, as Redis's `string2ll` accepts it.
pub fn int(b: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(b).map_err(|_| NOT_INTEGER.to_owned())?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s == "-0" {
        return Err(NOT_INTEGER.into());
    }
    s.parse().map_err(|_| NOT_INTEGER.to_owned())
}

pub fn check_key(k: &[u8]) -> Result<(), String> {
    if k.len() > MAX_KEY_BYTES {
        return Err(format!(
            "ERR key of {} bytes exceeds the {MAX_KEY_BYTES}-byte key limit",
            k.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_like_redis() {
        assert_eq!(int(b"42"), Ok(42));
        assert_eq!(int(b"-7"), Ok(-7));
        assert_eq!(int(b"0"), Ok(0));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b"1.5",
            b" 1",
            b"9223372036854775808",
            b"-0",
        ] {
            assert_eq!(int(bad), Err(NOT_INTEGER.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn the_cursor_reports_arity() {
        let mut a = Args::new("get", vec![]);
        assert_eq!(
            a.key().unwrap_err(),
            "ERR wrong number of arguments for 'get' command"
        );
        let a = Args::new("get", vec![Bytes::from_static(b"x")]);
        assert!(a.finish().is_err());
        let mut a = Args::new("get", vec![Bytes::from(vec![b'k'; MAX_KEY_BYTES + 1])]);
        assert!(a.key().unwrap_err().contains("key limit"));
    }
}
