//! The signature of requests and answers: HMAC-SHA1 under the client's key over the
//! parameters sorted by name and joined as `name=value&…` (values as decoded, not
//! percent-encoded), in base64.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A client's key (the decoded `secret` of its `clients` row): wiped when dropped, never
/// shown.
#[derive(Clone, Default)]
pub struct ClientKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientKey(redacted)")
    }
}

/// Base64 as yubikey-val's secrets are written, padded or not.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl ClientKey {
    /// The key of a `clients.secret` (base64); `None` if it is not base64.
    pub fn from_base64(secret: &str) -> Option<ClientKey> {
        LENIENT
            .decode(secret.trim())
            .ok()
            .map(|k| ClientKey(Zeroizing::new(k)))
    }

    /// The empty key: yubikey-val signs with it the answers given before it knows the
    /// client (`MISSING_PARAMETER`, `NO_SUCH_CLIENT`, a database down).
    pub fn empty() -> ClientKey {
        ClientKey::default()
    }
}

/// The signature of `pairs` under `key`. The pairs are sorted by name here (stably, so
/// a caller's order never matters).
pub fn sign<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], key: &ClientKey) -> String {
    let mut sorted: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    // A key of any length is accepted by HMAC.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&key.0) else {
        return String::new();
    };
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            mac.update(b"&");
        }
        mac.update(k.as_bytes());
        mac.update(b"=");
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `h` is the signature of `pairs` under `key`, compared in constant time.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)], key: &ClientKey, h: &str) -> bool {
    let ours = sign(pairs, key);
    ours.len() == h.len() && bool::from(ours.as_bytes().ct_eq(h.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request signed by Python's `hmac` and `base64` (an implementation other than ours,
    /// so a mistake made the same way in signing and checking cannot pass).
    #[test]
    fn a_known_signature() {
        let key = ClientKey::from_base64("mG5be6ZJU1qBGz24yPh/ESM3UdU=").expect("base64");
        let pairs = [
            ("otp", "vvungrrdhvtklknvrtvuvbbkeidikkvgglrvdgrfcdft"),
            ("nonce", "jrFwbaYFhn0HoxZIsd9LQ6w2ceU"),
            ("id", "1"),
        ];
        assert_eq!(sign(&pairs, &key), KNOWN);
        assert!(verify(&pairs, &key, KNOWN));
        assert!(!verify(&pairs, &ClientKey::empty(), KNOWN));
        assert!(!verify(&pairs[..2], &key, KNOWN));
    }

    /// `python3 -c "import hmac,hashlib,base64; k=base64.b64decode('mG5be6ZJU1qBGz24yPh/ESM3UdU=');
    /// print(base64.b64encode(hmac.new(k, b'id=1&nonce=jrFwbaYFhn0HoxZIsd9LQ6w2ceU&otp=vvungrrdhvtklknvrtvuvbbkeidikkvgglrvdgrfcdft', hashlib.sha1).digest()).decode())"`
    const KNOWN: &str = "+ja8S3IjbX593/LAgTBixwPNGX4=";

    #[test]
    fn secrets_read_with_or_without_padding() {
        assert!(ClientKey::from_base64("mG5be6ZJU1qBGz24yPh/ESM3UdU").is_some());
        assert!(ClientKey::from_base64("not base64!").is_none());
        assert_eq!(format!("{:?}", ClientKey::empty()), "ClientKey(redacted)");
    }
}
