//! A verify request, read as yubikey-val 2.41 reads it.
//!
//! The checks and their order are yubikey-val 2.41's: for protocol 2.0 a nonce first, `sl`
//! (0 to 100, or `fast`/`secure`) and `timeout` (digits); then the OTP (missing:
//! `MISSING_PARAMETER`; not 32 to 48 modhex characters: `BAD_OTP`), the client id (digits,
//! and not the string `0`: another spelling of zero is looked up and is `NO_SUCH_CLIENT`),
//! and the nonce's letters and length (16 to 40 letters and digits). The first that fails
//! decides the status. An OTP typed on a Dvorak
//! keyboard (all of it in Dvorak's modhex letters) is read back to modhex, and upper case
//! is folded, as yubikey-val does. Protocol 1.0 (`/wsapi/verify`) has no nonce, `sl` or
//! `timeout`.

use crate::Status;

/// Which version of the protocol the path asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/wsapi/verify`.
    V1,
    /// `/wsapi/2.0/verify`.
    V2,
}

/// Shortest nonce (protocol 2.0).
pub const NONCE_MIN: usize = 16;
/// Longest nonce.
pub const NONCE_MAX: usize = 40;
/// Longest OTP, a 16-character public id and the 32-character token.
pub const OTP_MAX: usize = 48;
/// Shortest OTP: the token alone.
pub const OTP_MIN: usize = 32;

/// The parameters as sent, percent-decoded, the last of a repeated name winning (as PHP's
/// `$_GET`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Reads a query string (or a form body).
    pub fn parse(query: &str) -> Params {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match out.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v.into_owned(),
                None => out.push((k.into_owned(), v.into_owned())),
            }
        }
        Params(out)
    }

    /// A value as yubikey-val's `getHttpVal` gives it: trimmed, backslashes removed.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().replace('\\', ""))
    }

    /// What the request's signature covers: every parameter but `h`, as sent.
    pub fn signed(&self) -> Vec<(&str, &str)> {
        self.0
            .iter()
            .filter(|(k, _)| k != "h")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// A request that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The protocol asked for.
    pub protocol: Protocol,
    /// The client id.
    pub id: i64,
    /// The OTP, lower-case modhex.
    pub otp: String,
    /// The nonce (protocol 2.0).
    pub nonce: Option<String>,
    /// The signature, if the client signed.
    pub h: Option<String>,
    /// `timestamp=1`: the answer carries the timestamp and session counters.
    pub timestamp: bool,
    /// The parameters as sent.
    pub params: Params,
}

/// A request refused before any client is known: its status, and the OTP and nonce the
/// answer may echo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `MISSING_PARAMETER` or `BAD_OTP`.
    pub status: Status,
}

