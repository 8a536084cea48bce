//! The HSMs the daemon decodes with, each owned by one thread.
//!
//! A YubiHSM is a serial line with strictly one request in flight, so each device gets one
//! owner thread that holds its [`Hsm`]; everything else talks to that thread through a
//! bounded queue. A full queue is refused at once (the validator moves on to its next KSM
//! instead of waiting), every job carries a deadline checked before the device is touched,
//! and a device that drops out is reopened by its owner in the background. Requests are
//! spread over healthy devices, and a request whose device fails is retried on another while
//! its deadline allows.
//!
//! Operator tools reach a device through a [`Lease`]: some of their operations take several
//! frames that rely on device state in between (a secret loaded into the buffer, then
//! sealed), so one tool at a time holds a device's lease, and its frames run with no other
//! tool's frames in between. Decodes take no lease: they touch no state a tool relies on
//! (`AEAD_YUBIKEY_OTP_DECODE` leaves the buffer, nonce and temp key alone), so they keep
//! flowing while a tool works. A lease also ends if the device is reopened under it (an
//! unplug or power cycle wipes the buffer): the tool's next frame is refused.
//!
//! YubiHSM 2 devices sit in the same pool, each with its own owner thread
//! ([`crate::daemon::hsm2_owner`]: a session pool, re-authentication, the locked state).
//! Each AEAD names the kind of HSM that opens it ([`DecodeAead`]), and goes only to
//! devices of that kind, with the same spreading and failover among them. A verdict on the
//! OTP or AEAD ([`PoolError::is_verdict`]) ends a request at once; only device conditions
//! move it on. During a migration a YubiKey may have an AEAD under each kind's key: when the
//! devices for the first cannot serve, [`Pool::decode_failover`] tries the next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm2_proto::{ObjectId, OtpAead};
use hsm_proto::emulator::{self, ResolvedConfig};
use hsm_proto::otp::{Otp, OtpCounters};
use hsm_proto::{Error as HsmError, Hsm, KeyHandle, Nonce, Status, Timeouts, YubiKeyAead};
use tokio::sync::{oneshot, OwnedMutexGuard};

use crate::daemon::health::{DeviceHealth, DeviceKind, DeviceState};
use crate::daemon::hsm2_owner::{self, Hsm2Backend, Unlocked};
use crate::daemon::tool_frame::ToolFrame;
use tracing::{info, warn};

/// How a device is reached.
#[derive(Clone)]
pub enum Backend {
    /// A serial device path: a YubiHSM at `/dev/ttyACM0`, or an emulator's pty link.
    Serial(PathBuf),
    /// An in-process soft HSM with these keys.
    Soft(Box<ResolvedConfig>),
    /// A YubiHSM 2.
    Hsm2(Hsm2Backend),
}

impl Backend {
    fn name(&self) -> String {
        match self {
            Backend::Serial(p) => p.display().to_string(),
            Backend::Soft(_) => "soft-hsm".into(),
            Backend::Hsm2(b) => b.name.clone(),
        }
    }

    fn kind(&self) -> DeviceKind {
        match self {
            Backend::Hsm2(_) => DeviceKind::YubiHsm2,
            _ => DeviceKind::YubiHsm1,
        }
    }

    fn open(&self, timeouts: Timeouts) -> Result<Hsm, HsmError> {
        match self {
            Backend::Serial(p) => Hsm::open_path(p, timeouts),
            Backend::Soft(cfg) => emulator::soft_hsm(cfg).map(|(h, _)| h),
            Backend::Hsm2(_) => Err(HsmError::Open {
                path: self.name(),
                reason: "a YubiHSM 2 is not opened as a YubiHSM 1".into(),
            }),
        }
    }
}

/// An AEAD as the device that opens it needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeAead {
    /// A YubiHSM 1 AEAD (pyhsm's): its key handle, nonce and 30 bytes.
    Hsm1 {
        /// The key handle that sealed it.
        key_handle: KeyHandle,
        /// Its nonce.
        nonce: Nonce,
        /// The AEAD.
        aead: YubiKeyAead,
    },
    /// A YubiHSM 2 OTP AEAD and the otp-aead-key that opens it.
    Hsm2 {
        /// The otp-aead-key's object id.
        key_id: ObjectId,
        /// The 36-byte AEAD.
        aead: OtpAead,
    },
}

