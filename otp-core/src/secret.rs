//! Key material, plaintexts and secret text: `Debug` prints no byte of them, they are
//! wiped on drop, and equality is decided in constant time (for a given length; the length
//! is not secret). One home for both drivers, the emulators, the store and the daemon.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// An AES key of 16, 24 or 32 bytes: a key-handle key, a temp key, a master key or an
/// otp-aead-key.
#[derive(Clone, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AesKey(Vec<u8>);

impl PartialEq for AesKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl AesKey {
    /// Takes key bytes, checking the length.
    pub fn new(bytes: &[u8]) -> Result<AesKey> {
        match bytes.len() {
            16 | 24 | 32 => Ok(AesKey(bytes.to_vec())),
            n => Err(Error::KeyLength(n)),
        }
    }

    /// Parses hex text (the key files' format), wiping the intermediate bytes.
    pub fn from_hex(text: &str) -> Result<AesKey> {
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| Error::InvalidHex("key"))?);
        AesKey::new(&bytes)
    }

    /// The raw key.
    #[inline]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AesKey({} bytes, redacted)", self.0.len())
    }
}

/// A YubiKey's secrets as the HSM keeps them inside an AEAD (`YSM_YUBIKEY_SECRETS`, 22 bytes):
/// the AES-128 key and the 6-byte private uid.
#[derive(Clone, Eq, Zeroize, ZeroizeOnDrop)]
pub struct YubiKeySecret {
    /// The YubiKey's AES-128 key.
    pub key: [u8; 16],
    /// The private (secret) uid inside every OTP.
    pub uid: [u8; 6],
}

impl PartialEq for YubiKeySecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.key.ct_eq(&other.key) & self.uid.ct_eq(&other.uid))
    }
}

impl YubiKeySecret {
    /// Size of the serialized secret.
    pub const LEN: usize = 22;

    /// `key ‖ uid`, the AEAD plaintext.
    #[inline]
    pub fn to_bytes(&self) -> Zeroizing<[u8; 22]> {
        let mut b = Zeroizing::new([0u8; 22]);
        b[..16].copy_from_slice(&self.key);
        b[16..].copy_from_slice(&self.uid);
        b
    }

    /// Splits a 22-byte AEAD plaintext.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Result<YubiKeySecret> {
        if b.len() != Self::LEN {
            return Err(Error::TooLong {
                what: "YubiKey secret",
                len: b.len(),
                max: Self::LEN,
            });
        }
        let mut s = YubiKeySecret {
            key: [0; 16],
            uid: [0; 6],
        };
        s.key.copy_from_slice(&b[..16]);
        s.uid.copy_from_slice(&b[16..]);
        Ok(s)
    }
}

impl fmt::Debug for YubiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("YubiKeySecret(redacted)")
    }
}

/// Fixed-size secret bytes: a YubiKey AES key, a private id, an OTP, a cryptogram-bearing
/// key half.
#[derive(Clone, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>(pub [u8; N]);

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl<const N: usize> Secret<N> {
    /// The bytes.
    #[inline]
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{N} secret bytes>")
    }
}

/// Variable-length secret bytes (plaintexts, passwords, HMAC input, random output). Used
/// for such fields in wire messages so a traced message never leaks them.
#[derive(Clone, Eq, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }
}

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(b: impl Into<Vec<u8>>) -> SecretBytes {
        SecretBytes(b.into())
    }

    /// The bytes.
    #[inline]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} secret bytes>", self.0.len())
    }
}

/// Secret text as written in a configuration (a key in hex, a password): wiped when
/// dropped, never shown by `Debug`.
///
/// The text it was parsed from is wiped by whoever read it (see
/// [`crate::keyfile::read_private`]); the parsers' own transient copies are beyond reach,
/// but every copy we keep is this type.
#[derive(Clone, Default, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize), serde(transparent))]
pub struct SecretString(String);

impl PartialEq for SecretString {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl SecretString {
    /// The text, for decoding.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> SecretString {
        SecretString(s)
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = AesKey::from_hex(&"ab".repeat(32)).unwrap();
        assert!(!format!("{k:?}").contains("ab"));
        let s = YubiKeySecret {
            key: [0xab; 16],
            uid: [0xcd; 6],
        };
        assert_eq!(format!("{s:?}"), "YubiKeySecret(redacted)");
        assert_eq!(AesKey::new(&[0; 5]), Err(Error::KeyLength(5)));
        assert_eq!(format!("{:?}", Secret([0xab_u8; 6])), "<6 secret bytes>");
        assert_eq!(
            format!("{:?}", SecretBytes::new(vec![0xab; 3])),
            "<3 secret bytes>"
        );
        let t = SecretString::from("00112233".to_owned());
        assert_eq!(format!("{t:?}"), "SecretString(redacted)");
    }

    #[test]
    fn constant_time_equality_still_tells_secrets_apart() {
        assert_eq!(Secret([7u8; 6]), Secret([7u8; 6]));
        assert_ne!(Secret([7u8; 6]), Secret([7, 7, 7, 7, 7, 8]));
        assert_eq!(SecretBytes::new(vec![1, 2]), SecretBytes::new(vec![1, 2]));
        assert_ne!(SecretBytes::new(vec![1, 2]), SecretBytes::new(vec![1, 3]));
        assert_ne!(
            SecretBytes::new(vec![1, 2]),
            SecretBytes::new(vec![1, 2, 0])
        );
        assert_eq!(SecretBytes::default(), SecretBytes::new(vec![]));
        let k = AesKey::new(&[9; 16]).unwrap();
        assert_eq!(k, AesKey::new(&[9; 16]).unwrap());
        assert_ne!(k, AesKey::new(&[9; 32]).unwrap());
        let a = YubiKeySecret {
            key: [1; 16],
            uid: [2; 6],
        };
        let mut b = a.clone();
        assert_eq!(a, b);
        b.uid[5] ^= 1;
        assert_ne!(a, b);
        assert_eq!(
            SecretString::from("ab".to_owned()),
            SecretString::from("ab".to_owned())
        );
        assert_ne!(
            SecretString::from("ab".to_owned()),
            SecretString::from("abc".to_owned())
        );
    }
}
