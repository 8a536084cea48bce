//! What the daemon knows about each device's health: its state and its line failures, as
//! the owner thread records them and `/health`, `/metrics` and the sharing socket report
//! them.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

use hsm_proto::Error as HsmError;
use tracing::error;

/// The state of one device, as the owner thread last saw it.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Open and answering.
    Up = 0,
    /// Open, but its key store is locked.
    Locked = 1,
    /// Cannot serve: not reachable (the owner keeps trying to reopen it), or a YubiHSM 2
    /// whose session slots other clients hold while the daemon holds none (the owner asks
    /// for one every second).
    Down = 2,
}

impl DeviceState {
    /// Every state, in the order `/metrics` lists them.
    pub const ALL: [DeviceState; 3] = [DeviceState::Up, DeviceState::Locked, DeviceState::Down];

    fn from_u8(v: u8) -> DeviceState {
        match v {
            0 => DeviceState::Up,
            1 => DeviceState::Locked,
            _ => DeviceState::Down,
        }
    }

    /// Lower-case name for `/health`, `/metrics` and the sharing socket's device list.
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Up => "up",
            DeviceState::Locked => "locked",
            DeviceState::Down => "down",
        }
    }
}

/// The kinds of line failure `/metrics` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// The device did not answer in time.
    Timeout,
    /// The line closed (unplugged).
    Closed,
    /// Bytes that are not a response (noise, a confused device).
    Garbage,
    /// The configuration console answered instead of the HSM.
    ConfigMode,
    /// The device could not be opened, or failed its open checks.
    Open,
    /// Any other I/O error.
    Io,
}

impl LineError {
    /// Every kind, in the order `/health` and `/metrics` list them.
    pub const ALL: [LineError; 6] = [
        LineError::Timeout,
        LineError::Closed,
        LineError::Garbage,
        LineError::ConfigMode,
        LineError::Open,
        LineError::Io,
    ];

    /// The kind of a YubiHSM 2 failure on the way to the device (or of a session it
    /// could not open).
    pub fn of_hsm2(e: &hsm2_proto::Error) -> LineError {
        use hsm2_proto::Error as E;
        match e {
            E::Timeout { .. } => LineError::Timeout,
            E::ConnectorUnreachable { .. } | E::DeviceGone | E::TransportPoisoned => {
                LineError::Closed
            }
            E::NoDevice { .. } => LineError::Open,
            E::ConnectorHttp { .. } | E::Usb(_) | E::Io(_) => LineError::Io,
            _ => LineError::Garbage,
        }
    }

    /// The kind of a line error.
    pub fn of(e: &HsmError) -> LineError {
        match e {
            HsmError::Timeout { .. } => LineError::Timeout,
            HsmError::Closed => LineError::Closed,
            HsmError::ConfigMode { .. } => LineError::ConfigMode,
            HsmError::Open { .. } | HsmError::LinkTest | HsmError::ProtocolVersion(_) => {
                LineError::Open
            }
            HsmError::Io(_) => LineError::Io,
            _ => LineError::Garbage,
        }
    }

    /// Its label in `/health` and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            LineError::Timeout => "timeout",
            LineError::Closed => "closed",
            LineError::Garbage => "garbage",
            LineError::ConfigMode => "config_mode",
            LineError::Open => "open",
            LineError::Io => "io",
        }
    }
}

/// Which kind of HSM a device is: each opens only AEADs of its own kind.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// A YubiHSM 1 (serial line, or the in-process soft HSM).
    YubiHsm1 = 0,
    /// A YubiHSM 2 (through yubihsm-connector, or on USB).
    YubiHsm2 = 1,
}

impl DeviceKind {
    /// Its name in `/health`, `/metrics` and the sharing socket's device list.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::YubiHsm1 => "yubihsm1",
            DeviceKind::YubiHsm2 => "yubihsm2",
        }
    }
}

/// What `/health` and `/metrics` read about a device.
pub struct DeviceHealth {
    /// Device name (path, connector URL or `soft-hsm`).
    pub name: String,
    /// Which kind of HSM it is.
    pub kind: DeviceKind,
    /// YubiHSM 2 sessions open now (always 0 for a YubiHSM 1, which has none).
    pub sessions_open: AtomicUsize,
    /// YubiHSM 2 sessions opened again after one expired, was dropped by a device reset or
    /// broke, and after the device itself was reopened: each costs a round of
    /// authentication before the request that needed it.
    pub reauthentications: AtomicU64,
    state: AtomicU8,
    /// Jobs waiting or running.
    pub queued: AtomicUsize,
    /// Times the device was (re)opened; also the generation a tool's lease runs under.
    pub opens: AtomicU64,
    /// The last line error, for operators.
    last_error: Mutex<String>,
    /// Line failures so far, by kind (indexed as [`LineError::ALL`]).
    line_errors: [AtomicU64; LineError::ALL.len()],
    locked_logged: AtomicBool,
    /// A YubiHSM 2's audit log, as its owner last read it.
    pub log: AuditLogHealth,
}

