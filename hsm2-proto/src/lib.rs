//! YubiHSM 2 wire protocol for a YubiKey KSM: typed commands, SCP03 sessions, and the
//! transports that carry them (yubihsm-connector's HTTP API; USB behind the `usb` feature).
//!
//! Table of contents:
//! - wire tables, each written once: [`CommandCode`], [`ErrorCode`], [`Capability`] (with
//!   the set [`Capabilities`]), [`Algorithm`], [`ObjectType`]; the frame layout:
//!   [`codec::Frame`];
//! - one request and one response type per command: [`cmd`];
//! - edge types: [`Domains`], [`Label`]; the ones it shares with the YubiHSM 1 and the
//!   store ([`ObjectId`], [`NonceId`], [`OtpAead`], [`OtpCounters`], [`Secret`],
//!   [`SecretBytes`]) are `otp_core`'s, re-exported here under the paths this crate's users
//!   already name;
//! - sessions: [`session`] (both sides: the driver's [`session::HostSession`], the
//!   emulator's [`session::DeviceSession`]);
//! - the keys the device stores, redacted and zeroized: [`AuthKey`] (with the password
//!   derivation), [`OtpAeadKeyBytes`];
//! - the transport seam: [`transport::Transport`], [`transport::Connector`];
//! - the driver: [`Client`];
//! - with the `emulator` feature, a software YubiHSM 2 behind a connector HTTP API:
//!   `emulator`.
//!
//! # Why not the `yubihsm` crate
//!
//! iqlusion's `yubihsm` crate is a complete YubiHSM 2 client, and its SCP03 code is sound,
//! but it cannot carry the commands a KSM needs: its `Command` trait, its message types
//! and its secure channel are all private to the crate (`pub(crate)`), and its client has
//! no methods for Decrypt OTP, Create/Randomize/Rewrap OTP AEAD or Generate OTP AEAD Key,
//! and its Put OTP AEAD Key writes no nonce id (shared protocol notes §4.4). Using it would
//! mean a fork. It is also a client only: a software YubiHSM 2 needs the device side of the
//! same session and the same message types decoded the other way, which is what this crate
//! is shaped for. So the protocol is implemented here, on RustCrypto's `aes`, `cbc`,
//! `cmac`, `pbkdf2` and `sha2`; no primitive is written by hand.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod algorithm;
mod capability;
mod client;
pub mod cmd;
pub mod codec;
mod command_code;
#[cfg(feature = "emulator")]
pub mod emulator;
mod error;
mod error_code;
mod object;
pub mod session;
mod stored_keys;
pub mod transport;

pub use algorithm::Algorithm;
pub use capability::{Capabilities, Capability};
pub use client::Client;
pub use command_code::{CommandCode, RESPONSE_BIT};
pub use error::{Error, Result};
pub use error_code::ErrorCode;
pub use object::{Domains, Label, ObjectType, Origin};
pub use otp_core::{NonceId, ObjectId, OtpAead, OtpCounters, Secret, SecretBytes};
pub use stored_keys::{AuthKey, OtpAeadKeyBytes, PASSWORD_ITERATIONS, PASSWORD_SALT};
