//! The Rust client for Meridian, a geo-replicated CRDT key-value store.
//!
//! A [`Client`] is a cheap, cloneable handle in front of one authenticated
//! QUIC connection to a node of the cluster. Objects are counters, sets and
//! last-writer-wins registers, addressed by type and key; every request
//! chooses its own [`Consistency`] level.
//!
//! ```no_run
//! use meridian_client::{Client, ClientConfig, Consistency};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), meridian_client::Error> {
//!     // `meridian init` writes client.toml next to the cluster's CA and
//!     // the client certificate.
//!     let config = ClientConfig::load("cluster/client.toml")?.prefer("eu-west-1");
//!     let client = Client::connect(config).await?;
//!
//!     let likes = client
//!         .counter("likes")
//!         .incr(1)
//!         .consistency(Consistency::Quorum)
//!         .await?;
//!     println!("likes = {} (served by {})", likes.value, likes.node);
//!
//!     client.set("cart").add(["apple", "pear"]).await?;
//!     let cart = client.set("cart").members().await?;
//!     assert!(cart.value.contains(b"apple"));
//!
//!     client.register("profile").put(b"{\"name\":\"Ada\"}").await?;
//!     let profile = client.register("profile").get().await?;
//!     println!("profile = {:?}", profile.value.value);
//!
//!     match client.counter("likes").incr(1).await {
//!         Ok(read) => println!("now {}", read.value),
//!         // Definite: nothing happened; safe to retry.
//!         Err(e) if e.is_definite() => eprintln!("not counted: {e}"),
//!         // Indeterminate: it may have counted. Re-read; don't blindly retry.
//!         Err(e) => eprintln!("may or may not have counted: {e}"),
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Consistency levels
//!
//! Let N be the object's replica set size and Q = ⌊N/2⌋ + 1 (docs/architecture.md
//! section 7). Levels are per request: [`RequestBuilder::consistency`], or the
//! client's default ([`ClientConfig::with_consistency`], `local` unless set).
//!
//! | level | a write is acknowledged when | a read returns | promise | cost |
//! |---|---|---|---|---|
//! | `local` | the contacted node has it durably | the contacted node's state | lowest latency; available while that node is up; replicated asynchronously | one local fsync, no WAN round trip |
//! | `leader` | the object's leader has it durably | the leader's state | read-your-writes and monotonic reads for everyone routed to the same leader while it leads; a node leads only once caught up after a restart or heal; register writes ordered by one clock | one round trip to the leader, possibly in another region |
//! | `quorum` | Q replicas have it durably | the join of Q replicas, written back to any that were behind | a quorum read sees every write whose quorum write completed before the read began | round trips to the Q-th nearest replica; unavailable without Q reachable replicas |
//! | `all` | all N replicas have it durably | the join of all N | strongest | the slowest replica's latency; unavailable if any replica is down |
//! | `replicas-k` ([`Consistency::Replicas`]) | k replicas (the contacted one included) have it durably | the join of k replicas, written back to any that were behind | a `replicas-r` read sees every `replicas-w` write completed before it when r + w > N ([`Consistency::intersects`]) | round trips to the (k−1)-th nearest other replica; unavailable without k reachable replicas; k = 0 or above N is `InvalidArgument` |
//!
//! "Durably" follows the node's `durability` setting. Under `sync` every
//! copy counted is fsynced. Under `periodic`, `quorum`, `all` and
//! `replicas-k` still count
//! only fsynced copies (the same promise as under `sync`), while `local` and
//! `leader` writes are acknowledged once the serving node's log has them:
//! a power failure of that node within `periodic_ms` may lose such a write
//! if no other replica had it yet.
//!
//! The leader is the first node of the object's preference list that is
//! live and caught up (it has pulled everything its live peers had since it
//! last reconnected to them). After a failover, writes the old leader
//! acknowledged within about one replication delay of its failure may be
//! missing from the new leader's reads until they arrive; a restarted
//! leader takes over again only once caught up (docs/architecture.md
//! section 7 states the promise across failover and failback). With no
//! caught-up replica a `leader` request fails `Unavailable` after up to
//! 2 s. During a partition the two sides may pick different leaders; their
//! writes merge when it heals (nothing acknowledged is lost), but `leader`
//! promises hold only within each side meanwhile. Objects are CRDTs, so concurrent writes
//! never conflict destructively at any level: counters add up, sets are
//! add-wins, registers keep the write with the larger timestamp.
//!
//! # Errors: definite or indeterminate
//!
//! Every failure is an [`Error`]; [`Error::is_definite`] says whether the
//! request certainly had no effect, and [`Error::code`] gives a stable name.
//!
//! - **Definite** (no effect anywhere): [`Error::Unavailable`],
//!   [`Error::WrongType`], [`Error::InvalidArgument`],
//!   [`Error::Unauthorized`], [`Error::Overloaded`], [`Error::Config`],
//!   [`Error::Connect`] (no node reachable; nothing was sent).
//! - **Indeterminate** (a write may have taken effect, or still may):
//!   [`Error::Timeout`] (from the server with the acknowledgements it had, or
//!   `acked: 0, needed: 0` when the client's own deadline expired),
//!   [`Error::ConnectionLost`], [`Error::Protocol`], [`Error::Internal`].
//!
//! **The client never retries a write on its own** once any of its bytes may
//! have been sent: a counter increment retried after a lost connection could
//! count twice. A write only moves to another node when its stream could not
//! even be opened. Reads (including [`Client::status`]) are retried on
//! another node when the connection fails, each configured node at most once
//! per call. Server answers (`Unavailable`, `Timeout`, ...) are never
//! retried: they are returned as they are.
//!
//! # Listing keys and large sets
//!
//! [`Client::scan`] lists, page by page, the keys the serving node stores
//! (optionally only those with a prefix). A node stores only what its
//! placement gives it, so keys pinned to other regions are listed only by
//! their replicas; the level does not change what is listed. Every key
//! present for the whole scan is listed at least once. [`Set::page`] lists
//! a set's members page by page, for sets of any size ([`Set::members`]
//! refuses a set whose reply would pass about 19 MiB and names it). Each
//! page's cost on the node is bounded ([`wire::MAX_SCAN_COUNT`] objects
//! visited; [`wire::MAX_SET_PAGE_MEMBERS`] members and about
//! [`wire::MAX_SET_PAGE_BYTES`]).
//!
//! # Failover and deadlines
//!
//! The client talks to the preferred node ([`ClientConfig::prefer`], else the
//! first configured one) and moves to the next when it is unreachable, unless
//! [pinned](ClientConfig::pinned). Connecting to one node is bounded by
//! [`CONNECT_TIMEOUT`]; a connection that hears nothing for [`IDLE_TIMEOUT`]
//! (keep-alives every [`KEEP_ALIVE_INTERVAL`]) is dead and the next request
//! reconnects. Each request carries its timeout to the server, which answers
//! `Timeout` itself; the client gives up [`DEADLINE_MARGIN`] later, so a dead
//! node can't hang a caller.
//!
//! # Concurrency
//!
//! Any number of requests may be in flight on one client (from any number of
//! clones and tasks): each uses its own QUIC stream, so there is no
//! head-of-line blocking, and no lock is held while a request waits. The
//! server bounds the streams it accepts per connection; requests beyond that
//! wait for a free stream, within their deadline.
//!
//! # Limits
//!
//! Checked before anything is sent ([`Error::InvalidArgument`]): a key is at
//! most [`wire::MAX_KEY_BYTES`] (4 KiB), a set member or register value at
//! most [`wire::MAX_VALUE_BYTES`] (1 MiB), the members of one request at most
//! [`wire::MAX_OBJECT_BYTES`] (16 MiB) together. Keys, members and values
//! are arbitrary bytes; UTF-8 is not required. Timeouts are whole
//! milliseconds from 1 ms to [`config::MAX_TIMEOUT`].
//!
//! # Observability
//!
//! Each request runs in a `tracing` span `request` with fields `op`,
//! `key_len`, `consistency`, `timeout_ms` and `node`; connection attempts
//! in a span `connect` with `node` and `address`. The library never installs
//! a subscriber.

pub mod config;
pub mod wire;

mod client;
mod connection;
mod error;
mod object;
mod tls;

pub use client::{Client, DEADLINE_MARGIN};
pub use config::{ClientConfig, ClientFile, NodeEntry};
pub use connection::{CONNECT_TIMEOUT, IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL};
pub use error::Error;
pub use object::{
    Counter, FromReply, KeyPage, Map, MapValue, Read, Register, RegisterValue, RequestBuilder, Set,
    SetPage, SetValue, TtlValue,
};
pub use wire::{Consistency, Deadline, Kind, NodeStatus, PeerStatus, ScanKey, Ttl, WireHlc};