/// A YubiHSM 2's audit log use (all zero for a YubiHSM 1, which has none).
#[derive(Debug, Default)]
pub struct AuditLogHealth {
    /// Entries the device holds unread (Device Info's figure).
    pub used: AtomicUsize,
    /// Entries it can hold (0 until first read).
    pub capacity: AtomicUsize,
    /// The device's `force-audit` option: 0 not known (the key may not read options),
    /// 1 off, 2 on or fixed.
    pub forced: AtomicU8,
    /// Entries the daemon drained into its `--hsm2-audit-log` file.
    pub drained: AtomicU64,
    /// Entries that did not follow the chain kept in that file.
    pub chain_breaks: AtomicU64,
    /// Commands the device refused because its forced log was full.
    pub refused_full: AtomicU64,
}

/// The share of the log in use from which `/health` warns, unless the device is known not
/// to force its log (a full log that is not forced only overwrites its oldest entries).
pub const LOG_WARN_PERCENT: usize = 75;

/// How an operator drains a YubiHSM 2's audit log, as the daemon's warnings say it: two
/// command lines, each one clap takes once URL and FILE are filled in (a test in `cli.rs`
/// parses them).
pub const DRAIN_HINT: &str =
    "ksm serve --hsm2-audit-log FILE, or ksm hsm2-log -D URL --audit-log FILE --advance";

impl AuditLogHealth {
    /// `Some(text)` for `/health` when the log is nearly (or quite) full and the device may
    /// force it: it will refuse commands once full until the log is read and its index moved
    /// on (`--hsm2-audit-log`, or `ksm hsm2-log --audit-log FILE --advance`).
    pub fn warning(&self) -> Option<String> {
        let used = self.used.load(Ordering::Relaxed);
        let capacity = self.capacity.load(Ordering::Relaxed);
        let forced = self.forced.load(Ordering::Relaxed);
        if capacity == 0 || forced == 1 || used * 100 < capacity * LOG_WARN_PERCENT {
            return None;
        }
        let when = if forced == 2 {
            ""
        } else {
            " if force-audit is on"
        };
        Some(format!(
            "audit log {used} of {capacity} entries used: the device refuses commands when it is full{when}; drain it ({DRAIN_HINT})"
        ))
    }
}

impl DeviceHealth {
    /// A YubiHSM 1 not opened yet.
    pub fn new(name: String) -> DeviceHealth {
        DeviceHealth::of_kind(name, DeviceKind::YubiHsm1)
    }

    /// A device of `kind` not opened yet.
    pub fn of_kind(name: String, kind: DeviceKind) -> DeviceHealth {
        DeviceHealth {
            name,
            kind,
            sessions_open: AtomicUsize::new(0),
            reauthentications: AtomicU64::new(0),
            state: AtomicU8::new(DeviceState::Down as u8),
            queued: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            line_errors: Default::default(),
            locked_logged: AtomicBool::new(false),
            log: AuditLogHealth::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> DeviceState {
        DeviceState::from_u8(self.state.load(Ordering::SeqCst))
    }

    /// Line failures of each kind so far.
    pub fn line_errors(&self) -> impl Iterator<Item = (LineError, u64)> + '_ {
        LineError::ALL
            .into_iter()
            .zip(&self.line_errors)
            .map(|(k, n)| (k, n.load(Ordering::Relaxed)))
    }

    /// The last line error's text.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a failure of kind `kind` and keeps `text` (which names no secret) for
    /// `/health`.
    pub(crate) fn count_error(&self, kind: LineError, text: String) {
        self.line_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// Records the state; the first time it turns locked, says what to run.
    pub(crate) fn set(&self, s: DeviceState) {
        let old = DeviceState::from_u8(self.state.swap(s as u8, Ordering::SeqCst));
        if s == DeviceState::Locked
            && old != DeviceState::Locked
            && !self.locked_logged.swap(true, Ordering::SeqCst)
        {
            error!(device = %self.name, "YubiHSM key store is locked: run `ksm keystore-unlock` to unlock it");
        }
        if s != DeviceState::Locked {
            self.locked_logged.store(false, Ordering::SeqCst);
        }
    }
}
