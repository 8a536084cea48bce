//! Serves the emulator on a real pseudo-terminal, so the driver reaches it through the same
//! `serialport` code that opens `/dev/ttyACM0`.
//!
//! A symlink (the "link", e.g. `/tmp/yhsm`) points at the pty's slave side, the way udev
//! points `/dev/yubihsm` at `/dev/ttyACM0`. Unplugging removes the link and the pty;
//! plugging back in makes a new pty and points the link at it, so a driver that reopens the
//! link path finds the device again.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::openpty;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
use rand::RngCore;
use tracing::{debug, info, warn};

use super::{ConfigError, Engine, ResolvedConfig};
use crate::{Error, Result};

/// Run-time fault knobs.
#[derive(Debug, Default)]
struct Knobs {
    stall: bool,
    garbage: usize,
    unplug_for: Option<Duration>,
}

struct Shared {
    engine: Mutex<Engine>,
    knobs: Mutex<Knobs>,
    stop: AtomicBool,
    slave: Mutex<Option<PathBuf>>,
    plugged: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these values half-updated in a way that
    // matters to a test device; keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The most noise one fault puts on the line: far more than any resync drains, and a
/// bound on what a control command (or a configuration) can make the emulator allocate.
pub const MAX_GARBAGE: usize = 64 * 1024;

/// A software YubiHSM on a pty. Stops (and removes its link) when dropped.
pub struct PtyEmulator {
    shared: Arc<Shared>,
    link: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl PtyEmulator {
    /// Starts serving `cfg` on a new pty and points `link` at it. Refuses to replace
    /// anything at `link` that is not a symlink.
    pub fn start(cfg: &ResolvedConfig, link: &Path) -> Result<PtyEmulator, ConfigError> {
        if let Ok(m) = std::fs::symlink_metadata(link) {
            if !m.file_type().is_symlink() {
                return Err(ConfigError::LinkInTheWay(link.to_path_buf()));
            }
        }
        let shared = Arc::new(Shared {
            engine: Mutex::new(Engine::new(cfg)),
            knobs: Mutex::new(Knobs {
                stall: cfg.faults.stall,
                garbage: cfg.faults.garbage,
                unplug_for: None,
            }),
            stop: AtomicBool::new(false),
            slave: Mutex::new(None),
            plugged: AtomicBool::new(false),
        });
        let pty = Pty::open(link)?;
        *lock(&shared.slave) = Some(pty.slave_path.clone());
        shared.plugged.store(true, Ordering::SeqCst);
        let (s, l) = (shared.clone(), link.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("yhsm-emulator".into())
            .spawn(move || serve(s, l, pty))
            .map_err(|e| Error::Io(e.to_string()))?;
        Ok(PtyEmulator {
            shared,
            link: link.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// The symlink path drivers open.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The pty slave the link points at now (`/dev/pts/N`), if plugged in.
    pub fn slave_path(&self) -> Option<PathBuf> {
        lock(&self.shared.slave).clone()
    }

    /// Stall: take requests, never answer, until turned off.
    pub fn set_stall(&self, on: bool) {
        lock(&self.shared.knobs).stall = on;
    }

    /// Put `n` random bytes (at most [`MAX_GARBAGE`]) on the line ahead of the next
    /// response.
    pub fn inject_garbage(&self, n: usize) {
        lock(&self.shared.knobs).garbage = n.min(MAX_GARBAGE);
    }

    /// Unplug: the line closes and the link disappears; after `down_for` a new pty appears
    /// at the link, with the device freshly powered on (key store locked again if it has a
    /// master key).
    pub fn unplug(&self, down_for: Duration) {
        lock(&self.shared.knobs).unplug_for = Some(down_for);
    }

    /// True while plugged in.
    pub fn is_plugged(&self) -> bool {
        self.shared.plugged.load(Ordering::SeqCst)
    }

    /// Drop to the configuration console, as if the button had been held at plug-in.
    pub fn enter_config_mode(&self) {
        // The prompt is printed when the next byte arrives (the console answers input);
        // printing it now would sit unread in a buffer the driver's drain then discards.
        let _ = lock(&self.shared.engine).enter_console();
    }

    /// Power-cycle without unplugging (key store locks again).
    pub fn power_cycle(&self) {
        lock(&self.shared.engine).power_cycle();
    }

    /// Runs `f` on the engine (to inspect or adjust state in tests).
    pub fn with_engine<R>(&self, f: impl FnOnce(&mut Engine) -> R) -> R {
        f(&mut lock(&self.shared.engine))
    }

    /// Stops serving and removes the link.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PtyEmulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Pty {
    master: File,
    /// Held open so the line stays up (and its raw termios stays set) between driver opens.
    _slave: OwnedFd,
    slave_path: PathBuf,
}

impl Pty {
    fn open(link: &Path) -> Result<Pty> {
        let io = |e: nix::Error| Error::Io(format!("pty: {e}"));
        let p = openpty(None, None).map_err(io)?;
        let mut t = tcgetattr(&p.slave).map_err(io)?;
        cfmakeraw(&mut t);
        tcsetattr(&p.slave, SetArg::TCSANOW, &t).map_err(io)?;
        let slave_path = nix::unistd::ttyname(p.slave.as_fd()).map_err(io)?;
        point_link(link, &slave_path)?;
        info!(link = %link.display(), pty = %slave_path.display(), "emulated YubiHSM plugged in");
        Ok(Pty {
            master: File::from(p.master),
            _slave: p.slave,
            slave_path,
        })
    }
}

/// Points `link` at `target` atomically (new symlink, then rename over the old one).
fn point_link(link: &Path, target: &Path) -> Result<()> {
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .map_err(|e| Error::Io(format!("symlink {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, link).map_err(|e| Error::Io(format!("rename to {}: {e}", link.display())))
}

fn serve(shared: Arc<Shared>, link: PathBuf, first: Pty) {
    let mut pty = Some(first);
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(p) = pty.as_mut() else { break };
        match serve_once(&shared, p) {
            Ok(Some(down_for)) => {
                // Dropping the pty closes the master: the driver sees the line hang up.
                drop(pty.take());
                shared.plugged.store(false, Ordering::SeqCst);
                *lock(&shared.slave) = None;
                let _ = std::fs::remove_file(&link);
                info!(?down_for, "emulated YubiHSM unplugged");
                let until = Instant::now() + down_for;
                while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                lock(&shared.engine).power_cycle();
                match Pty::open(&link) {
                    Ok(p) => {
                        *lock(&shared.slave) = Some(p.slave_path.clone());
                        shared.plugged.store(true, Ordering::SeqCst);
                        pty = Some(p);
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot plug the emulated YubiHSM back in");
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "emulator line failed");
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&link);
}

/// Serves until stopped (`Ok(None)`) or unplugged (`Ok(Some(down_for))`).
fn serve_once(shared: &Shared, pty: &mut Pty) -> Result<Option<Duration>> {
    let mut buf = [0u8; 512];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if let Some(d) = lock(&shared.knobs).unplug_for.take() {
            return Ok(Some(d));
        }
        let mut fds = [PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(20u8)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::Io(format!("poll: {e}"))),
        }
        let n = match pty.master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: no slave open right now. We hold one, so this is transient; back off.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let (stall, garbage) = {
            let k = lock(&shared.knobs);
            (k.stall, k.garbage)
        };
        if stall {
            debug!(bytes = n, "stalled: request ignored");
            continue;
        }
        let reply = lock(&shared.engine).feed(&buf[..n]);
        if reply.is_empty() {
            continue;
        }
        if garbage > 0 {
            lock(&shared.knobs).garbage = 0;
            let mut junk = vec![0u8; garbage.min(MAX_GARBAGE)];
            rand::thread_rng().fill_bytes(&mut junk);
            // Never a valid header for the pending command, so the driver must notice.
            for b in junk.iter_mut() {
                *b |= 0x01;
                if *b & 0x80 != 0 {
                    *b &= 0x7f;
                }
            }
            pty.master
                .write_all(&junk)
                .map_err(|e| Error::Io(e.to_string()))?;
        }
        pty.master
            .write_all(&reply)
            .map_err(|e| Error::Io(e.to_string()))?;
    }
}