impl DecodeAead {
    /// The kind of HSM that opens it.
    pub fn kind(&self) -> DeviceKind {
        match self {
            DecodeAead::Hsm1 { .. } => DeviceKind::YubiHsm1,
            DecodeAead::Hsm2 { .. } => DeviceKind::YubiHsm2,
        }
    }
}

/// Why a decode did not produce counters, as far as the pool is concerned.
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

/// A job for a device's owner thread.
pub enum Job {
    /// Decode an OTP with a YubiHSM 1 AEAD.
    Decode {
        /// The OTP.
        otp: Otp,
        /// The AEAD's key handle.
        key_handle: KeyHandle,
        /// The AEAD's nonce.
        nonce: Nonce,
        /// The AEAD.
        aead: YubiKeyAead,
        /// Give up after this.
        deadline: Instant,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<OtpCounters, PoolError>>,
    },
    /// Decode an OTP with a YubiHSM 2 AEAD.
    Decode2 {
        /// The OTP's 16 encrypted token bytes.
        otp: [u8; 16],
        /// The otp-aead-key that opens the AEAD.
        key_id: ObjectId,
        /// The AEAD.
        aead: OtpAead,
        /// Give up after this.
        deadline: Instant,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<OtpCounters, PoolError>>,
    },
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

/// How requests reach a device.
enum Access {
    /// A serial line: its owner thread, through a bounded queue.
    Owner(SyncSender<Job>),
    /// The in-process soft HSM: no line to own and no I/O to wait for, so requests run it
    /// directly under a lock (microseconds) instead of paying two thread hand-offs.
    Inline(Mutex<Option<Hsm>>),
}

struct Device {
    access: Access,
    health: Arc<DeviceHealth>,
    /// Held by the one tool using the device (see [`Lease`]).
    lease: Arc<tokio::sync::Mutex<()>>,
}

/// One operator tool's exclusive use of one device: while it is held no other tool's frame
/// reaches the device, and it is released when dropped (the tool's connection closed, it
/// said its operation ended, or it sat idle too long).
pub struct Lease {
    device: usize,
    /// The device's open count when the first frame ran; a frame that finds another count
    /// is refused with [`PoolError::Reopened`].
    generation: Option<u64>,
    _held: OwnedMutexGuard<()>,
}

/// The daemon's HSMs.
pub struct Pool {
    devices: Vec<Device>,
    next: AtomicUsize,
    /// An AEAD came for a kind of HSM the daemon has none of (logged once per kind).
    missing_kind_logged: [std::sync::atomic::AtomicBool; 2],
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Jobs a device may have waiting before new ones are refused.
    pub queue_depth: usize,
    /// Driver timeouts (per command).
    pub timeouts: Timeouts,
    /// Wait between reopen attempts of a device that dropped out.
    pub reopen_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            queue_depth: 256,
            timeouts: Timeouts::default(),
            reopen_interval: Duration::from_millis(250),
        }
    }
}

impl Pool {
    /// Starts one owner thread per serial backend (devices that cannot be opened yet are
    /// retried in the background; they do not stop the daemon from starting) and opens soft
    /// HSMs in place.
    pub fn start(backends: Vec<Backend>, cfg: PoolConfig) -> Pool {
        let devices = backends
            .into_iter()
            .map(|b| {
                let health = Arc::new(DeviceHealth::of_kind(b.name(), b.kind()));
                let lease = Arc::new(tokio::sync::Mutex::new(()));
                if let Backend::Soft(_) = &b {
                    let mut hsm = None;
                    if open(&b, &cfg, &mut hsm, &health) {
                        return Device {
                            access: Access::Inline(Mutex::new(hsm)),
                            health,
                            lease,
                        };
                    }
                    warn!("soft HSM failed to start; serving it through an owner thread");
                }
                let (tx, rx) = sync_channel(cfg.queue_depth);
                let h = health.clone();
                let thread = std::thread::Builder::new().name(format!("hsm-owner {}", health.name));
                match b {
                    Backend::Hsm2(b2) => {
                        thread.spawn(move || hsm2_owner::owner(b2, rx, h, cfg.reopen_interval))
                    }
                    b => thread.spawn(move || owner(b, rx, h, cfg)),
                }
                .expect("spawn HSM owner thread");
                Device {
                    access: Access::Owner(tx),
                    health,
                    lease,
                }
            })
            .collect();
        Pool {
            devices,
            next: AtomicUsize::new(0),
            missing_kind_logged: Default::default(),
        }
    }

