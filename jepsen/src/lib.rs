//! meridian-jepsen: a black-box, Jepsen-style partition-testing harness for
//! Meridian. It drives real `meridian` processes ([`cluster`]) through a
//! [`db::Db`] interface ([`client_db`]: the native client; [`resp_db`]: the
//! Redis protocol) with [`workload`]s, injects faults ([`nemesis`],
//! scheduled by [`generator`], network faults through [`net`]), records a
//! Jepsen-format [`history`], checks it against docs/architecture.md §7 ([`checker`])
//! and writes a Jepsen-shaped store ([`report`]).
//!
//! Guarantees: every written value is unique, so each observed value names
//! its write; `fail` is recorded only for errors the server defines as
//! definite; every run is reproducible in its choices from `--seed`; only
//! processes the harness spawned are signalled, by PID; all traffic stays on
//! 127.0.0.0/8, inside a namespace the run created (nft) or through the
//! harness's own relays (proxy); every loop is bounded in count and time.
//! Where the design is silent, the harness does what Jepsen does.
pub mod checker;
pub mod cleanup;
pub mod cli;
pub mod client_db;
pub mod cluster;
pub mod db;
pub mod generator;
pub mod grudge;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod resp_db;
pub mod runner;
pub mod workload;
