//! `SCAN` and `SSCAN` cursors: the integers Redis clients pass back,
//! standing for positions kept by the connection.
//!
//! A scan's position is a byte string (a place in the node's store order,
//! or the last member listed: see `Engine::scan` and `Engine::set_page`)
//! of up to 4 KiB for keys and 1 MiB for members. Redis clients parse the
//! cursor as an integer (redis-py `int()`, redis-cli and the `redis` crate
//! as an unsigned 64-bit one), so a position cannot be handed out as the
//! cursor itself. Each connection keeps its open scans' positions in a
//! small table and hands out their numbers: `0` starts a scan and ends
//! one, as in Redis; every other number names a table entry, used once
//! (the next page gets a new number).
//!
//! Bounds: [`MAX_OPEN_CURSORS`] entries and [`MAX_CURSOR_BYTES`] of
//! positions per connection; past them the oldest entry is forgotten and
//! its cursor answers `-ERR invalid cursor` (a clear error, never a wrong
//! page). So a cursor is valid on the connection that received it, for a
//! client interleaving at most that many scans; numbers start at a random
//! point per connection, so a cursor carried to another connection is
//! almost surely refused rather than mistaken for one of its own.

use std::collections::VecDeque;

use bytes::Bytes;

/// Most scans one connection may have open at once: far above the one or
/// two a client iterates together; bounds the table's work and size.
pub const MAX_OPEN_CURSORS: usize = 16;

/// Most bytes of positions one connection keeps: room for one position of
/// the largest set member (1 MiB) next to key scans. Each connection may
/// already hold 64 MiB of pending replies; this is small beside it.
pub const MAX_CURSOR_BYTES: usize = (1 << 20) + (64 << 10);

/// The error for a cursor the connection does not have (Redis's wording
/// for a malformed one).
pub const INVALID_CURSOR: &str = "ERR invalid cursor";

/// What a cursor scans: the keyspace or one set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Keys,
    Set(Bytes),
}

#[derive(Debug)]
struct Entry {
    id: u64,
    scope: Scope,
    position: Vec<u8>,
}

/// One connection's open cursors.
#[derive(Debug)]
pub struct Cursors {
    next_id: u64,
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Default for Cursors {
    fn default() -> Cursors {
        Cursors::new()
    }
}

impl Cursors {
    pub fn new() -> Cursors {
        // Below 2^32 so numbers stay far from any integer limit a client
        // may have; 1 or more (0 is Redis's start and end).
        Cursors::starting_at(u64::from(rand::random::<u32>()) + 1)
    }

    fn starting_at(first: u64) -> Cursors {
        Cursors {
            next_id: first,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The cursor number standing for `position` in `scope`.
    pub fn issue(&mut self, scope: Scope, position: Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.bytes += position.len();
        self.entries.push_back(Entry {
            id,
            scope,
            position,
        });
        while self.entries.len() > MAX_OPEN_CURSORS
            || (self.bytes > MAX_CURSOR_BYTES && self.entries.len() > 1)
        {
            if let Some(old) = self.entries.pop_front() {
                self.bytes -= old.position.len();
            }
        }
        id
    }

    /// The position of cursor `cursor` in `scope`: `None` for 0 (from the
    /// start), the entry's position otherwise (forgotten: each number is
    /// used once). [`INVALID_CURSOR`] for a number the connection does not
    /// have, or one of another scope.
    pub fn take(&mut self, scope: &Scope, cursor: u64) -> Result<Option<Vec<u8>>, &'static str> {
        if cursor == 0 {
            return Ok(None);
        }
        let i = self
            .entries
            .iter()
            .position(|e| e.id == cursor && e.scope == *scope)
            .ok_or(INVALID_CURSOR)?;
        let entry = self.entries.remove(i).expect("the index was just found");
        self.bytes -= entry.position.len();
        Ok(Some(entry.position))
    }
}

/// A cursor argument: an unsigned decimal integer, as Redis parses it.
pub fn parse(arg: &[u8]) -> Result<u64, &'static str> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(INVALID_CURSOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_stand_for_positions_once() {
        let mut c = Cursors::starting_at(7);
        assert_eq!(c.take(&Scope::Keys, 0), Ok(None));
        let a = c.issue(Scope::Keys, b"pos-a".to_vec());
        let s = c.issue(Scope::Set("k".into()), b"member".to_vec());
        assert!(a != 0 && s != 0 && a != s);
        // A set's cursor is not the keyspace's, nor another set's.
        assert_eq!(c.take(&Scope::Keys, s), Err(INVALID_CURSOR));
        assert_eq!(c.take(&Scope::Set("j".into()), s), Err(INVALID_CURSOR));
        assert_eq!(
            c.take(&Scope::Set("k".into()), s),
            Ok(Some(b"member".to_vec()))
        );
        assert_eq!(c.take(&Scope::Keys, a), Ok(Some(b"pos-a".to_vec())));
        // Used once.
        assert_eq!(c.take(&Scope::Keys, a), Err(INVALID_CURSOR));
        assert_eq!(c.take(&Scope::Keys, 12345), Err(INVALID_CURSOR));
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn the_table_is_bounded_by_count_and_bytes() {
        let mut c = Cursors::starting_at(1);
        let ids: Vec<u64> = (0..MAX_OPEN_CURSORS + 4)
            .map(|i| c.issue(Scope::Keys, vec![i as u8]))
            .collect();
        assert_eq!(c.entries.len(), MAX_OPEN_CURSORS);
        // The oldest were forgotten, the newest kept.
        assert_eq!(c.take(&Scope::Keys, ids[0]), Err(INVALID_CURSOR));
        assert_eq!(c.take(&Scope::Keys, ids[ids.len() - 1]), Ok(Some(vec![19])));

        let mut c = Cursors::starting_at(1);
        let small = c.issue(Scope::Keys, vec![0; 10]);
        let big = c.issue(Scope::Set("s".into()), vec![0; MAX_CURSOR_BYTES]);
        assert!(c.bytes <= MAX_CURSOR_BYTES);
        assert_eq!(c.take(&Scope::Keys, small), Err(INVALID_CURSOR));
        assert!(c.take(&Scope::Set("s".into()), big).unwrap().is_some());
    }

    #[test]
    fn numbers_wrap_past_zero() {
        let mut c = Cursors::starting_at(u64::MAX);
        assert_eq!(c.issue(Scope::Keys, vec![]), u64::MAX);
        assert_eq!(c.issue(Scope::Keys, vec![]), 1);
    }

    #[test]
    fn cursor_arguments_parse_like_redis() {
        assert_eq!(parse(b"0"), Ok(0));
        assert_eq!(parse(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.0",
            b"abc",
            b"18446744073709551616",
        ] {
            assert_eq!(parse(bad), Err(INVALID_CURSOR), "{bad:?}");
        }
    }
}
