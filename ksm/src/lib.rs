//! The KSM: the daemon that decodes YubiKey OTPs for validation servers with a YubiHSM 1, and
//! the operator tools around it.
//!
//! - [`cli`]: the `ksm` command line (one subcommand per job);
//! - [`daemon`]: `ksm serve`, its HTTP API, the HSM pool and the sharing socket;
//! - [`settings`]: `ksm.toml`'s schema and defaults and the options the daemon and the tools
//!   share;
//! - [`device`]: what `-D` names (a serial YubiHSM, a soft HSM file, a YubiHSM 2's connector
//!   URL or `usb`), opening it, and the client side of the daemon's sharing socket;
//! - [`tools`]: keystore unlock, key generation and import, AEAD decryption, store checks,
//!   provisioning a spare YubiHSM at its console;
//! - [`emulate`], [`demo`], [`info`]: the software YubiHSM on a pty, the demo, device info;
//!   [`demo_aeads`]: the AEADs `ksm serve --demo` serves, compiled in; [`private_socket`]:
//!   the owner-only unix socket files of the daemon and the emulator.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod daemon;
pub mod demo;
pub mod demo_aeads;
pub mod device;
pub mod emulate;
mod error;
pub mod info;
pub mod logging;
pub mod private_socket;
pub mod process;
pub mod settings;
pub mod tools;
#[cfg(test)]
mod unlock_through_the_daemon;

pub use error::Error;
