//! The HSMs the daemon decodes with, each owned by one thread.
//!
//! An HSM runs strictly one request at a time, so each device gets one owner thread
//! ([`crate::daemon::owner`]); everything else talks to that thread through a bounded
//! queue. A full queue is refused at once (the validator moves on to its next KSM
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
//! YubiHSM 2 devices sit in the same pool, each with its own owner thread running the same
//! loop ([`crate::daemon::hsm2_owner`]: a session pool, re-authentication, the locked
//! state). Each AEAD names the kind of HSM that opens it ([`DecodeAead`]), and goes only to
//! devices of that kind, with the same spreading and failover among them. A verdict on the
//! OTP or AEAD ([`PoolError::is_verdict`]) ends a request at once; only device conditions
//! move it on. During a migration a YubiKey may have an AEAD under each kind's key: when the
//! devices for the first cannot serve, [`Pool::decode_failover`] tries the next.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsm_proto::emulator::ResolvedConfig;
use hsm_proto::otp::{Otp, OtpCounters};
use hsm_proto::Timeouts;
use tokio::sync::{oneshot, OwnedMutexGuard};
use tracing::warn;

use crate::daemon::health::{DeviceHealth, DeviceKind, DeviceState};
use crate::daemon::hsm1_owner::{Hsm1, Hsm1Aead, Hsm1Line};
use crate::daemon::hsm2_owner::{Hsm2, Hsm2Aead, Hsm2Backend};
use crate::daemon::owner::{self, Control, Job, PoolError, Unlocked};
use crate::daemon::tool_frame::ToolFrame;

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
}

/// An AEAD as the device that opens it needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeAead {
    /// A YubiHSM 1 AEAD (pyhsm's): its key handle, nonce and 30 bytes.
    Hsm1(Hsm1Aead),
    /// A YubiHSM 2 OTP AEAD and the otp-aead-key that opens it.
    Hsm2(Hsm2Aead),
}

impl DecodeAead {
    /// The kind of HSM that opens it.
    pub fn kind(&self) -> DeviceKind {
        match self {
            DecodeAead::Hsm1(_) => DeviceKind::YubiHsm1,
            DecodeAead::Hsm2(_) => DeviceKind::YubiHsm2,
        }
    }
}

/// How requests reach a device.
enum Access {
    /// A YubiHSM 1 on a serial line: its owner thread, through a bounded queue.
    Hsm1(SyncSender<Job<Hsm1Aead>>),
    /// A YubiHSM 2: its owner thread, through a bounded queue.
    Hsm2(SyncSender<Job<Hsm2Aead>>),
    /// The in-process soft HSM: no line to own and no I/O to wait for, so requests run it
    /// directly under a lock (microseconds) instead of paying two thread hand-offs.
    Inline(Mutex<Hsm1>),
}

impl Access {
    /// Queues `control` for the device's owner thread.
    fn control(&self, health: &DeviceHealth, control: Control) -> Result<(), PoolError> {
        match self {
            Access::Hsm1(tx) => submit(tx, health, Job::Control(control)),
            Access::Hsm2(tx) => submit(tx, health, Job::Control(control)),
            Access::Inline(_) => Err(PoolError::Unavailable),
        }
    }
}

