//! The sharing socket: operator tools use the daemon's HSMs while it runs, the job pyhsm's
//! `yhsm-daemon` did. The daemon stays the only owner of each serial line; a tool's request
//! frames are queued to a device's owner thread like any decode.
//!
//! The socket is a unix socket (mode 0600, so only the daemon's user and root get in); its
//! protocol is written down once, with the tools' side of it, in [`crate::device::sharing`].
//!
//! `05` is `ksm keystore-unlock` for a YubiHSM 2: the password of the authentication key
//! the daemon's sessions use. The device's owner checks it by opening a session and keeps
//! it in memory only; a wrong one is answered `wrong password` and the device stays locked.
//! A device that cannot be reached now (its connector not up yet) keeps the password
//! unchecked and answers `not reachable now: password kept, checked when the device answers`.
//! Each wrong password leaves a half-open session on the device until it expires, so after
//! [`WRONG_PASSWORDS`] wrong ones within [`WRONG_PASSWORD_WINDOW`] a device refuses further
//! attempts at once, without touching the device, until the oldest is that old.
//!
//! Only root and the daemon's own user may use the socket: its mode says so, and every
//! connection's peer credentials (`SO_PEERCRED`) are checked too, so a socket made reachable
//! by mistake (a loose directory mode, a bind mount) still takes no secrets from others.
//!
//! **One tool at a time per device.** A tool's first frame to a device takes the device's
//! [`Lease`](crate::daemon::pool::Lease), waiting (up to [`SharingConfig::lease_wait`]) for the tool
//! that holds it; from then on no other tool's frame reaches that device until this tool
//! sends `03`, closes the connection, or sends nothing for [`SharingConfig::lease_idle`].
//! So a secret loaded into the device's buffer is sealed by the tool that loaded it, and an
//! unlock and its admin OTP are not split by another tool. A lease that lapsed while idle
//! is not silently taken again: the tool's next frame is refused until it sends `03`,
//! since another tool may have used the device meanwhile. Decodes need no lease.
//!
//! Every frame is checked ([`ToolFrame`]) before it is queued: a malformed frame or a
//! command outside the [`SocketPolicy`] is answered with an error and never reaches the
//! device, so it cannot be mistaken for a fault of the device.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use crate::daemon::owner::PoolError;
use crate::daemon::pool::{Lease, Pool};
use crate::daemon::tool_frame::ToolFrame;
use crate::device::sharing::{ERR, FRAME, LIST, LIST_KINDS, OK, PENDING, RELEASE, UNLOCK_HSM2};
use crate::settings::socket_policy::SocketPolicy;

/// How many wrong YubiHSM 2 passwords a device takes within [`WRONG_PASSWORD_WINDOW`]
/// before refusing further ones without asking it.
pub const WRONG_PASSWORDS: usize = 3;

/// A YubiHSM 2's session timeout: the half-open session a wrong password leaves holds a
/// slot this long, so attempts are counted over it.
pub const WRONG_PASSWORD_WINDOW: Duration = Duration::from_secs(30);

/// When each device was last given wrong passwords, shared by every connection.
type WrongPasswords = Arc<std::sync::Mutex<HashMap<u8, Vec<Instant>>>>;

/// How the socket treats tools.
#[derive(Debug, Clone, Copy)]
pub struct SharingConfig {
    /// Which commands are forwarded.
    pub policy: SocketPolicy,
    /// A lease lapses after this long without a message from its tool. Long enough for an
    /// operator to touch an admin YubiKey at `keystore-unlock`'s prompt; a tool that hangs
    /// keeps the others waiting no longer than this.
    pub lease_idle: Duration,
    /// How long a tool waits for another tool's lease before it is told the device is busy.
    /// Longer than `lease_idle`, so a waiting tool outlasts a stuck one.
    pub lease_wait: Duration,
    /// Deadline of one frame once the lease is held (`--reqtimeout`).
    pub reqtimeout: Duration,
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            policy: SocketPolicy::Tools,
            lease_idle: Duration::from_secs(60),
            lease_wait: Duration::from_secs(90),
            reqtimeout: Duration::from_secs(5),
        }
    }
}

