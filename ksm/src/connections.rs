//! The cap on open HTTP connections, and who makes room when it is reached.
//!
//! Every connection holds one slot. A connection that is not in the middle of a request is
//! *idle*: closing it loses nothing (a keep-alive client just reconnects), and a flood of
//! sockets that never send a request, or trickle one byte at a time (slowloris), is all
//! idle. So when every slot is taken, a new connection does not wait in the listen backlog
//! behind them: the connection idle the longest is closed and its slot handed over. The
//! validator's requests therefore keep being served while the slots, and with them file
//! descriptors and memory, stay bounded. hyper's header-read timeout closes idle connections
//! anyway; eviction only matters when they arrive faster than that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Not in the idle list.
const BUSY: u64 = u64::MAX;

/// The connection slots of one listener.
pub struct Connections {
    slots: Arc<Semaphore>,
    /// Idle connections by when they became idle (a sequence number): oldest first.
    idle: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    seq: AtomicU64,
    open: AtomicUsize,
    evicted: AtomicU64,
}

/// One connection's part in that bookkeeping.
struct ConnState {
    /// Its key in the idle list, or [`BUSY`].
    key: AtomicU64,
    /// Requests in progress.
    requests: AtomicUsize,
    /// Signalled when the connection should close to make room.
    close: Notify,
}

impl Connections {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    fn idle_list(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection just accepted. If none is free, the longest-idle connection
    /// is told to close; if every connection is busy with a request, this waits for one to
    /// finish.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.evict_longest_idle();
                match self.slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let state = Arc::new(ConnState {
            key: AtomicU64::new(BUSY),
            requests: AtomicUsize::new(0),
            close: Notify::new(),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            conns: self.clone(),
            state,
            _permit: permit,
        };
        slot.set_idle();
        slot
    }

    fn evict_longest_idle(&self) {
        let victim = self.idle_list().pop_first();
        if let Some((_, conn)) = victim {
            conn.key.store(BUSY, Ordering::SeqCst);
            self.evicted.fetch_add(1, Ordering::Relaxed);
            conn.close.notify_one();
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Idle connections closed to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }
}

/// A connection's slot: released when dropped.
pub struct Slot {
    conns: Arc<Connections>,
    state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn set_idle(&self) {
        let key = self.conns.seq.fetch_add(1, Ordering::Relaxed);
        let mut idle = self.conns.idle_list();
        self.state.key.store(key, Ordering::SeqCst);
        idle.insert(key, self.state.clone());
    }

    fn leave_idle_list(&self) {
        let mut idle = self.conns.idle_list();
        let key = self.state.key.swap(BUSY, Ordering::SeqCst);
        if key != BUSY {
            idle.remove(&key);
        }
    }

    /// Marks a request in progress until the guard is dropped; an idle connection is not
    /// closed to make room while it holds one.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.state.requests.fetch_add(1, Ordering::SeqCst);
        self.leave_idle_list();
        RequestGuard { slot: self.clone() }
    }

    /// True while a request is in progress.
    pub fn busy(&self) -> bool {
        self.state.requests.load(Ordering::SeqCst) > 0
    }

    /// Resolves when the connection has been chosen to close to make room.
    pub async fn evicted(&self) {
        self.state.close.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave_idle_list();
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in progress on a connection.
pub struct RequestGuard {
    slot: Arc<Slot>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.slot.state.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.slot.set_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_full_house_closes_the_longest_idle_connection() {
        rt().block_on(async {
            let c = Connections::new(2);
            let first = Arc::new(c.admit().await);
            let second = Arc::new(c.admit().await);
            // The first one works, so the second is now the longest idle.
            drop(first.request());
            let third = tokio::spawn({
                let c = c.clone();
                async move { c.admit().await }
            });
            tokio::time::timeout(Duration::from_secs(1), second.evicted())
                .await
                .expect("second told to close");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), first.evicted())
                    .await
                    .is_err()
            );
            drop(second);
            let third = tokio::time::timeout(Duration::from_secs(1), third)
                .await
                .expect("slot handed over")
                .expect("task");
            assert_eq!(c.open(), 2);
            assert_eq!(c.evicted(), 1);
            drop(third);
            assert_eq!(c.open(), 1);
        });
    }

    #[test]
    fn connections_in_a_request_are_not_evicted() {
        rt().block_on(async {
            let c = Connections::new(1);
            let only = Arc::new(c.admit().await);
            let working = only.request();
            assert!(only.busy());
            let next = tokio::spawn({
                let c = c.clone();
                async move { c.admit().await }
            });
            assert!(
                tokio::time::timeout(Duration::from_millis(100), only.evicted())
                    .await
                    .is_err()
            );
            assert_eq!(c.evicted(), 0);
            // The request ends and the connection closes: the waiting one gets the slot.
            drop(working);
            drop(only);
            let next = tokio::time::timeout(Duration::from_secs(1), next)
                .await
                .expect("slot freed")
                .expect("task");
            assert!(!next.busy());
        });
    }
}
