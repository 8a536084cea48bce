//! YubiHSM 1 wire protocol, driver and (with the `emulator` feature) software emulator.
//!
//! Table of contents:
//! - edge types parsed once: [`KeyHandle`], [`PublicId`], [`Nonce`], [`Aead`], [`Flags`];
//! - wire tables: [`Opcode`], [`Status`], [`flags::FLAG_NAMES`]; the frame layout:
//!   [`codec::Frame`], [`codec::Assembler`];
//! - pure crypto shared by driver, emulator and offline tools: [`aead`], [`otp`];
//! - key material that redacts and zeroizes: [`AesKey`], [`YubiKeySecret`];
//! - the configuration console's texts ([`console`]) and a client that types at it
//!   ([`console_session`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod table;

pub mod cmd;
pub mod codec;
pub mod console;
pub mod console_session;
#[cfg(feature = "emulator")]
pub mod emulator;

pub mod aead;
mod client;
mod error;
pub mod flags;
mod key_handle;
pub mod keyfile;
pub mod line;
pub mod modhex;
mod nonce;
mod opcode;
pub mod otp;
mod secret;
mod status;

pub use aead::{Aead, YubiKeyAead};
pub use client::{DecodedOtp, Hsm, Timeouts};
pub use error::{Error, Result};
pub use flags::Flags;
pub use key_handle::KeyHandle;
pub use modhex::PublicId;
pub use nonce::Nonce;
pub use opcode::{Opcode, RESPONSE_BIT};
pub use secret::{AesKey, SecretBytes, YubiKeySecret};
pub use status::Status;