    /// Health of every device.
    pub fn health(&self) -> Vec<Arc<DeviceHealth>> {
        self.devices.iter().map(|d| d.health.clone()).collect()
    }

    /// Devices of `kind` to try, healthiest and least busy first, starting at a rotating
    /// index so load spreads evenly.
    fn order(&self, kind: DeviceKind) -> Vec<&Device> {
        let n = self.devices.len();
        if n == 1 {
            // Nothing to spread: spare every request the shared counter.
            return self
                .devices
                .iter()
                .filter(|d| d.health.kind == kind)
                .collect();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut v: Vec<&Device> = (0..n)
            .map(|i| &self.devices[(start + i) % n])
            .filter(|d| d.health.kind == kind)
            .collect();
        v.sort_by_key(|d| {
            (
                d.health.state() as u8,
                d.health.queued.load(Ordering::Relaxed),
            )
        });
        v
    }

    /// Decodes an OTP on some device that opens `aead` before `deadline`. No such device
    /// configured is [`PoolError::Unavailable`]: another KSM may have one.
    pub async fn decode(
        &self,
        otp: Otp,
        aead: DecodeAead,
        deadline: Instant,
    ) -> Result<OtpCounters, PoolError> {
        let mut last = PoolError::Unavailable;
        let mut overloaded = 0;
        let order = self.order(aead.kind());
        if order.is_empty()
            && !self.missing_kind_logged[aead.kind() as usize].swap(true, Ordering::Relaxed)
        {
            warn!(
                kind = aead.kind().name(),
                "an AEAD only this kind of HSM opens was looked up, and no such device is configured (-D); such requests answer ERR HSM unavailable"
            );
        }
        for dev in &order {
            if dev.health.state() == DeviceState::Down
                && order.iter().any(|d| d.health.state() != DeviceState::Down)
            {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(PoolError::Timeout);
            }
            let (reply, rx) = oneshot::channel();
            let job = match aead {
                DecodeAead::Hsm1 {
                    key_handle,
                    nonce,
                    aead,
                } => {
                    if let Access::Inline(m) = &dev.access {
                        let mut hsm = m.lock().unwrap_or_else(|p| p.into_inner());
                        return decode_on(&mut hsm, &dev.health, &otp, key_handle, nonce, &aead);
                    }
                    Job::Decode {
                        otp: otp.clone(),
                        key_handle,
                        nonce,
                        aead,
                        deadline,
                        reply,
                    }
                }
                DecodeAead::Hsm2 { key_id, aead } => Job::Decode2 {
                    otp: otp.ciphertext,
                    key_id,
                    aead,
                    deadline,
                    reply,
                },
            };
            match submit(dev, job) {
                Ok(()) => {}
                Err(PoolError::Overloaded) => {
                    overloaded += 1;
                    continue;
                }
                Err(e) => {
                    last = e;
                    continue;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(Ok(d))) => return Ok(d),
                // A refusal about this OTP or AEAD is the answer; another device would agree.
                Ok(Ok(Err(e))) if e.is_verdict() => return Err(e),
                Ok(Ok(Err(e))) => last = e,
                Ok(Err(_)) => last = PoolError::Unavailable,
                Err(_) => return Err(PoolError::Timeout),
            }
        }
        if overloaded > 0 && overloaded == order.len() {
            return Err(PoolError::Overloaded);
        }
        Err(last)
    }

    /// [`Pool::decode`] with `first`, failing over to other AEADs of the same YubiKey: if
    /// the devices for `first` cannot serve (locked, unavailable, overloaded) and time is
    /// left, `fallbacks` is called (only then: it reads the store) and each AEAD it gives is
    /// tried in turn, on devices of its own kind, until one is served or gets a verdict.
    /// During a migration that keeps a YubiKey answering from its YubiHSM 1 AEAD while the
    /// YubiHSM 2 is locked after a reboot. A verdict is never failed over (another key's
    /// AEAD for the same YubiKey would only repeat it), nor a timeout (no time is left).
    /// Returns the result and which fallback served (`None`: `first`, or none did, the
    /// result then being `first`'s).
    pub async fn decode_failover<F, Fut>(
        &self,
        otp: Otp,
        first: DecodeAead,
        fallbacks: F,
        deadline: Instant,
    ) -> (Result<OtpCounters, PoolError>, Option<usize>)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Vec<DecodeAead>>,
    {
        fn device_condition(r: &Result<OtpCounters, PoolError>) -> bool {
            matches!(
                r,
                Err(PoolError::Locked | PoolError::Unavailable | PoolError::Overloaded)
            )
        }
        let r = self.decode(otp.clone(), first, deadline).await;
        if !device_condition(&r) || Instant::now() >= deadline {
            return (r, None);
        }
        for (i, next) in fallbacks().await.into_iter().enumerate() {
            if Instant::now() >= deadline {
                break;
            }
            let again = self.decode(otp.clone(), next, deadline).await;
            if !device_condition(&again) {
                return (again, Some(i));
            }
        }
        (r, None)
    }

    /// Hands a YubiHSM 2's authentication key (derived from the password
    /// `ksm keystore-unlock` gave) to device `index`, which checks it by opening a session
    /// and keeps it if the device takes it, or unchecked if it cannot be reached now.
    pub async fn unlock(
        &self,
        index: usize,
        key: hsm2_proto::AuthKey,
        deadline: Instant,
    ) -> Result<Unlocked, PoolError> {
        let dev = self.devices.get(index).ok_or(PoolError::Unavailable)?;
        if dev.health.kind != DeviceKind::YubiHsm2 {
            return Err(PoolError::WrongKind);
        }
        let (reply, rx) = oneshot::channel();
        submit(
            dev,
            Job::Unlock {
                key,
                deadline,
                reply,
            },
        )?;
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PoolError::Unavailable),
            Err(_) => Err(PoolError::Timeout),
        }
    }

    /// Reopens every device (SIGHUP): serial devices are closed and opened again by their
    /// owners, running the start-up checks and the lock probe; the soft HSM, which has no
    /// line, is probed. A full queue skips its device (it is plainly in use).
    pub fn reopen_all(&self) {
        for dev in &self.devices {
            match &dev.access {
                Access::Inline(m) => {
                    probe_lock(
                        &mut m.lock().unwrap_or_else(|p| p.into_inner()),
                        &dev.health,
                    );
                }
                Access::Owner(_) => {
                    let _ = submit(dev, Job::Reopen);
                }
            }
        }
    }

    /// Takes device `index` for one tool (sharing socket: tools address each device, since
    /// an unlock must reach every one of them), waiting up to `wait` for the tool that has
    /// it. Leases are granted in the order they were asked for.
    pub async fn lease(&self, index: usize, wait: Duration) -> Result<Lease, PoolError> {
        let dev = self.devices.get(index).ok_or(PoolError::Unavailable)?;
        let held = tokio::time::timeout(wait, dev.lease.clone().lock_owned())
            .await
            .map_err(|_| PoolError::Busy)?;
        Ok(Lease {
            device: index,
            generation: None,
            _held: held,
        })
    }

    /// Runs a tool's request frame on the leased device and returns the response frame.
    pub async fn frame(
        &self,
        lease: &mut Lease,
        frame: ToolFrame,
        deadline: Instant,
    ) -> Result<Vec<u8>, PoolError> {
        let dev = self
            .devices
            .get(lease.device)
            .ok_or(PoolError::Unavailable)?;
        let (resp, generation) = if let Access::Inline(m) = &dev.access {
            let mut hsm = m.lock().unwrap_or_else(|p| p.into_inner());
            run_frame(&mut hsm, &dev.health, &frame, lease.generation)?
        } else {
            let (reply, rx) = oneshot::channel();
            let generation = lease.generation;
            submit(
                dev,
                Job::Frame {
                    frame,
                    generation,
                    deadline,
                    reply,
                },
            )?;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err(PoolError::Unavailable),
                Err(_) => return Err(PoolError::Timeout),
            }
        };
        lease.generation = Some(generation);
        Ok(resp)
    }
}

