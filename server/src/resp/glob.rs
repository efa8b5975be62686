//! Redis's glob patterns (`KEYS`, `SCAN ... MATCH`, `SSCAN ... MATCH`),
//! as Redis's `stringmatchlen` reads them, on bytes:
//!
//! * `*` any run of bytes (also none), `?` any one byte;
//! * `[abc]` one of the listed bytes, `[^abc]` any other, `[a-z]` a range
//!   (either order), `\` inside brackets escapes the next byte; an
//!   unclosed `[` ends at the pattern's end;
//! * `\x` the byte `x` itself; every other byte itself.
//!
//! Matching is linear in the key for each pattern token (one backtrack
//! point, the last `*`), so a hostile pattern such as `*a*a*a*a*b` costs
//! `O(pattern × key)`, never exponential time.

/// One element of a pattern; each matches exactly one byte except `Star`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Byte(u8),
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    fn matches(&self, b: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(x) => *x == b,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&b)) != *negated
            }
        }
    }
}

/// A compiled glob pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < pattern.len() {
            match pattern[i] {
                b'*' => {
                    // Runs of stars match what one does.
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                b'?' => tokens.push(Token::Any),
                b'\\' if i + 1 < pattern.len() => {
                    i += 1;
                    tokens.push(Token::Byte(pattern[i]));
                }
                b'[' => {
                    i += 1;
                    let negated = pattern.get(i) == Some(&b'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    while i < pattern.len() && pattern[i] != b']' {
                        if pattern[i] == b'\\' && i + 1 < pattern.len() {
                            i += 1;
                            ranges.push((pattern[i], pattern[i]));
                        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' {
                            let (a, b) = (pattern[i], pattern[i + 2]);
                            ranges.push((a.min(b), a.max(b)));
                            i += 2;
                        } else {
                            ranges.push((pattern[i], pattern[i]));
                        }
                        i += 1;
                    }
                    tokens.push(Token::Class { negated, ranges });
                }
                b => tokens.push(Token::Byte(b)),
            }
            i += 1;
        }
        Glob { tokens }
    }

    /// A `MATCH` option's glob: `None` when there is no pattern or it
    /// matches everything (nothing to filter).
    pub fn of_option(pattern: Option<&[u8]>) -> Option<Glob> {
        pattern.map(Glob::new).filter(|g| !g.matches_all())
    }

    /// Whether the pattern matches every key (`*`, or no pattern at all).
    pub fn matches_all(&self) -> bool {
        self.tokens == [Token::Star]
    }

    /// The literal bytes every match starts with (up to the first
    /// wildcard or class): where a scan may seek to.
    pub fn literal_prefix(&self) -> Vec<u8> {
        self.tokens
            .iter()
            .map_while(|t| match t {
                Token::Byte(b) => Some(*b),
                _ => None,
            })
            .collect()
    }

    pub fn matches(&self, s: &[u8]) -> bool {
        let t = &self.tokens;
        let (mut ti, mut si) = (0, 0);
        // The last star seen and the input position it was tried at.
        let mut star: Option<(usize, usize)> = None;
        while si < s.len() {
            match t.get(ti) {
                Some(Token::Star) => {
                    star = Some((ti, si));
                    ti += 1;
                }
                Some(tok) if tok.matches(s[si]) => {
                    ti += 1;
                    si += 1;
                }
                _ => match star {
                    // Let the last star take one more byte and retry.
                    Some((st, ss)) => {
                        ti = st + 1;
                        si = ss + 1;
                        star = Some((st, ss + 1));
                    }
                    None => return false,
                },
            }
        }
        t[ti..].iter().all(|tok| *tok == Token::Star)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, s: &str) -> bool {
        Glob::new(pattern.as_bytes()).matches(s.as_bytes())
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("h?llo", "hello") && m("h?llo", "hallo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo") && m("h*llo", "heeeello"));
        assert!(!m("h*llo", "hello!"));
        assert!(m("user:*", "user:1") && !m("user:*", "use:1"));
        assert!(m("*:*:x", "a:b:c:x") && !m("*:*:x", "a:x"));
        assert!(m("a**b", "ab") && m("a*b*c", "aXbYc") && !m("a*b*c", "aXcYb"));
        assert!(!m("", "a") && m("", ""));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        // A reversed range is the same range, as in Redis.
        assert!(m("[z-a]", "q"));
        assert!(m("\\*", "*") && !m("\\*", "x"));
        assert!(m("a\\?b", "a?b") && !m("a\\?b", "axb"));
        assert!(m("[\\]]", "]") && m("[\\-]", "-"));
        // An unclosed class runs to the end of the pattern.
        assert!(m("a[bc", "ab") && !m("a[bc", "ad"));
        // A trailing backslash is itself.
        assert!(m("a\\", "a\\"));
        // Bytes, not characters.
        assert!(Glob::new(b"\xff?").matches(b"\xff\x00"));
    }

    #[test]
    fn literal_prefixes_stop_at_the_first_wildcard() {
        assert_eq!(Glob::new(b"user:*").literal_prefix(), b"user:");
        assert_eq!(Glob::new(b"us\\*er*").literal_prefix(), b"us*er");
        assert_eq!(Glob::new(b"u?er").literal_prefix(), b"u");
        assert_eq!(Glob::new(b"[ab]c").literal_prefix(), b"");
        assert_eq!(Glob::new(b"exact").literal_prefix(), b"exact");
        assert!(Glob::new(b"*").matches_all() && Glob::new(b"**").matches_all());
        assert!(!Glob::new(b"a*").matches_all());
    }

    #[test]
    fn hostile_patterns_stay_cheap() {
        // Exponential for a naive backtracking matcher; linear-ish here.
        let pattern = "*a".repeat(64) + "b";
        let key = "a".repeat(4096);
        assert!(!m(&pattern, &key));
        assert!(m(&("*a".repeat(64) + "*"), &key));
    }
}
