//! The KSM: the daemon that decodes YubiKey OTPs for validation servers with a YubiHSM 1, and
//! the operator tools around it.
//!
//! - [`cli`]: the `ksm` command line (one subcommand per job);
//! - [`device`]: opening a YubiHSM from a `-D` argument (serial device or soft-HSM key file);
//! - [`emulate`]: `ksm emulate`, the software YubiHSM on a pty, with its control socket;
//! - [`demo`]: `ksm demo`, the whole path on the built-in demo device;
//! - [`info`]: `ksm info`, a device's identity and link check.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod demo;
pub mod device;
pub mod emulate;
mod error;
pub mod info;
pub mod logging;

pub use error::Error;
