//! The KSM: the daemon that decodes YubiKey OTPs for validation servers with a YubiHSM 1, and
//! the operator tools around it.
//!
//! - [`cli`]: the `ksm` command line (one subcommand per job);
//! - [`serve`], [`server`], [`answer`], [`metrics`]: the daemon and its HTTP API;
//! - [`pool`]: the HSMs, each owned by one thread behind a bounded queue;
//! - [`sharing`]: the socket operator tools use while the daemon owns the HSMs, and
//!   [`tool_frame`]: what it forwards;
//! - [`device`]: opening a YubiHSM from a `-D` argument;
//! - [`tools`]: keystore unlock, key generation and import, AEAD decryption, store checks;
//! - [`emulate`], [`demo`], [`info`]: the software YubiHSM on a pty, the demo, device info.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod cli;
pub mod connections;
pub mod demo;
pub mod device;
pub mod emulate;
mod error;
pub mod info;
pub mod instance;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod process;
pub mod serve;
pub mod server;
pub mod sharing;
pub mod tool_frame;
pub mod tools;

pub use error::Error;
