//! The hybrid logical clock, built on `uhlc`.
//!
//! `uhlc` implements the published HLC rules: a new timestamp is greater
//! than every timestamp issued or observed before, and a remote timestamp
//! further than `max_offset` ahead of local physical time is refused (so a
//! node with a runaway clock cannot drag the cluster's time forward). The
//! `hybrid-logical-clock` crate is deliberately not used: its receive rule
//! can go backwards (clock (200,5), message (150,0), wall 180 gives (200,0)).
//!
//! Time is passed in: [`Clock::now`] and [`Clock::observe`] take the
//! caller's physical time, so tests, simulations and the harness's
//! clock-skew fault control it. (`uhlc` only accepts a `fn() -> NTP64` clock,
//! so the value is handed over through a thread-local for the duration of
//! the call.)

use std::cell::Cell;
use std::num::NonZeroU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::causal::Incarnation;
use crate::error::{Error, Result};

/// Physical time as a 64-bit NTP timestamp (32.32 fixed-point seconds since
/// 1900-01-01), the representation `uhlc` uses.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct PhysicalTime(pub u64);

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

impl PhysicalTime {
    /// Reads the system wall clock, shifted by `offset_ms` (the harness's
    /// debug clock offset; 0 in production).
    pub fn system(offset_ms: i64) -> PhysicalTime {
        let since_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let shifted = if offset_ms >= 0 {
            since_unix + Duration::from_millis(offset_ms as u64)
        } else {
            since_unix.saturating_sub(Duration::from_millis(offset_ms.unsigned_abs()))
        };
        PhysicalTime::from_unix(shifted)
    }

    /// From a duration since the Unix epoch.
    pub fn from_unix(d: Duration) -> PhysicalTime {
        let secs = d.as_secs() + NTP_UNIX_OFFSET_SECS;
        let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
        PhysicalTime((secs << 32) | frac)
    }

    /// From whole milliseconds since the Unix epoch (handy in tests).
    pub fn from_unix_ms(ms: u64) -> PhysicalTime {
        PhysicalTime::from_unix(Duration::from_millis(ms))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_ms(self) -> u64 {
        ntp_to_unix_ms(self.0)
    }
}

fn ntp_to_unix_ms(ntp: u64) -> u64 {
    let secs = (ntp >> 32).saturating_sub(NTP_UNIX_OFFSET_SECS);
    // Round to the nearest millisecond: the 32-bit fraction can't hold
    // every millisecond exactly.
    let frac_ms = (((ntp & 0xffff_ffff) * 1000) + (1 << 31)) >> 32;
    secs * 1000 + frac_ms
}

fn ntp_duration_ms(ntp_delta: u64) -> u64 {
    ((ntp_delta >> 32) * 1000) + (((ntp_delta & 0xffff_ffff) * 1000) >> 32)
}

/// A hybrid-logical-clock timestamp: `time` is an NTP64 value whose low 4
/// bits are a logical counter, `node` the incarnation that issued it.
/// Ordered by `(time, node)`: that total order decides last-writer-wins.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Debug,
    Default,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Hlc {
    pub time: u64,
    pub node: Incarnation,
}

impl Hlc {
    /// Milliseconds since the Unix epoch of the physical part.
    pub fn unix_ms(&self) -> u64 {
        ntp_to_unix_ms(self.time)
    }
}

thread_local! {
    /// The physical time handed to `uhlc` for the duration of one call.
    static PHYSICAL_NOW: Cell<u64> = const { Cell::new(0) };
}

fn injected_clock() -> uhlc::NTP64 {
    uhlc::NTP64(PHYSICAL_NOW.with(Cell::get))
}

/// A node's hybrid logical clock.
pub struct Clock {
    hlc: uhlc::HLC,
    node: Incarnation,
    max_offset: Duration,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("node", &self.node)
            .field("max_offset", &self.max_offset)
            .finish()
    }
}

impl Clock {
    /// Default `max_clock_offset`: remote timestamps further ahead than this
    /// are refused. Half a second tolerates ordinary NTP error while keeping
    /// a runaway clock from pushing everyone's time forward.
    pub const DEFAULT_MAX_OFFSET: Duration = Duration::from_millis(500);

    pub fn new(node: Incarnation, max_offset: Duration) -> Clock {
        let id = NonZeroU64::new(node.0).expect("incarnations are never zero");
        let hlc = uhlc::HLCBuilder::new()
            .with_id(uhlc::ID::from(id))
            .with_clock(injected_clock)
            .with_max_delta(max_offset)
            .build();
        Clock {
            hlc,
            node,
            max_offset,
        }
    }

    pub fn incarnation(&self) -> Incarnation {
        self.node
    }

    pub fn max_offset(&self) -> Duration {
        self.max_offset
    }

    /// A new timestamp, greater than every one issued or observed before.
    pub fn now(&self, physical: PhysicalTime) -> Hlc {
        PHYSICAL_NOW.with(|c| c.set(physical.0));
        let ts = self.hlc.new_timestamp();
        Hlc {
            time: ts.get_time().0,
            node: self.node,
        }
    }