/// Decodes on an open device (either access path).
fn decode_on(
    hsm: &mut Option<Hsm>,
    health: &DeviceHealth,
    otp: &Otp,
    key_handle: KeyHandle,
    nonce: Nonce,
    aead: &YubiKeyAead,
) -> Result<OtpCounters, PoolError> {
    let Some(h) = hsm.as_mut() else {
        return Err(PoolError::Unavailable);
    };
    match h.decode_otp(otp, key_handle, nonce, aead) {
        Ok(d) => {
            if health.state() == DeviceState::Locked {
                health.set(DeviceState::Up);
            }
            Ok(d.counters())
        }
        Err(e) => Err(classify(e, hsm, health)),
    }
}

/// Runs a tool's frame under a lease whose first frame ran at open count `generation`;
/// returns the response and the open count it ran under. Only the device's own failures
/// change its state; after an unlock attempt, succeeded or not, the lock state is probed.
fn run_frame(
    hsm: &mut Option<Hsm>,
    health: &DeviceHealth,
    frame: &ToolFrame,
    generation: Option<u64>,
) -> Result<(Vec<u8>, u64), PoolError> {
    let now = health.opens.load(Ordering::SeqCst);
    if generation.is_some_and(|g| g != now) {
        return Err(PoolError::Reopened);
    }
    let result = match hsm.as_mut() {
        Some(h) => h.exchange_frame(frame.bytes()),
        None => return Err(PoolError::Unavailable),
    };
    let result = result.map_err(|e| classify(e, hsm, health));
    if frame.unlocks() {
        probe_lock(hsm, health);
    }
    result.map(|resp| (resp, now))
}

