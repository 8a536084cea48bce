//! A YubiHSM 2 as its owner holds it ([`crate::daemon::owner`]): its transport, the
//! authentication key its sessions are opened with, and a small pool of sessions.
//!
//! A YubiHSM 2 runs one command at a time, so, as for a YubiHSM 1, one thread owns the way
//! to it (a yubihsm-connector's HTTP API, or USB) and takes jobs from the device's bounded
//! queue. What differs is the session: every command a KSM sends
//! runs inside an SCP03 session opened with an authentication key. The device drops a
//! session after some idle time (30 s on a real device), when it is reset or power-cycled,
//! and the host must drop one whose MAC chain broke (an answer lost in transit). So the
//! owner keeps up to [`Hsm2Backend::sessions`] sessions, used in turn, and opens one again
//! when the device says it is gone: the request that found it gone is repeated on the new
//! one within its deadline, and `/metrics` counts the re-authentication. A session a reset
//! dropped is the device's whole set gone, so all are dropped at once.
//!
//! The authentication key's password is the YubiHSM 2's unlock secret. Without it (no
//! password file configured) the device is *locked*: the daemon answers `ERR HSM locked`,
//! as for a YubiHSM 1 whose key store is locked, until `ksm keystore-unlock` hands the
//! password over the sharing socket. The owner checks it by opening a session, keeps the
//! keys derived from it only in this thread's memory (wiped when dropped; the backend's copy
//! is taken, not cloned, so no second copy outlives a refusal), and forgets them if the
//! device ever refuses them. A password handed over while the device cannot be reached (a
//! connector not up yet at boot) is kept unchecked and checked at the next open, so the
//! operator need not wait for the connector before running `ksm keystore-unlock`.
//!
//! A password from the daemon's configuration is different: a single refusal (which a
//! corrupted or spoofed connector answer can produce as well as a changed password) must
//! not turn a passing fault into a lock that only a restart or an operator clears. So it is
//! kept, and tried again after a backoff ([`REFUSED_RETRY`], doubling up to
//! [`REFUSED_RETRY_MAX`]; each try may leave a half-open session for the device's 30 s, so
//! tries are never closer than half of that), and a password file is read again on SIGHUP,
//! so an operator can fix it without a restart.
//!
//! Sessions the daemon drops while the device still answers (a SIGHUP reopen, an unlock) are
//! closed: a session left open holds one of the device's 16 slots until it expires, and a
//! few reloads in a row would otherwise fill them.
//!
//! The slots are also what anyone who can reach the connector can take: it has no access
//! control, and `CreateSession` needs no password. So the daemon never lets go of the slots
//! it holds: a session idle for [`Hsm2Backend::keepalive`] (well inside the device's 30 s)
//! gets an authenticated `Echo`, which changes nothing, and when other clients hold every
//! free slot, requests go to the sessions the daemon has. A SIGHUP opens the new transport and a
//! session on it before it closes the old sessions, and keeps the old ones if no new one can
//! be had. What stays possible for such a user: taking the slots while the daemon holds none
//! (before its first start, after a device reset or power cycle, which drops every
//! session), so the connector should be reachable by the daemon's user only
//! (docs/trust-model.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm2_proto::session::HostSession;
use hsm2_proto::transport::Transport;
use hsm2_proto::{AuthKey, Client, Error as Hsm2Error, ErrorCode, ObjectId, OtpAead};
use hsm_proto::otp::Otp;
use tracing::{debug, info, warn};

use crate::daemon::health::{DeviceHealth, DeviceState, LineError};
use crate::daemon::hsm2_audit::{AuditLog, AuditSink};
use crate::daemon::owner::{self, Device, PoolError, Try, Unlocked};
use crate::settings::serve::MAX_SESSIONS;

/// Opens the way to a YubiHSM 2 (a connector URL, a USB device).
pub type OpenTransport =
    Arc<dyn Fn() -> Result<Box<dyn Transport>, crate::Error> + Send + Sync + 'static>;

/// Reads a configured password file again and derives its keys.
pub type ReloadKey = Arc<dyn Fn() -> Result<AuthKey, crate::Error> + Send + Sync + 'static>;

