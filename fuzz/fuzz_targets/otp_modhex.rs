//! OTP and modhex parsing: the first thing the daemon does with a caller's `otp=` value.
//!
//! Why: the OTP string comes straight from the network, and the public id it yields names a
//! file on disk, so the parsers must reject everything that is not modhex of the right shape
//! and must agree with the encoders. The properties are the ones the code documents:
//! - `modhex::encode` then `decode` gives the bytes back, and `is_modhex` holds for it;
//! - `decode` succeeds exactly for even-length lower-case modhex, and re-encodes to its input;
//! - `PublicId::new` accepts exactly 2 to 16 modhex characters of even length; its bytes,
//!   number and nonce forms agree with each other and lead back to the same id;
//! - `Otp::parse`, on the value as the HTTP layer normalises it (trimmed, lower-cased),
//!   succeeds exactly for 32 to 48 modhex characters with an even-length public id, and
//!   `to_modhex` gives that value back;
//! - a decrypted 16-byte token whose CRC checks serialises back to the same 16 bytes, and
//!   decrypting any ciphertext with a fixture key never panics.
#![no_main]
#![forbid(unsafe_code)]

use libfuzzer_sys::fuzz_target;
use otp_core::otp::{self, Otp, Token};
use otp_core::{modhex, PublicId, YubiKeySecret};

fn check_modhex_bytes(data: &[u8]) {
    let text = modhex::encode(data);
    assert_eq!(text.len(), data.len() * 2);
    assert!(modhex::is_modhex(&text));
    assert_eq!(modhex::decode(&text).as_deref(), Ok(data));
}

fn check_modhex_text(s: &str) {
    let decoded = modhex::decode(s);
    assert_eq!(
        decoded.is_ok(),
        s.len() % 2 == 0 && modhex::is_modhex(s),
        "decode and is_modhex disagree on {s:?}"
    );
    if let Ok(bytes) = decoded {
        assert_eq!(modhex::encode(&bytes), s);
    }
}

fn check_public_id(s: &str) {
    let valid =
        (2..=PublicId::MAX_CHARS).contains(&s.len()) && s.len() % 2 == 0 && modhex::is_modhex(s);
    let Ok(id) = PublicId::new(s) else {
        assert!(!valid, "PublicId::new refused {s:?}");
        return;
    };
    assert!(valid, "PublicId::new accepted {s:?}");
    assert_eq!(id.as_str(), s);
    assert_eq!(id.to_string(), s);
    let bytes = id.to_bytes();
    assert_eq!(modhex::decode(s).as_ref(), Ok(&bytes));
    assert_eq!(PublicId::from_bytes(&bytes).as_ref(), Ok(&id));
    assert_eq!(
        PublicId::from_number(id.to_number(), s.len()).as_ref(),
        Ok(&id)
    );
    match id.to_nonce() {
        Ok(nonce) => {
            assert!(bytes.len() <= 6);
            assert_eq!(&nonce.0[..bytes.len()], &bytes[..]);
            assert!(nonce.0[bytes.len()..].iter().all(|b| *b == 0));
        }
        Err(_) => assert!(bytes.len() > 6),
    }
}

fn check_otp(raw: &str) {
    // As the HTTP layer hands it over: white space trimmed, lower-cased.
    let s = raw.trim().to_ascii_lowercase();
    let id_len = s.len().wrapping_sub(otp::CIPHERTEXT_CHARS);
    let valid = (otp::MIN_CHARS..=otp::MAX_CHARS).contains(&s.len())
        && modhex::is_modhex(&s)
        && id_len >= 2
        && id_len % 2 == 0;
    let Ok(parsed) = Otp::parse(&s) else {
        assert!(!valid, "Otp::parse refused {s:?}");
        return;
    };
    assert!(valid, "Otp::parse accepted {s:?}");
    assert_eq!(parsed.to_modhex(), s);
    assert_eq!(parsed.public_id.as_str(), &s[..id_len]);
    assert_eq!(
        modhex::decode(&s[id_len..]).as_deref(),
        Ok(&parsed.ciphertext[..])
    );
    let _ = otp::decrypt(&fixture_secret(), &parsed.ciphertext);
}

/// The first YubiKey of `fixtures/otp-vectors.json` (ccccdeulfbvj).
fn fixture_secret() -> YubiKeySecret {
    YubiKeySecret {
        key: [
            0x70, 0x8d, 0xab, 0xb7, 0xfc, 0xda, 0xb9, 0x53, 0x6f, 0xe4, 0xfb, 0x6f, 0x0d, 0xf4,
            0xa8, 0xae,
        ],
        uid: [0x4f, 0x27, 0xa7, 0x12, 0xb1, 0x57],
    }
}

fn check_token(data: &[u8]) {
    let Some(block) = data.get(..16) else { return };
    let mut b = [0u8; 16];
    b.copy_from_slice(block);
    if let Ok(token) = Token::from_bytes(&b) {
        assert_eq!(
            token.to_bytes(),
            b,
            "a token with a good CRC did not round-trip"
        );
    }
    let _ = otp::decrypt(&fixture_secret(), &b);
}

fuzz_target!(|data: &[u8]| {
    check_modhex_bytes(data);
    check_token(data);
    let text = String::from_utf8_lossy(data);
    check_modhex_text(&text);
    check_public_id(&text);
    check_otp(&text);
});
