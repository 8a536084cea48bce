//! Key material: redacted in `Debug`, wiped on drop.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{Error, Result};

/// An AES key of 16, 24 or 32 bytes: a key-handle key, a temp key or a master key.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct AesKey(Vec<u8>);

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
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct YubiKeySecret {
    /// The YubiKey's AES-128 key.
    pub key: [u8; 16],
    /// The private (secret) uid inside every OTP.
    pub uid: [u8; 6],
}

impl YubiKeySecret {
    /// Size of the serialized secret.
    pub const LEN: usize = 22;

    /// `key ‖ uid`, the AEAD plaintext.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 22]> {
        let mut b = Zeroizing::new([0u8; 22]);
        b[..16].copy_from_slice(&self.key);
        b[16..].copy_from_slice(&self.uid);
        b
    }

    /// Splits a 22-byte AEAD plaintext.
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
    }
}

/// Bytes that may be secret (plaintexts, passwords, HMAC input): `Debug` prints only the
/// length, and the bytes are wiped on drop. Used for such fields in wire messages so a
/// traced message never leaks them.
#[derive(Clone, PartialEq, Eq, Default, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps bytes.
    pub fn new(b: impl Into<Vec<u8>>) -> SecretBytes {
        SecretBytes(b.into())
    }

    /// The bytes.
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
        write!(f, "<{} bytes>", self.0.len())
    }
}
