//! Byte budgets: how much client data the node holds in its own buffers.
//!
//! One [`ByteBudget`] per node (`[limits] client_memory_bytes`, less what
//! the QUIC transport may buffer on its own: see
//! [`crate::config::LimitsConfig::client_buffer_bytes`]) covers every
//! request body being read, every decoded request being served and every
//! response until it is written, on both client doors (QUIC and RESP). On
//! the QUIC door each connection also has its own budget
//! ([`ConnectionBudget`], [`CONNECTION_BUFFER_BYTES`]), so that one
//! connection cannot take the node's whole budget.
//!
//! Bytes are reserved *before* they are allocated: a request body is
//! reserved from its length prefix before the buffer exists. Neither
//! budget is waited for: past either, the request is refused with
//! `Overloaded` (definite, nothing was done) and its stream stopped, so a
//! full node refuses work instead of queueing it. (Waiting would not even
//! work on QUIC: the data of a stream the node does not read still fills
//! the connection's shared receive window, and would starve the very
//! streams whose completion the waiter waits for.)
//!
//! Both are tokio semaphores counting bytes: a [`Reservation`] holds
//! permits and gives them back when dropped (when the request is done).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most request and response bytes one client connection may hold at once
/// (QUIC door). A request reserves twice its frame (the body, then its
/// decoded form) and an answer's allowance: two of the largest writes one
/// object allows (16 MiB of set members, 32 MiB each) fit at once, or one
/// largest frame (20 MiB) and many small requests. A request past it is
/// refused `Overloaded`; the client retries it once its earlier requests
/// are done.
pub const CONNECTION_BUFFER_BYTES: usize = 72 << 20;

/// Why a reservation was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The node's budget has no room: refuse the request (`Overloaded`).
    #[error("the node's client memory budget is exhausted")]
    Node,
    /// The connection's own budget stayed full until the deadline.
    #[error("this connection's requests hold its whole memory budget")]
    Connection,
    /// More bytes than the budget holds at all.
    #[error("{0} bytes are more than the budget holds")]
    TooLarge(usize),
}

/// A budget of bytes, shared by clone.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    total: usize,
    /// Reservations refused because the budget was full.
    refused: Arc<AtomicU64>,
    /// What a full budget is reported as.
    full: BudgetError,
}

impl ByteBudget {
    /// A node's budget of `total` bytes.
    pub fn new(total: usize) -> ByteBudget {
        ByteBudget::with_error(total, BudgetError::Node)
    }

    fn with_error(total: usize, full: BudgetError) -> ByteBudget {
        let total = total.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            bytes: Arc::new(Semaphore::new(total)),
            total,
            refused: Arc::new(AtomicU64::new(0)),
            full,
        }
    }

    /// The budget's size, in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> usize {
        self.total - self.bytes.available_permits()
    }

    /// Reservations refused so far because the budget was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` if they are free now.
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation, BudgetError> {
        let mut r = Reservation::default();
        self.try_grow(&mut r, bytes)?;
        Ok(r)
    }

    /// Adds `bytes` to `reservation` if they are free now.
    pub fn try_grow(&self, reservation: &mut Reservation, bytes: usize) -> Result<(), BudgetError> {
        if bytes == 0 {
            return Ok(());
        }
        let n = permits(bytes, self.total)?;
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => {
                reservation.add(p);
                Ok(())
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(self.full)
            }
        }
    }
}

fn permits(bytes: usize, total: usize) -> Result<u32, BudgetError> {
    if bytes > total {
        return Err(BudgetError::TooLarge(bytes));
    }
    u32::try_from(bytes).map_err(|_| BudgetError::TooLarge(bytes))
}

/// Bytes held from a budget (or two); given back on drop.
#[derive(Debug, Default)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
}

impl Reservation {
    fn add(&mut self, permit: OwnedSemaphorePermit) {
        self.permits.push(permit);
    }

    /// Gives back everything held.
    pub fn release(&mut self) {
        self.permits.clear();
    }
}

/// A connection's running account with the node's budget: how many bytes
/// its buffers hold right now, grown (never waiting) before they grow and
/// shrunk when they shrink. The RESP door keeps one per connection for its
/// input and output buffers.
#[derive(Debug)]
pub struct Account {
    budget: ByteBudget,
    held: Reservation,
    bytes: usize,
}