/// Asks an open device whether its key store is locked and records the answer, so
/// `/health` and `/metrics` tell the truth before any OTP arrives. False if the line
/// failed (the device is then down).
fn probe_lock(hsm: &mut Option<Hsm>, health: &DeviceHealth) -> bool {
    let Some(h) = hsm.as_mut() else {
        return false;
    };
    match h.is_locked() {
        Ok(locked) => {
            health.set(if locked {
                DeviceState::Locked
            } else {
                DeviceState::Up
            });
            true
        }
        Err(e) => {
            classify(e, hsm, health);
            false
        }
    }
}

fn submit(dev: &Device, job: Job) -> Result<(), PoolError> {
    let Access::Owner(tx) = &dev.access else {
        return Err(PoolError::Unavailable);
    };
    dev.health.queued.fetch_add(1, Ordering::SeqCst);
    match tx.try_send(job) {
        Ok(()) => Ok(()),
        Err(e) => {
            dev.health.queued.fetch_sub(1, Ordering::SeqCst);
            Err(match e {
                TrySendError::Full(_) => PoolError::Overloaded,
                TrySendError::Disconnected(_) => PoolError::Unavailable,
            })
        }
    }
}

/// How many times a decode is tried on a line that fails under it (see `run_job`).
const DECODE_ATTEMPTS: u32 = 3;

/// How long an open device may sit without a job before its owner asks it whether its key
/// store is locked. A power cycle (a brown-out, a hub that resets its port) can leave the
/// line open and the key store locked: without the probe `/health` would say `up` until
/// the next decode found out, and an idle KSM is exactly the one nobody decodes on.
const IDLE_PROBE: Duration = Duration::from_secs(2);

