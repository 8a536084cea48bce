//! YubiHSM 1 wire protocol, driver and (with the `emulator` feature) software emulator.
//!
//! Table of contents:
//! - the YubiHSM 1's own edge type: [`Flags`]; the ones it shares with the YubiHSM 2 and the
//!   store ([`KeyHandle`], [`PublicId`], [`Nonce`], [`Aead`], [`YubiKeyAead`], the AEAD
//!   and OTP crypto, key material that redacts and zeroizes) are `otp_core`'s, re-exported
//!   here under the paths this crate's users already name;
//! - wire tables: [`Opcode`], [`Status`], [`flags::FLAG_NAMES`]; the frame layout:
//!   [`codec::Frame`], [`codec::Assembler`];
//! - one request and one response type per command: [`cmd`]; the driver: [`Hsm`];
//! - the configuration console's texts ([`console`]) and a client that types at it
//!   ([`console_session`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cmd;
pub mod codec;
pub mod console;
pub mod console_session;
#[cfg(feature = "emulator")]
pub mod emulator;

mod client;
mod error;
pub mod flags;
pub mod line;
mod opcode;
mod status;

pub use client::{DecodedOtp, Hsm, Timeouts};
pub use error::{Error, Result};
pub use flags::Flags;
pub use opcode::{Opcode, RESPONSE_BIT};
pub use otp_core::{aead, keyfile, modhex, otp};
pub use otp_core::{
    Aead, AesKey, KeyHandle, Nonce, PublicId, SecretBytes, YubiKeyAead, YubiKeySecret,
};
pub use status::Status;
