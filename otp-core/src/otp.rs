//! YubiKey OTPs: the modhex string, the 16-byte token inside it, and its CRC.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use zeroize::Zeroizing;

use crate::{modhex, Error, PublicId, Result, YubiKeySecret};

/// Length of the OTP's ciphertext part in modhex characters.
pub const CIPHERTEXT_CHARS: usize = 32;
/// Shortest OTP string a KSM accepts (pyhsm and the PHP KSM alike).
pub const MIN_CHARS: usize = 32;
/// Longest OTP string (16-character public id).
pub const MAX_CHARS: usize = 48;

/// A YubiKey OTP as typed: public id and the AES-ECB-encrypted 16-byte token.
#[derive(Clone, PartialEq, Eq)]
pub struct Otp {
    /// The public id prefix.
    pub public_id: PublicId,
    /// The encrypted token.
    pub ciphertext: [u8; 16],
}

impl Otp {
    /// Parses an OTP string: lower-case modhex, 32 to 48 characters, the last 32 the token and
    /// the rest (non-empty, even length) the public id.
    #[inline]
    pub fn parse(s: &str) -> Result<Otp> {
        if s.len() < MIN_CHARS || s.len() > MAX_CHARS {
            return Err(Error::InvalidOtp("length must be 32 to 48 characters"));
        }
        if !modhex::is_modhex(s) {
            return Err(Error::InvalidOtp("not lower-case modhex"));
        }
        let (id, ct) = s.split_at(s.len() - CIPHERTEXT_CHARS);
        let public_id = PublicId::new(id)
            .map_err(|_| Error::InvalidOtp("public id must be 2 to 16 characters, even length"))?;
        let mut ciphertext = [0u8; 16];
        modhex::decode_into(ct, &mut ciphertext)?;
        Ok(Otp {
            public_id,
            ciphertext,
        })
    }

    /// The OTP as typed.
    pub fn to_modhex(&self) -> String {
        format!("{}{}", self.public_id, modhex::encode(&self.ciphertext))
    }
}

impl std::fmt::Debug for Otp {
    /// Only the public id: the token part of an OTP is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Otp({}…)", self.public_id)
    }
}

/// The counters a decoded OTP yields: what a KSM answers and a validator compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OtpCounters {
    /// Non-volatile usage counter (the KSM's `counter`).
    pub use_ctr: u16,
    /// Session (volatile) use counter (the KSM's `use`).
    pub session_ctr: u8,
    /// Timestamp high 8 bits (`high`).
    pub ts_high: u8,
    /// Timestamp low 16 bits (`low`).
    pub ts_low: u16,
}

/// The plaintext 16-byte token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// Private uid.
    pub uid: [u8; 6],
    /// The counters.
    pub counters: OtpCounters,
    /// Random bytes.
    pub rnd: u16,
}

/// CRC-16 (ISO 13239) as the YubiKey computes it: init 0xffff, reflected poly 0x8408.
#[inline]
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            let lsb = crc & 1;
            crc >>= 1;
            if lsb != 0 {
                crc ^= 0x8408;
            }
        }
    }
    crc
}

/// The CRC over a whole valid token, its stored CRC included.
pub const CRC_RESIDUAL: u16 = 0xf0b8;

