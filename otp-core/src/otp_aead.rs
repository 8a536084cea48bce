//! The YubiHSM 2's OTP AEAD: the nonce in clear in front of a YubiHSM 1 AEAD, sealed under
//! an otp-aead-key whose nonce id takes the key handle's place in the CCM nonce (shared
//! protocol notes §5.2). So both devices' AEADs are one cipher ([`crate::aead`]) with two
//! nonce layouts, and a YubiHSM 1 AEAD moves to a YubiHSM 2 unchanged.

use std::fmt;

use crate::{aead, Aead, AesKey, KeyHandle, Nonce, Result, YubiKeySecret, YUBIKEY_AEAD_LEN};

/// The 4 bytes an otp-aead-key puts at the front of every CCM nonce it makes.
///
/// Kept as bytes, not a number: python-yubihsm sends the same number little-endian in
/// `PutOtpAeadKey` and big-endian in `GenerateOtpAeadKey`, and libyubihsm in host order,
/// so the bytes are the only thing all agree on (shared protocol notes §4.4). A YubiHSM 1
/// key handle `kh` moved to a YubiHSM 2 keeps its AEADs valid with
/// [`NonceId::from_key_handle`] (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NonceId(pub [u8; 4]);

impl NonceId {
    /// The nonce id under which a YubiHSM 1 AEAD of key handle `kh` opens unchanged (its
    /// CCM nonce began with the key handle in little-endian).
    pub fn from_key_handle(kh: u32) -> NonceId {
        NonceId(kh.to_le_bytes())
    }
}

/// An OTP AEAD: 6-byte nonce (in clear), then 22 bytes of AES-CCM ciphertext of the
/// YubiKey's AES key and private id, then the 8-byte CCM tag. Safe to store and log: it is
/// useless without the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OtpAead(pub [u8; OtpAead::LEN]);

impl OtpAead {
    /// Size on the wire.
    pub const LEN: usize = 36;

    /// The nonce the device chose.
    #[inline]
    pub fn nonce(&self) -> [u8; 6] {
        let mut n = [0u8; 6];
        n.copy_from_slice(&self.0[..6]);
        n
    }

    /// The YubiHSM 2 form of a YubiHSM 1 AEAD: its 6-byte nonce (the public id for
    /// pyhsm's stores) followed by its 30 bytes (§5.2).
    #[inline]
    pub fn from_yubihsm1(nonce: [u8; 6], aead: [u8; 30]) -> OtpAead {
        let mut a = [0u8; OtpAead::LEN];
        a[..6].copy_from_slice(&nonce);
        a[6..].copy_from_slice(&aead);
        OtpAead(a)
    }
}

impl fmt::Debug for OtpAead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpAead(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// The YubiHSM 1 key handle whose little-endian bytes are `nonce_id`: the CCM nonce both
/// devices build starts with those four bytes.
#[inline]
fn handle_of(nonce_id: NonceId) -> KeyHandle {
    KeyHandle(u32::from_le_bytes(nonce_id.0))
}

/// Seals a YubiKey's key and private id as a YubiHSM 2 does: the nonce in clear, then CCM
/// under the otp-aead-key `key` with nonce id `nonce_id`.
pub fn seal(
    key: &AesKey,
    nonce_id: NonceId,
    nonce: [u8; 6],
    secret: &YubiKeySecret,
) -> Result<OtpAead> {
    let sealed = aead::seal(key, handle_of(nonce_id), &Nonce(nonce), &*secret.to_bytes())?;
    let mut body = [0u8; YUBIKEY_AEAD_LEN];
    body.copy_from_slice(sealed.as_bytes());
    Ok(OtpAead::from_yubihsm1(nonce, body))
}

/// Opens an OTP AEAD; [`crate::Error::AeadAuth`] if it does not authenticate under this
/// key and nonce id.
#[inline]
pub fn open(key: &AesKey, nonce_id: NonceId, sealed: &OtpAead) -> Result<YubiKeySecret> {
    let body = Aead::new(&sealed.0[6..])?;
    let plain = aead::open(key, handle_of(nonce_id), &Nonce(sealed.nonce()), &body)?;
    YubiKeySecret::from_bytes(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// Shared protocol notes §5.2: a YubiHSM 1 AEAD is a YubiHSM 2 AEAD once its nonce is
    /// put in front, under nonce id = key handle little-endian.
    #[test]
    fn yubihsm1_aeads_take_their_nonce_in_front() {
        let hsm1: [u8; 30] =
            hex::decode("a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae")
                .unwrap()
                .try_into()
                .unwrap();
        let a = OtpAead::from_yubihsm1([0, 0, 0, 0, 0, 1], hsm1);
        assert_eq!(
            hex::encode(a.0),
            "000000000001a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(a.nonce(), [0, 0, 0, 0, 0, 1]);
        assert_eq!(NonceId::from_key_handle(0x2000).0, [0x00, 0x20, 0x00, 0x00]);
        assert_eq!(
            NonceId::from_key_handle(0x1234_5678).0,
            [0x78, 0x56, 0x34, 0x12]
        );
    }

    #[test]
    fn seal_and_open_are_the_yubihsm1_cipher_under_the_nonce_id() {
        let key = AesKey::from_hex(&"2000".repeat(16)).unwrap();
        let secret = YubiKeySecret::from_bytes(
            &hex::decode("000102030405060708090a0b0c0d0e0f010203040506").unwrap(),
        )
        .unwrap();
        let id = NonceId::from_key_handle(0x2000);
        let a = seal(&key, id, [0, 0, 0, 0, 0, 1], &secret).unwrap();
        assert_eq!(
            hex::encode(a.0),
            "000000000001a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        );
        assert_eq!(open(&key, id, &a).unwrap(), secret);
        assert_eq!(
            open(&key, NonceId::from_key_handle(0x2001), &a),
            Err(Error::AeadAuth)
        );
    }
}
