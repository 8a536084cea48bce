//! The YK-VAL validation protocol, as yubikey-val 2.41 serves it, and its counter database
//! in yubikey-val's own schema.
//!
//! - [`request`]: a verify request's parameters and yubikey-val's checks of them;
//! - [`sign`]: the HMAC-SHA1 signature of requests and answers, and client keys;
//! - [`response`]: the answer's lines, their order and `t=`;
//! - [`Status`]: the statuses, written once;
//! - [`counter`]: the counter rules and the clock check as pure functions;
//! - [`csv`]: yubikey-val's CSV export files (`ykval-export`, `ykval-export-clients`);
//! - [`db`]: `clients` and `yubikeys` on PostgreSQL, MySQL/MariaDB or SQLite, created as
//!   yubikey-val's `ykval-db.sql` creates them, and the one conditional write that makes
//!   an OTP `OK` at most once across every validator on the database;
//! - [`verify()`]: one verification from request to answer.
//!
//! It knows OTPs through `otp-core` and nothing of HSMs or of the daemon that serves it: a
//! caller hands [`verify()`] a way to decode an OTP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod counter;
pub mod csv;
pub mod db;
pub mod request;
pub mod response;
pub mod sign;
mod status;
mod verify;

pub use db::{Client, Counters, DbError, ValDb, ValDbConfig, Yubikey};
pub use request::Protocol;
pub use status::Status;
pub use verify::{verify, Decoded, Outcome};
