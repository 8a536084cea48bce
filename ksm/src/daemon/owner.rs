//! The owner loop: the one thread that talks to a device, for every kind of HSM.
//!
//! An HSM runs one command at a time, so each device gets one owner thread that holds the
//! way to it; everything else (the pool) talks to that thread through the device's bounded
//! queue. What every kind has in common is written here, once: taking jobs from the queue,
//! giving up on a job whose deadline passed, opening a device that is not open (again every
//! reopen interval while it cannot be reached), repeating a decode whose line failed under
//! it, the idle tick between jobs, and the health that `/health` and `/metrics` read (opens,
//! line failures, the state). What differs between kinds sits behind [`Device`]: how the
//! line is opened, what one decode is, and what the idle tick does (a YubiHSM 1's lock
//! probe, a YubiHSM 2's session keep-alive). Each kind implements it in a file of its own
//! (`hsm1_owner.rs` for a YubiHSM 1, serial or soft; `hsm2_owner.rs` for a YubiHSM 2, which
//! keeps its sessions, re-authentication and the password `keystore-unlock` hands over
//! inside); the arrows run one way, from the pool to this loop and the devices, and from
//! the devices to this trait.
//!
//! The loop is generic, not a trait object: each kind's loop and decode path are compiled
//! for that kind, so a decode costs no indirect call.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use hsm_proto::otp::{Otp, OtpCounters};
use hsm_proto::Error as HsmError;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::daemon::health::{DeviceHealth, DeviceState, LineError};
use crate::daemon::tool_frame::ToolFrame;

/// Why a job did not produce its answer, as far as the pool is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// The device refused (status), or a software check failed.
    Hsm(HsmError),
    /// The key store is locked; an operator must run `ksm keystore-unlock`.
    Locked,
    /// No device can be reached.
    Unavailable,
    /// The deadline passed.
    Timeout,
    /// Every queue is full.
    Overloaded,
    /// Another tool holds the device's lease, and did not let go in time.
    Busy,
    /// The device was reopened (unplugged, power-cycled, line failure) since the tool's
    /// lease began, so state its operation relies on may be gone.
    Reopened,
    /// A YubiHSM 2 refused a command about this OTP or AEAD (or answered what the driver
    /// could not use).
    Hsm2(hsm2_proto::Error),
    /// The job is for the other kind of HSM (a YubiHSM 1 frame sent to a YubiHSM 2, an
    /// unlock password to a YubiHSM 1).
    WrongKind,
    /// The YubiHSM 2 refused the password `keystore-unlock` gave; it stays locked.
    WrongPassword,
}

impl PoolError {
    /// True if this is the device's verdict on the OTP or its AEAD, which any other device
    /// holding the same key would repeat: the request ends with it. Anything else is about
    /// the device (locked, unreachable, busy, or without the key the AEAD names), and the
    /// next device may serve. Trying a forged OTP on every device would only multiply the
    /// work a forger causes, and let a locked device's `ERR HSM locked` hide the verdict.
    pub fn is_verdict(&self) -> bool {
        match self {
            PoolError::Hsm(_) => true,
            PoolError::Hsm2(e) => matches!(
                e.code(),
                Some(
                    hsm2_proto::ErrorCode::InvalidOtp
                        | hsm2_proto::ErrorCode::InvalidData
                        | hsm2_proto::ErrorCode::WrongLength
                )
            ),
            _ => false,
        }
    }
}

/// What a successful unlock did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unlocked {
    /// The password opened a session; the device serves from now on.
    Now,
    /// The device already had a password that works; the one given was not needed.
    Already,
    /// The device cannot be reached now: the password is kept, unchecked, and checked when
    /// the device next answers (forgotten then if the device refuses it).
    Pending,
}

/// A job for a device's owner thread; `A` is the AEAD its kind of device opens.
pub enum Job<A> {
    /// Decode an OTP.
    Decode {
        /// The OTP.
        otp: Otp,
        /// The AEAD that opens it.
        aead: A,
        /// Give up after this.
        deadline: Instant,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<OtpCounters, PoolError>>,
    },
    /// Anything else: the same for every kind of device.
    Control(Control),
}

