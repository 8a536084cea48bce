//! The cap on open HTTP connections, and who makes room when it is reached.
//!
//! Every connection holds one slot and is, at any moment, in one of three phases:
//!
//! * *idle*: waiting for a request, or receiving its headers. A flood of sockets that never
//!   send a request, or trickle one byte at a time (slowloris), is all idle.
//! * *receiving*: the headers are in, the body is not (yet). A client that announces a body
//!   and then stalls stays here until the request deadline (see [`crate::daemon::server`]).
//! * *working*: the whole request is in and is being answered.
//!
//! Closing an idle or receiving connection loses nothing that was done for it: a keep-alive
//! client just reconnects, and a request not yet received has cost no work. So when every
//! slot is taken, a new connection never waits in the listen backlog behind them: the
//! connection that has waited the longest for its request to be complete is closed, and its
//! slot handed over. Idle and receiving connections are one queue, in the order they began
//! to wait, which is also the order of their request deadlines: the first is the one nearest
//! to (or past) its deadline, whether it trickles its headers, stalls its body, or sends
//! nothing. (Ranking idle ones first would let stalled bodies pile up behind them, leaving a
//! flood of idle sockets a handful of slots to churn through, a new good client's among
//! them; in one queue every newcomer outlives the next `max - 1` arrivals.) A working
//! connection is never closed to make room; if every slot is working, the newcomer is
//! refused at once: closed without an answer, since its request has not been read, and
//! counted in `ksm_http_connections_refused_total`. yubikey-val then tries its next KSM, as
//! it does for `ERR Overloaded`.
//!
//! One exception to that order: a connection whose client has already sent bytes the daemon
//! has not read yet is passed over while a quieter one can be closed instead. The kernel
//! completes a connection, and takes in the client's request, before the daemon's task for it
//! has run; under a flood of new sockets on busy cores that task can lag behind the next
//! `max - 1` arrivals, and a good client whose whole request sat waiting would be closed as
//! "idle" (seen about one run in three on 2 shared cores). A socket that has sent nothing, or
//! whose bytes have all been read, is what eviction is for. If every candidate has unread
//! bytes, the first in the queue goes, as before; a peer that has gone away (end of stream
//! waiting) goes first.
//!
//! The accept loop therefore never waits on a full table. The one wait left is for the
//! connection just told to close to let go of its slot, which takes one scheduling round of
//! its task, and is bounded by [`HANDOVER_WAIT`]. The validator's requests keep being served
//! while the slots, and with them file descriptors and memory, stay bounded. hyper's
//! header-read timeout and the request deadline close idle and receiving connections anyway;
//! eviction only matters when they arrive faster than that.

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Not in the evictable list: working, or already told to close.
const BUSY: u64 = u64::MAX;

/// Longest the accept loop waits for a connection it told to close to give up its slot. Such
/// a connection is idle or receiving, so its task drops it as soon as it runs; this bound
/// only matters on a starved runtime, and past it the newcomer is refused.
pub const HANDOVER_WAIT: Duration = Duration::from_millis(500);

/// The connection slots of one listener.
pub struct Connections {
    slots: Arc<Semaphore>,
    /// Idle and receiving connections by when they began to wait for their request (a
    /// sequence number): the first is the one to close.
    evictable: Mutex<BTreeMap<u64, Arc<ConnState>>>,
    seq: AtomicU64,
    open: AtomicUsize,
    evicted: AtomicU64,
    refused: AtomicU64,
}

/// How many of the first candidates in the queue [`Connections::evict_one`] looks at for a
/// quiet one: it holds the list's lock, so the search is short.
const QUIET_SEARCH: usize = 32;

/// One connection's part in that bookkeeping.
struct ConnState {
    /// Its socket, to see whether its client has sent bytes not read yet (`None` in unit
    /// tests without one). Only peeked at; the connection's task owns it.
    socket: Option<RawFd>,
    /// Its key in the evictable list, or [`BUSY`].
    key: AtomicU64,
    /// Requests in progress (received or not).
    requests: AtomicUsize,
    /// True while a fully received request is being answered.
    working: AtomicBool,
    /// Told to close to make room: never evictable again.
    closing: AtomicBool,
    /// When it began to wait for its current (or next) request: the request deadline runs
    /// from here.
    since: Mutex<Instant>,
    /// Signalled when the connection should close to make room.
    close: Notify,
}

