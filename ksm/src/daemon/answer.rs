//! The KSM's answers: what a validator reads. One function maps every outcome to its line
//! and HTTP status, so the contract lives in one place.
//!
//! Success is `OK counter=%04x low=%04x high=%02x use=%02x`, byte for byte what pyhsm's
//! `yhsm-yubikey-ksm` and Yubico's PHP KSM answer and what yubikey-val's `sscanf` parses.
//! Failures are one line, `ERR ` and a stable reason. Problems with the OTP answer 200, as
//! both incumbents do; problems with the HSM answer 503, so monitoring can tell them apart
//! (yubikey-val moves on to its next KSM either way: it only accepts a body starting `OK`).

use axum::http::StatusCode;
use hsm_proto::DecodedOtp;

/// Every way a decode request can end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The HSM decoded the OTP.
    Ok(DecodedOtp),
    /// No `otp` parameter.
    NoOtp,
    /// Not 32–48 modhex characters with a public id.
    InvalidOtp,
    /// No AEAD for the public id under any configured key handle.
    UnknownId,
    /// CRC or uid mismatch: the OTP was not made with this YubiKey's key.
    CorruptOtp,
    /// The AEAD file is unreadable or malformed, or the HSM rejected the AEAD.
    CorruptAead,
    /// The HSM refused the key handle (missing, disabled, no permission): a set-up problem.
    HsmRefused,
    /// The key store is locked: an operator must run `ksm keystore-unlock`.
    Locked,
    /// No HSM can be reached.
    Unavailable,
    /// The deadline (`--reqtimeout`) passed.
    Timeout,
    /// Every HSM queue is full.
    Overloaded,
}

impl Outcome {
    /// The answer line (without newline) and HTTP status.
    pub fn answer(&self) -> (StatusCode, String) {
        let (code, text) = match self {
            Outcome::Ok(d) => return (StatusCode::OK, d.ksm_line()),
            Outcome::NoOtp => (StatusCode::OK, "ERR No OTP provided"),
            Outcome::InvalidOtp => (StatusCode::OK, "ERR Invalid OTP format"),
            Outcome::UnknownId => (StatusCode::OK, "ERR Unknown public_id"),
            Outcome::CorruptOtp => (StatusCode::OK, "ERR Corrupt OTP"),
            Outcome::CorruptAead => (StatusCode::OK, "ERR Corrupt AEAD"),
            Outcome::HsmRefused => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR HSM refused key handle",
            ),
            Outcome::Locked => (StatusCode::SERVICE_UNAVAILABLE, "ERR HSM locked"),
            Outcome::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "ERR HSM unavailable"),
            Outcome::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "ERR Timeout"),
            Outcome::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "ERR Overloaded"),
        };
        (code, text.to_string())
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::NoOtp => "no_otp",
            Outcome::InvalidOtp => "invalid_otp",
            Outcome::UnknownId => "unknown_id",
            Outcome::CorruptOtp => "corrupt_otp",
            Outcome::CorruptAead => "corrupt_aead",
            Outcome::HsmRefused => "hsm_refused",
            Outcome::Locked => "locked",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::Overloaded => "overloaded",
        }
    }

    /// Every label, for metrics.
    pub const LABELS: [&'static str; 11] = [
        "ok",
        "no_otp",
        "invalid_otp",
        "unknown_id",
        "corrupt_otp",
        "corrupt_aead",
        "hsm_refused",
        "locked",
        "unavailable",
        "timeout",
        "overloaded",
    ];

    /// pyhsm's stats counter this outcome advances (`ok`, `invalid`, `no_aead`, `err`).
    pub fn pyhsm_stat(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::NoOtp | Outcome::InvalidOtp => "invalid",
            Outcome::UnknownId => "no_aead",
            _ => "err",
        }
    }
}