/// The owner thread: the only code that touches this device.
fn owner(backend: Backend, rx: Receiver<Job>, health: Arc<DeviceHealth>, cfg: PoolConfig) {
    let mut hsm: Option<Hsm> = None;
    let mut next_open = Instant::now();
    // When the device last answered a job or a probe.
    let mut last_used = Instant::now();
    loop {
        if hsm.is_none() && Instant::now() >= next_open && !open(&backend, &cfg, &mut hsm, &health)
        {
            next_open = Instant::now() + cfg.reopen_interval;
        }
        let wait = if hsm.is_none() {
            cfg.reopen_interval
        } else {
            IDLE_PROBE.saturating_sub(last_used.elapsed())
        };
        let job = match rx.recv_timeout(wait) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: the lock probe changes nothing on the device (see Hsm::is_locked),
                // so it may run between a tool's frames too.
                if hsm.is_some() && last_used.elapsed() >= IDLE_PROBE {
                    probe_lock(&mut hsm, &health);
                    last_used = Instant::now();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        run_job(job, &mut hsm, &health, &|hsm: &mut Option<Hsm>| {
            open(&backend, &cfg, hsm, &health)
        });
        last_used = Instant::now();
        health.queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Opens the device into `hsm` and probes its lock state; false (and the reason recorded)
/// if it cannot be opened.
fn open(backend: &Backend, cfg: &PoolConfig, hsm: &mut Option<Hsm>, health: &DeviceHealth) -> bool {
    match backend.open(cfg.timeouts) {
        Ok(h) => {
            health.opens.fetch_add(1, Ordering::SeqCst);
            info!(device = %health.name, "YubiHSM opened");
            *hsm = Some(h);
            probe_lock(hsm, health)
        }
        Err(e) => {
            // Log each new reason once, not every retry.
            if last_error_changed(health, &e) {
                warn!(device = %health.name, error = %e, "YubiHSM unavailable; retrying");
            }
            health.line_error(&e);
            health.set(DeviceState::Down);
            false
        }
    }
}

fn last_error_changed(health: &DeviceHealth, e: &HsmError) -> bool {
    health.last_error() != e.to_string()
}

fn classify(e: HsmError, hsm: &mut Option<Hsm>, health: &DeviceHealth) -> PoolError {
    if e.status() == Some(Status::KeyStorageLocked) {
        health.set(DeviceState::Locked);
        return PoolError::Locked;
    }
    if e.is_link_error() {
        warn!(device = %health.name, error = %e, "YubiHSM line failed; reopening");
        health.line_error(&e);
        *hsm = None;
        health.set(DeviceState::Down);
        return if matches!(e, HsmError::Timeout { .. }) {
            PoolError::Timeout
        } else {
            PoolError::Unavailable
        };
    }
    PoolError::Hsm(e)
}

/// Runs one job. `reopen` opens the device again after a line failure.
fn run_job(
    job: Job,
    hsm: &mut Option<Hsm>,
    health: &DeviceHealth,
    reopen: &dyn Fn(&mut Option<Hsm>) -> bool,
) {
    match job {
        Job::Decode {
            otp,
            key_handle,
            nonce,
            aead,
            deadline,
            reply,
        } => {
            let decode = |hsm: &mut Option<Hsm>| {
                if Instant::now() >= deadline {
                    return Err(PoolError::Timeout);
                }
                decode_on(hsm, health, &otp, key_handle, nonce, &aead)
            };
            let was_open = hsm.is_some();
            let mut result = decode(hsm);
            // The line failed under this request (noise, a confused device): resynchronise
            // and try again, a few times while the deadline allows (on a loaded machine the
            // tail of a burst of noise can still be arriving when the first retry starts). A
            // decode changes nothing on the HSM, so repeating it is safe. A timeout is not
            // retried (a stalled device would only stall again), nor is a device that was
            // already down (the owner loop keeps reopening that), nor one that will not reopen.
            let mut attempts = 1;
            while was_open
                && attempts < DECODE_ATTEMPTS
                && result == Err(PoolError::Unavailable)
                && hsm.is_none()
                && Instant::now() < deadline
                && reopen(hsm)
            {
                result = decode(hsm);
                attempts += 1;
            }
            let _ = reply.send(result);
        }
        Job::Frame {
            frame,
            generation,
            deadline,
            reply,
        } => {
            let result = if Instant::now() >= deadline {
                Err(PoolError::Timeout)
            } else {
                run_frame(hsm, health, &frame, generation)
            };
            let _ = reply.send(result);
        }
        Job::Reopen => {
            *hsm = None;
            reopen(hsm);
        }
        // YubiHSM 2 work: the router never sends it here.
        Job::Decode2 { reply, .. } => {
            let _ = reply.send(Err(PoolError::WrongKind));
        }
        Job::Unlock { reply, .. } => {
            let _ = reply.send(Err(PoolError::WrongKind));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::daemon::hsm2_owner::tests::{aeads, backend, emulator, line, rt, soon, PASSWORD};

    fn wait_for(pool: &Pool, states: &[DeviceState]) {
        let until = Instant::now() + Duration::from_secs(10);
        while pool
            .health()
            .iter()
            .zip(states)
            .any(|(h, s)| h.state() != *s)
        {
            assert!(Instant::now() < until, "devices never reached {states:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn verdicts_end_the_request_and_device_conditions_fail_over() {
        use hsm2_proto::{CommandCode, Error as E, ErrorCode as C};
        let dev = |code| {
            PoolError::Hsm2(E::Device {
                cmd: CommandCode::DecryptOtp,
                code,
            })
        };
        for code in [C::InvalidOtp, C::InvalidData, C::WrongLength] {
            assert!(dev(code).is_verdict(), "{code:?}");
        }
        for code in [
            C::ObjectNotFound,
            C::InsufficientPermissions,
            C::InvalidSession,
            C::SessionsFull,
        ] {
            assert!(!dev(code).is_verdict(), "{code:?}");
        }
        assert!(!PoolError::Hsm2(E::Mac).is_verdict());
        for e in [
            PoolError::Locked,
            PoolError::Unavailable,
            PoolError::Overloaded,
            PoolError::Timeout,
        ] {
            assert!(!e.is_verdict(), "{e:?}");
        }
    }

    /// Two YubiHSM 2s, one locked: a tampered OTP gets the unlocked one's verdict, not the
    /// locked one's state, whichever device the rotation starts with.
    #[test]
    fn a_forged_otp_is_refused_once_not_retried_on_a_locked_device() {
        let up = emulator("");
        let locked = emulator("");
        let pool = Pool::start(
            vec![
                backend(up.url(), Some(PASSWORD), 1),
                backend(locked.url(), None, 1),
            ],
            PoolConfig::default(),
        );
        wait_for(&pool, &[DeviceState::Up, DeviceState::Locked]);
        let rt = rt();
        let (_, a2) = aeads(0);
        for ctr in 1..5 {
            let otp = Otp::parse(&test_support::vector_otp(0, ctr, 1)).unwrap();
            let mut bad = otp.clone();
            bad.ciphertext[3] ^= 1;
            assert_eq!(
                line(rt.block_on(pool.decode(bad, a2, soon()))),
                "ERR Corrupt OTP"
            );
            assert_eq!(
                line(rt.block_on(pool.decode(otp, a2, soon()))),
                format!("OK counter={ctr:04x} low=4242 high=17 use=01")
            );
        }
    }

    /// A transport whose device answers every command with error frame `code`: what a
    /// broken or hostile connector can send before any session authenticates it.
    struct Refuses(u8);

    impl hsm2_proto::transport::Transport for Refuses {
        fn exchange(
            &mut self,
            _: &hsm2_proto::codec::Frame,
        ) -> hsm2_proto::Result<hsm2_proto::codec::Frame> {
            hsm2_proto::codec::Frame::parse(&[0x7f, 0x00, 0x01, self.0])
        }
    }

    /// A session the device will not open, for any reason the owner does not handle, is
    /// the device being unusable (503, counted as an open error), never a verdict on the
    /// OTP made of unauthenticated bytes.
    #[test]
    fn an_unauthenticated_refusal_to_open_a_session_is_unavailable() {
        for code in [0x0f, 0x02, 0x08, 0x01] {
            let pool = Pool::start(
                vec![Backend::Hsm2(crate::daemon::hsm2_owner::Hsm2Backend {
                    name: format!("refuses {code:#x}"),
                    open: Arc::new(move || {
                        Ok(Box::new(Refuses(code)) as Box<dyn hsm2_proto::transport::Transport>)
                    }),
                    auth_key_id: ObjectId(2),
                    key: Some(hsm2_proto::AuthKey::from_password(PASSWORD.as_bytes())),
                    sessions: 1,
                    reload_key: None,
                    refused_retry: crate::daemon::hsm2_owner::REFUSED_RETRY,
                    keepalive: crate::daemon::hsm2_owner::KEEPALIVE,
                })],
                PoolConfig::default(),
            );
            let (_, a2) = aeads(0);
            let otp = Otp::parse(&test_support::vector_otp(0, 1, 1)).unwrap();
            let r = rt().block_on(pool.decode(otp, a2, soon()));
            assert_eq!(r, Err(PoolError::Unavailable), "code {code:#x}");
            assert_eq!(line(r), "ERR HSM unavailable");
            let h = &pool.health()[0];
            let opens = h
                .line_errors()
                .find(|(k, _)| *k == crate::daemon::health::LineError::Open)
                .map(|(_, n)| n);
            assert!(opens >= Some(1), "code {code:#x}: {opens:?}");
        }
    }

    /// A stalled YubiHSM 2 holds its owner thread only until the request it serves gives
    /// up, not a transport timeout (5 s here) per exchange: the device's queue is empty
    /// again by the deadline, while the device still stalls, and once the stall ends the
    /// next request is served at once.
    #[test]
    fn a_stalled_exchange_ends_at_the_request_deadline() {
        use hsm2_proto::transport::{Connector, HttpTimeouts, Transport};
        let emu = emulator("");
        let url = emu.url();
        let pool = Pool::start(
            vec![Backend::Hsm2(crate::daemon::hsm2_owner::Hsm2Backend {
                name: url.clone(),
                open: Arc::new(move || {
                    let timeouts = HttpTimeouts {
                        connect: Duration::from_secs(2),
                        answer: Duration::from_secs(5),
                    };
                    Ok(Box::new(Connector::open(&url, timeouts)?) as Box<dyn Transport>)
                }),
                auth_key_id: ObjectId(2),
                key: Some(hsm2_proto::AuthKey::from_password(PASSWORD.as_bytes())),
                sessions: 1,
                reload_key: None,
                refused_retry: crate::daemon::hsm2_owner::REFUSED_RETRY,
                keepalive: crate::daemon::hsm2_owner::KEEPALIVE,
            })],
            PoolConfig::default(),
        );
        wait_for(&pool, &[DeviceState::Up]);
        let rt = rt();
        let (_, a2) = aeads(0);
        let otp = Otp::parse(&test_support::vector_otp(0, 3, 3)).unwrap();
        emu.set_stall(true);
        let deadline = Instant::now() + Duration::from_millis(300);
        let r = rt.block_on(pool.decode(otp.clone(), a2, deadline));
        assert_eq!(r, Err(PoolError::Timeout));
        let h = pool.health()[0].clone();
        let until = deadline + Duration::from_millis(500);
        while h.queued.load(Ordering::SeqCst) != 0 {
            assert!(
                Instant::now() < until,
                "the owner thread is still waiting on the stalled device"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        emu.set_stall(false);
        let start = Instant::now();
        let mut got = String::new();
        while start.elapsed() < Duration::from_secs(2) {
            got = line(rt.block_on(pool.decode(otp.clone(), a2, soon())));
            if got.starts_with("OK") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, "OK counter=0003 low=4242 high=17 use=03");
    }

    /// A migrated YubiKey's YubiHSM 2 AEAD, the YubiHSM 2 locked: its YubiHSM 1 AEAD is
    /// tried on the YubiHSM 1, good and tampered OTPs alike; with nothing to fall back on
    /// it stays `ERR HSM locked`. Once the YubiHSM 2 serves, its verdict is the answer and
    /// the store is not even asked for fallbacks.
    #[test]
    fn a_locked_yubihsm2_fails_over_to_the_yubikeys_yubihsm1_aead_never_on_a_verdict() {
        use std::sync::atomic::AtomicBool;
        let emu = emulator("");
        let pool = Pool::start(
            vec![
                Backend::Soft(Box::new(crate::device::demo_config().unwrap())),
                backend(emu.url(), None, 1),
            ],
            PoolConfig::default(),
        );
        wait_for(&pool, &[DeviceState::Up, DeviceState::Locked]);
        let rt = rt();
        let (a1, a2) = aeads(0);
        let asked = AtomicBool::new(false);
        let failover = |otp: Otp, more: Vec<DecodeAead>| {
            asked.store(false, Ordering::SeqCst);
            let (r, served) = rt.block_on(pool.decode_failover(
                otp,
                a2,
                || async {
                    asked.store(true, Ordering::SeqCst);
                    more
                },
                soon(),
            ));
            (line(r), served)
        };
        let otp = Otp::parse(&test_support::vector_otp(0, 5, 1)).unwrap();
        let mut bad = otp.clone();
        bad.ciphertext[3] ^= 1;
        let good = "OK counter=0005 low=4242 high=17 use=01".to_string();
        assert_eq!(failover(otp.clone(), vec![a1]), (good.clone(), Some(0)));
        assert_eq!(
            failover(bad.clone(), vec![a1]),
            ("ERR Corrupt OTP".into(), Some(0))
        );
        assert_eq!(
            failover(otp.clone(), vec![]),
            ("ERR HSM locked".into(), None)
        );
        assert!(asked.load(Ordering::SeqCst));
        let key = hsm2_proto::AuthKey::from_password(PASSWORD.as_bytes());
        assert!(rt.block_on(pool.unlock(1, key, soon())).is_ok());
        assert_eq!(failover(otp, vec![a1]), (good, None));
        assert!(!asked.load(Ordering::SeqCst));
        assert_eq!(failover(bad, vec![a1]), ("ERR Corrupt OTP".into(), None));
        assert!(
            !asked.load(Ordering::SeqCst),
            "a verdict is not failed over"
        );
    }
}
