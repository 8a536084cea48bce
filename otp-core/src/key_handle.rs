//! Key handles: the 32-bit names of key slots in the YubiHSM key store.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A YubiHSM key handle.
///
/// Operators spell handles several ways (`32`, `0x20`, `0x00000020`, `KSM1`); pyhsm kept the
/// spelling as typed, and directories named after different spellings of one handle lost
/// keys. We parse every spelling pyhsm accepts once, at the edge, and from then on only the
/// number exists. [`KeyHandle::canonical`] is the one spelling we write.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHandle(pub u32);

impl KeyHandle {
    /// The phantom handle that names a key loaded by `TEMP_KEY_LOAD`.
    pub const TEMP: KeyHandle = KeyHandle(0xffff_ffff);

    /// The spelling this project writes: lower-case hex with a `0x` prefix (`0x20`), the form
    /// pyhsm's documentation and `yhsm-db-export` use.
    pub fn canonical(self) -> String {
        format!("0x{:x}", self.0)
    }

    /// Parses a handle the way pyhsm's `key_handle_to_int` does, in its order: decimal
    /// (surrounding white space allowed), `0x` + hex, or exactly four characters read as
    /// little-endian ASCII (`KSM1` = 0x314d534b).
    pub fn parse(s: &str) -> Result<KeyHandle, Error> {
        let t = s.trim();
        if let Ok(n) = t.strip_prefix('+').unwrap_or(t).parse::<u32>() {
            return Ok(KeyHandle(n));
        }
        if let Some(h) = s.strip_prefix("0x") {
            if let Ok(n) = u32::from_str_radix(h, 16) {
                return Ok(KeyHandle(n));
            }
        }
        if s.len() == 4 && s.is_ascii() {
            let b = s.as_bytes();
            return Ok(KeyHandle(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        }
        Err(Error::InvalidKeyHandle {
            chars: s.chars().count(),
        })
    }
}

impl FromStr for KeyHandle {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyHandle::parse(s)
    }
}

impl fmt::Display for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

impl fmt::Debug for KeyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHandle(0x{:x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_pyhsm_spelling() {
        assert_eq!(KeyHandle::parse("32").unwrap(), KeyHandle(0x20));
        assert_eq!(KeyHandle::parse(" 8192 ").unwrap(), KeyHandle(0x2000));
        assert_eq!(KeyHandle::parse("0x20").unwrap(), KeyHandle(0x20));
        assert_eq!(KeyHandle::parse("0x00000020").unwrap(), KeyHandle(0x20));
        assert_eq!(
            KeyHandle::parse("0xffffffee").unwrap(),
            KeyHandle(0xffff_ffee)
        );
        assert_eq!(KeyHandle::parse("KSM1").unwrap(), KeyHandle(0x314d_534b));
        assert_eq!(KeyHandle::parse("0X10").unwrap(), KeyHandle(0x3031_5830));
        assert!(KeyHandle::parse("nope!").is_err());
        assert!(KeyHandle::parse("0x1_0000_0000").is_err());
    }

    #[test]
    fn a_refused_value_is_not_quoted() {
        // A 16-byte key pasted where a key handle belongs: none of it may be echoed.
        let key = "0123456789abcdef0123456789abcdef";
        let e = KeyHandle::parse(key).unwrap_err();
        assert_eq!(e, Error::InvalidKeyHandle { chars: 32 });
        let shown = e.to_string();
        assert_eq!(
            shown,
            "could not parse key handle (a value of 32 characters given; expected decimal, 0x and hex, or four characters such as KSM1)"
        );
        assert!(!shown.contains("0123"), "{shown}");
    }

    #[test]
    fn canonical_spelling_is_lower_hex() {
        assert_eq!(KeyHandle(0x2000).canonical(), "0x2000");
        assert_eq!(
            KeyHandle::parse(&KeyHandle(0xabc).canonical()).unwrap(),
            KeyHandle(0xabc)
        );
    }
}
