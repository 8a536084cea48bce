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
    /// Not reachable; the owner keeps trying to reopen it.
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

/// What `/health` and `/metrics` read about a device.
pub struct DeviceHealth {
    /// Device name (path or `soft-hsm`).
    pub name: String,
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
}

impl DeviceHealth {
    /// A device not opened yet.
    pub fn new(name: String) -> DeviceHealth {
        DeviceHealth {
            name,
            state: AtomicU8::new(DeviceState::Down as u8),
            queued: AtomicUsize::new(0),
            opens: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            line_errors: Default::default(),
            locked_logged: AtomicBool::new(false),
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

    /// Counts a line failure and keeps its text for `/health`.
    pub(crate) fn line_error(&self, e: &HsmError) {
        self.line_errors[LineError::of(e) as usize].fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
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
