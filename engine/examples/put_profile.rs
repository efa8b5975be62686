//! Profiling aid: a fixed number of register puts, for `valgrind
//! --tool=callgrind` (instruction counts are repeatable on a busy machine).
//!
//! `cargo build --release -p meridian-engine --example put_profile &&
//!  valgrind --tool=callgrind target/release/examples/put_profile`

use std::time::Duration;

use meridian_engine::{Durability, Engine, EngineConfig, Kind, ObjectKey, Op, PhysicalTime};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = EngineConfig::new(dir.path());
    config.durability = Durability::Periodic(Duration::from_millis(500));
    let engine = Engine::open(config, PhysicalTime::system(0)).expect("open");
    let key_count: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let keys: Vec<ObjectKey> = (0..key_count)
        .map(|i| ObjectKey::new(Kind::Register, format!("key-{i:012}").into_bytes()).unwrap())
        .collect();
    let value = vec![0x5a; 100];
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    for i in 0..n {
        engine
            .apply(
                &keys[(i * 7_919) % keys.len()],
                Op::Put(value.clone()),
                PhysicalTime::system(0),
            )
            .expect("put");
    }
    engine.close().expect("close");
}
