//! A YubiHSM 1, serial or soft, as its owner holds it ([`crate::daemon::owner`]).
//!
//! A serial YubiHSM is a line with strictly one request in flight; it is reopened when the
//! line fails (unplugged, noise, a confused device). Its key store can be locked, which a
//! command that changes nothing tells ([`Hsm::is_locked`]): the probe runs after every open,
//! after an unlock frame from a tool, and when the device sits idle, so `/health` tells the
//! truth before any OTP arrives. The in-process soft HSM is the same device without a line:
//! the pool runs it in place, under a lock, rather than on an owner thread.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm_proto::emulator::{self, ResolvedConfig};
use hsm_proto::otp::Otp;
use hsm_proto::{Error as HsmError, Hsm, KeyHandle, Nonce, Status, Timeouts, YubiKeyAead};

use crate::daemon::health::{DeviceHealth, DeviceState, LineError};
use crate::daemon::owner::{self, Device, PoolError, Try};
use crate::daemon::tool_frame::ToolFrame;

/// Where a YubiHSM 1 is.
#[derive(Clone)]
pub enum Hsm1Line {
    /// A serial device path: a YubiHSM at `/dev/ttyACM0`, or an emulator's pty link.
    Serial(PathBuf),
    /// An in-process soft HSM with these keys.
    Soft(Box<ResolvedConfig>),
}

/// A YubiHSM 1 AEAD (pyhsm's), as the device opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hsm1Aead {
    /// The key handle that sealed it.
    pub key_handle: KeyHandle,
    /// Its nonce.
    pub nonce: Nonce,
    /// The AEAD.
    pub aead: YubiKeyAead,
}

/// How long an open device may sit without a job before its owner asks it whether its key
/// store is locked. A power cycle (a brown-out, a hub that resets its port) can leave the
/// line open and the key store locked: without the probe `/health` would say `up` until
/// the next decode found out, and an idle KSM is exactly the one nobody decodes on.
const IDLE_PROBE: Duration = Duration::from_secs(2);

/// One YubiHSM 1 and the way to it.
pub struct Hsm1 {
    line: Hsm1Line,
    timeouts: Timeouts,
    hsm: Option<Hsm>,
    health: Arc<DeviceHealth>,
}

impl Hsm1 {
    /// The device at `line`, not opened yet.
    pub fn new(line: Hsm1Line, timeouts: Timeouts, health: Arc<DeviceHealth>) -> Hsm1 {
        Hsm1 {
            line,
            timeouts,
            hsm: None,
            health,
        }
    }

    /// Asks the open device whether its key store is locked and records the answer. False
    /// if the line failed (the device is then down).
    pub fn probe_lock(&mut self) -> bool {
        let Some(h) = self.hsm.as_mut() else {
            return false;
        };
        match h.is_locked() {
            Ok(locked) => {
                self.health.set(if locked {
                    DeviceState::Locked
                } else {
                    DeviceState::Up
                });
                true
            }
            Err(e) => {
                self.classify(e);
                false
            }
        }
    }

    /// What a driver error means for the device: a locked key store, a line to open again
    /// (dropped here), or the device's refusal of this request.
    fn classify(&mut self, e: HsmError) -> PoolError {
        if e.status() == Some(Status::KeyStorageLocked) {
            self.health.set(DeviceState::Locked);
            return PoolError::Locked;
        }
        if e.is_link_error() {
            self.hsm = None;
            let timed_out = matches!(e, HsmError::Timeout { .. });
            return owner::line_failed::<Self>(
                &self.health,
                LineError::of(&e),
                e.to_string(),
                timed_out,
            );
        }
        PoolError::Hsm(e)
    }
}

impl Device for Hsm1 {
    const LABEL: &'static str = "YubiHSM";
    type Aead = Hsm1Aead;

    fn is_open(&self) -> bool {
        self.hsm.is_some()
    }

    fn health(&self) -> &DeviceHealth {
        &self.health
    }

    /// Opens the line and probes the lock state.
    fn open(&mut self) -> bool {
        let opened = match &self.line {
            Hsm1Line::Serial(p) => Hsm::open_path(p, self.timeouts),
            Hsm1Line::Soft(cfg) => emulator::soft_hsm(cfg).map(|(h, _)| h),
        };
        match opened {
            Ok(h) => {
                owner::opened::<Self>(&self.health);
                self.hsm = Some(h);
                self.probe_lock()
            }
            Err(e) => {
                owner::open_failed::<Self>(&self.health, LineError::of(&e), e.to_string());
                false
            }
        }
    }

    fn reconnect(&mut self) -> bool {
        self.open()
    }

    fn try_decode(&mut self, otp: &Otp, aead: &Hsm1Aead, _deadline: Instant) -> Try {
        let Some(h) = self.hsm.as_mut() else {
            return Try::Again(PoolError::Unavailable);
        };
        match h.decode_otp(otp, aead.key_handle, aead.nonce, &aead.aead) {
            Ok(d) => Try::Done(Ok(d.counters())),
            Err(e) => match self.classify(e) {
                // The line failed (and was dropped): worth another try on a reopened line.
                PoolError::Unavailable if self.hsm.is_none() => Try::Again(PoolError::Unavailable),
                e => Try::Done(Err(e)),
            },
        }
    }

    /// The lock probe changes nothing on the device, so it may run between a tool's frames
    /// too.
    fn tick(&mut self, idle: Duration) -> bool {
        if idle < IDLE_PROBE {
            return false;
        }
        self.probe_lock();
        true
    }

    fn idle_wait(&self, idle: Duration) -> Duration {
        IDLE_PROBE.saturating_sub(idle)
    }

    fn reload(&mut self) {
        self.hsm = None;
        self.open();
    }

    /// Only the device's own failures change its state; after an unlock attempt, succeeded
    /// or not, the lock state is probed.
    fn frame(
        &mut self,
        frame: &ToolFrame,
        generation: Option<u64>,
    ) -> Result<(Vec<u8>, u64), PoolError> {
        let now = self.health.opens.load(Ordering::SeqCst);
        if generation.is_some_and(|g| g != now) {
            return Err(PoolError::Reopened);
        }
        let result = match self.hsm.as_mut() {
            Some(h) => h.exchange_frame(frame.bytes()),
            None => return Err(PoolError::Unavailable),
        };
        let result = result.map_err(|e| self.classify(e));
        if frame.unlocks() {
            self.probe_lock();
        }
        result.map(|resp| (resp, now))
    }
}
