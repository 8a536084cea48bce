//! What every part of a YubiKey KSM shares: the facts about YubiKeys, their AEADs and the
//! keys that seal them, with no device, no line and no I/O beyond reading a private key file.
//!
//! The two drivers (`hsm-proto`, `hsm2-proto`), the AEAD store (`aead-store`) and the daemon
//! all name key handles, public ids and AEADs; here those names live, so a store need not
//! compile a serial port or an HTTP client to name a key handle, and neither driver needs
//! the other.
//!
//! Table of contents:
//! - YubiKey ids and OTPs: [`modhex`] with [`PublicId`]; [`otp`] (the token, its CRC, and
//!   its decryption for the soft HSM and both emulators, with [`OtpCounters`]);
//! - the AES-CCM AEAD of both devices, one cipher with two nonce layouts: [`aead`]
//!   (YubiHSM 1: [`Aead`] under a [`KeyHandle`] and a [`Nonce`], and the 30-byte
//!   [`YubiKeyAead`] rule) and [`otp_aead`] (YubiHSM 2: [`OtpAead`] under an
//!   otp-aead-key's [`NonceId`]);
//! - the names of keys: [`KeyHandle`] (YubiHSM 1), [`ObjectId`] (YubiHSM 2);
//! - secrets, redacted in `Debug`, wiped on drop, compared in constant time: [`AesKey`],
//!   [`YubiKeySecret`], [`Secret`], [`SecretBytes`], [`SecretString`];
//! - files that hold keys in clear: [`keyfile`]; parser messages about them without their
//!   text: [`redact`];
//! - for the drivers' wire code: the table macro [`wire_enum!`], the bounded byte
//!   [`cursor`], and the [`echo`] link test's messages;
//! - the one error: [`Error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aead;
pub mod cursor;
pub mod echo;
mod error;
mod key_handle;
pub mod keyfile;
pub mod modhex;
mod nonce;
mod object_id;
pub mod otp;
pub mod otp_aead;
pub mod redact;
mod secret;
mod table;

pub use aead::{Aead, YubiKeyAead, YUBIKEY_AEAD_LEN};
pub use error::{Error, Result};
pub use key_handle::KeyHandle;
pub use modhex::PublicId;
pub use nonce::Nonce;
pub use object_id::ObjectId;
pub use otp::{Otp, OtpCounters};
pub use otp_aead::{NonceId, OtpAead};
pub use secret::{AesKey, Secret, SecretBytes, SecretString, YubiKeySecret};