impl<A> Job<A> {
    /// A decode of `otp` with `aead`, answered on `reply`.
    pub fn decode(
        otp: Otp,
        aead: A,
        deadline: Instant,
        reply: oneshot::Sender<Result<OtpCounters, PoolError>>,
    ) -> Job<A> {
        Job::Decode {
            otp,
            aead,
            deadline,
            reply,
        }
    }
}

/// A job that is not a decode.
pub enum Control {
    /// Check a YubiHSM 2 authentication key's password (from `ksm keystore-unlock`) and,
    /// if the device takes it, keep it.
    Unlock {
        /// The session keys derived from the password (by the caller, so the slow PBKDF2
        /// does not hold up the device's decodes), wiped when dropped.
        key: hsm2_proto::AuthKey,
        /// Give up after this.
        deadline: Instant,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<Unlocked, PoolError>>,
    },
    /// Run a raw request frame (for operator tools over the sharing socket) and return the
    /// response frame.
    Frame {
        /// The request frame, checked at the socket.
        frame: ToolFrame,
        /// The device's open count when the lease ran its first frame, if it has.
        generation: Option<u64>,
        /// Give up after this.
        deadline: Instant,
        /// Where the answer goes: the response frame and the open count it ran under.
        reply: oneshot::Sender<Result<(Vec<u8>, u64), PoolError>>,
    },
    /// Close the device and open it again (SIGHUP).
    Reopen,
}

/// What one try of a decode came to.
pub enum Try {
    /// The answer: counters, or why not.
    Done(Result<OtpCounters, PoolError>),
    /// The line or the session failed under the request: it may be tried again (a decode
    /// changes nothing on the device), on the line opened again if it was closed.
    Again(PoolError),
}

/// One kind of HSM as its owner thread holds it. Each method runs on the owner thread
/// only (or, for the in-process soft HSM, under the pool's lock), so none needs locking.
pub trait Device: Send + 'static {
    /// The AEAD this kind of device opens.
    type Aead: Send + 'static;

    /// Its kind's name in log lines ("YubiHSM", "YubiHSM 2").
    const LABEL: &'static str;

    /// What `/health` and `/metrics` read about it.
    fn health(&self) -> &DeviceHealth;

    /// Whether the line to it is open.
    fn is_open(&self) -> bool;

    /// Opens a device that is not open (at start, and after it dropped out): the line, then
    /// whatever tells its state (the lock probe, a session). False if it cannot be reached.
    fn open(&mut self) -> bool;

    /// Opens the line again after it failed under a request, for the request's next try.
    fn reconnect(&mut self) -> bool;

    /// Tries a decode once, on the open line, every exchange ending by `deadline`.
    fn try_decode(&mut self, otp: &Otp, aead: &Self::Aead, deadline: Instant) -> Try;

    /// The idle tick, between jobs, `idle` after the device last ran one: whatever keeps
    /// what is known of it true (a YubiHSM 1's lock probe, a YubiHSM 2's keep-alive). True
    /// if it used the device.
    fn tick(&mut self, idle: Duration) -> bool;

    /// How long the loop may wait for a job before the next tick, `idle` after the last job.
    fn idle_wait(&self, idle: Duration) -> Duration;

    /// SIGHUP: the device closed and opened again (and whatever it reads from files read
    /// again).
    fn reload(&mut self);

    /// Runs a tool's request frame under a lease whose first frame ran at open count
    /// `generation`; returns the response and the open count it ran under. Only a YubiHSM 1
    /// takes frames.
    fn frame(
        &mut self,
        _frame: &ToolFrame,
        _generation: Option<u64>,
    ) -> Result<(Vec<u8>, u64), PoolError> {
        Err(PoolError::WrongKind)
    }

    /// Checks an authentication key's password from `keystore-unlock` and keeps it if the
    /// device takes it. Only a YubiHSM 2 takes one.
    fn unlock(
        &mut self,
        _key: hsm2_proto::AuthKey,
        _deadline: Instant,
    ) -> Result<Unlocked, PoolError> {
        Err(PoolError::WrongKind)
    }
}

/// How many times a decode is tried when the line or its session fails under it.
const DECODE_ATTEMPTS: u32 = 3;