/// Accepts tool connections until the listener fails or the task is dropped.
pub async fn serve(listener: UnixListener, pool: Arc<Pool>, cfg: SharingConfig) {
    let wrong: WrongPasswords = Arc::default();
    let me = nix::unistd::geteuid().as_raw();
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let cred = conn.peer_cred().ok();
        let peer = cred
            .map(|c| format!("uid {} pid {}", c.uid(), c.pid().unwrap_or(0)))
            .unwrap_or_else(|| "unknown peer".into());
        if !cred.is_some_and(|c| peer_trusted(c.uid(), me)) {
            warn!(peer = %peer, "sharing socket: refused a tool that is neither root nor the daemon's user");
            continue;
        }
        info!(peer = %peer, "operator tool connected to the sharing socket");
        let pool = pool.clone();
        let wrong = wrong.clone();
        tokio::spawn(async move {
            if let Err(e) = session(&mut conn, &pool, cfg, &wrong).await {
                debug!(error = %e, "sharing socket session ended");
            }
            debug!(peer = %peer, "operator tool disconnected");
        });
    }
}

/// True for a peer allowed on the socket: root, or the user the daemon runs as.
fn peer_trusted(uid: u32, me: u32) -> bool {
    uid == 0 || uid == me
}

/// One tool connection: its leases live exactly as long as this function's state.
async fn session(
    conn: &mut tokio::net::UnixStream,
    pool: &Pool,
    cfg: SharingConfig,
    wrong: &WrongPasswords,
) -> io::Result<()> {
    let mut leases: HashMap<u8, Lease> = HashMap::new();
    let mut lapsed: HashSet<u8> = HashSet::new();
    loop {
        let tag = if leases.is_empty() {
            conn.read_u8().await
        } else {
            match tokio::time::timeout(cfg.lease_idle, conn.read_u8()).await {
                Ok(t) => t,
                Err(_) => {
                    for (device, _) in leases.drain() {
                        warn!(
                            device,
                            "an operator tool sat idle holding a device; its lease lapsed"
                        );
                        lapsed.insert(device);
                    }
                    continue;
                }
            }
        };
        let tag = match tag {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let (code, payload) = match tag {
            LIST => {
                let list: String = pool
                    .health()
                    .iter()
                    .map(|d| format!("{} {}\n", d.name, d.state().name()))
                    .collect();
                (OK, Zeroizing::new(list.into_bytes()))
            }
            FRAME => {
                let device = conn.read_u8().await?;
                let len = conn.read_u8().await?;
                let mut bytes = Zeroizing::new(vec![0u8; usize::from(len)]);
                conn.read_exact(&mut bytes).await?;
                match tool_frame(pool, &cfg, &mut leases, &mut lapsed, device, &bytes).await {
                    Ok(resp) => (OK, Zeroizing::new(resp)),
                    Err(why) => (ERR, Zeroizing::new(why.into_bytes())),
                }
            }
            RELEASE => {
                let device = conn.read_u8().await?;
                leases.remove(&device);
                lapsed.remove(&device);
                continue;
            }
            LIST_KINDS => {
                let list: String = pool
                    .health()
                    .iter()
                    .map(|d| format!("{} {} {}\n", d.kind.name(), d.state().name(), d.name))
                    .collect();
                (OK, Zeroizing::new(list.into_bytes()))
            }
            UNLOCK_HSM2 => {
                let device = conn.read_u8().await?;
                let len = conn.read_u8().await?;
                let mut bytes = Zeroizing::new(vec![0u8; usize::from(len)]);
                conn.read_exact(&mut bytes).await?;
                match hand_over_password(pool, &cfg, wrong, device, &bytes).await {
                    Ok(text) => (OK, Zeroizing::new(text.as_bytes().to_vec())),
                    Err(why) => (ERR, Zeroizing::new(why.into_bytes())),
                }
            }
            other => {
                warn!(tag = other, "unknown request on the sharing socket");
                return Ok(());
            }
        };
        let mut msg = Zeroizing::new(Vec::with_capacity(payload.len() + 3));
        msg.push(code);
        msg.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        msg.extend_from_slice(&payload);
        conn.write_all(&msg).await?;
    }
}

/// Hands a YubiHSM 2 password to device `device`; the text is the tool's answer.
async fn hand_over_password(
    pool: &Pool,
    cfg: &SharingConfig,
    wrong: &WrongPasswords,
    device: u8,
    bytes: &[u8],
) -> Result<&'static str, String> {
    let password = std::str::from_utf8(bytes)
        .map(|p| Zeroizing::new(p.to_string()))
        .map_err(|_| "the password is not UTF-8 text".to_string())?;
    if password.is_empty() {
        return Err("no password given".into());
    }
    // The attempt is counted before the device is asked, so tools trying at the same time
    // cannot get past the limit together; it is uncounted unless the device refused it.
    let attempt = Instant::now();
    if let Some(wait) = too_many_wrong(wrong, device, attempt) {
        warn!(
            device,
            "keystore-unlock: too many wrong YubiHSM 2 passwords; attempt refused"
        );
        return Err(format!(
            "too many wrong passwords; retry in {} s",
            wait.as_secs().max(1)
        ));
    }
    // The session keys come from the password by PBKDF2, which takes a moment (long in a
    // debug build): derived here, off the device's owner thread, so its decodes go on.
    let key = tokio::task::spawn_blocking(move || {
        hsm2_proto::AuthKey::from_password(password.as_bytes())
    })
    .await
    .map_err(|_| "the password could not be derived".to_string())?;
    // Then the session takes two commands: a frame's deadline and a little more.
    let deadline = Instant::now() + cfg.reqtimeout + Duration::from_secs(1);
    match pool.unlock(usize::from(device), key, deadline).await {
        Ok(crate::daemon::owner::Unlocked::Now) => {
            info!(device, "YubiHSM 2 unlocked over the sharing socket");
            Ok("unlocked")
        }
        Ok(crate::daemon::owner::Unlocked::Already) => Ok("already unlocked"),
        Ok(crate::daemon::owner::Unlocked::Pending) => Ok(PENDING),
        Err(e) => {
            if e != PoolError::WrongPassword {
                uncount(wrong, device, attempt);
            }
            Err(pool_error_text(&e, cfg))
        }
    }
    .inspect(|_| uncount(wrong, device, attempt))
}

