//! The YubiHSM AEAD: AES-CCM (RFC 3610) with an 8-byte MAC, 2-byte length field and the
//! 13-byte nonce `key handle (u32 LE) ‖ nonce[6] ‖ 00 00 00`, no associated data.
//!
//! The device builds exactly this, so the emulator, the soft HSM and the offline
//! `decrypt-aead` tool all use these two functions.

use std::fmt;

use aes::{Aes128, Aes192, Aes256};
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use ccm::Ccm;
use zeroize::Zeroizing;

use crate::{AesKey, Error, KeyHandle, Nonce, Result};

/// MAC length (`YSM_AEAD_MAC_SIZE`).
pub const MAC_LEN: usize = 8;
/// Largest plaintext the device puts in an AEAD (`YSM_DATA_BUF_SIZE`).
pub const MAX_PLAINTEXT: usize = 64;
/// Largest AEAD (`YSM_AEAD_MAX_SIZE`).
pub const MAX_AEAD: usize = MAX_PLAINTEXT + MAC_LEN;
/// A YubiKey AEAD: 22 bytes of secret + MAC.
pub const YUBIKEY_AEAD_LEN: usize = 30;

/// An AEAD: ciphertext followed by the 8-byte MAC. Not secret without the key-handle key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Aead(Vec<u8>);

/// An AEAD that holds a YubiKey secret: exactly [`YUBIKEY_AEAD_LEN`] bytes, the only size
/// `AEAD_YUBIKEY_OTP_DECODE` and `DB_YUBIKEY_AEAD_STORE` take. The rule is checked here,
/// once, where an [`Aead`] becomes one; whoever holds one need not check again.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct YubiKeyAead([u8; YUBIKEY_AEAD_LEN]);

impl YubiKeyAead {
    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; YUBIKEY_AEAD_LEN] {
        &self.0
    }
}

impl TryFrom<&Aead> for YubiKeyAead {
    type Error = Error;

    #[inline]
    fn try_from(a: &Aead) -> Result<YubiKeyAead> {
        a.as_bytes()
            .try_into()
            .map(YubiKeyAead)
            .map_err(|_| Error::TooLong {
                what: "YubiKey AEAD (must be exactly 30 bytes)",
                len: a.as_bytes().len(),
                max: YUBIKEY_AEAD_LEN,
            })
    }
}

impl fmt::Debug for YubiKeyAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YubiKeyAead({})", hex::encode(self.0))
    }
}

impl Aead {
    /// Wraps AEAD bytes, checking the length (8..=72).
    #[inline]
    pub fn new(bytes: &[u8]) -> Result<Aead> {
        if bytes.len() < MAC_LEN {
            return Err(Error::TooLong {
                what: "AEAD (too short)",
                len: bytes.len(),
                max: MAX_AEAD,
            });
        }
        if bytes.len() > MAX_AEAD {
            return Err(Error::TooLong {
                what: "AEAD",
                len: bytes.len(),
                max: MAX_AEAD,
            });
        }
        Ok(Aead(bytes.to_vec()))
    }

    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length of the plaintext inside.
    #[inline]
    pub fn plaintext_len(&self) -> usize {
        self.0.len() - MAC_LEN
    }
}

impl fmt::Debug for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aead({})", hex::encode(&self.0))
    }
}

#[inline]
fn ccm_nonce(kh: KeyHandle, nonce: &Nonce) -> [u8; 13] {
    let mut n = [0u8; 13];
    n[..4].copy_from_slice(&kh.0.to_le_bytes());
    n[4..10].copy_from_slice(&nonce.0);
    n
}

macro_rules! with_cipher {
    ($key:expr, $c:ident => $body:expr) => {{
        let k = $key.expose();
        match k.len() {
            16 => {
                let $c =
                    Ccm::<Aes128, U8, U13>::new_from_slice(k).map_err(|_| Error::KeyLength(16))?;
                $body
            }
            24 => {
                let $c =
                    Ccm::<Aes192, U8, U13>::new_from_slice(k).map_err(|_| Error::KeyLength(24))?;
                $body
            }
            _ => {
                let $c = Ccm::<Aes256, U8, U13>::new_from_slice(k)
                    .map_err(|_| Error::KeyLength(k.len()))?;
                $body
            }
        }
    }};
}

/// Seals `plaintext` (at most 64 bytes) into an AEAD, as the device does.
pub fn seal(key: &AesKey, kh: KeyHandle, nonce: &Nonce, plaintext: &[u8]) -> Result<Aead> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(Error::TooLong {
            what: "AEAD plaintext",
            len: plaintext.len(),
            max: MAX_PLAINTEXT,
        });
    }
    let n = ccm_nonce(kh, nonce);
    let mut buf = plaintext.to_vec();
    let tag = with_cipher!(key, c => c
        .encrypt_in_place_detached(GenericArray::from_slice(&n), &[], &mut buf)
        .map_err(|_| Error::AeadAuth)?);
    buf.extend_from_slice(&tag);
    Aead::new(&buf)
}

/// Opens an AEAD; the plaintext is wiped when dropped. A wrong key, handle, nonce or a
/// modified AEAD gives [`Error::AeadAuth`].
#[inline]
pub fn open(key: &AesKey, kh: KeyHandle, nonce: &Nonce, aead: &Aead) -> Result<Zeroizing<Vec<u8>>> {
    let n = ccm_nonce(kh, nonce);
    let (ct, tag) = aead.0.split_at(aead.0.len() - MAC_LEN);
    let mut buf = Zeroizing::new(ct.to_vec());
    with_cipher!(key, c => c
        .decrypt_in_place_detached(GenericArray::from_slice(&n), &[], &mut buf, GenericArray::from_slice(tag))
        .map_err(|_| Error::AeadAuth)?);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_notes_worked_example() {
        let key = AesKey::from_hex(&"2000".repeat(16)).unwrap();
        let plain = hex::decode("000102030405060708090a0b0c0d0e0f010203040506").unwrap();
        let nonce = Nonce([0, 0, 0, 0, 0, 1]);
        let a = seal(&key, KeyHandle(0x2000), &nonce, &plain).unwrap();
        assert_eq!(
            hex::encode(a.as_bytes()),
            "a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(*open(&key, KeyHandle(0x2000), &nonce, &a).unwrap(), plain);
        assert_eq!(
            open(&key, KeyHandle(0x2001), &nonce, &a),
            Err(Error::AeadAuth)
        );
    }

    #[test]
    fn real_hardware_vector_from_pyhsm_test_buffer() {
        let key = AesKey::from_hex(&"2000".repeat(16)).unwrap();
        let a = seal(&key, KeyHandle(0x2000), &Nonce(*b"abc123"), b"Sample #2").unwrap();
        assert_eq!(
            hex::encode(a.as_bytes()),
            "18a88fbd7bd2275ba0a722bf80423ffab7"
        );
    }
}
