//! The node's physical clock: system time plus the debug offset the
//! partition harness sets for clock-skew faults (`--allow-debug-clock`).
//! Everything on the node that stamps time reads this one clock; the HLC
//! in the engine is built on it.
//!
//! The debug offset is refused unless the node was started with
//! `--allow-debug-clock` (or `[debug] allow_clock_offset`), is at most
//! [`MAX_DEBUG_CLOCK_OFFSET_MS`] either way, and lives in memory only: a
//! restart resets it to 0. What outlives it is the HLC: timestamps issued
//! while the offset was positive are in the log and the checkpointed clock,
//! and the HLC never runs backwards, so after the offset is removed (or the
//! node restarts) this node keeps stamping writes at least that far ahead
//! (logical time) until real time catches up. Those writes win
//! last-writer-wins races as if the clock were still ahead. That is the
//! point of an HLC (no write is ever stamped below one it follows) and why
//! the offset is a test-only switch, bounded to a day.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use meridian_engine::PhysicalTime;

/// Largest debug clock offset either way, in milliseconds: a day covers
/// every clock fault the partition harness injects, and bounds how far
/// ahead a mistaken offset can push the node's HLC for good (see the
/// module docs); far larger offsets would also overflow the 32-bit NTP
/// seconds of a timestamp.
pub const MAX_DEBUG_CLOCK_OFFSET_MS: i64 = 24 * 60 * 60 * 1000;

/// The node's physical clock: system time plus the harness's debug offset.
#[derive(Clone, Debug, Default)]
pub struct NodeClock {
    offset_ms: Arc<AtomicI64>,
}

impl NodeClock {
    pub fn now(&self) -> PhysicalTime {
        PhysicalTime::system(self.offset_ms.load(Ordering::Relaxed))
    }

    pub fn set_offset_ms(&self, ms: i64) {
        self.offset_ms.store(ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}
