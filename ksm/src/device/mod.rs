//! The devices `-D` names, and opening them for a command.
//!
//! - this module: a YubiHSM 1, a soft HSM and the preset devices compiled in, and the
//!   device a tool uses;
//! - [`hsm2`]: a YubiHSM 2 (`-D http://…`, `usb`), its authentication key and a session;
//! - [`sharing`]: the client side of the daemon's sharing socket, through which tools use
//!   the daemon's devices while it owns them.
//!
//! For a YubiHSM 1 pyhsm's rule is kept: a regular file as the device means a soft HSM whose keys are in that
//! file (our emulator TOML, or pyhsm's JSON key file); anything else is a serial device (a
//! real YubiHSM at `/dev/ttyACM0`, or the emulator's pty link). Operator tools given no
//! device use the running daemon's sharing socket when there is one, so they work while the
//! daemon owns the HSM, and `/dev/ttyACM0` otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hsm_proto::emulator::{self, EmulatorConfig, ResolvedConfig};
use hsm_proto::{Hsm, Timeouts};
use tracing::warn;

use crate::Error;
use sharing::{SharedLine, DEFAULT_SOCKET};

pub mod hsm2;
pub mod hsm2_log;
pub mod sharing;

/// The demo device compiled into the binary: the public test keys of `fixtures/`.
pub const DEMO_DEVICE: &str = include_str!("../../../fixtures/emulator/demo.toml");

/// pyhsm's hardware test device compiled into the binary (`fixtures/emulator/
/// pyhsm-test-setup.toml`): public test keys, so a clone runs it without the key-file rule.
pub const PYHSM_TEST_DEVICE: &str =
    include_str!("../../../fixtures/emulator/pyhsm-test-setup.toml");

/// A zapped device at its configuration console, compiled into the binary
/// (`fixtures/emulator/blank.toml`).
pub const BLANK_DEVICE: &str = include_str!("../../../fixtures/emulator/blank.toml");

/// A public test device compiled into the binary, for `ksm emulate --preset`.
///
/// Only public test devices are presets: their keys are published, so they need not be
/// private files. A device with real keys is a `--config` file and must be private.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Preset {
    /// The demo device: key handles 0x20 and 0x21 of `fixtures/otp-vectors.json`, unlocked.
    #[default]
    Demo,
    /// The device pyhsm's hardware test suite configures (`test/configure_hsm.py`): locked
    /// at power-on (master key `bada` x 2, admin YubiKey `ftftftfteeee`).
    PyhsmTests,
    /// A zapped device (no configuration, no keys) waiting at its configuration console
    /// (`NO_CFG> `), as a spare is set up with `ksm provision` or by hand.
    Blank,
}

impl Preset {
    /// The device's TOML text.
    pub fn text(self) -> &'static str {
        match self {
            Preset::Demo => DEMO_DEVICE,
            Preset::PyhsmTests => PYHSM_TEST_DEVICE,
            Preset::Blank => BLANK_DEVICE,
        }
    }

    /// The device, parsed and resolved.
    pub fn config(self) -> Result<ResolvedConfig, Error> {
        Ok(EmulatorConfig::parse(self.text())?.resolve()?)
    }
}

/// The device pyhsm and we use when none is named.
pub const DEFAULT_DEVICE: &str = "/dev/ttyACM0";

/// True if `spec` names a soft-HSM key file rather than a device.
pub fn is_key_file(spec: &Path) -> bool {
    std::fs::metadata(spec)
        .map(|m| m.is_file())
        .unwrap_or(false)
}

/// Loads a soft-HSM key file, with the loud warning pyhsm's rule deserves.
pub fn load_key_file(spec: &Path) -> Result<ResolvedConfig, Error> {
    warn!(path = %spec.display(), "using a SOFT HSM: the key-handle keys are in this file on disk, not in a YubiHSM");
    Ok(EmulatorConfig::load(spec)?.resolve()?)
}

