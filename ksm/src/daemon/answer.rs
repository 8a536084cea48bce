//! The KSM's answers: what a validator reads. One function maps every outcome to its line
//! and HTTP status, so the contract lives in one place.
//!
//! Success is `OK counter=%04x low=%04x high=%02x use=%02x`, byte for byte what pyhsm's
//! `yhsm-yubikey-ksm` and Yubico's PHP KSM answer and what yubikey-val's `sscanf` parses.
//! Failures are one line, `ERR ` and a stable reason. Problems with the OTP answer 200, as
//! both incumbents do; problems with the HSM answer 503, so monitoring can tell them apart
//! (yubikey-val moves on to its next KSM either way: it only accepts a body starting `OK`).

use axum::http::StatusCode;
use hsm_proto::otp::OtpCounters;
use hsm_proto::{Error as HsmError, Status};
use otp_core::Error as CoreError;

use hsm2_proto::ErrorCode;

use crate::daemon::owner::PoolError;

/// Every way a decode request can end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The HSM (a YubiHSM 1 or 2) decoded the OTP into these counters.
    Ok(OtpCounters),
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
    /// The AEAD database cannot be reached or did not answer within the deadline.
    StoreUnavailable,
}

/// One row of the answer table: everything said about one kind of outcome.
#[derive(Debug)]
pub struct Row {
    /// The answer line (without newline); for `ok`, the counters' line replaces it.
    pub line: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// The label in logs and in `/metrics`.
    pub label: &'static str,
    /// The counter of pyhsm's stats page it advances (`ok`, `invalid`, `no_aead`, `err`).
    pub pyhsm: &'static str,
}

const fn row(
    line: &'static str,
    status: StatusCode,
    label: &'static str,
    pyhsm: &'static str,
) -> Row {
    Row {
        line,
        status,
        label,
        pyhsm,
    }
}

const OK: StatusCode = StatusCode::OK;
const HSM: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

/// Every outcome's row, in the order of [`Outcome`]'s variants (`/metrics` lists them so).
pub const ANSWERS: [Row; 12] = [
    row("OK", OK, "ok", "ok"),
    row("ERR No OTP provided", OK, "no_otp", "invalid"),
    row("ERR Invalid OTP format", OK, "invalid_otp", "invalid"),
    row("ERR Unknown public_id", OK, "unknown_id", "no_aead"),
    row("ERR Corrupt OTP", OK, "corrupt_otp", "err"),
    row("ERR Corrupt AEAD", OK, "corrupt_aead", "err"),
    row("ERR HSM refused key handle", HSM, "hsm_refused", "err"),
    row("ERR HSM locked", HSM, "locked", "err"),
    row("ERR HSM unavailable", HSM, "unavailable", "err"),
    row("ERR Timeout", HSM, "timeout", "err"),
    row("ERR Overloaded", HSM, "overloaded", "err"),
    row("ERR Store unavailable", HSM, "store_unavailable", "err"),
];

/// pyhsm's stats counters, in the order its page printed them.
pub const PYHSM_STATS: [&str; 4] = ["no_aead", "ok", "err", "invalid"];

impl Outcome {
    /// Its row's index in [`ANSWERS`] (and in the counters that follow that table).
    pub fn index(&self) -> usize {
        match self {
            Outcome::Ok(_) => 0,
            Outcome::NoOtp => 1,
            Outcome::InvalidOtp => 2,
            Outcome::UnknownId => 3,
            Outcome::CorruptOtp => 4,
            Outcome::CorruptAead => 5,
            Outcome::HsmRefused => 6,
            Outcome::Locked => 7,
            Outcome::Unavailable => 8,
            Outcome::Timeout => 9,
            Outcome::Overloaded => 10,
            Outcome::StoreUnavailable => 11,
        }
    }

    /// Its row.
    pub fn row(&self) -> &'static Row {
        &ANSWERS[self.index()]
    }

    /// The answer line (without newline) and HTTP status.
    pub fn answer(&self) -> (StatusCode, String) {
        let (status, mut body) = self.body();
        body.pop();
        (status, body)
    }

    /// The HTTP status and body: the answer line and its newline.
    pub fn body(&self) -> (StatusCode, String) {
        let row = self.row();
        let mut body = String::with_capacity(48);
        match self {
            Outcome::Ok(d) => push_ok_line(&mut body, d),
            _ => body.push_str(row.line),
        }
        body.push('\n');
        (row.status, body)
    }

    /// Short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        self.row().label
    }
}

/// The success line, exactly as pyhsm's and Yubico's PHP KSM write it and yubikey-val's
/// `sscanf` parses it: `OK counter=%04x low=%04x high=%02x use=%02x`. Written digit by digit
/// rather than through `format!`: it is on every successful request.
pub fn push_ok_line(out: &mut String, c: &OtpCounters) {
    out.push_str(ANSWERS[0].line);
    for (name, value, digits) in [
        (" counter=", u32::from(c.use_ctr), 4),
        (" low=", u32::from(c.ts_low), 4),
        (" high=", u32::from(c.ts_high), 2),
        (" use=", u32::from(c.session_ctr), 2),
    ] {
        out.push_str(name);
        for i in (0..digits).rev() {
            out.push(char::from(
                b"0123456789abcdef"[(value >> (4 * i) & 0xf) as usize],
            ));
        }
    }
}