/// First wait before a refused configured password is tried again: half the device's 30 s
/// session timeout, so its retries leave at most two half-open sessions at any time.
pub const REFUSED_RETRY: Duration = Duration::from_secs(15);

/// How long a session may sit idle before the owner sends an authenticated no-op in it
/// (`--hsm2-keepalive`): a third of the device's 30 s.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// Longest wait between tries of a refused configured password.
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(300);

/// How a YubiHSM 2 is reached and authenticated to.
#[derive(Clone)]
pub struct Hsm2Backend {
    /// Its name in logs, `/health` and `/metrics` (the connector URL, `usb`, …).
    pub name: String,
    /// Opens its transport.
    pub open: OpenTransport,
    /// The authentication key the daemon's sessions use.
    pub auth_key_id: ObjectId,
    /// That key, derived from its password: from a private file at start-up, or `None` to
    /// stay locked until `ksm keystore-unlock` hands the password over.
    pub key: Option<AuthKey>,
    /// Reads the configured password again (its file, on SIGHUP); `None` if it did not
    /// come from a file.
    pub reload_key: Option<ReloadKey>,
    /// How long a configured password the device refused waits before it is tried again
    /// ([`REFUSED_RETRY`]; shorter in tests).
    pub refused_retry: Duration,
    /// How many sessions to keep open (1 to [`MAX_SESSIONS`]; the device has 16 slots,
    /// shared with every other client of the device).
    pub sessions: usize,
    /// Idle time after which a session gets a keep-alive ([`KEEPALIVE`]; shorter in tests,
    /// against an emulator with a short session timeout).
    pub keepalive: Duration,
    /// `--hsm2-audit-log`: the file the device's audit log is drained into, after which
    /// the log index is moved on. `None`: the log is only watched.
    pub audit_log: Option<AuditSink>,
}

/// A YubiHSM 2 OTP AEAD and the otp-aead-key that opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsm2Aead {
    /// The otp-aead-key's object id.
    pub key_id: ObjectId,
    /// The 36-byte AEAD.
    pub aead: OtpAead,
}

/// How long closing the sessions being dropped may take in all: a device that answers
/// closes them in milliseconds, and one that does not must not hold up the reopen.
const CLOSE_BUDGET: Duration = Duration::from_secs(1);

/// One YubiHSM 2, as its owner thread holds it.
pub struct Hsm2 {
    backend: Hsm2Backend,
    health: Arc<DeviceHealth>,
    client: Option<Client<Box<dyn Transport>>>,
    key: Option<AuthKey>,
    /// `key` came from the configuration (not from `keystore-unlock`): kept through a
    /// refusal and tried again after `retry_wait`.
    configured: bool,
    /// A refused configured key is not tried before this (the device is not asked).
    refused_until: Option<Instant>,
    /// The wait after the next refusal.
    retry_wait: Duration,
    sessions: Vec<Option<HostSession>>,
    /// Slots that have held a session before: opening one again is a re-authentication.
    used: Vec<bool>,
    /// When each slot's session last ran a command (the device's idle clock).
    last_used: Vec<Instant>,
    /// The device's last answer to opening a session was that every slot is taken.
    sessions_full: bool,
    next: usize,
    /// Its audit log: watched, and drained into the `--hsm2-audit-log` file if there is
    /// one (the backend's sink taken into it).
    log: AuditLog,
}

/// True if the device refused the authentication key: a wrong password (the card
/// cryptogram does not match) or a key it does not have.
fn key_refused(e: &Hsm2Error) -> bool {
    matches!(e, Hsm2Error::CardCryptogram)
        || matches!(
            e.code(),
            Some(ErrorCode::AuthenticationFailed | ErrorCode::ObjectNotFound)
        )
}

impl Hsm2 {
    /// The device `backend` reaches, not opened yet.
    pub fn new(mut backend: Hsm2Backend, health: Arc<DeviceHealth>) -> Hsm2 {
        let n = backend.sessions.clamp(1, MAX_SESSIONS);
        Hsm2 {
            // Taken, not cloned: the owner's copy is the only one, so forgetting it forgets it.
            key: backend.key.take(),
            configured: true,
            refused_until: None,
            retry_wait: backend.refused_retry,
            log: AuditLog::new(backend.audit_log.take()),
            backend,
            health,
            client: None,
            sessions: (0..n).map(|_| None).collect(),
            used: vec![false; n],
            last_used: vec![Instant::now(); n],
            sessions_full: false,
            next: 0,
        }
    }