/// Opens `-D` as a serial device or, for a regular file, as an in-process soft HSM.
pub fn open(spec: &Path, timeouts: Timeouts) -> Result<Hsm, Error> {
    if is_key_file(spec) {
        let (hsm, _engine) = emulator::soft_hsm(&load_key_file(spec)?)?;
        return Ok(hsm);
    }
    Ok(Hsm::open_path(spec, timeouts)?)
}

/// Opens the demo soft HSM compiled into the binary.
pub fn demo_config() -> Result<ResolvedConfig, Error> {
    Preset::Demo.config()
}

/// Where a tool finds its HSM: `-D`, `--socket`, `--timeout`, the same for every tool.
#[derive(Debug, clap::Args)]
pub struct DeviceArgs {
    /// Serial device (/dev/ttyACM0, an emulator's pty link) or soft-HSM key file. Default:
    /// the running daemon's sharing socket if it answers, else /dev/ttyACM0.
    #[arg(short = 'D', long = "device")]
    pub device: Option<PathBuf>,
    /// The daemon's sharing socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Seconds to wait for each HSM response.
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
}

impl DeviceArgs {
    /// The device to use ([`choose`]).
    pub fn choose(&self) -> Result<ToolDevice, Error> {
        choose(self.device.as_deref(), &self.socket)
    }

    /// `--timeout`, checked.
    pub fn timeouts(&self) -> Result<Timeouts, Error> {
        if !(0.01..=60.0).contains(&self.timeout) {
            return Err(Error::Usage(
                "--timeout must be between 0.01 and 60 seconds".into(),
            ));
        }
        Ok(Timeouts {
            response: Duration::from_secs_f64(self.timeout),
            ..Timeouts::default()
        })
    }

    /// Chooses and opens the device.
    pub fn open(&self) -> Result<Hsm, Error> {
        open_tool(&self.choose()?, self.timeouts()?)
    }
}

/// Where an operator tool's HSM is.
#[derive(Debug, Clone)]
pub enum ToolDevice {
    /// A device path or soft-HSM key file given with `-D`.
    Path(PathBuf),
    /// Device `index` of the daemon behind the sharing socket.
    Daemon {
        /// The socket.
        socket: PathBuf,
        /// Which of the daemon's devices.
        index: u8,
    },
}

/// Chooses the HSM for a tool: `-D` if given; else the daemon's socket if a daemon answers
/// there; else `/dev/ttyACM0`. Errors say which of these was missing.
pub fn choose(device: Option<&Path>, socket: &Path) -> Result<ToolDevice, Error> {
    if let Some(d) = device {
        return Ok(ToolDevice::Path(d.to_path_buf()));
    }
    if socket.exists() {
        match sharing::list_devices(socket) {
            Ok(_) => {
                return Ok(ToolDevice::Daemon {
                    socket: socket.to_path_buf(),
                    index: 0,
                })
            }
            // A daemon may well run there: we may not use it, or must not trust it.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::io(
                    format!(
                        "permission denied on the daemon's socket {} (run as root or as the daemon's user)",
                        socket.display()
                    ),
                    e,
                ))
            }
            Err(_) => {
                warn!(socket = %socket.display(), "a sharing socket exists but no daemon answers on it")
            }
        }
    }
    if Path::new(DEFAULT_DEVICE).exists() {
        return Ok(ToolDevice::Path(PathBuf::from(DEFAULT_DEVICE)));
    }
    Err(Error::NoDevice {
        socket: socket.to_path_buf(),
        default: PathBuf::from(DEFAULT_DEVICE),
    })
}

/// Opens the chosen device.
pub fn open_tool(dev: &ToolDevice, timeouts: Timeouts) -> Result<Hsm, Error> {
    match dev {
        ToolDevice::Path(p) => open(p, timeouts),
        ToolDevice::Daemon { socket, index } => {
            let line = SharedLine::connect(socket, *index)
                .map_err(|e| Error::io(format!("connect to {}", socket.display()), e))?;
            Ok(Hsm::open(Box::new(line), timeouts)?)
        }
    }
}
