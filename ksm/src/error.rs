//! The crate's error type, and the exit code of each failure.

use std::path::PathBuf;

/// What can make a `ksm` command fail. Texts never contain key material or OTPs: input the
/// operator gives is described, never quoted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value, or a combination of flags, is wrong.
    #[error("{0}")]
    Usage(String),
    /// A configuration file (`ksm.toml`, or a TLS certificate or key file) is unusable.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// What the operator typed or piped in (a master key, an export's header) is wrong.
    #[error("{0}")]
    Input(String),
    /// The YubiHSM (or the emulator) failed or refused; or a value of its types (a key
    /// handle, public id or key file) given to us is wrong (see [`Error::exit_code`]).
    #[error(transparent)]
    Device(#[from] hsm_proto::Error),
    /// The YubiHSM 2 (or its connector) failed or refused.
    #[error(transparent)]
    Hsm2(#[from] hsm2_proto::Error),
    /// No HSM to use: no `-D`, no daemon on the socket, no `/dev/ttyACM0`.
    #[error("device not found: no -D given, daemon not running (no answer on {}), and no {}", socket.display(), default.display())]
    NoDevice {
        /// The sharing socket that did not answer.
        socket: PathBuf,
        /// The device tried last, `-D`'s default (named by the device module, which says
        /// what `-D` means, so this file need not name it).
        default: PathBuf,
    },
    /// The device's answer was well-formed but not what the command needs.
    #[error("{0}")]
    DeviceAnswer(String),
    /// The emulator's (or soft HSM's) configuration is wrong, or its pty cannot start.
    #[error(transparent)]
    Emulator(#[from] hsm_proto::emulator::ConfigError),
    /// The AEAD store: its directory, a file in it, or a write to it.
    #[error(transparent)]
    Store(#[from] aead_store::StoreError),
    /// The validation server's counter database (`ksm val`).
    #[error(transparent)]
    Val(#[from] ykval::DbError),
    /// A file, socket or stream operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another `ksm serve` holds the PID file or the sharing socket.
    #[error("another ksm serve is running {holding}")]
    AlreadyRunning {
        /// What it holds.
        holding: String,
    },
    /// `keystore-unlock`: devices left locked (each is named on standard output).
    #[error("{0} device(s) still locked")]
    StillLocked(usize),
    /// `keystore-unlock`: YubiHSM 2 devices the daemon could not reach; each kept the
    /// password unchecked, to check when it answers (each is named on standard output).
    #[error(
        "{0} YubiHSM 2 device(s) not reachable now: password kept, checked when the device answers"
    )]
    PasswordPending(usize),
    /// `import-keys`: lines rejected (each is named on standard error); the rest imported.
    #[error("{0} line(s) rejected")]
    LinesRejected(usize),
    /// `decrypt-aead`: AEADs not decrypted (each is named on standard error).
    #[error("{0} AEAD(s) failed")]
    AeadsFailed(usize),
    /// `generate-keys`: ids left alone because some of their AEADs existed already.
    #[error("{0} ids had AEADs for some key handles only")]
    Incomplete(u64),
    /// `provision`: the device was set up, but does not prove to hold what the configuration
    /// says (each failed key handle is named on standard output).
    #[error("{0} verification line(s) failed (listed above): the device does not hold the configuration")]
    ProvisionUnverified(usize),
    /// `clone-hsm2`: keys not copied, or copied but not proven (each is named on standard
    /// output); the rest were copied and proven.
    #[error(
        "{failed} otp-aead-key(s) not cloned, {unproven} copied but not proven (listed above)"
    )]
    CloneFailed {
        /// Keys not copied.
        failed: usize,
        /// Keys copied whose proof a missing capability prevented.
        unproven: usize,
    },
    /// `hsm2-log`: the audit log's digest chain does not hold (the entries were printed).
    #[error("the audit log's digest chain is broken at entry {0}: entries were lost, overwritten or altered, or the device was reset")]
    AuditChainBroken(u16),
    /// `store verify` found problems (listed on standard output).
    #[error("the AEAD directory has problems (listed above)")]
    VerifyFailed,
}

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The process's exit code for this error (the table in docs/operator-tools.md): 1 a batch
    /// job that did part of its work, or an I/O error; 2 usage, configuration or input; 3 the HSM;
    /// 4 the AEAD store; 5 another daemon running; 6 a YubiHSM 2 password kept but not yet
    /// checked (the device could not be reached).
    pub fn exit_code(&self) -> u8 {
        use hsm_proto::emulator::ConfigError;
        match self {
            Error::StillLocked(_)
            | Error::LinesRejected(_)
            | Error::AeadsFailed(_)
            | Error::Incomplete(_)
            | Error::VerifyFailed
            | Error::ProvisionUnverified(_)
            | Error::CloneFailed { .. }
            | Error::AuditChainBroken(_)
            | Error::Io { .. } => 1,
            Error::Usage(_) | Error::Config { .. } | Error::Input(_) => 2,
            Error::Emulator(ConfigError::Hsm(e)) | Error::Device(e) => driver_exit_code(e),
            Error::Emulator(_) => 2,
            Error::NoDevice { .. } | Error::DeviceAnswer(_) | Error::Hsm2(_) => 3,
            Error::Store(_) | Error::Val(_) => 4,
            Error::AlreadyRunning { .. } => 5,
            Error::PasswordPending(_) => 6,
        }
    }
}

/// A value the core refused (a key handle, public id, OTP, AEAD or key file) is the
/// driver's [`hsm_proto::Error::Core`], so its text and exit code are the driver's.
impl From<otp_core::Error> for Error {
    fn from(e: otp_core::Error) -> Error {
        Error::Device(e.into())
    }
}

/// 2 for the driver's parsers of what the operator gives us (key handles, public ids, key
/// files), 3 for the device.
fn driver_exit_code(e: &hsm_proto::Error) -> u8 {
    use hsm_proto::Error as Hsm;
    use otp_core::Error as Core;
    match e {
        Hsm::InvalidFlag(_)
        | Hsm::Core(
            Core::InvalidKeyHandle { .. }
            | Core::InvalidModhex
            | Core::InvalidPublicId(_)
            | Core::InvalidOtp(_)
            | Core::InvalidHex(_)
            | Core::KeyLength(_)
            | Core::KeyFile { .. },
        ) => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Error::LinesRejected(1).exit_code(), 1);
        assert_eq!(Error::StillLocked(1).exit_code(), 1);
        assert_eq!(Error::PasswordPending(1).exit_code(), 6);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            Error::from(otp_core::Error::InvalidKeyHandle { chars: 1 }).exit_code(),
            2
        );
        assert_eq!(Error::from(hsm_proto::Error::Closed).exit_code(), 3);
        assert_eq!(
            Error::from(aead_store::StoreError::NoBase("/x".into())).exit_code(),
            4
        );
    }
}