/// The owner thread of `dev`: the only code that talks to it, until the pool drops its
/// queue. A device that is not open is opened again every `reopen_interval`.
pub fn run<D: Device>(mut dev: D, rx: Receiver<Job<D::Aead>>, reopen_interval: Duration) {
    let mut next_open = Instant::now();
    // When the device last ran a job or an idle tick's command.
    let mut last_used = Instant::now();
    loop {
        if !dev.is_open() && Instant::now() >= next_open && !dev.open() {
            next_open = Instant::now() + reopen_interval;
        }
        if dev.is_open() && dev.tick(last_used.elapsed()) {
            last_used = Instant::now();
        }
        let wait = if dev.is_open() {
            dev.idle_wait(last_used.elapsed())
        } else {
            reopen_interval
        };
        let job = match rx.recv_timeout(wait) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        run_job(&mut dev, job);
        last_used = Instant::now();
        dev.health().queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one job on the owner thread.
fn run_job<D: Device>(dev: &mut D, job: Job<D::Aead>) {
    match job {
        Job::Decode {
            otp,
            aead,
            deadline,
            reply,
        } => {
            let _ = reply.send(decode(dev, &otp, &aead, deadline));
        }
        Job::Control(Control::Frame {
            frame,
            generation,
            deadline,
            reply,
        }) => {
            let result = if Instant::now() >= deadline {
                Err(PoolError::Timeout)
            } else {
                dev.frame(&frame, generation)
            };
            let _ = reply.send(result);
        }
        Job::Control(Control::Unlock {
            key,
            deadline,
            reply,
        }) => {
            let _ = reply.send(dev.unlock(key, deadline));
        }
        Job::Control(Control::Reopen) => dev.reload(),
    }
}

/// Decodes `otp` with `aead` on `dev` before `deadline`. The line failed under the request
/// (noise, a confused device, a dropped session): the line is opened again and the decode
/// repeated, a few times while the deadline allows (on a loaded machine the tail of a burst
/// of noise can still be arriving when the first retry starts). A decode changes nothing on
/// the HSM, so repeating it is safe. A timeout is not repeated (a stalled device would only
/// stall again), nor is a device that was already down (the owner loop keeps reopening
/// that), nor one that will not reopen.
pub fn decode<D: Device>(
    dev: &mut D,
    otp: &Otp,
    aead: &D::Aead,
    deadline: Instant,
) -> Result<OtpCounters, PoolError> {
    let was_open = dev.is_open();
    let mut last = PoolError::Unavailable;
    for attempt in 0..DECODE_ATTEMPTS {
        if Instant::now() >= deadline {
            return Err(PoolError::Timeout);
        }
        if !dev.is_open() && (attempt == 0 || !was_open || !dev.reconnect()) {
            return Err(last);
        }
        match dev.try_decode(otp, aead, deadline) {
            Try::Done(Ok(counters)) => {
                let health = dev.health();
                if health.state() != DeviceState::Up {
                    health.set(DeviceState::Up);
                }
                return Ok(counters);
            }
            Try::Done(Err(e)) => return Err(e),
            Try::Again(e) => last = e,
        }
    }
    Err(last)
}

/// Records that `D`'s line opened: counted (the count is also the generation a tool's
/// lease runs under) and logged.
pub fn opened<D: Device>(health: &DeviceHealth) {
    health.opens.fetch_add(1, Ordering::SeqCst);
    info!(device = %health.name, "{} opened", D::LABEL);
}

/// Records that `D`'s line could not be opened: counted as `kind`, the device down, and
/// the reason logged when it is new (not at every retry).
pub fn open_failed<D: Device>(health: &DeviceHealth, kind: LineError, error: String) {
    if health.last_error() != error {
        warn!(device = %health.name, %error, "{} unavailable; retrying", D::LABEL);
    }
    health.count_error(kind, error);
    health.set(DeviceState::Down);
}

/// Records that `D`'s line failed under a command (the caller drops it; the owner loop or
/// the request's next try opens it again): logged, counted as `kind`, the device down.
/// Returns what the request that found it gets: a timeout, or the device unavailable.
pub fn line_failed<D: Device>(
    health: &DeviceHealth,
    kind: LineError,
    error: String,
    timed_out: bool,
) -> PoolError {
    warn!(device = %health.name, %error, "{} line failed; reopening", D::LABEL);
    health.count_error(kind, error);
    health.set(DeviceState::Down);
    if timed_out {
        PoolError::Timeout
    } else {
        PoolError::Unavailable
    }
}