    /// Reads the log figures (Device Info) for `/health` and `/metrics`, asks once for the
    /// `force-audit` option, and, with an audit file, drains the log when it is due (see
    /// [`AuditLog::figures`]; any entry, if `drain` is true). Failures are reported and
    /// otherwise ignored: decodes go on while the log has room.
    fn check_log(&mut self, drain: bool) {
        self.log.checking();
        let Some(client) = self.client.as_mut() else {
            return;
        };
        let info = match client.device_info() {
            Ok(i) => i,
            Err(e) if e.is_transport_error() => {
                self.transport_failed(&e);
                return;
            }
            Err(e) => {
                debug!(device = %self.health.name, error = %e, "YubiHSM 2 log figures not read");
                return;
            }
        };
        let due = self.log.figures(&self.health, &info, drain);
        if self
            .log
            .ask_force_audit_now(self.sessions.iter().any(Option::is_some))
        {
            self.ask_force_audit();
        }
        if let Some(serial) = due {
            self.drain(serial);
        }
    }

    /// Reads the `force-audit` option in the first session open.
    fn ask_force_audit(&mut self) {
        let Some(slot) = self.sessions.iter().position(Option::is_some) else {
            return;
        };
        let (Some(client), Some(session)) = (self.client.as_mut(), self.sessions[slot].as_mut())
        else {
            return;
        };
        if let Err(e) = self.log.read_force_audit(client, session, &self.health) {
            self.command_failed(slot, &e);
        }
    }

    /// Drains the log of the device (serial `serial`) into the audit file, in session 0.
    fn drain(&mut self, serial: u32) {
        if !self.log.keeps_file() || self.ensure_session(0).is_err() {
            return;
        }
        let (Some(client), Some(session)) = (self.client.as_mut(), self.sessions[0].as_mut())
        else {
            return;
        };
        let drained = self.log.drain(client, session, &self.health, serial);
        self.last_used[0] = Instant::now();
        if let Err(e) = drained {
            self.command_failed(0, &e);
        }
    }

    /// A command in session `slot` failed (not a decode: its own rules are in
    /// [`Self::decode_in_session`]): a failed transport is dropped with every session, and
    /// a session the failure left unusable (its MAC chain broken, gone on the device) is
    /// dropped. A refusal in a session that is fine changes nothing.
    fn command_failed(&mut self, slot: usize, e: &Hsm2Error) {
        if e.is_transport_error() {
            self.transport_failed(e);
        } else if !self.sessions[slot]
            .as_ref()
            .is_some_and(HostSession::is_usable)
        {
            self.drop_session(slot);
        }
    }

    /// Keeps the daemon's sessions alive (the owner loop's tick, between jobs): a session
    /// idle for [`Hsm2Backend::keepalive`] runs an `Echo`. A session the device no longer
    /// knows is opened again at once, while its slot may still be free.
    fn keep_sessions(&mut self) {
        if self.client.is_none() || self.key.is_none() || self.refused_until.is_some() {
            return;
        }
        for slot in 0..self.sessions.len() {
            if self.client.is_none() {
                return;
            }
            if self.sessions[slot].is_none()
                || self.last_used[slot].elapsed() < self.backend.keepalive
            {
                continue;
            }
            let (Some(client), Some(session)) =
                (self.client.as_mut(), self.sessions[slot].as_mut())
            else {
                continue;
            };
            let echo = hsm2_proto::cmd::Echo {
                data: b"ksm".to_vec(),
            };
            match client.send(session, &echo) {
                Ok(_) => self.last_used[slot] = Instant::now(),
                Err(e) if e.is_transport_error() => {
                    self.transport_failed(&e);
                    return;
                }
                // A refusal (a full forced audit log, say) in a session that is fine: the
                // session was used, and stays.
                Err(e) if session.is_usable() && e.code() != Some(ErrorCode::InvalidSession) => {
                    debug!(device = %self.health.name, slot, error = %e, "YubiHSM 2 keep-alive refused; the session stays");
                    self.last_used[slot] = Instant::now();
                }
                Err(e) => {
                    debug!(device = %self.health.name, slot, error = %e, "YubiHSM 2 session lost while idle; opening it again");
                    self.drop_session(slot);
                    let _ = self.ensure_session(slot);
                }
            }
        }
    }

