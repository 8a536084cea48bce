//! The keys a YubiHSM 2 stores for a KSM: authentication keys (with the password
//! derivation) and otp-aead-keys. Like every secret (`otp_core::secret`), `Debug` prints no
//! byte of them, they are wiped on drop and compared in constant time.

use std::fmt;

use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// Salt of the password-to-key derivation: ASCII `Yubico`, as python-yubihsm and
/// libyubihsm use it.
pub const PASSWORD_SALT: &[u8] = b"Yubico";

/// PBKDF2 iterations of the password-to-key derivation (python-yubihsm, libyubihsm).
pub const PASSWORD_ITERATIONS: u32 = 10_000;

/// A symmetric authentication key: the static K-ENC and K-MAC (AES-128 each) that open
/// sessions, as stored in an `aes128-yubico-authentication` object. Compared in constant
/// time.
#[derive(Clone, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AuthKey {
    enc: [u8; 16],
    mac: [u8; 16],
}

impl PartialEq for AuthKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.enc.ct_eq(&other.enc) & self.mac.ct_eq(&other.mac))
    }
}

impl AuthKey {
    /// The two halves as given.
    pub fn new(enc: [u8; 16], mac: [u8; 16]) -> AuthKey {
        AuthKey { enc, mac }
    }

    /// The keys a password stands for, derived as Yubico's tools derive them:
    /// PBKDF2-HMAC-SHA256 over the password's bytes with salt [`PASSWORD_SALT`] and
    /// [`PASSWORD_ITERATIONS`] rounds, 32 bytes: the first 16 are K-ENC, the last 16 K-MAC.
    /// A new device's authentication key 1 is the password `password`.
    pub fn from_password(password: &[u8]) -> AuthKey {
        let mut out = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(password, PASSWORD_SALT, PASSWORD_ITERATIONS, &mut *out);
        let mut key = AuthKey {
            enc: [0; 16],
            mac: [0; 16],
        };
        key.enc.copy_from_slice(&out[..16]);
        key.mac.copy_from_slice(&out[16..]);
        key
    }

    /// K-ENC: derives the session's encryption key.
    pub fn enc(&self) -> &[u8; 16] {
        &self.enc
    }

    /// K-MAC: derives the session's MAC keys.
    pub fn mac(&self) -> &[u8; 16] {
        &self.mac
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(redacted)")
    }
}

/// An otp-aead-key's AES key: 16, 24 or 32 bytes. Compared in constant time for a given
/// length (the length is not secret).
#[derive(Clone, Eq, Zeroize, ZeroizeOnDrop)]
pub struct OtpAeadKeyBytes(Vec<u8>);

impl PartialEq for OtpAeadKeyBytes {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl OtpAeadKeyBytes {
    /// Takes the key, checking its length.
    pub fn new(bytes: &[u8]) -> Result<OtpAeadKeyBytes> {
        match bytes.len() {
            16 | 24 | 32 => Ok(OtpAeadKeyBytes(bytes.to_vec())),
            len => Err(Error::Length {
                what: "otp-aead-key",
                expected: "16, 24 or 32 bytes",
                len,
            }),
        }
    }

    /// The key.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for OtpAeadKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OtpAeadKeyBytes({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Shared protocol notes §3.7: the default password's keys, which are also the keys
    /// libyubihsm's header hard-codes.
    #[test]
    fn password_keys_match_yubicos() {
        let k = AuthKey::from_password(b"password");
        assert_eq!(k.enc().to_vec(), h("090b47dbed595654901dee1cc655e420"));
        assert_eq!(k.mac().to_vec(), h("592fd483f759e29909a04c4505d2ce0a"));
        assert_ne!(AuthKey::from_password(b"Password"), k);
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let k = AuthKey::new([0xab; 16], [0xcd; 16]);
        assert_eq!(format!("{k:?}"), "AuthKey(redacted)");
        let o = OtpAeadKeyBytes::new(&[0xab; 32]).unwrap();
        assert!(!format!("{o:?}").contains("ab"));
        assert!(matches!(
            OtpAeadKeyBytes::new(&[0; 20]),
            Err(Error::Length { len: 20, .. })
        ));
    }

    #[test]
    fn constant_time_equality_still_tells_keys_apart() {
        let (a, mut b) = (
            AuthKey::new([1; 16], [2; 16]),
            AuthKey::new([1; 16], [2; 16]),
        );
        assert_eq!(a, b);
        b.mac[15] ^= 1;
        assert_ne!(a, b);
        assert_ne!(a, AuthKey::new([0; 16], [2; 16]));
        let k = OtpAeadKeyBytes::new(&[9; 16]).unwrap();
        assert_eq!(k, OtpAeadKeyBytes::new(&[9; 16]).unwrap());
        assert_ne!(k, OtpAeadKeyBytes::new(&[9; 32]).unwrap());
        let mut other = [9; 16];
        other[0] = 0;
        assert_ne!(k, OtpAeadKeyBytes::new(&other).unwrap());
    }
}
