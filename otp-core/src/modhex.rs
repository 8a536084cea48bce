//! Modhex, the YubiKey keyboard-safe hex alphabet, and the public id built on it.

use std::fmt;
use std::str::FromStr;

use crate::Error;

const ALPHABET: &[u8; 16] = b"cbdefghijklnrtuv";

/// Encodes bytes as lower-case modhex.
#[inline]
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(ALPHABET[usize::from(b >> 4)] as char);
        s.push(ALPHABET[usize::from(b & 0xf)] as char);
    }
    s
}

/// Each byte's modhex value, or `NOT_MODHEX`: one lookup per character (OTPs are parsed on
/// every request), built from [`ALPHABET`] so the alphabet is written once.
const DIGITS: [u8; 256] = {
    let mut t = [NOT_MODHEX; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const NOT_MODHEX: u8 = 0xff;

#[inline]
fn digit(c: u8) -> Option<u8> {
    Some(DIGITS[usize::from(c)]).filter(|d| *d != NOT_MODHEX)
}

/// Decodes lower-case modhex of even length.
pub fn decode(s: &str) -> Result<Vec<u8>, Error> {
    if s.len() % 2 != 0 {
        return Err(Error::InvalidModhex);
    }
    let mut out = vec![0u8; s.len() / 2];
    decode_into(s, &mut out)?;
    Ok(out)
}

/// Decodes lower-case modhex into `out`, which it must fill exactly (no allocation: the
/// OTP's token part is decoded on every request).
#[inline]
pub fn decode_into(s: &str, out: &mut [u8]) -> Result<(), Error> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return Err(Error::InvalidModhex);
    }
    for (o, p) in out.iter_mut().zip(b.chunks_exact(2)) {
        match (digit(p[0]), digit(p[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return Err(Error::InvalidModhex),
        }
    }
    Ok(())
}

/// True if every character is in the modhex alphabet (lower case only, as pyhsm and the PHP
/// KSM require).
#[inline]
pub fn is_modhex(s: &str) -> bool {
    s.bytes().all(|c| digit(c).is_some())
}

/// A YubiKey public id: 2 to 16 modhex characters, even length, validated once.
///
/// It names the AEAD file on disk and, as 6 bytes, is the AEAD nonce. Nothing builds a path
/// from a string that has not become a `PublicId`, so no path can escape the store.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicId(String);

impl PublicId {
    /// Longest public id a YubiKey OTP can carry (16 modhex characters = 8 bytes).
    pub const MAX_CHARS: usize = 16;

    /// Validates `s` as a public id.
    #[inline]
    pub fn new(s: &str) -> Result<PublicId, Error> {
        if s.is_empty() || s.len() > Self::MAX_CHARS || s.len() % 2 != 0 || !is_modhex(s) {
            return Err(Error::InvalidPublicId(s.chars().take(20).collect()));
        }
        Ok(PublicId(s.to_owned()))
    }

    /// The public id of the given bytes (at most 8).
    pub fn from_bytes(b: &[u8]) -> Result<PublicId, Error> {
        PublicId::new(&encode(b))
    }

    /// The public id of a number, as yhsm-generate-keys numbers keys: the number in hex,
    /// left-padded with zeros to `chars` digits, then modhex.
    pub fn from_number(n: u64, chars: usize) -> Result<PublicId, Error> {
        let hex = format!("{n:0chars$x}");
        if hex.len() != chars {
            return Err(Error::InvalidPublicId(format!(
                "{n} does not fit in {chars} characters"
            )));
        }
        let bytes = hex::decode(&hex).map_err(|_| Error::InvalidPublicId(hex.clone()))?;
        PublicId::from_bytes(&bytes)
    }

    /// The modhex text.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The raw bytes.
    #[inline]
    pub fn to_bytes(&self) -> Vec<u8> {
        // Validated at construction, so decoding cannot fail.
        decode(&self.0).unwrap_or_default()
    }

    /// The id as a number (the inverse of [`PublicId::from_number`]).
    pub fn to_number(&self) -> u64 {
        self.to_bytes()
            .iter()
            .fold(0u64, |n, b| n << 8 | u64::from(*b))
    }

    /// The id as the 6-byte AEAD nonce / `publicId` wire field: right-padded with zeros, as
    /// pyhsm pads short ids. Ids longer than 6 bytes cannot be a nonce.
    #[inline]
    pub fn to_nonce(&self) -> Result<crate::Nonce, Error> {
        let b = self.to_bytes();
        if b.len() > 6 {
            return Err(Error::InvalidPublicId(format!(
                "{} is longer than 6 bytes",
                self.0
            )));
        }
        let mut n = [0u8; 6];
        n[..b.len()].copy_from_slice(&b);
        Ok(crate::Nonce(n))
    }
}

impl FromStr for PublicId {
    type Err = Error;
    #[inline]
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PublicId::new(s)
    }
}

impl fmt::Display for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PublicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(encode(&[0x00, 0x01, 0xfe]), "cccbvu");
        assert_eq!(decode("cccbvu").unwrap(), vec![0x00, 0x01, 0xfe]);
        assert_eq!(decode("ccx"), Err(Error::InvalidModhex));
        assert_eq!(decode("cX"), Err(Error::InvalidModhex));
        let mut two = [0u8; 2];
        assert_eq!(decode_into("cccb", &mut two), Ok(()));
        assert_eq!(two, [0, 1]);
        assert_eq!(decode_into("ccc", &mut two), Err(Error::InvalidModhex));
        assert_eq!(decode_into("cccbcc", &mut two), Err(Error::InvalidModhex));
    }

    #[test]
    fn the_lookup_table_is_the_alphabet() {
        for c in 0..=255u8 {
            let want = ALPHABET.iter().position(|&a| a == c).map(|p| p as u8);
            assert_eq!(digit(c), want, "{c:#04x}");
        }
    }

    #[test]
    fn public_id_rules() {
        let id = PublicId::new("ccccdeulfbvj").unwrap();
        assert_eq!(hex::encode(id.to_bytes()), "000023ea41f8");
        assert_eq!(id.to_nonce().unwrap().0, [0, 0, 0x23, 0xea, 0x41, 0xf8]);
        assert!(PublicId::new("").is_err());
        assert!(PublicId::new("ccc").is_err());
        assert!(PublicId::new("../etc").is_err());
        assert!(PublicId::new("CCCC").is_err());
        assert!(PublicId::new("cccccccccccccccccc").is_err());
        assert!(PublicId::new("cccccccccccccccb")
            .unwrap()
            .to_nonce()
            .is_err());
        let n = PublicId::from_number(1, 12).unwrap();
        assert_eq!(n.as_str(), "cccccccccccb");
        assert_eq!(n.to_number(), 1);
        assert!(PublicId::from_number(0x1_0000_0000_0000, 12).is_err());
    }
}