impl Token {
    /// Serializes the token with its CRC field filled in.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&self.uid);
        b[6..8].copy_from_slice(&self.counters.use_ctr.to_le_bytes());
        b[8..10].copy_from_slice(&self.counters.ts_low.to_le_bytes());
        b[10] = self.counters.ts_high;
        b[11] = self.counters.session_ctr;
        b[12..14].copy_from_slice(&self.rnd.to_le_bytes());
        let crc = !crc16(&b[..14]);
        b[14..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a decrypted token, checking the CRC.
    #[inline]
    pub fn from_bytes(b: &[u8; 16]) -> Result<Token> {
        if crc16(b) != CRC_RESIDUAL {
            return Err(Error::CorruptOtp);
        }
        let mut uid = [0u8; 6];
        uid.copy_from_slice(&b[..6]);
        Ok(Token {
            uid,
            counters: OtpCounters {
                use_ctr: u16::from_le_bytes([b[6], b[7]]),
                ts_low: u16::from_le_bytes([b[8], b[9]]),
                ts_high: b[10],
                session_ctr: b[11],
            },
            rnd: u16::from_le_bytes([b[12], b[13]]),
        })
    }
}

/// Decrypts an OTP with a YubiKey's secret and checks CRC and uid, as the HSM's
/// `AEAD_YUBIKEY_OTP_DECODE` does after opening the AEAD.
#[inline]
pub fn decrypt(secret: &YubiKeySecret, ciphertext: &[u8; 16]) -> Result<OtpCounters> {
    let cipher = Aes128::new_from_slice(&secret.key).map_err(|_| Error::KeyLength(16))?;
    let mut block = Zeroizing::new(*ciphertext);
    cipher.decrypt_block(aes::Block::from_mut_slice(&mut *block));
    let token = Token::from_bytes(&block)?;
    if token.uid != secret.uid {
        return Err(Error::CorruptOtp);
    }
    Ok(token.counters)
}

/// Encrypts a token into an OTP: what a YubiKey does. For tests and the emulator's fixtures;
/// the tests also use OTPs from Yubico's `ykgenerate`.
pub fn encrypt(secret: &YubiKeySecret, public_id: &PublicId, token: &Token) -> Otp {
    let mut block = token.to_bytes();
    // A 16-byte key always fits AES-128.
    if let Ok(cipher) = Aes128::new_from_slice(&secret.key) {
        cipher.encrypt_block(aes::Block::from_mut_slice(&mut block));
    }
    Otp {
        public_id: public_id.clone(),
        ciphertext: block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_notes_worked_example() {
        let secret = YubiKeySecret {
            key: hex::decode("000102030405060708090a0b0c0d0e0f")
                .unwrap()
                .try_into()
                .unwrap(),
            uid: [1, 2, 3, 4, 5, 6],
        };
        let token = Token {
            uid: secret.uid,
            counters: OtpCounters {
                use_ctr: 4,
                ts_low: 0xf585,
                ts_high: 0x3e,
                session_ctr: 3,
            },
            rnd: 0x1234,
        };
        assert_eq!(
            hex::encode(token.to_bytes()),
            "010203040506040085f53e033412496c"
        );
        let id = PublicId::new("cccccccccccb").unwrap();
        let otp = encrypt(&secret, &id, &token);
        assert_eq!(
            otp.to_modhex(),
            "cccccccccccbljjlcvvjckfufiuntlnbbktrgeehuvgh"
        );
        let parsed = Otp::parse("cccccccccccbljjlcvvjckfufiuntlnbbktrgeehuvgh").unwrap();
        assert_eq!(
            decrypt(&secret, &parsed.ciphertext).unwrap(),
            token.counters
        );
        let wrong_uid = YubiKeySecret {
            key: secret.key,
            uid: [9; 6],
        };
        assert_eq!(
            decrypt(&wrong_uid, &parsed.ciphertext),
            Err(Error::CorruptOtp)
        );
    }

    #[test]
    fn parse_rejects_bad_shapes() {
        assert!(Otp::parse(&"c".repeat(31)).is_err());
        assert!(Otp::parse(&"c".repeat(49)).is_err());
        assert!(Otp::parse(&"c".repeat(32)).is_err(), "no public id");
        assert!(Otp::parse(&"c".repeat(33)).is_err(), "odd public id");
        assert!(Otp::parse(&format!("{}x", "c".repeat(43))).is_err());
        assert!(Otp::parse(&"C".repeat(44)).is_err());
        assert!(Otp::parse(&"c".repeat(44)).is_ok());
        assert!(!format!("{:?}", Otp::parse(&"c".repeat(44)).unwrap()).contains(&"c".repeat(20)));
    }
}
