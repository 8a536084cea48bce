//! What a YubiHSM 2's owner ([`crate::daemon::hsm2_owner`]) does with the device's audit
//! log: watches how full it is, reads whether the device forces it, and, with
//! `--hsm2-audit-log`, drains it into the file ([`crate::device::hsm2_log`] writes that).
//!
//! The device keeps at most 62 entries. With `force-audit` on it refuses every logged
//! command once they are all unread, decodes included, so a daemon that does not read the
//! log stops serving; without it the oldest entries are overwritten, and lost. So the owner
//! reads the log's figures (Device Info, a plain command) every few decodes and every
//! second when idle, for `/health` and `/metrics`, and with a file drains the log well
//! before it is full. A drain moves the device's log index on only once the entries are on
//! disk: a drain that fails half-way leaves them on the device, and the next one writes
//! them (the file skips what it already holds).
//!
//! The owner holds the sessions and the transport; this part only uses the session it is
//! handed. A device error is handed back, so that the owner drops what it broke (the
//! session, the transport): the same rule as for a decode, kept in one place.
//!
//! Failures here are reported and otherwise ignored: decodes go on while the log has room,
//! and a full forced log refuses them itself ([`AuditLog::refused_full`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm2_proto::cmd::DeviceInfoResponse;
use hsm2_proto::session::HostSession;
use hsm2_proto::transport::Transport;
use hsm2_proto::{Client, Error as Hsm2Error, ErrorCode};
use tracing::{debug, info, warn};

use crate::daemon::health::{DeviceHealth, DRAIN_HINT};
use crate::device::hsm2_log::AuditFile;

/// The one `--hsm2-audit-log` file, shared by every YubiHSM 2 owner of the daemon: one
/// writer per file (its `flock`), and one digest chain per device in it.
pub type AuditSink = Arc<Mutex<AuditFile>>;

/// Decodes between two reads of the device's log figures (Device Info, a plain command).
const LOG_CHECK_EVERY: u32 = 8;

/// How often an idle owner reads the log figures.
const LOG_CHECK_IDLE: Duration = Duration::from_secs(1);

/// Unread entries from which the owner drains the log into its `--hsm2-audit-log` file:
/// well below the device's 62, so that the commands sent between two checks (and other
/// clients') never fill it.
const DRAIN_AT: usize = 16;

/// A YubiHSM 2's audit log as its owner keeps it.
pub struct AuditLog {
    /// `--hsm2-audit-log`: where the log is drained to. `None`: it is only watched.
    sink: Option<AuditSink>,
    /// Decodes since the log figures were last read.
    since_check: u32,
    /// When they were.
    last_check: Instant,
    /// The `force-audit` option was asked for (once per open: the key may not read it).
    force_audit_asked: bool,
    /// A failed drain was reported (said once until one succeeds).
    drain_failed: bool,
}

impl AuditLog {
    /// The log of a device not opened yet, drained into `sink` if there is one.
    pub fn new(sink: Option<AuditSink>) -> AuditLog {
        AuditLog {
            sink,
            since_check: LOG_CHECK_EVERY,
            last_check: Instant::now(),
            force_audit_asked: false,
            drain_failed: false,
        }
    }

    /// The device was opened (again): its figures are read at the next decode and its
    /// `force-audit` option asked for again (it may be another device now).
    pub fn opened(&mut self) {
        self.force_audit_asked = false;
        self.since_check = LOG_CHECK_EVERY;
    }

    /// Whether the figures are due before a decode; counts the decode.
    pub fn check_due_at_decode(&mut self) -> bool {
        let due = self.since_check >= LOG_CHECK_EVERY;
        self.since_check = self.since_check.saturating_add(1);
        due
    }

    /// Whether the figures are due while the owner is idle.
    pub fn check_due_when_idle(&self) -> bool {
        self.last_check.elapsed() >= LOG_CHECK_IDLE
    }

    /// The figures are being read now: the next reads are counted from here.
    pub fn checking(&mut self) {
        self.since_check = 0;
        self.last_check = Instant::now();
    }

    /// Keeps the figures Device Info gave for `/health` and `/metrics`; returns the
    /// device's serial if the log is to be drained now: there is a file, and the log holds
    /// `DRAIN_AT` entries (or any, if `drain` is true).
    pub fn figures(
        &self,
        health: &DeviceHealth,
        info: &DeviceInfoResponse,
        drain: bool,
    ) -> Option<u32> {
        let log = &health.log;
        log.used
            .store(usize::from(info.log_used), Ordering::Relaxed);
        log.capacity
            .store(usize::from(info.log_capacity), Ordering::Relaxed);
        let used = usize::from(info.log_used);
        let due = used >= DRAIN_AT.min(usize::from(info.log_capacity)) || (drain && used > 0);
        (due && self.sink.is_some()).then_some(info.serial)
    }

