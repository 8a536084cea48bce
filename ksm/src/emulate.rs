//! `ksm emulate`: a software YubiHSM on a pseudo-terminal, until SIGTERM or SIGINT.
//!
//! A control socket (unix, mode 0600) takes one command per line, so scripts and tests can
//! inject the faults a real site sees while a daemon uses the device:
//!
//! | line | effect |
//! |------|--------|
//! | `stall on` / `stall off` | take requests, never answer |
//! | `garbage N` | N random bytes on the line before the next answer |
//! | `unplug SECONDS` | the line closes and the link vanishes; back after SECONDS, freshly powered on |
//! | `config-mode` | drop to the configuration console (leave by typing `exit` on the line) |
//! | `power-cycle` | power off and on: the key store locks again if it has a master key; uncommitted key edits are lost |
//! | `mistype N` | the next N keys typed at the console's `keyload` are stored with one digit changed (an operator's typing error) |
//! | `status` | `plugged=… console=… locked=…` |
//!
//! Each command answers `ok` (or the status line), or `error: …`.
//!
//! The device is a private `--config` file, or a public test device built into the binary
//! (`--preset`, [`Preset`]): a clone's fixtures are mode 0644, which the key-file rule refuses,
//! and that refusal stays for every file.
//!
//! `ksm emulate --hsm2 [--listen ADDR] [--config DEVICE.toml] [--control SOCK]` is a software
//! YubiHSM 2 instead ([`hsm2_proto::emulator`]): yubihsm-connector's HTTP API on a loopback
//! address (default `127.0.0.1:12345`, the connector's), in its factory state (authentication
//! key 1, password `password`) plus what the private TOML file adds. Its control socket takes:
//!
//! | line | effect |
//! |------|--------|
//! | `stall on` / `stall off` | take requests, never answer (their connections close when the stall ends) |
//! | `refuse on` / `refuse off` | close the port and every connection / listen again |
//! | `reset` | drop every session (objects stay), as a power cycle does |
//! | `status` | `sessions=N stall=… refuse=…` |

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hsm_proto::emulator::{EmulatorConfig, PtyEmulator};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::device::Preset;
use crate::Error;

/// `ksm emulate`'s arguments.
#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Device configuration (TOML, or pyhsm's soft-HSM JSON key file) holding keys: refused
    /// if the group or others may read it. Default: `--preset demo`.
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A public test device built into ksm (default: demo). Its keys are published, so it
    /// needs no private file.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// Path of the symlink to create to the pty's device node (like /dev/ttyACM0).
    #[arg(long, required_unless_present = "hsm2", conflicts_with = "hsm2")]
    pub pty: Option<PathBuf>,
    /// Unix socket (mode 0600) taking fault commands: stall on|off, garbage N,
    /// unplug SECONDS, config-mode, power-cycle, mistype N, status.
    /// With --hsm2: stall on|off, refuse on|off, reset, status.
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Emulate a YubiHSM 2 behind yubihsm-connector's HTTP API instead (--config is then
    /// the YubiHSM 2 TOML format; no --pty, no --preset).
    #[arg(long, conflicts_with = "preset")]
    pub hsm2: bool,
    /// With --hsm2: the loopback address and port to serve the connector API on
    /// (default 127.0.0.1:12345, yubihsm-connector's).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Runs the emulator until a termination signal.