    /// How long until the next session is due a keep-alive.
    fn next_keepalive(&self) -> Duration {
        self.sessions
            .iter()
            .zip(&self.last_used)
            .filter(|(s, _)| s.is_some())
            .map(|(_, t)| self.backend.keepalive.saturating_sub(t.elapsed()))
            .min()
            .unwrap_or(self.backend.keepalive)
    }

    /// SIGHUP: a configured password file is read again (an operator may have fixed it),
    /// and a refused configured key is tried at once. A file that cannot be read keeps the
    /// key in use; the error names the file, never its content.
    fn reload_key(&mut self) {
        if !self.configured {
            return;
        }
        if let Some(reload) = &self.backend.reload_key {
            match reload() {
                Ok(k) => self.key = Some(k),
                Err(e) => {
                    warn!(device = %self.health.name, error = %e, "SIGHUP: the YubiHSM 2 password file did not load; the password in use stays")
                }
            }
        }
        self.refused_until = None;
        self.retry_wait = self.backend.refused_retry;
    }

    /// With every session slot taken by other clients and none held, asks for one again (the
    /// owner loop's tick, at most once a second), so the device is up again, and chosen
    /// again, as soon as a slot frees rather than at the next decode that happens to reach it.
    fn retry_full(&mut self) {
        let waiting = self.sessions_full
            && self.client.is_some()
            && self.key.is_some()
            && self.refused_until.is_none()
            && self.sessions.iter().all(Option::is_none);
        if waiting && self.ensure_session(0).is_ok() {
            info!(device = %self.health.name, "a YubiHSM 2 session slot freed: the device serves again");
            self.health.set(DeviceState::Up);
        }
    }

    /// Tries a refused configured key again once its wait is over (the owner loop's tick).
    fn retry_refused(&mut self) {
        let due = self.refused_until.is_some_and(|t| Instant::now() >= t);
        if due && self.client.is_some() && self.key.is_some() && self.sessions[0].is_none() {
            self.refused_until = None;
            if self.ensure_session(0).is_ok() {
                self.health.set(DeviceState::Up);
            }
        }
    }

    fn open_transport(&mut self) -> bool {
        match (self.backend.open)() {
            Ok(t) => {
                self.client = Some(Client::new(t));
                owner::opened::<Self>(&self.health);
                true
            }
            Err(e) => {
                owner::open_failed::<Self>(&self.health, LineError::Open, e.to_string());
                false
            }
        }
    }

    /// Drops the transport and every session (without closing them: the device may be
    /// gone; it drops them itself when they expire).
    fn close(&mut self) {
        self.client = None;
        self.drop_sessions();
    }

    /// Ends every open session on the device (`CloseSession`) before dropping it, so the
    /// device's slots are free at once rather than when the sessions expire. Bounded by
    /// [`CLOSE_BUDGET`] (and each command by the transport's answer timeout); a failure only
    /// means the device drops the session itself later.
    fn close_sessions(&mut self) {
        let sessions: Vec<Option<HostSession>> =
            self.sessions.iter_mut().map(Option::take).collect();
        let client = self.client.take();
        let client = self.close_these(client, sessions);
        self.client = client;
    }

    /// Closes `sessions` through `client` (see [`Self::close_sessions`]) and no longer
    /// counts them; returns the client unless its transport failed.
    fn close_these(
        &self,
        mut client: Option<Client<Box<dyn Transport>>>,
        sessions: Vec<Option<HostSession>>,
    ) -> Option<Client<Box<dyn Transport>>> {
        let started = Instant::now();
        for (slot, s) in sessions.into_iter().enumerate() {
            let Some(s) = s else {
                continue;
            };
            self.health.sessions_open.fetch_sub(1, Ordering::SeqCst);
            if !s.is_usable() || started.elapsed() >= CLOSE_BUDGET {
                continue;
            }
            let Some(c) = client.as_mut() else {
                continue;
            };
            if let Err(e) = c.close_session(s) {
                debug!(device = %self.health.name, slot, error = %e, "YubiHSM 2 session not closed; it expires on the device");
                if e.is_transport_error() {
                    client = None;
                }
            }
        }
        client
    }