fn refuse(status: Status) -> Refused {
    Refused { status }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Dvorak's keys where a US keyboard has modhex's `cbdefghijklnrtuv`.
const DVORAK: &str = "jxe.uidchtnbpygk";
const MODHEX: &str = "cbdefghijklnrtuv";

/// An OTP typed on a Dvorak keyboard, read back to modhex (one typed otherwise as it is).
/// Twelve of the sixteen letters are both modhex and Dvorak keys, so about one OTP in ten
/// thousand is made of them alone: yubikey-val converts such an OTP too, and so breaks an
/// OTP typed on a US keyboard. Here only an OTP that is not modhex already is converted
/// (one with `.`, `p`, `x` or `y`), so the US keyboard wins the tie.
fn from_dvorak(otp: &str) -> String {
    if otp.is_empty()
        || otp_core::modhex::is_modhex(otp)
        || !otp.chars().all(|c| DVORAK.contains(c))
    {
        return otp.to_string();
    }
    otp.chars()
        .map(|c| {
            DVORAK
                .find(c)
                .and_then(|i| MODHEX.chars().nth(i))
                .unwrap_or(c)
        })
        .collect()
}

impl Request {
    /// Checks the parameters of a request on `protocol`'s path.
    pub fn parse(protocol: Protocol, params: Params) -> Result<Request, Refused> {
        let otp = from_dvorak(&params.get("otp").unwrap_or_default().to_lowercase());
        let nonce = match protocol {
            Protocol::V1 => None,
            Protocol::V2 => match params.get("nonce").filter(|n| !n.is_empty()) {
                None => return Err(refuse(Status::MissingParameter)),
                some => some,
            },
        };
        if protocol == Protocol::V2 {
            if let Some(sl) = params.get("sl").filter(|s| !s.is_empty()) {
                let named = sl.eq_ignore_ascii_case("fast") || sl.eq_ignore_ascii_case("secure");
                let level = digits(&sl) && sl.parse::<u64>().is_ok_and(|n| n <= 100);
                if !named && !level {
                    return Err(refuse(Status::MissingParameter));
                }
            }
            if let Some(t) = params.get("timeout").filter(|t| !t.is_empty()) {
                if !digits(&t) {
                    return Err(refuse(Status::MissingParameter));
                }
            }
        }
        if otp.is_empty() {
            return Err(refuse(Status::MissingParameter));
        }
        if otp.len() < OTP_MIN || otp.len() > OTP_MAX || !otp_core::modhex::is_modhex(&otp) {
            return Err(refuse(Status::BadOtp));
        }
        // A missing id reads as the string `0`, which alone is refused: another spelling of
        // zero (`00`) is looked up, and no client has it.
        let id = params.get("id").unwrap_or_else(|| "0".into());
        if !digits(&id) || id == "0" {
            return Err(refuse(Status::MissingParameter));
        }
        if let Some(n) = &nonce {
            let alnum = n.bytes().all(|b| b.is_ascii_alphanumeric());
            if !alnum || n.len() < NONCE_MIN || n.len() > NONCE_MAX {
                return Err(refuse(Status::MissingParameter));
            }
        }
        // Digits that do not fit are no client id there can be.
        let id = id.parse::<i64>().unwrap_or(i64::MAX);
        let timestamp = params
            .get("timestamp")
            .is_some_and(|t| t.parse::<i64>() == Ok(1));
        Ok(Request {
            protocol,
            id,
            otp,
            nonce,
            h: params.get("h").filter(|h| !h.is_empty()),
            timestamp,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OTP: &str = "vvungrrdhvtklknvrtvuvbbkeidikkvgglrvdgrfcdft";
    const NONCE: &str = "jrFwbaYFhn0HoxZIsd9LQ6w2ceU";

    fn v2(q: &str) -> Result<Request, Status> {
        Request::parse(Protocol::V2, Params::parse(q)).map_err(|r| r.status)
    }

    #[test]
    fn a_good_request_reads() {
        let r = v2(&format!(
            "id=7&otp={}&nonce={NONCE}&timestamp=1&sl=50&timeout=8",
            OTP.to_uppercase()
        ))
        .expect("good");
        assert_eq!(r.id, 7);
        assert_eq!(r.otp, OTP);
        assert_eq!(r.nonce.as_deref(), Some(NONCE));
        assert!(r.timestamp);
        assert_eq!(r.h, None);
    }

    #[test]
    fn each_rule_gives_yubikey_vals_status() {
        use Status::*;
        for (q, want) in [
            (format!("id=1&otp={OTP}"), MissingParameter),
            (format!("id=1&otp={OTP}&nonce="), MissingParameter),
            (format!("id=1&nonce={NONCE}"), MissingParameter),
            (format!("id=1&otp=cccc&nonce={NONCE}"), BadOtp),
            (format!("id=1&otp={OTP}cccccc&nonce={NONCE}"), BadOtp),
            (
                format!("id=1&otp={}&nonce={NONCE}", OTP.replace('v', "a")),
                BadOtp,
            ),
            (format!("id=x1&otp={OTP}&nonce={NONCE}"), MissingParameter),
            (format!("id=0&otp={OTP}&nonce={NONCE}"), MissingParameter),
            (format!("otp={OTP}&nonce={NONCE}"), MissingParameter),
            (
                format!("id=1&otp={OTP}&nonce={NONCE}&timeout=1s"),
                MissingParameter,
            ),
            (format!("id=1&otp={OTP}&nonce=abc"), MissingParameter),
            (
                format!("id=1&otp={OTP}&nonce={}", "a".repeat(41)),
                MissingParameter,
            ),
            (
                format!("id=1&otp={OTP}&nonce=abcdefghijklmno-"),
                MissingParameter,
            ),
            (
                format!("id=1&otp={OTP}&nonce={NONCE}&sl=101"),
                MissingParameter,
            ),
            (
                format!("id=1&otp={OTP}&nonce={NONCE}&sl=half"),
                MissingParameter,
            ),
            // 2.41's order: sl and timeout before the OTP, the id before the nonce's form.
            (
                format!("id=1&otp=short&nonce={NONCE}&sl=101"),
                MissingParameter,
            ),
            (
                format!("id=1&otp=short&nonce={NONCE}&timeout=x"),
                MissingParameter,
            ),
            (format!("id=1&nonce={NONCE}&sl=101"), MissingParameter),
            (format!("id=00&otp={OTP}&nonce=abc"), MissingParameter),
            (format!("id=x&otp={OTP}&nonce=abc"), MissingParameter),
        ] {
            assert_eq!(v2(&q).map(|_| ()), Err(want), "{q}");
        }
        for q in [
            format!("id=1&otp={OTP}&nonce={}", "a".repeat(16)),
            format!("id=1&otp={OTP}&nonce={}", "a".repeat(40)),
            format!("id=1&otp={OTP}&nonce={NONCE}&sl=secure&timeout=10"),
            format!("id=1&otp={OTP}&nonce={NONCE}&sl=0"),
        ] {
            assert!(v2(&q).is_ok(), "{q}");
        }
        // Only the string `0` is a missing id: `00` is read, and looked up (no client has
        // it: `NO_SUCH_CLIENT`, as yubikey-val answers).
        assert_eq!(
            v2(&format!("id=00&otp={OTP}&nonce={NONCE}")).map(|r| r.id),
            Result::Ok(0)
        );
    }

    #[test]
    fn protocol_one_needs_no_nonce_and_reads_none() {
        let r = Request::parse(
            Protocol::V1,
            Params::parse(&format!("id=3&otp={OTP}&nonce=x&sl=zzz")),
        )
        .expect("good");
        assert_eq!(r.nonce, None);
    }

    #[test]
    fn a_dvorak_otp_is_read_back() {
        let dvorak: String = OTP
            .chars()
            .map(|c| {
                DVORAK
                    .chars()
                    .nth(MODHEX.find(c).expect("modhex"))
                    .expect("dvorak")
            })
            .collect();
        let r = v2(&format!("id=1&otp={dvorak}&nonce={NONCE}")).expect("good");
        assert_eq!(r.otp, OTP);
        // Made only of letters both layouts share: taken as modhex, as typed.
        let shared = "cccccccccccbcbdeghijkntucbdeghijkntucbdeghij";
        let r = v2(&format!("id=1&otp={shared}&nonce={NONCE}")).expect("good");
        assert_eq!(r.otp, shared);
    }

    #[test]
    fn the_signature_covers_every_parameter_but_h_as_sent() {
        let p = Params::parse("otp=a%20b&id=1&h=xyz&id=2");
        assert_eq!(p.signed(), vec![("otp", "a b"), ("id", "2")]);
    }

    /// Whatever bytes a query holds, reading it ends in a request or a status, never a
    /// panic, and an answer can be written for either.
    #[test]
    fn any_query_is_read_without_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        let alphabet = b"idotpncesmhaurlv=&%+2F0aAcbdefghijklnrtuv19 \\\xc3\xa9";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..120);
            let q: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let q = String::from_utf8_lossy(&q);
            for protocol in [Protocol::V1, Protocol::V2] {
                let status = match Request::parse(protocol, Params::parse(&q)) {
                    Ok(r) => {
                        assert!(r.id >= 0 && r.otp.len() >= OTP_MIN);
                        Status::Ok
                    }
                    Err(e) => e.status,
                };
                let text = crate::response::answer(
                    status,
                    &crate::response::Extra::default(),
                    &crate::sign::ClientKey::empty(),
                    "t",
                );
                assert!(text.ends_with("\r\n\r\n"));
            }
        }
    }
}