impl Connections {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            slots: Arc::new(Semaphore::new(max.max(1))),
            evictable: Mutex::new(BTreeMap::new()),
            seq: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    fn evictable_list(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.evictable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection just accepted, or `None` if it must be refused. If no slot is
    /// free, the idle or receiving connection that has waited longest is told to close and
    /// its slot taken over (waiting at most [`HANDOVER_WAIT`] for it); if every connection
    /// is working, this refuses at once.
    pub async fn admit(self: &Arc<Self>, socket: Option<RawFd>) -> Option<Slot> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if self.evict_one() => {
                let handed_over =
                    tokio::time::timeout(HANDOVER_WAIT, self.slots.clone().acquire_owned()).await;
                match handed_over {
                    Ok(Ok(p)) => p,
                    // Timed out, or closed (never: the semaphore is not closed).
                    _ => return self.refuse(),
                }
            }
            Err(_) => return self.refuse(),
        };
        let state = Arc::new(ConnState {
            socket,
            key: AtomicU64::new(BUSY),
            requests: AtomicUsize::new(0),
            working: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            since: Mutex::new(Instant::now()),
            close: Notify::new(),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            conns: self.clone(),
            state,
            _permit: permit,
        };
        slot.set_idle();
        Some(slot)
    }

    fn refuse(&self) -> Option<Slot> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Tells a connection of the evictable list to close: among the first few, one whose
    /// peer is gone, else the first that has no unread bytes waiting, else the first. False
    /// if there is none.
    fn evict_one(&self) -> bool {
        let victim = {
            let mut list = self.evictable_list();
            let mut quiet = None;
            for (key, conn) in list.iter().take(QUIET_SEARCH) {
                match conn.socket.map(waiting) {
                    Some(Waiting::Gone) => {
                        quiet = Some(*key);
                        break;
                    }
                    Some(Waiting::Bytes) => continue,
                    Some(Waiting::Nothing) | None => {
                        quiet = quiet.or(Some(*key));
                    }
                }
            }
            let victim = match quiet {
                Some(key) => list.remove_entry(&key),
                None => list.pop_first(),
            };
            if let Some((_, conn)) = &victim {
                conn.key.store(BUSY, Ordering::SeqCst);
                conn.closing.store(true, Ordering::SeqCst);
            }
            victim
        };
        let Some((_, conn)) = victim else {
            return false;
        };
        self.evicted.fetch_add(1, Ordering::Relaxed);
        conn.close.notify_one();
        true
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Idle and receiving connections closed to make room, since start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections refused at once because every slot was answering a request, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// What a connection's socket holds that the daemon has not read.
enum Waiting {
    /// Bytes: a request (or TLS handshake) on its way in.
    Bytes,
    /// Nothing (or the socket cannot say).
    Nothing,
    /// The end of the stream: the peer has closed.
    Gone,
}

/// Peeks at `socket` without taking anything or blocking.
fn waiting(socket: RawFd) -> Waiting {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    match recv(
        socket,
        &mut byte,
        MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => Waiting::Gone,
        Ok(_) => Waiting::Bytes,
        Err(_) => Waiting::Nothing,
    }
}

/// A connection's slot: released when dropped.
pub struct Slot {
    conns: Arc<Connections>,
    state: Arc<ConnState>,
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn since(&self) -> MutexGuard<'_, Instant> {
        self.state.since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_idle(&self) {
        *self.since() = Instant::now();
        let key = self.conns.seq.fetch_add(1, Ordering::Relaxed);
        let mut list = self.conns.evictable_list();
        if self.state.closing.load(Ordering::SeqCst) {
            return;
        }
        self.state.key.store(key, Ordering::SeqCst);
        list.insert(key, self.state.clone());
    }

    /// Takes the connection out of the evictable list (it may be out already).
    fn leave_queue(&self) {
        let mut list = self.conns.evictable_list();
        let key = self.state.key.swap(BUSY, Ordering::SeqCst);
        if key != BUSY {
            list.remove(&key);
        }
    }

    /// Marks a request whose headers are in, until the guard is dropped. The connection is
    /// *receiving* until [`RequestGuard::received`], and keeps its place in the queue of
    /// connections that may be closed to make room.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.state.requests.fetch_add(1, Ordering::SeqCst);
        RequestGuard { slot: self.clone() }
    }

    /// When the connection began to wait for its current (or next) request.
    pub fn waiting_since(&self) -> Instant {
        *self.since()
    }

    /// True while a fully received request is being answered.
    pub fn working(&self) -> bool {
        self.state.working.load(Ordering::SeqCst)
    }

    /// Resolves when the connection has been chosen to close to make room.
    pub async fn evicted(&self) {
        self.state.close.notified().await
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.leave_queue();
        self.conns.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in progress on a connection.
pub struct RequestGuard {
    slot: Arc<Slot>,
}

impl RequestGuard {
    /// The whole request is in: from now on the connection is working, and is not closed to
    /// make room until its answer is done.
    pub fn received(&self) {
        self.slot.state.working.store(true, Ordering::SeqCst);
        self.slot.leave_queue();
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let state = &self.slot.state;
        if state.requests.fetch_sub(1, Ordering::SeqCst) == 1 {
            state.working.store(false, Ordering::SeqCst);
            self.slot.leave_queue();
            self.slot.set_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    async fn admit(c: &Arc<Connections>) -> Arc<Slot> {
        Arc::new(c.admit(None).await.expect("a slot"))
    }

    /// Admits a newcomer on a task of its own, as the accept loop would.
    fn newcomer(c: &Arc<Connections>) -> tokio::task::JoinHandle<Option<Slot>> {
        let c = c.clone();
        tokio::spawn(async move { c.admit(None).await })
    }

    #[test]
    fn a_full_house_closes_the_longest_idle_connection() {
        rt().block_on(async {
            let c = Connections::new(2);
            let first = admit(&c).await;
            let second = admit(&c).await;
            // The first one works, so the second is now the longest idle.
            drop(first.request());
            let third = newcomer(&c);
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
                .expect("task")
                .expect("admitted");
            assert_eq!(c.open(), 2);
            assert_eq!(c.evicted(), 1);
            drop(third);
            assert_eq!(c.open(), 1);
        });
    }

    #[test]
    fn working_connections_are_not_evicted_and_a_newcomer_is_refused_at_once() {
        rt().block_on(async {
            let c = Connections::new(1);
            let only = admit(&c).await;
            let request = only.request();
            request.received();
            assert!(only.working());
            let refused = tokio::time::timeout(Duration::from_millis(100), c.admit(None))
                .await
                .expect("an answer at once");
            assert!(refused.is_none());
            assert!(
                tokio::time::timeout(Duration::from_millis(100), only.evicted())
                    .await
                    .is_err()
            );
            assert_eq!((c.evicted(), c.refused()), (0, 1));
            // The answer done, the connection is idle again, and makes room.
            drop(request);
            assert!(!only.working());
            let next = newcomer(&c);
            tokio::time::timeout(Duration::from_secs(1), only.evicted())
                .await
                .expect("told to close");
            drop(only);
            let next = tokio::time::timeout(Duration::from_secs(1), next)
                .await
                .expect("slot handed over")
                .expect("task");
            assert!(next.is_some());
        });
    }

    #[test]
    fn connections_receiving_their_request_make_room_in_the_order_they_began_to_wait() {
        rt().block_on(async {
            let c = Connections::new(3);
            let receiving = admit(&c).await;
            let _request = receiving.request();
            let idle = admit(&c).await;
            let working = admit(&c).await;
            let working_request = working.request();
            working_request.received();
            // The receiving one has waited longer than the idle one: it goes first.
            let first = newcomer(&c);
            tokio::time::timeout(Duration::from_secs(1), receiving.evicted())
                .await
                .expect("the longest-waiting one told to close");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), idle.evicted())
                    .await
                    .is_err()
            );
            drop(_request);
            drop(receiving);
            let first = Arc::new(first.await.expect("task").expect("admitted"));
            let first_request = first.request();
            first_request.received();
            // Then the idle one; the working ones never.
            let second = newcomer(&c);
            tokio::time::timeout(Duration::from_secs(1), idle.evicted())
                .await
                .expect("the idle one told to close");
            drop(idle);
            assert!(second.await.expect("task").is_some());
            assert_eq!(c.evicted(), 2);
        });
    }

    #[test]
    fn a_slot_not_given_up_in_time_refuses_the_newcomer() {
        rt().block_on(async {
            let c = Connections::new(1);
            let stuck = admit(&c).await;
            // Told to close, but never lets go of its slot.
            let t = std::time::Instant::now();
            assert!(c.admit(None).await.is_none());
            assert!(t.elapsed() >= HANDOVER_WAIT);
            assert_eq!((c.evicted(), c.refused()), (1, 1));
            // Not evicted twice.
            assert!(c.admit(None).await.is_none());
            assert_eq!((c.evicted(), c.refused()), (1, 2));
            drop(stuck);
            assert!(c.admit(None).await.is_some());
        });
    }

    /// Three real connections whose tasks have not read anything yet, as under a flood: the
    /// oldest has its whole request waiting in the socket, the next has sent nothing. The
    /// quiet one is closed to make room, not the one whose request is there to be read; and
    /// once only connections with bytes waiting are left, the oldest goes after all.
    #[test]
    fn a_connection_whose_request_is_waiting_is_passed_over_for_a_quiet_one() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        rt().block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let addr = listener.local_addr().expect("addr");
            let connect = || {
                let client = std::net::TcpStream::connect(addr).expect("connect");
                let (server, _) = listener.accept().expect("accept");
                (client, server)
            };
            let c = Connections::new(2);
            let (mut good, good_srv) = connect();
            good.write_all(b"GET /wsapi/decrypt?otp=x HTTP/1.1\r\n\r\n")
                .expect("send");
            let (_quiet, quiet_srv) = connect();
            let good_slot = Arc::new(c.admit(Some(good_srv.as_raw_fd())).await.expect("a slot"));
            let quiet_slot = Arc::new(c.admit(Some(quiet_srv.as_raw_fd())).await.expect("a slot"));
            // Until the peek sees the bytes (they are on loopback already).
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !matches!(waiting(good_srv.as_raw_fd()), Waiting::Bytes) {
                assert!(std::time::Instant::now() < deadline, "request not there");
                std::thread::sleep(Duration::from_millis(5));
            }
            let (mut late, late_srv) = connect();
            late.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("send");
            let late_fd = late_srv.as_raw_fd();
            let newcomer = {
                let c = c.clone();
                tokio::spawn(async move { c.admit(Some(late_fd)).await })
            };
            tokio::time::timeout(Duration::from_secs(1), quiet_slot.evicted())
                .await
                .expect("the quiet one told to close");
            assert!(
                tokio::time::timeout(Duration::from_millis(50), good_slot.evicted())
                    .await
                    .is_err(),
                "the connection with its request waiting was closed"
            );
            drop(quiet_slot);
            let late_slot = newcomer.await.expect("task").expect("slot handed over");
            while !matches!(waiting(late_fd), Waiting::Bytes) {
                std::thread::sleep(Duration::from_millis(5));
            }
            // Both left have bytes waiting: the first in the queue goes.
            let last = {
                let c = c.clone();
                tokio::spawn(async move { c.admit(None).await })
            };
            tokio::time::timeout(Duration::from_secs(1), good_slot.evicted())
                .await
                .expect("the oldest told to close");
            drop(good_slot);
            assert!(last.await.expect("task").is_some());
            drop(late_slot);
        });
    }
}
