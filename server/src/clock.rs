//! The node's physical clock: system time plus the debug offset the
//! partition harness sets for clock-skew faults (`--allow-debug-clock`).
//! Everything on the node that stamps time reads this one clock; the HLC
//! in the engine is built on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use meridian_engine::PhysicalTime;

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