    fn drop_sessions(&mut self) {
        for s in &mut self.sessions {
            if s.take().is_some() {
                self.health.sessions_open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    fn drop_session(&mut self, slot: usize) {
        if self.sessions[slot].take().is_some() {
            self.health.sessions_open.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The transport failed: drop it and its sessions; the owner loop reopens it.
    fn transport_failed(&mut self, e: &Hsm2Error) -> PoolError {
        self.close();
        owner::line_failed::<Self>(
            &self.health,
            LineError::of_hsm2(e),
            e.to_string(),
            matches!(e, Hsm2Error::Timeout { .. }),
        )
    }

    /// Makes sure session slot `slot` holds an open session.
    fn ensure_session(&mut self, slot: usize) -> Result<(), PoolError> {
        if self.sessions[slot].is_some() {
            return Ok(());
        }
        let Some(key) = &self.key else {
            self.health.set(DeviceState::Locked);
            return Err(PoolError::Locked);
        };
        if self.refused_until.is_some() {
            // A refused configured key waits for its retry: the device is not asked.
            self.health.set(DeviceState::Locked);
            return Err(PoolError::Locked);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(PoolError::Unavailable);
        };
        match client.open_session(self.backend.auth_key_id, key) {
            Ok(s) => {
                if std::mem::replace(&mut self.used[slot], true) {
                    self.health
                        .reauthentications
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(device = %self.health.name, slot, "YubiHSM 2 session re-authenticated");
                }
                self.sessions[slot] = Some(s);
                self.last_used[slot] = Instant::now();
                self.sessions_full = false;
                self.health.sessions_open.fetch_add(1, Ordering::SeqCst);
                self.retry_wait = self.backend.refused_retry;
                Ok(())
            }
            Err(e) if e.is_transport_error() => Err(self.transport_failed(&e)),
            Err(e) if key_refused(&e) && self.configured => {
                let wait = self.retry_wait;
                warn!(device = %self.health.name, key = %self.backend.auth_key_id, error = %e, retry_in_s = wait.as_secs(),
                    "the YubiHSM 2 refused the configured password; kept and tried again later (fix the file and send SIGHUP, or run `ksm keystore-unlock`)");
                self.refused_until = Some(Instant::now() + wait);
                self.retry_wait = (wait * 2).min(REFUSED_RETRY_MAX);
                self.drop_sessions();
                self.health.set(DeviceState::Locked);
                Err(PoolError::Locked)
            }
            Err(e) if key_refused(&e) => {
                warn!(device = %self.health.name, key = %self.backend.auth_key_id, error = %e,
                    "the YubiHSM 2 refused the authentication key's password; run `ksm keystore-unlock`");
                self.key = None;
                self.drop_sessions();
                self.health.set(DeviceState::Locked);
                Err(PoolError::Locked)
            }
            Err(e) if e.code() == Some(ErrorCode::SessionsFull) => {
                self.sessions_full = true;
                if self.sessions.iter().all(Option::is_none) {
                    // Holding no session, the daemon cannot decode on this device whatever
                    // its transport says: it is down (other devices serve first), and the
                    // tick asks for a slot again until one frees.
                    self.health.set(DeviceState::Down);
                }
                let text = e.to_string();
                // The keep-alive tick asks every second: said once, until it changes.
                if self.health.last_error() != text {
                    warn!(device = %self.health.name, "every YubiHSM 2 session slot is taken (by other clients of the device)");
                }
                self.health.count_error(LineError::Open, text);
                Err(PoolError::Unavailable)
            }
            // Anything else (another error code, a malformed or unauthenticated answer)
            // comes before any session authenticated the device's bytes: it says nothing
            // about the OTP, so it must never become the validator's verdict on it. As for
            // a YubiHSM 1 the daemon cannot use, the device is unavailable (and another
            // device may serve).
            Err(e) => {
                warn!(device = %self.health.name, error = %e, "YubiHSM 2 session could not be opened");
                self.health.count_error(LineError::Open, e.to_string());
                Err(PoolError::Unavailable)
            }
        }
    }

    /// Bounds the transport's exchanges by `deadline` (`None`: its own timeout alone).
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        if let Some(client) = self.client.as_mut() {
            client.transport_mut().set_deadline(deadline);
        }
    }

    /// One try of [`Device::try_decode`], in the next session slot.
    fn decode_in_session(&mut self, otp: [u8; 16], aead: &Hsm2Aead) -> Try {
        let mut slot = self.next % self.sessions.len();
        self.next = self.next.wrapping_add(1);
        match self.ensure_session(slot) {
            Ok(()) => {}
            // The transport failed opening the session: reopen it, unless it stalled
            // (it would only stall again).
            Err(PoolError::Unavailable) if self.client.is_none() => {
                return Try::Again(PoolError::Unavailable)
            }
            // Other clients took every free slot: a session the daemon holds serves.
            Err(e) => match self.sessions.iter().position(Option::is_some) {
                Some(held) if self.sessions_full => slot = held,
                _ => return Try::Done(Err(e)),
            },
        }
        let (Some(client), Some(session)) = (self.client.as_mut(), self.sessions[slot].as_mut())
        else {
            return Try::Done(Err(PoolError::Unavailable));
        };
        let decrypted = client.decrypt_otp(session, aead.key_id, aead.aead, otp);
        self.last_used[slot] = Instant::now();
        match decrypted {
            Ok(counters) => Try::Done(Ok(counters)),
            Err(e) if e.is_transport_error() => match self.transport_failed(&e) {
                PoolError::Timeout => Try::Done(Err(PoolError::Timeout)),
                e => Try::Again(e),
            },
            Err(e) if !session.is_usable() => {
                // The session is gone on the device (expired, or a reset dropped every
                // session) or its MAC chain broke: open another and repeat the request,
                // which changes nothing on the device.
                debug!(device = %self.health.name, error = %e, "YubiHSM 2 session lost");
                if e.code() == Some(ErrorCode::InvalidSession) {
                    self.drop_sessions();
                } else {
                    self.health.count_error(LineError::Garbage, e.to_string());
                    self.drop_session(slot);
                }
                Try::Again(PoolError::Unavailable)
            }
            Err(e) => Try::Done(Err(PoolError::Hsm2(e))),
        }
    }

    /// The device refused a decode because its forced log is full: with an audit file, the
    /// log is drained and the decode tried again; without one, the device cannot serve
    /// until someone drains it, and another device may.
    fn log_full(&mut self, e: Hsm2Error) -> Try {
        if self.log.refused_full(&self.health) {
            self.check_log(true);
            return Try::Again(PoolError::Hsm2(e));
        }
        Try::Done(Err(PoolError::Hsm2(e)))
    }

    /// Keeps `key` for a device that cannot be reached now; the owner loop's next open
    /// checks it.
    fn keep_unchecked(&mut self, key: AuthKey) -> Unlocked {
        info!(device = %self.health.name, "YubiHSM 2 not reachable: the password given is kept, and checked when the device answers");
        self.drop_sessions();
        self.key = Some(key);
        self.configured = false;
        self.refused_until = None;
        Unlocked::Pending
    }
}

impl Device for Hsm2 {
    type Aead = Hsm2Aead;
    const LABEL: &'static str = "YubiHSM 2";

    fn health(&self) -> &DeviceHealth {
        &self.health
    }

    fn is_open(&self) -> bool {
        self.client.is_some()
    }

    /// Opens the transport, then (if the password is known) a session, which tells whether
    /// the device takes the password. False if the device cannot be reached.
    fn open(&mut self) -> bool {
        if !self.open_transport() {
            return false;
        }
        self.log.opened();
        if self.key.is_none() {
            self.health.set(DeviceState::Locked);
            return true;
        }
        match self.ensure_session(0) {
            Ok(()) => {
                self.health.set(DeviceState::Up);
                true
            }
            Err(PoolError::Locked) => true,
            Err(_) => self.client.is_some(),
        }
    }

    fn reconnect(&mut self) -> bool {
        self.open_transport()
    }

    /// Decodes `otp` (its 16 token bytes) with `aead` under its otp-aead-key, once. Every
    /// exchange it makes (opening a session, the decode) ends by `deadline`, so a stalled
    /// device frees this thread, and the jobs queued behind it, when the request gives up,
    /// not a whole transport timeout per exchange later.
    fn try_decode(&mut self, otp: &Otp, aead: &Hsm2Aead, deadline: Instant) -> Try {
        self.set_deadline(Some(deadline));
        if self.log.check_due_at_decode() {
            self.check_log(false);
        }
        let mut r = self.decode_in_session(otp.ciphertext, aead);
        if let Try::Done(Err(PoolError::Hsm2(e))) = &r {
            if e.code() == Some(ErrorCode::LogFull) {
                r = self.log_full(e.clone());
            }
        }
        self.set_deadline(None);
        r
    }

    /// Tries a refused configured password again when its wait is over, and keeps the
    /// sessions alive.
    fn tick(&mut self, _idle: Duration) -> bool {
        self.retry_refused();
        self.retry_full();
        self.keep_sessions();
        if self.client.is_some() && self.log.check_due_when_idle() {
            self.check_log(false);
        }
        false
    }

    /// Until the next session is due a keep-alive, and at most a second (a refused
    /// password's retry is checked then).
    fn idle_wait(&self, _idle: Duration) -> Duration {
        self.next_keepalive().min(Duration::from_secs(1))
    }

    /// SIGHUP: the transport opened again (a replugged device, a restarted connector), the
    /// password file read again, and the audit log file opened again (rotated away, say).
    /// The new transport and a session on it come first, and only then are the old sessions
    /// closed: closing first would free slots that another client of the connector could
    /// take before the new session is opened. If the new
    /// transport opens but the device gives it no session (every slot taken), the old
    /// transport and its sessions stay in use.
    fn reload(&mut self) {
        self.reload_key();
        self.log.reopen(&self.health);
        let old_client = self.client.take();
        let old_sessions: Vec<Option<HostSession>> =
            self.sessions.iter_mut().map(Option::take).collect();
        let opened = self.open_transport();
        let served = opened && self.key.is_some() && self.ensure_session(0).is_ok();
        let full = opened && self.client.is_some() && self.sessions_full && !served;
        if full && old_client.is_some() && old_sessions.iter().any(Option::is_some) {
            warn!(device = %self.health.name, "SIGHUP: the YubiHSM 2 has no free session slot for a new session; the sessions in use are kept");
            self.client = old_client;
            self.sessions = old_sessions;
            return;
        }
        self.close_these(old_client, old_sessions);
        if served {
            self.health.set(DeviceState::Up);
        } else if opened && self.key.is_none() {
            self.health.set(DeviceState::Locked);
        }
    }

    /// Checks `key` (derived from a password by the sharing task, off this thread) by
    /// opening a session with it; kept if the device takes it. A device that cannot be
    /// reached keeps it unchecked ([`Unlocked::Pending`]): [`Device::open`] checks it when the
    /// device answers and forgets it if the device refuses it.
    fn unlock(&mut self, key: AuthKey, deadline: Instant) -> Result<Unlocked, PoolError> {
        if self.key.is_some() && self.health.state() == DeviceState::Up {
            return Ok(Unlocked::Already);
        }
        if Instant::now() >= deadline {
            return Err(PoolError::Timeout);
        }
        if self.client.is_none() && !self.open_transport() {
            return Ok(self.keep_unchecked(key));
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(self.keep_unchecked(key));
        };
        match client.open_session(self.backend.auth_key_id, &key) {
            Ok(s) => {
                self.close_sessions();
                self.key = Some(key);
                self.configured = false;
                self.refused_until = None;
                self.used[0] = true;
                self.sessions[0] = Some(s);
                self.last_used[0] = Instant::now();
                self.health.sessions_open.fetch_add(1, Ordering::SeqCst);
                self.health.set(DeviceState::Up);
                info!(device = %self.health.name, "YubiHSM 2 unlocked: its authentication key's password was given");
                Ok(Unlocked::Now)
            }
            Err(e) if e.is_transport_error() => {
                self.transport_failed(&e);
                Ok(self.keep_unchecked(key))
            }
            Err(e) if key_refused(&e) => {
                warn!(device = %self.health.name, key = %self.backend.auth_key_id, "keystore-unlock: the YubiHSM 2 refused the password");
                Err(PoolError::WrongPassword)
            }
            Err(e) => Err(PoolError::Hsm2(e)),
        }
    }
}