pub fn run(args: EmulateArgs) -> Result<(), Error> {
    if args.hsm2 {
        return run_hsm2(args);
    }
    if args.listen.is_some() {
        return Err(Error::Usage("--listen needs --hsm2".into()));
    }
    let Some(pty) = args.pty.clone() else {
        return Err(Error::Usage("--pty is required".into()));
    };
    // Before the pty exists (see `Termination`).
    let termination = Termination::install()?;
    let cfg = match &args.config {
        Some(p) => EmulatorConfig::load(p)?.resolve()?,
        None => args.preset.unwrap_or_default().config()?,
    };
    let emu = Arc::new(PtyEmulator::start(&cfg, &pty)?);
    let slave = emu
        .slave_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    println!("emulated YubiHSM at {} -> {}", pty.display(), slave);
    let bound = match &args.control {
        Some(path) => {
            let emu = emu.clone();
            Some(serve_control_socket(path, move |line| control(&emu, line))?)
        }
        None => None,
    };
    let _ = std::io::stdout().flush();
    termination.wait();
    info!("stopping the emulator");
    if let (Some(path), Some(id)) = (&args.control, bound) {
        crate::private_socket::remove_if_ours(path, id);
    }
    drop(emu);
    let _ = std::fs::remove_file(&pty);
    Ok(())
}

/// Runs the software YubiHSM 2 until a termination signal.
fn run_hsm2(args: EmulateArgs) -> Result<(), Error> {
    use hsm2_proto::emulator::{ConnectorEmulator, DeviceConfig};
    let listen = args
        .listen
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 12345)));
    if !listen.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "--listen {listen}: the emulator serves only a loopback address (127.0.0.1, ::1)"
        )));
    }
    let termination = Termination::install()?;
    let cfg = match &args.config {
        Some(p) => DeviceConfig::load(p).map_err(hsm2_error)?,
        None => DeviceConfig::factory(),
    };
    let emu = Arc::new(ConnectorEmulator::start(listen, &cfg).map_err(hsm2_error)?);
    println!("emulated YubiHSM 2 at {}", emu.url());
    let bound = match &args.control {
        Some(path) => {
            let emu = emu.clone();
            Some(serve_control_socket(path, move |line| {
                control_hsm2(&emu, line)
            })?)
        }
        None => None,
    };
    let _ = std::io::stdout().flush();
    termination.wait();
    info!("stopping the YubiHSM 2 emulator");
    if let (Some(path), Some(id)) = (&args.control, bound) {
        crate::private_socket::remove_if_ours(path, id);
    }
    drop(emu);
    Ok(())
}

/// The YubiHSM 2 emulator's errors as ksm's: a configuration error exits 2, a key file
/// that is not private too (the driver's key-file error), a socket that cannot be bound 1.
fn hsm2_error(e: hsm2_proto::emulator::EmulatorError) -> Error {
    use hsm2_proto::emulator::EmulatorError as E;
    match e {
        E::Config(what) => Error::Emulator(hsm_proto::emulator::ConfigError::Invalid(what)),
        E::KeyFile(e) => Error::from(e),
        E::Io(what) => Error::io(what, std::io::Error::other("failed")),
    }
}

/// SIGTERM and SIGINT, caught from before the device exists, so an early signal still
/// removes the link and the control socket: tokio keeps a signal that arrives before anyone
/// waits for it (the daemon's mechanism too).
struct Termination {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Termination {
    fn install() -> Result<Termination, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::io("start runtime", e))?;
        let (term, int) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::terminate())?,
                    signal(SignalKind::interrupt())?,
                ))
            })
            .map_err(|e| Error::io("signal handler", e))?;
        Ok(Termination { rt, term, int })
    }

    /// Blocks until one of the two arrives.
    fn wait(mut self) {
        let (term, int) = (&mut self.term, &mut self.int);
        self.rt.block_on(async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
    }
}

/// Binds the control socket (mode 0600) and answers each line of each connection with
/// `apply`, on threads of its own; returns the socket's identity for its removal.
fn serve_control_socket(
    path: &std::path::Path,
    apply: impl Fn(&str) -> Result<String, String> + Clone + Send + 'static,
) -> Result<(u64, u64), Error> {
    let (listener, id) = crate::private_socket::bind_private(path)?;
    println!("control socket at {}", path.display());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let apply = apply.clone();
            std::thread::spawn(move || serve_lines(conn, apply));
        }
    });
    Ok(id)
}

