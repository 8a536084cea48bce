//! The counter rules as pure functions: whether an OTP advances a YubiKey's row, and
//! yubikey-val's check of the YubiKey's clock against the server's within a session.

use crate::db::{Counters, Yubikey};

/// What a `yubikeys` row says of an OTP's counters, in yubikey-val's order of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Above the row's counters: the row may advance to them.
    Advance,
    /// The YubiKey is revoked (`active` false): yubikey-val answers `BAD_OTP`.
    Inactive,
    /// The row holds these very counters, set by a request with the same nonce: the same
    /// request again (`REPLAYED_REQUEST`).
    ReplayedRequest,
    /// At or below the row's counters: an OTP used before (`REPLAYED_OTP`).
    ReplayedOtp,
}

/// Judges an OTP's `otp` counters, sent with `nonce`, against `row`.
pub fn judge(row: &Yubikey, otp: Counters, nonce: &str) -> Verdict {
    if !row.active {
        Verdict::Inactive
    } else if row.counters == otp && row.nonce == nonce {
        Verdict::ReplayedRequest
    } else if row.counters >= otp {
        Verdict::ReplayedOtp
    } else {
        Verdict::Advance
    }
}

/// The YubiKey's timestamp ticks at 8 Hz.
pub const TICKS_PER_SECOND: f64 = 8.0;
/// Deviation tolerated whatever the time elapsed (yubikey-val's `TS_ABS_TOLERANCE`).
pub const ABS_TOLERANCE_SECS: f64 = 20.0;
/// Deviation tolerated as a share of the time elapsed (`TS_REL_TOLERANCE`).
pub const REL_TOLERANCE: f64 = 0.3;

/// The outcome of the clock check ([`clock_check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockCheck {
    /// Seconds the YubiKey's timestamp advanced since the previous OTP.
    pub key_secs: f64,
    /// Seconds the server's clock advanced since then (from the row's `modified`).
    pub server_secs: i64,
    /// How far apart the two are, in seconds.
    pub deviation: f64,
    /// Past both tolerances: an OTP that may have been held back (phished) and replayed
    /// later. yubikey-val logs it and still answers `OK` (its `DELAYED_OTP` is disabled),
    /// and so do we.
    pub failed: bool,
}

/// yubikey-val's check of an accepted OTP's timestamp (`high`, `low`) against the server's
/// clock (`now`), made only within one session (same non-volatile counter, higher session
/// use than `previous`, whose timestamp and `modified` time it compares with). `None` when
/// the check does not apply.
pub fn clock_check(
    previous: &Yubikey,
    otp: Counters,
    high: u8,
    low: u16,
    now: i64,
) -> Option<ClockCheck> {
    let same_session =
        otp.counter == previous.counters.counter && otp.session_use > previous.counters.session_use;
    if !same_session || previous.modified < 0 {
        return None;
    }
    let ts = (i64::from(high) << 16) + i64::from(low);
    let seen = (previous.high << 16) + previous.low;
    let key_secs = (ts - seen) as f64 / TICKS_PER_SECOND;
    let server_secs = now - previous.modified;
    let deviation = (server_secs as f64 - key_secs).abs();
    // Several OTPs within one second of the server's clock: no ratio to take, count it
    // as 100 % as yubikey-val does.
    let share = match server_secs {
        0 => 1.0,
        s => deviation / s as f64,
    };
    Some(ClockCheck {
        key_secs,
        server_secs,
        deviation,
        failed: deviation > ABS_TOLERANCE_SECS && share > REL_TOLERANCE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(counter: i64, session_use: i64, nonce: &str) -> Yubikey {
        Yubikey {
            active: true,
            created: 1,
            modified: 1_000,
            public_name: "cccccccccccb".into(),
            counters: Counters {
                counter,
                session_use,
            },
            low: 0,
            high: 0,
            nonce: nonce.into(),
            notes: None,
        }
    }

    fn c(counter: i64, session_use: i64) -> Counters {
        Counters {
            counter,
            session_use,
        }
    }

    #[test]
    fn counters_order_by_the_non_volatile_counter_first() {
        let r = row(40, 5, "n1n1n1n1n1n1n1n1");
        assert_eq!(judge(&r, c(41, 0), "x"), Verdict::Advance);
        assert_eq!(judge(&r, c(40, 6), "x"), Verdict::Advance);
        assert_eq!(judge(&r, c(40, 5), "x"), Verdict::ReplayedOtp);
        assert_eq!(judge(&r, c(40, 4), "x"), Verdict::ReplayedOtp);
        assert_eq!(judge(&r, c(39, 200), "x"), Verdict::ReplayedOtp);
    }

    #[test]
    fn the_same_counters_with_the_same_nonce_are_a_replayed_request() {
        let r = row(40, 5, "n1n1n1n1n1n1n1n1");
        assert_eq!(
            judge(&r, c(40, 5), "n1n1n1n1n1n1n1n1"),
            Verdict::ReplayedRequest
        );
        // Lower counters with that nonce are an old OTP, not this request again.
        assert_eq!(
            judge(&r, c(40, 4), "n1n1n1n1n1n1n1n1"),
            Verdict::ReplayedOtp
        );
    }

    #[test]
    fn a_new_row_is_below_every_otp_and_a_revoked_one_refuses_all() {
        let new = row(-1, -1, "0000000000000000");
        assert_eq!(judge(&new, c(0, 0), "x"), Verdict::Advance);
        let mut revoked = row(1, 1, "x");
        revoked.active = false;
        assert_eq!(judge(&revoked, c(9, 9), "x"), Verdict::Inactive);
    }

    #[test]
    fn the_clock_check_applies_within_a_session_and_has_both_tolerances() {
        let mut prev = row(7, 2, "n");
        prev.high = 0;
        prev.low = 800; // 100 s of key time
        prev.modified = 1_000;
        // Another session: no check.
        assert_eq!(clock_check(&prev, c(8, 0), 0, 0, 2_000), None);
        // 100 s on the server, 100 s on the key.
        let ok = clock_check(&prev, c(7, 3), 0, 1_600, 1_100).expect("checked");
        assert_eq!(ok.key_secs, 100.0);
        assert!(!ok.failed, "{ok:?}");
        // 100 s on the server, 21 s on the key: 79 s (79 %) off.
        let held = clock_check(&prev, c(7, 3), 0, 800 + 168, 1_100).expect("checked");
        assert!(held.failed, "{held:?}");
        // 1000 s on the server, 750 s on the key: 250 s off but 25 %: within.
        let slow = clock_check(&prev, c(7, 3), 0, 800 + 6_000, 2_000).expect("checked");
        assert!(!slow.failed, "{slow:?}");
        // 19 s off is within the absolute tolerance whatever the share.
        let near = clock_check(&prev, c(7, 3), 0, 800 + 8, 1_020).expect("checked");
        assert!(!near.failed, "{near:?}");
        // The same second on the server: the share counts as 100 %.
        let burst = clock_check(&prev, c(7, 3), 0, 800 + 8 * 30, 1_000).expect("checked");
        assert!(burst.failed, "{burst:?}");
        // The high byte counts 65536 ticks.
        let wrap = clock_check(&prev, c(7, 3), 1, 800, 1_000 + 8_192).expect("checked");
        assert_eq!(wrap.key_secs, 8_192.0);
        assert!(!wrap.failed, "{wrap:?}");
    }
}