    /// True the first time after an open that the owner has a session to ask the
    /// `force-audit` option in.
    pub fn ask_force_audit_now(&mut self, has_session: bool) -> bool {
        let ask = !self.force_audit_asked && has_session;
        self.force_audit_asked |= ask;
        ask
    }

    /// Reads the `force-audit` option, if the key may (else it stays unknown). A device
    /// error is handed back for the owner to act on.
    pub fn read_force_audit(
        &self,
        client: &mut Client<Box<dyn Transport>>,
        session: &mut HostSession,
        health: &DeviceHealth,
    ) -> Result<(), Hsm2Error> {
        match client.force_audit(session) {
            Ok(s) => {
                let v = if s.is_on() { 2 } else { 1 };
                health.log.forced.store(v, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                if !e.is_transport_error() {
                    debug!(device = %health.name, error = %e, "the YubiHSM 2's force-audit option is not known (the key may lack get-option)");
                }
                Err(e)
            }
        }
    }

    /// Whether there is a file to drain into.
    pub fn keeps_file(&self) -> bool {
        self.sink.is_some()
    }

    /// Reads the log, appends what is new to the audit file (checking the chain), and only
    /// once that is on disk moves the log index on to the last entry read. A file that
    /// cannot be written is reported (the index then stays); a device error is reported
    /// too, unless it is the transport's, and handed back for the owner to act on.
    pub fn drain(
        &mut self,
        client: &mut Client<Box<dyn Transport>>,
        session: &mut HostSession,
        health: &DeviceHealth,
        serial: u32,
    ) -> Result<(), Hsm2Error> {
        let Some(sink) = &self.sink else {
            return Ok(());
        };
        let result = client
            .get_log_entries(session)
            .map_err(DrainError::Device)
            .and_then(|read| {
                let appended = sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .append(&health.name, serial, &read)
                    .map_err(DrainError::File)?;
                if let Some(last) = appended.last {
                    client
                        .set_log_index(session, last)
                        .map_err(DrainError::Device)?;
                }
                Ok(appended)
            });
        let e = match result {
            Ok(a) => {
                let log = &health.log;
                log.drained.fetch_add(a.written as u64, Ordering::Relaxed);
                log.chain_breaks
                    .fetch_add(a.breaks as u64, Ordering::Relaxed);
                log.used.store(0, Ordering::Relaxed);
                if std::mem::take(&mut self.drain_failed) {
                    info!(device = %health.name, "YubiHSM 2 audit log drained again");
                }
                return Ok(());
            }
            Err(DrainError::Device(e)) if e.is_transport_error() => return Err(e),
            Err(e) => e,
        };
        if !std::mem::replace(&mut self.drain_failed, true) {
            // Only a refused permission is the key's fault; anything else (a full disk, a
            // device error) is said as it is.
            let hint = match &e {
                DrainError::Device(d) if d.code() == Some(ErrorCode::InsufficientPermissions) => {
                    " (the key needs get-log-entries)"
                }
                _ => "",
            };
            tracing::error!(device = %health.name, error = %e, "the YubiHSM 2 audit log could not be drained{hint}; a device with force-audit on stops when it is full");
        }
        match e {
            DrainError::Device(e) => Err(e),
            DrainError::File(_) => Ok(()),
        }
    }

    /// The device refused a command because its forced log is full: the figures say so
    /// at once. True if there is a file to drain it into (the owner drains and tries
    /// again); without one the device cannot serve until someone drains it, and says so.
    pub fn refused_full(&self, health: &DeviceHealth) -> bool {
        let log = &health.log;
        log.refused_full.fetch_add(1, Ordering::Relaxed);
        log.forced.store(2, Ordering::Relaxed);
        let capacity = log.capacity.load(Ordering::Relaxed);
        log.used.store(capacity, Ordering::Relaxed);
        if self.sink.is_some() {
            return true;
        }
        warn!(device = %health.name, "the YubiHSM 2's audit log is full and force-audit is on: it refuses decodes until the log is read and its index moved on ({DRAIN_HINT})");
        false
    }

    /// SIGHUP: the file opened again at its path, where a log rotation may have put a new
    /// one. The file is shared by every device of the daemon: the first device's SIGHUP
    /// reopens it, the others find the same file at the path and do nothing. A file that
    /// does not open keeps the one in use.
    pub fn reopen(&self, health: &DeviceHealth) {
        if let Some(sink) = &self.sink {
            if let Err(e) = sink.lock().unwrap_or_else(|p| p.into_inner()).reopen() {
                warn!(device = %health.name, error = %e, "SIGHUP: the YubiHSM 2 audit log file did not open again; the one in use stays");
            }
        }
    }
}

/// Why a drain failed.
#[derive(Debug)]
enum DrainError {
    /// The device refused or did not answer.
    Device(Hsm2Error),
    /// The audit file could not be written: the log index stays where it was.
    File(crate::Error),
}

impl std::fmt::Display for DrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainError::Device(e) => e.fmt(f),
            DrainError::File(e) => e.fmt(f),
        }
    }
}