/// What the pool's failure means for the validator. Device states (a locked key store, a
/// failed line) were already recognised by the pool, which owns the device; what is left
/// are the device's refusals of this OTP or AEAD, and the driver's own checks.
impl From<PoolError> for Outcome {
    fn from(e: PoolError) -> Outcome {
        match e {
            PoolError::Locked => Outcome::Locked,
            // Busy and Reopened concern tool leases, never decodes.
            PoolError::Unavailable
            | PoolError::Busy
            | PoolError::Reopened
            | PoolError::WrongKind
            | PoolError::WrongPassword => Outcome::Unavailable,
            PoolError::Timeout => Outcome::Timeout,
            PoolError::Overloaded => Outcome::Overloaded,
            PoolError::Hsm(HsmError::Device { status, .. }) => match status {
                Status::OtpInvalid => Outcome::CorruptOtp,
                Status::AeadInvalid | Status::InvalidParameter => Outcome::CorruptAead,
                _ => Outcome::HsmRefused,
            },
            PoolError::Hsm(HsmError::Core(CoreError::CorruptOtp)) => Outcome::CorruptOtp,
            // A YubiHSM 2 says `invalid-otp` both for an OTP that fails its checks and for
            // an AEAD it cannot open; the first is what a validator sees every day (a
            // mistyped or forged OTP), so it answers as a YubiHSM 1 does for it.
            PoolError::Hsm2(e) => match e.code() {
                Some(ErrorCode::InvalidOtp) => Outcome::CorruptOtp,
                Some(ErrorCode::InvalidData | ErrorCode::WrongLength) => Outcome::CorruptAead,
                // A forced audit log that is full: the device serves again once it is
                // drained; nothing is wrong with the key handle.
                Some(ErrorCode::LogFull) => Outcome::Unavailable,
                Some(_) => Outcome::HsmRefused,
                None => Outcome::Unavailable,
            },
            PoolError::Hsm(HsmError::Core(CoreError::AeadAuth)) => Outcome::CorruptAead,
            PoolError::Hsm(_) => Outcome::Unavailable,
        }
    }
}

/// What a failed lookup means for the validator: a store that cannot be reached is a
/// service problem (503, try the next KSM); anything else is this YubiKey's AEAD, a file or
/// a row, being unusable.
impl From<&aead_store::StoreError> for Outcome {
    fn from(e: &aead_store::StoreError) -> Outcome {
        match e {
            aead_store::StoreError::Unavailable(_) => Outcome::StoreUnavailable,
            _ => Outcome::CorruptAead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_its_own_line_and_label() {
        let mut labels: Vec<_> = ANSWERS.iter().map(|r| r.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), ANSWERS.len());
        assert!(ANSWERS.iter().all(|r| PYHSM_STATS.contains(&r.pyhsm)));
        assert_eq!(Outcome::StoreUnavailable.index(), ANSWERS.len() - 1);
    }

    #[test]
    fn device_statuses_map_to_stable_answers() {
        let dev = |status| {
            Outcome::from(PoolError::Hsm(HsmError::Device {
                cmd: hsm_proto::Opcode::AeadYubikeyOtpDecode,
                status,
            }))
        };
        assert_eq!(dev(Status::OtpInvalid).answer().1, "ERR Corrupt OTP");
        assert_eq!(dev(Status::AeadInvalid).answer().1, "ERR Corrupt AEAD");
        assert_eq!(
            dev(Status::FunctionDisabled).answer(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR HSM refused key handle".into()
            )
        );
        assert_eq!(
            Outcome::from(PoolError::Locked).answer(),
            (StatusCode::SERVICE_UNAVAILABLE, "ERR HSM locked".into())
        );
        // A YubiHSM 2 whose forced audit log is full cannot serve now; its key is fine.
        let hsm2 = |code| {
            Outcome::from(PoolError::Hsm2(hsm2_proto::Error::Device {
                cmd: hsm2_proto::CommandCode::DecryptOtp,
                code,
            }))
        };
        assert_eq!(
            hsm2(ErrorCode::LogFull).answer(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR HSM unavailable".into()
            )
        );
        assert_eq!(
            hsm2(ErrorCode::InsufficientPermissions).answer().1,
            "ERR HSM refused key handle"
        );
        assert_eq!(
            Outcome::from(PoolError::Overloaded).answer().1,
            "ERR Overloaded"
        );
        assert_eq!(
            Outcome::from(&aead_store::StoreError::Unavailable("down".into())).answer(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR Store unavailable".into()
            )
        );
        let bad_row = aead_store::StoreError::Malformed {
            path: "aead_table row (public_id cccccccccccb, keyhandle 0x20)".into(),
            reason: "nonce is not 6 bytes",
        };
        assert_eq!(Outcome::from(&bad_row).answer().1, "ERR Corrupt AEAD");
    }
}
