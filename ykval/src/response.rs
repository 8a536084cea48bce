//! The answer, as yubikey-val writes it: `h=`, `t=`, then the extra lines in yubikey-val's
//! order (`otp`, `nonce`, `sl`, `timestamp`, `sessioncounter`, `sessionuse`), `status=`,
//! each ending in CRLF, and an empty line; `h` signs every other line under the client's
//! key.

use crate::sign::{sign, ClientKey};
use crate::Status;

/// What an answer says besides its status, in the order its lines are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// `otp=` (protocol 2.0).
    pub otp: Option<String>,
    /// `nonce=` (protocol 2.0).
    pub nonce: Option<String>,
    /// `sl=`, the share of servers that agreed.
    pub sl: Option<u8>,
    /// `timestamp=`, `sessioncounter=`, `sessionuse=` (with `timestamp=1`).
    pub timestamp: Option<(u32, u16, u8)>,
}

/// An answer's text for `status` and `extra`, signed under `key` and stamped `t`.
pub fn answer(status: Status, extra: &Extra, key: &ClientKey, t: &str) -> String {
    let mut lines: Vec<(&str, String)> = Vec::with_capacity(8);
    if let Some(otp) = &extra.otp {
        lines.push(("otp", otp.clone()));
    }
    if let Some(nonce) = &extra.nonce {
        lines.push(("nonce", nonce.clone()));
    }
    if let Some(sl) = extra.sl {
        lines.push(("sl", sl.to_string()));
    }
    if let Some((ts, counter, session_use)) = extra.timestamp {
        lines.push(("timestamp", ts.to_string()));
        lines.push(("sessioncounter", counter.to_string()));
        lines.push(("sessionuse", session_use.to_string()));
    }
    let mut signed = lines.clone();
    signed.push(("status", status.as_str().to_string()));
    signed.push(("t", t.to_string()));
    let h = sign(&signed, key);
    let mut out = format!("h={h}\r\nt={t}\r\n");
    for (k, v) in &lines {
        out.push_str(&format!("{k}={v}\r\n"));
    }
    out.push_str(&format!("status={status}\r\n\r\n"));
    out
}

/// `t=` as yubikey-val writes it: the UTC time, `Z0`, then the milliseconds
/// (`2008-11-21T06:11:55Z0711`).
pub fn timestamp(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let millis = unix_millis % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z0{millis:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The date of a day counted from 1970-01-01 (the proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `t=` for now.
pub fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    timestamp(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_is_written_as_yubikey_val_writes_it() {
        // 2008-11-21 06:11:55.711 UTC, from `date -u -d @1227247915`.
        assert_eq!(timestamp(1_227_247_915_711), "2008-11-21T06:11:55Z0711");
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z0000");
        // A leap day, and the last millisecond of a year.
        assert_eq!(timestamp(951_782_400_005), "2000-02-29T00:00:00Z0005");
        assert_eq!(timestamp(1_798_761_599_999), "2026-12-31T23:59:59Z0999");
    }

    #[test]
    fn lines_come_in_yubikey_vals_order_and_h_signs_them_all() {
        let key = ClientKey::from_base64("mG5be6ZJU1qBGz24yPh/ESM3UdU=").expect("key");
        let extra = Extra {
            otp: Some("cccccccccccbtrgvhblnfnibiudcgdkbbhcfjecgvhtb".into()),
            nonce: Some("aaaaaaaaaaaaaaaa".into()),
            sl: Some(100),
            timestamp: Some((0x17_4242, 1, 2)),
        };
        let text = answer(Status::Ok, &extra, &key, "2026-12-07T04:30:00Z0123");
        let lines: Vec<&str> = text.split("\r\n").collect();
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert_eq!(
            names,
            [
                "h",
                "t",
                "otp",
                "nonce",
                "sl",
                "timestamp",
                "sessioncounter",
                "sessionuse",
                "status"
            ]
        );
        assert!(text.ends_with("status=OK\r\n\r\n"), "{text:?}");
        assert!(text.contains("\r\ntimestamp=1524290\r\n"), "{text:?}");
        // `h` is the signature of every other line.
        let h = lines[0].strip_prefix("h=").expect("h first");
        let rest: Vec<(&str, &str)> = lines[1..]
            .iter()
            .filter_map(|l| l.split_once('='))
            .collect();
        assert!(crate::sign::verify(&rest, &key, h));
    }
}