/// Takes back the attempt made at `at`: the device did not refuse it.
fn uncount(wrong: &WrongPasswords, device: u8, at: Instant) {
    if let Ok(mut w) = wrong.lock() {
        if let Some(times) = w.get_mut(&device) {
            if let Some(i) = times.iter().position(|t| *t == at) {
                times.remove(i);
            }
        }
    }
}

/// How long until device `device` takes another password, if it had
/// [`WRONG_PASSWORDS`] wrong ones (or attempts still being checked) within
/// [`WRONG_PASSWORD_WINDOW`] before `now`; else `None`, and the attempt at `now` is counted
/// (see [`uncount`]).
fn too_many_wrong(wrong: &WrongPasswords, device: u8, now: Instant) -> Option<Duration> {
    let mut w = wrong.lock().ok()?;
    let times = w.entry(device).or_default();
    times.retain(|t| now.saturating_duration_since(*t) < WRONG_PASSWORD_WINDOW);
    if times.len() < WRONG_PASSWORDS {
        times.push(now);
        return None;
    }
    let oldest = times.iter().min()?;
    Some(WRONG_PASSWORD_WINDOW.saturating_sub(now.saturating_duration_since(*oldest)))
}

/// Checks a tool's frame, takes the device's lease if this session has not, and runs it.
/// The error is the text the tool is answered with.
async fn tool_frame(
    pool: &Pool,
    cfg: &SharingConfig,
    leases: &mut HashMap<u8, Lease>,
    lapsed: &mut HashSet<u8>,
    device: u8,
    bytes: &[u8],
) -> Result<Vec<u8>, String> {
    let frame = ToolFrame::check(bytes, cfg.policy)?;
    if lapsed.contains(&device) {
        return Err(format!(
            "lease lapsed: this tool sent nothing for {}s, so another may have used the device; run it again",
            cfg.lease_idle.as_secs()
        ));
    }
    let lease = match leases.entry(device) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(
            pool.lease(usize::from(device), cfg.lease_wait)
                .await
                .map_err(|e| pool_error_text(&e, cfg))?,
        ),
    };
    match pool
        .frame(lease, frame, Instant::now() + cfg.reqtimeout)
        .await
    {
        Ok(resp) => Ok(resp),
        Err(e @ PoolError::Reopened) => {
            leases.remove(&device);
            lapsed.insert(device);
            Err(pool_error_text(&e, cfg))
        }
        Err(e) => Err(pool_error_text(&e, cfg)),
    }
}