/// One device of the pool.
struct Member {
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
    devices: Vec<Member>,
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
                let access = match b {
                    Backend::Hsm2(b2) => Access::Hsm2(spawn(Hsm2::new(b2, health.clone()), &cfg)),
                    Backend::Serial(p) => {
                        let dev = Hsm1::new(Hsm1Line::Serial(p), cfg.timeouts, health.clone());
                        Access::Hsm1(spawn(dev, &cfg))
                    }
                    Backend::Soft(c) => {
                        let mut dev = Hsm1::new(Hsm1Line::Soft(c), cfg.timeouts, health.clone());
                        if owner::Device::open(&mut dev) {
                            Access::Inline(Mutex::new(dev))
                        } else {
                            warn!("soft HSM failed to start; serving it through an owner thread");
                            Access::Hsm1(spawn(dev, &cfg))
                        }
                    }
                };
                Member {
                    access,
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
    fn order(&self, kind: DeviceKind) -> Vec<&Member> {
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
        let mut v: Vec<&Member> = (0..n)
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
            let queued = match (&dev.access, aead) {
                (Access::Inline(m), DecodeAead::Hsm1(aead)) => {
                    let mut hsm = m.lock().unwrap_or_else(|p| p.into_inner());
                    return owner::decode(&mut *hsm, &otp, &aead, deadline);
                }
                (Access::Hsm1(tx), DecodeAead::Hsm1(aead)) => submit(
                    tx,
                    &dev.health,
                    Job::decode(otp.clone(), aead, deadline, reply),
                ),
                (Access::Hsm2(tx), DecodeAead::Hsm2(aead)) => submit(
                    tx,
                    &dev.health,
                    Job::decode(otp.clone(), aead, deadline, reply),
                ),
                // `order` gives only devices of the AEAD's kind.
                _ => Err(PoolError::WrongKind),
            };
            match queued {
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
        let unlock = Control::Unlock {
            key,
            deadline,
            reply,
        };
        dev.access.control(&dev.health, unlock)?;
        answer(rx, deadline).await
    }

    /// Reopens every device (SIGHUP): serial devices are closed and opened again by their
    /// owners, running the start-up checks and the lock probe; the soft HSM, which has no
    /// line, is probed. A full queue skips its device (it is plainly in use).
    pub fn reopen_all(&self) {
        for dev in &self.devices {
            match &dev.access {
                Access::Inline(m) => {
                    m.lock().unwrap_or_else(|p| p.into_inner()).probe_lock();
                }
                access => {
                    let _ = access.control(&dev.health, Control::Reopen);
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
            owner::Device::frame(&mut *hsm, &frame, lease.generation)?
        } else {
            let (reply, rx) = oneshot::channel();
            let job = Control::Frame {
                frame,
                generation: lease.generation,
                deadline,
                reply,
            };
            dev.access.control(&dev.health, job)?;
            answer(rx, deadline).await?
        };
        lease.generation = Some(generation);
        Ok(resp)
    }
}

/// Puts `job` on an owner thread's queue: refused at once when the queue is full.
fn submit<A>(tx: &SyncSender<Job<A>>, health: &DeviceHealth, job: Job<A>) -> Result<(), PoolError> {
    health.queued.fetch_add(1, Ordering::SeqCst);
    match tx.try_send(job) {
        Ok(()) => Ok(()),
        Err(e) => {
            health.queued.fetch_sub(1, Ordering::SeqCst);
            Err(match e {
                TrySendError::Full(_) => PoolError::Overloaded,
                TrySendError::Disconnected(_) => PoolError::Unavailable,
            })
        }
    }
}

/// The owner thread's answer to a job, if it comes by `deadline`.
async fn answer<T>(
    rx: oneshot::Receiver<Result<T, PoolError>>,
    deadline: Instant,
) -> Result<T, PoolError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(PoolError::Unavailable),
        Err(_) => Err(PoolError::Timeout),
    }
}

/// Starts `dev`'s owner thread; returns its queue.
fn spawn<D: owner::Device>(dev: D, cfg: &PoolConfig) -> SyncSender<Job<D::Aead>> {
    let (tx, rx) = sync_channel(cfg.queue_depth);
    let reopen_interval = cfg.reopen_interval;
    std::thread::Builder::new()
        .name(format!("hsm-owner {}", dev.health().name))
        .spawn(move || owner::run(dev, rx, reopen_interval))
        .expect("spawn HSM owner thread");
    tx
}

#[cfg(test)]
mod hsm2_tests;
#[cfg(test)]
pub(crate) mod tests;