fn serve_lines(conn: UnixStream, apply: impl Fn(&str) -> Result<String, String>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let reply = apply(line.trim()).unwrap_or_else(|e| format!("error: {e}"));
        if writeln!(out, "{reply}").is_err() {
            return;
        }
    }
}

/// Applies one control command to the YubiHSM 2 emulator.
pub fn control_hsm2(
    emu: &hsm2_proto::emulator::ConnectorEmulator,
    line: &str,
) -> Result<String, String> {
    let mut words = line.split_whitespace();
    match (words.next().unwrap_or(""), words.next(), words.next()) {
        ("stall", Some("on"), None) => emu.set_stall(true),
        ("stall", Some("off"), None) => emu.set_stall(false),
        ("refuse", Some("on"), None) => emu.set_refuse(true),
        ("refuse", Some("off"), None) => emu.set_refuse(false),
        ("reset", None, None) => emu.reset(),
        ("status", None, None) => return Ok(emu.status()),
        _ => {
            warn!(command = line, "unknown control command");
            return Err(format!(
                "unknown command {line:?} (stall on|off, refuse on|off, reset, status)"
            ));
        }
    }
    Ok("ok".into())
}

/// Applies one control command.
pub fn control(emu: &PtyEmulator, line: &str) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let cmd = words.next().unwrap_or("");
    let arg = words.next();
    match (cmd, arg) {
        ("stall", Some("on")) => emu.set_stall(true),
        ("stall", Some("off")) => emu.set_stall(false),
        ("garbage", Some(n)) => {
            let max = hsm_proto::emulator::MAX_GARBAGE;
            match n.parse::<usize>() {
                Ok(n) if n <= max => emu.inject_garbage(n),
                _ => return Err(format!("not a byte count from 0 to {max}: {n}")),
            }
        }
        ("unplug", Some(s)) => {
            let secs: f64 = s
                .parse()
                .map_err(|_| format!("not a number of seconds: {s}"))?;
            if !(0.0..=3600.0).contains(&secs) {
                return Err("seconds must be 0 to 3600".into());
            }
            emu.unplug(Duration::from_secs_f64(secs));
        }
        ("config-mode", None) => emu.enter_config_mode(),
        ("power-cycle", None) => emu.power_cycle(),
        ("mistype", Some(n)) => match n.parse::<usize>() {
            Ok(n) if n <= 1024 => emu.with_engine(|e| e.mistype_next_keys(n)),
            _ => return Err(format!("not a key count from 0 to 1024: {n}")),
        },
        ("status", None) => {
            let (console, locked) = emu.with_engine(|e| (e.in_console(), e.is_locked()));
            return Ok(format!(
                "plugged={} console={console} locked={locked}",
                emu.is_plugged()
            ));
        }
        _ => {
            warn!(command = line, "unknown control command");
            return Err(format!("unknown command {line:?} (stall on|off, garbage N, unplug SECONDS, config-mode, power-cycle, mistype N, status)"));
        }
    }
    Ok("ok".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::device::demo_config().unwrap();
        let emu = PtyEmulator::start(&cfg, &dir.path().join("tty")).unwrap();
        assert_eq!(control(&emu, "garbage 16").as_deref(), Ok("ok"));
        let err = control(&emu, "garbage 99999999999999").unwrap_err();
        assert!(err.contains("0 to 65536"), "{err}");
        assert!(control(&emu, "garbage -1").is_err());
        assert_eq!(control(&emu, "mistype 2").as_deref(), Ok("ok"));
        assert!(control(&emu, "mistype 5000").is_err());
    }

    #[test]
    fn the_blank_preset_waits_at_the_console_with_nothing_configured() {
        let cfg = crate::device::Preset::Blank.config().unwrap();
        assert!(cfg.keys.is_empty() && cfg.master_key.is_none());
        let mut e = hsm_proto::emulator::Engine::new(&cfg);
        assert!(e.in_console());
        assert!(String::from_utf8_lossy(&e.feed(b"\r")).ends_with("NO_CFG> "));
    }
}