    /// Folds a remote timestamp into the clock, so later local timestamps
    /// are greater. Refused (and the clock unchanged) if `remote` is more
    /// than `max_offset` ahead of `physical`.
    pub fn observe(&self, remote: Hlc, physical: PhysicalTime) -> Result<()> {
        let remote_id = NonZeroU64::new(remote.node.0)
            .map(uhlc::ID::from)
            .unwrap_or_else(|| uhlc::ID::from(NonZeroU64::MIN));
        let ts = uhlc::Timestamp::new(uhlc::NTP64(remote.time), remote_id);
        PHYSICAL_NOW.with(|c| c.set(physical.0));
        self.hlc.update_with_timestamp(&ts).map_err(|_| {
            // uhlc masks the low (logical) bits of physical time before comparing.
            let ahead = remote.time.saturating_sub(physical.0 & !0xf);
            Error::ClockAhead {
                ahead_ms: ntp_duration_ms(ahead),
                max_ms: self.max_offset.as_millis() as u64,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(x: u64) -> PhysicalTime {
        PhysicalTime::from_unix_ms(1_700_000_000_000 + x)
    }

    #[test]
    fn physical_time_round_trips_milliseconds() {
        let t = PhysicalTime::from_unix_ms(1_700_000_000_123);
        assert_eq!(t.unix_ms(), 1_700_000_000_123);
    }

    #[test]
    fn receive_rule_never_goes_backwards() {
        // The counterexample that rules out the `hybrid-logical-clock` crate:
        // clock at (200, 5), message (150, 0), wall clock 180.
        let clock = Clock::new(Incarnation(1), Clock::DEFAULT_MAX_OFFSET);
        let mut last = Hlc::default();
        for _ in 0..6 {
            let t = clock.now(ms(200));
            assert!(t > last);
            last = t;
        }
        let remote = Hlc {
            time: ms(150).0,
            node: Incarnation(2),
        };
        clock.observe(remote, ms(180)).unwrap();
        let after = clock.now(ms(180));
        assert!(after > last, "{after:?} must exceed {last:?}");
        assert!(after > remote);
    }

    #[test]
    fn far_future_timestamps_are_refused_and_leave_the_clock_alone() {
        let clock = Clock::new(Incarnation(1), Duration::from_millis(500));
        let before = clock.now(ms(1000));
        let remote = Hlc {
            time: ms(1000 + 2000).0,
            node: Incarnation(2),
        };
        match clock.observe(remote, ms(1000)) {
            Err(Error::ClockAhead { ahead_ms, max_ms }) => {
                assert!((1999..=2001).contains(&ahead_ms), "{ahead_ms}");
                assert_eq!(max_ms, 500);
            }
            other => panic!("expected ClockAhead, got {other:?}"),
        }
        let after = clock.now(ms(1000));
        assert!(
            after < remote,
            "a refused timestamp must not move the clock"
        );
        assert!(after > before);
        // Once local time catches up, the same timestamp is accepted.
        clock.observe(remote, ms(2600)).unwrap();
        assert!(clock.now(ms(2600)) > remote);
    }

    #[test]
    fn timestamps_within_the_offset_are_accepted() {
        let clock = Clock::new(Incarnation(1), Duration::from_millis(500));
        let remote = Hlc {
            time: ms(1400).0,
            node: Incarnation(2),
        };
        clock.observe(remote, ms(1000)).unwrap();
        assert!(clock.now(ms(1000)) > remote);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Tick(u64),
        Observe { remote: u64, wall: u64 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..10_000).prop_map(Step::Tick),
            (0u64..10_000, 0u64..10_000).prop_map(|(remote, wall)| Step::Observe { remote, wall }),
        ]
    }

    proptest! {
        /// Whatever the interleaving of local events and received
        /// timestamps, and however the wall clock jumps around, every new
        /// timestamp exceeds everything issued or accepted before it.
        #[test]
        fn monotonic_under_any_send_receive_sequence(steps in proptest::collection::vec(step(), 1..200)) {
            let clock = Clock::new(Incarnation(7), Duration::from_millis(500));
            let mut high = Hlc::default();
            for s in steps {
                match s {
                    Step::Tick(wall) => {
                        let t = clock.now(ms(wall));
                        prop_assert!(t > high, "{:?} <= {:?}", t, high);
                        high = t;
                    }
                    Step::Observe { remote, wall } => {
                        let r = Hlc { time: ms(remote).0, node: Incarnation(9) };
                        let result = clock.observe(r, ms(wall));
                        let accepted = result.is_ok();
                        // Exactly at the limit, sub-millisecond rounding decides.
                        if remote + 1 < wall + 500 {
                            prop_assert!(accepted);
                        } else if remote > wall + 501 {
                            prop_assert!(!accepted);
                        }
                        match result {
                            Ok(()) => {
                                if r > high {
                                    high = r;
                                }
                                // Observing, then ticking, yields more than the remote.
                                let t = clock.now(ms(wall));
                                prop_assert!(t > r && t > high, "{:?} after observing {:?}", t, r);
                                high = t;
                            }
                            Err(Error::ClockAhead { ahead_ms, max_ms }) => {
                                // The refusal says by how much, and the clock did not move.
                                prop_assert_eq!(max_ms, 500);
                                let expected = remote - wall;
                                prop_assert!(
                                    ahead_ms + 1 >= expected && ahead_ms <= expected + 1,
                                    "ahead_ms {} for {} ms", ahead_ms, expected
                                );
                                let t = clock.now(ms(wall));
                                prop_assert!(t > high);
                                // The clock's own logical increment may pass the
                                // remote's sub-tick low bits (uhlc keeps the low 4
                                // bits for its counter): compare whole ticks.
                                if high.time < r.time & !0xf {
                                    prop_assert!(t < r, "a refused timestamp moved the clock to {:?}", t);
                                }
                                high = t;
                            }
                            Err(other) => prop_assert!(false, "unexpected error {:?}", other),
                        }
                    }
                }
            }
        }
    }
}