impl Account {
    pub fn new(budget: ByteBudget) -> Account {
        Account {
            budget,
            held: Reservation::default(),
            bytes: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Makes the account hold exactly `bytes`: grows if the budget has room
    /// now (else fails, holding what it held), or shrinks.
    pub fn set(&mut self, bytes: usize) -> Result<(), BudgetError> {
        if bytes > self.bytes {
            self.budget.try_grow(&mut self.held, bytes - self.bytes)?;
        } else if bytes < self.bytes {
            self.held = keep(&mut self.held, bytes);
        }
        self.bytes = bytes;
        Ok(())
    }
}

/// A QUIC connection's budget: its own [`CONNECTION_BUFFER_BYTES`] in
/// front of the node's.
#[derive(Debug)]
pub struct ConnectionBudget {
    node: ByteBudget,
    connection: ByteBudget,
}

/// Bytes held from a connection's budget and the node's.
#[derive(Debug, Default)]
pub struct Held {
    connection: Reservation,
    node: Reservation,
    bytes: usize,
}

impl Held {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl ConnectionBudget {
    pub fn new(node: ByteBudget, connection_bytes: usize) -> ConnectionBudget {
        ConnectionBudget {
            node,
            connection: ByteBudget::with_error(connection_bytes, BudgetError::Connection),
        }
    }

    /// The node's budget.
    pub fn node(&self) -> &ByteBudget {
        &self.node
    }

    /// Reserves `bytes` from the connection's budget and the node's, if
    /// both have room now.
    pub fn reserve(&self, bytes: usize) -> Result<Held, BudgetError> {
        let mut connection = self.connection.try_reserve(bytes)?;
        let node = match self.node.try_reserve(bytes) {
            Ok(n) => n,
            Err(e) => {
                connection.release();
                return Err(e);
            }
        };
        Ok(Held {
            connection,
            node,
            bytes,
        })
    }

    /// Grows or shrinks `held` to `bytes`. Growing never waits: it fails
    /// if either budget has no room now (then `held` is unchanged).
    pub fn resize(&self, held: &mut Held, bytes: usize) -> Result<(), BudgetError> {
        if bytes <= held.bytes {
            // Shrink: keep `bytes`, give back the rest.
            held.connection = keep(&mut held.connection, bytes);
            held.node = keep(&mut held.node, bytes);
            held.bytes = bytes;
            return Ok(());
        }
        let extra = bytes - held.bytes;
        let mut connection = self.connection.try_reserve(extra)?;
        let node = match self.node.try_reserve(extra) {
            Ok(n) => n,
            Err(e) => {
                connection.release();
                return Err(e);
            }
        };
        held.connection.permits.append(&mut connection.permits);
        held.node.permits.extend(node.permits);
        held.bytes = bytes;
        Ok(())
    }
}

/// Moves `bytes` of `from`'s permits into a new reservation (dropping the
/// rest of `from`'s, which returns them to their budget).
fn keep(from: &mut Reservation, bytes: usize) -> Reservation {
    let mut all: Option<OwnedSemaphorePermit> = None;
    for p in from.permits.drain(..) {
        match &mut all {
            None => all = Some(p),
            Some(a) => a.merge(p),
        }
    }
    let mut out = Reservation::default();
    // What `split` leaves in `all` is dropped here: back to the budget.
    if let Some(kept) = all.as_mut().and_then(|a| a.split(bytes)) {
        out.add(kept);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_come_back_on_drop_and_are_never_waited_for() {
        let node = ByteBudget::new(100);
        let a = ConnectionBudget::new(node.clone(), 60);
        let b = ConnectionBudget::new(node.clone(), 60);
        let held_a = a.reserve(60).unwrap();
        assert_eq!(node.in_use(), 60);
        // b's own budget has room, the node's not: refused at once, and
        // b's own reservation is given back.
        assert_eq!(b.reserve(50).unwrap_err(), BudgetError::Node);
        assert_eq!(node.refused(), 1);
        assert_eq!(b.reserve(40).map(|h| h.bytes()), Ok(40));
        // a's own budget is full.
        assert_eq!(a.reserve(1).unwrap_err(), BudgetError::Connection);
        // More than a connection may ever hold.
        assert_eq!(a.reserve(61).unwrap_err(), BudgetError::TooLarge(61));
        drop(held_a);
        assert_eq!(node.in_use(), 0);
        let held_b = b.reserve(50).unwrap();
        assert_eq!(node.in_use(), 50);
        drop(held_b);
        assert_eq!(node.in_use(), 0);
    }

    #[test]
    fn an_account_follows_its_buffers() {
        let node = ByteBudget::new(100);
        let mut a = Account::new(node.clone());
        a.set(40).unwrap();
        a.set(90).unwrap();
        assert_eq!(node.in_use(), 90);
        let mut b = Account::new(node.clone());
        assert_eq!(b.set(20).unwrap_err(), BudgetError::Node);
        assert_eq!(b.bytes(), 0);
        a.set(10).unwrap();
        b.set(20).unwrap();
        assert_eq!(node.in_use(), 30);
        drop(a);
        assert_eq!(node.in_use(), 20);
    }

    #[test]
    fn resizing_grows_without_waiting_and_shrinks() {
        let node = ByteBudget::new(100);
        let a = ConnectionBudget::new(node.clone(), 80);
        let mut held = a.reserve(30).unwrap();
        a.resize(&mut held, 70).unwrap();
        assert_eq!((held.bytes(), node.in_use()), (70, 70));
        // The connection's budget (80) has 10 bytes left: refused, unchanged.
        assert_eq!(
            a.resize(&mut held, 90).unwrap_err(),
            BudgetError::Connection
        );
        assert_eq!((held.bytes(), node.in_use()), (70, 70));
        // The node's budget (100) is what is short now.
        let other = ConnectionBudget::new(node.clone(), 80);
        let _other_held = other.reserve(25).unwrap();
        assert_eq!(a.resize(&mut held, 80).unwrap_err(), BudgetError::Node);
        assert_eq!((held.bytes(), node.in_use()), (70, 95));
        a.resize(&mut held, 10).unwrap();
        assert_eq!((held.bytes(), node.in_use()), (10, 35));
        a.resize(&mut held, 0).unwrap();
        assert_eq!(node.in_use(), 25);
    }
}