fn pool_error_text(e: &PoolError, cfg: &SharingConfig) -> String {
    match e {
        PoolError::Hsm(e) => e.to_string(),
        PoolError::Locked => "HSM locked".into(),
        PoolError::Unavailable => "HSM unavailable".into(),
        PoolError::Timeout => "timeout".into(),
        PoolError::Overloaded => "overloaded".into(),
        PoolError::Busy => format!(
            "device busy: another operator tool has used it for the last {}s; try again later",
            cfg.lease_wait.as_secs()
        ),
        PoolError::Reopened => "the device was reopened (unplugged, power-cycled or a line failure) during this tool's operation; run it again".into(),
        PoolError::Hsm2(e) => e.to_string(),
        PoolError::WrongKind => "this device is of the other kind of YubiHSM: a YubiHSM 1 takes frames and its master key, a YubiHSM 2 its authentication key's password".into(),
        PoolError::WrongPassword => "wrong password: the YubiHSM 2 refused it, and stays locked".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::daemon::pool::{Backend, PoolConfig};
    use crate::device::sharing::{connect_trusted, read_reply, unlock_hsm2};
    use std::sync::mpsc;

    /// A daemon's sharing socket over `backend`, with short lease times.
    pub(crate) fn daemon_on(
        backend: Backend,
        lease_idle: Duration,
    ) -> (tempfile::TempDir, std::path::PathBuf, Arc<Pool>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ksm.sock");
        let (listener, _) = crate::private_socket::bind_private(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let pool = Arc::new(Pool::start(vec![backend], PoolConfig::default()));
        let p = pool.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let cfg = SharingConfig {
                    lease_idle,
                    lease_wait: Duration::from_secs(5),
                    ..SharingConfig::default()
                };
                serve(UnixListener::from_std(listener).unwrap(), p, cfg).await;
            });
        });
        (dir, path, pool)
    }

    /// The same over the demo soft HSM.
    fn daemon(lease_idle: Duration) -> (tempfile::TempDir, std::path::PathBuf) {
        let soft = Backend::Soft(Box::new(crate::device::demo_config().unwrap()));
        let (dir, path, _) = daemon_on(soft, lease_idle);
        (dir, path)
    }

    const SYSTEM_INFO: [u8; 2] = [1, 0x26];

    /// Sends a SYSTEM_INFO frame as a tool would, and reads the reply.
    /// A daemon whose one device is a YubiHSM 2 emulator (`emu`), returned once that device
    /// is in `state` (at most 10 s).
    pub(crate) fn hsm2_daemon_in(
        emu: &hsm2_proto::emulator::ConnectorEmulator,
        state: crate::daemon::health::DeviceState,
    ) -> (tempfile::TempDir, std::path::PathBuf, Arc<Pool>) {
        let backend = crate::daemon::pool::tests::backend(emu.url(), None, 1);
        let (dir, path, pool) = daemon_on(backend, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.health()[0].state() != state {
            assert!(Instant::now() < deadline, "never {state:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        (dir, path, pool)
    }

    pub(crate) fn frame(s: &mut UnixStream) -> io::Result<Zeroizing<Vec<u8>>> {
        s.write_all(&[FRAME, 0, SYSTEM_INFO.len() as u8])?;
        s.write_all(&SYSTEM_INFO)?;
        read_reply(s)
    }

    #[test]
    fn the_socket_appears_whole_and_private_never_created_in_place() {
        use inotify::{EventMask, Inotify, WatchMask};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut watch = Inotify::init().unwrap();
        watch
            .watches()
            .add(dir.path(), WatchMask::CREATE | WatchMask::MOVED_TO)
            .unwrap();
        let path = dir.path().join("ksm.sock");
        let (_listener, _) = crate::private_socket::bind_private(&path).unwrap();
        let mut buf = [0u8; 4096];
        let events: Vec<(EventMask, String)> = watch
            .read_events(&mut buf)
            .unwrap()
            .map(|e| (e.mask, e.name.unwrap_or_default().to_string_lossy().into()))
            .collect();
        // Created elsewhere (a private directory) and moved in: whoever sees the name sees
        // a socket that is already 0600, whatever the umask was.
        assert!(
            events.contains(&(EventMask::MOVED_TO, "ksm.sock".into())),
            "{events:?}"
        );
        assert!(
            !events
                .iter()
                .any(|(m, n)| m.contains(EventMask::CREATE) && n == "ksm.sock"),
            "{events:?}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "the private directory is gone");
    }

    #[test]
    fn a_second_tool_waits_until_the_first_ends_its_operation() {
        let (_dir, path) = daemon(Duration::from_secs(30));
        let mut first = connect_trusted(&path).unwrap();
        frame(&mut first).unwrap();
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let mut second = connect_trusted(&p).unwrap();
            let _ = tx.send(frame(&mut second).map(|r| r.len()));
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second tool got in while the first held the device"
        );
        // The first may go on meanwhile.
        frame(&mut first).unwrap();
        first.write_all(&[RELEASE, 0]).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("second served");
        assert!(got.is_ok());
    }

    #[test]
    fn an_idle_lease_lapses_and_its_tool_is_told_so() {
        let (_dir, path) = daemon(Duration::from_millis(200));
        let mut first = connect_trusted(&path).unwrap();
        frame(&mut first).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        // The device is free for another tool ...
        let mut second = connect_trusted(&path).unwrap();
        frame(&mut second).unwrap();
        drop(second);
        // ... and the first, whose operation may have been broken into, is refused until
        // it starts a new one.
        let err = frame(&mut first).unwrap_err().to_string();
        assert!(err.contains("lease lapsed"), "{err}");
        first.write_all(&[RELEASE, 0]).unwrap();
        frame(&mut first).unwrap();
    }

    /// Each wrong password leaves a half-open session on the device for its session
    /// timeout: after three, further attempts are refused without reaching the device.
    #[test]
    fn a_fourth_wrong_password_within_the_window_never_reaches_the_device() {
        use crate::daemon::pool::tests::{emulator, PASSWORD};
        let emu = emulator("");
        let (_dir, path, _pool) = hsm2_daemon_in(&emu, crate::daemon::health::DeviceState::Locked);
        for _ in 0..WRONG_PASSWORDS {
            let e = unlock_hsm2(&path, 0, "not the password").unwrap_err();
            assert!(e.to_string().contains("wrong password"), "{e}");
        }
        let half_open = emu.with_device(|d| d.open_sessions());
        for _ in 0..3 {
            let e = unlock_hsm2(&path, 0, "not the password").unwrap_err();
            assert!(
                e.to_string().contains("too many wrong passwords; retry in"),
                "{e}"
            );
            // The right one too: the device is not asked until the window has passed.
            let e = unlock_hsm2(&path, 0, PASSWORD).unwrap_err();
            assert!(e.to_string().contains("too many wrong passwords"), "{e}");
        }
        assert_eq!(emu.with_device(|d| d.open_sessions()), half_open);
    }

    #[test]
    fn the_wrong_password_window_counts_only_recent_attempts() {
        let wrong = WrongPasswords::default();
        let t0 = Instant::now();
        wrong.lock().unwrap().insert(
            1,
            vec![
                t0,
                t0 + Duration::from_secs(10),
                t0 + Duration::from_secs(20),
            ],
        );
        assert_eq!(
            too_many_wrong(&wrong, 1, t0 + Duration::from_secs(25)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(too_many_wrong(&wrong, 2, t0), None);
        // An attempt is counted while it is checked, and taken back unless refused.
        assert_eq!(wrong.lock().unwrap()[&2].len(), 1);
        uncount(&wrong, 2, t0);
        assert!(wrong.lock().unwrap()[&2].is_empty());
        assert_eq!(
            too_many_wrong(&wrong, 1, t0 + Duration::from_secs(31)),
            None
        );
    }

    #[test]
    fn only_root_and_the_daemons_user_are_trusted_peers() {
        assert!(peer_trusted(0, 1000));
        assert!(peer_trusted(1000, 1000));
        assert!(!peer_trusted(1001, 1000));
    }

    #[test]
    fn a_device_reopened_under_a_lease_refuses_the_leases_next_frame() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::device::demo_config().unwrap();
        let emu = hsm_proto::emulator::PtyEmulator::start(&cfg, &dir.path().join("tty")).unwrap();
        let serial = Backend::Serial(emu.link().to_path_buf());
        let (_dir, path, pool) = daemon_on(serial, Duration::from_secs(30));
        let mut tool = connect_trusted(&path).unwrap();
        frame(&mut tool).unwrap();
        // Reopened (a replug, a power cycle, SIGHUP) between two frames of an operation:
        // the device's buffer may be empty now, so the operation must not go on.
        pool.reopen_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.health()[0]
            .opens
            .load(std::sync::atomic::Ordering::SeqCst)
            < 2
        {
            assert!(Instant::now() < deadline, "never reopened");
            std::thread::sleep(Duration::from_millis(10));
        }
        let err = frame(&mut tool).unwrap_err().to_string();
        assert!(err.contains("reopened"), "{err}");
        // A new operation is fine.
        tool.write_all(&[RELEASE, 0]).unwrap();
        frame(&mut tool).unwrap();
    }
}
