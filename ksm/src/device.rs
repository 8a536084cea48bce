//! Opening a YubiHSM from a `-D/--device` argument.
//!
//! pyhsm's rule is kept: a regular file as the device means a soft HSM whose keys are in that
//! file (our emulator TOML, or pyhsm's JSON key file); anything else is a serial device (a
//! real YubiHSM at `/dev/ttyACM0`, or the emulator's pty link).

use std::path::Path;

use hsm_proto::emulator::{self, EmulatorConfig};
use hsm_proto::{Hsm, Timeouts};
use tracing::warn;

use crate::Error;

/// The demo device compiled into the binary: the public test keys of `fixtures/`.
pub const DEMO_DEVICE: &str = include_str!("../../fixtures/emulator/demo.toml");

/// Opens `-D` as a serial device or, for a regular file, as an in-process soft HSM.
pub fn open(spec: &Path, timeouts: Timeouts) -> Result<Hsm, Error> {
    let is_file = std::fs::metadata(spec)
        .map(|m| m.is_file())
        .unwrap_or(false);
    if is_file {
        warn!(path = %spec.display(), "using a SOFT HSM: the key-handle keys are in this file on disk, not in a YubiHSM");
        let cfg = EmulatorConfig::load(spec)?.resolve()?;
        let (hsm, _engine) = emulator::soft_hsm(&cfg)?;
        return Ok(hsm);
    }
    Ok(Hsm::open_path(spec, timeouts)?)
}

/// Opens the demo soft HSM compiled into the binary.
pub fn open_demo() -> Result<Hsm, Error> {
    let cfg = EmulatorConfig::parse(DEMO_DEVICE)?.resolve()?;
    Ok(emulator::soft_hsm(&cfg)?.0)
}
