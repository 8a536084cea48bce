//! Which key an AEAD is sealed under: a YubiHSM 1 key handle or a YubiHSM 2 otp-aead-key.
//!
//! Both kinds live side by side in one store, each in directories (or rows) of its own, and
//! a store looks them up in the order it is configured with. That order is how a daemon
//! serves during a move: YubiHSM 2 keys first while AEADs are migrated or rewrapped, the old
//! key (handle or key id) after them, so whichever is there decodes.

use std::fmt;

use otp_core::{KeyHandle, ObjectId};

/// What a directory name must start with to hold YubiHSM 2 AEADs (`otp-aead-key-0x0005`).
///
/// Chosen so no spelling pyhsm parses as a key handle can collide with it: longer than
/// four characters, neither a decimal number nor `0x` followed by hex. pyhsm's tools never
/// look in such a directory, and `KeyHandle::parse` refuses the name.
pub const OTP_KEY_DIR_PREFIX: &str = "otp-aead-key-";

/// The key an AEAD is sealed under, which also says which kind of HSM can open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AeadKey {
    /// A YubiHSM 1 key handle (pyhsm's formats).
    Handle(KeyHandle),
    /// A YubiHSM 2 otp-aead-key object, by id.
    OtpKey(ObjectId),
}

impl AeadKey {
    /// The name of its directory under a store's base: the canonical key-handle spelling
    /// (`0x20`) or `otp-aead-key-0x0005`.
    pub fn dir_name(self) -> String {
        match self {
            AeadKey::Handle(kh) => kh.canonical(),
            AeadKey::OtpKey(id) => format!("{OTP_KEY_DIR_PREFIX}0x{:04x}", id.0),
        }
    }

    /// The key a directory name stands for: any pyhsm spelling of a key handle, or exactly
    /// [`AeadKey::dir_name`] of an otp-aead-key (we are its only writer, so one spelling).
    pub fn from_dir_name(name: &str) -> Option<AeadKey> {
        if let Some(hex) = name.strip_prefix(OTP_KEY_DIR_PREFIX) {
            let digits = hex.strip_prefix("0x")?;
            if digits.len() != 4
                || !digits
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return None;
            }
            return u16::from_str_radix(digits, 16)
                .ok()
                .map(|n| AeadKey::OtpKey(ObjectId(n)));
        }
        KeyHandle::parse(name).ok().map(AeadKey::Handle)
    }

    /// The key handle, for a YubiHSM 1 key.
    pub fn key_handle(self) -> Option<KeyHandle> {
        match self {
            AeadKey::Handle(kh) => Some(kh),
            AeadKey::OtpKey(_) => None,
        }
    }

    /// Parses what an operator types for a key in a store's key list: a YubiHSM 1 key
    /// handle in any pyhsm spelling, or `otp-aead-key:N` / its directory name for a
    /// YubiHSM 2 key id (N decimal or `0x` hex, 1 to 0xffff).
    pub fn parse(s: &str) -> Option<AeadKey> {
        let t = s.trim();
        if let Some(n) = t.strip_prefix("otp-aead-key:") {
            let n = match n.strip_prefix("0x") {
                Some(h) => u16::from_str_radix(h, 16).ok()?,
                None => n.parse::<u16>().ok()?,
            };
            return (n != 0).then_some(AeadKey::OtpKey(ObjectId(n)));
        }
        if t.starts_with(OTP_KEY_DIR_PREFIX) {
            return AeadKey::from_dir_name(t).filter(|k| *k != AeadKey::OtpKey(ObjectId(0)));
        }
        KeyHandle::parse(t).ok().map(AeadKey::Handle)
    }
}

impl From<KeyHandle> for AeadKey {
    fn from(kh: KeyHandle) -> AeadKey {
        AeadKey::Handle(kh)
    }
}

impl From<ObjectId> for AeadKey {
    fn from(id: ObjectId) -> AeadKey {
        AeadKey::OtpKey(id)
    }
}

/// `0x20` for a key handle, `otp-aead-key:0x0005` for a YubiHSM 2 key (what
/// [`AeadKey::parse`] reads back).
impl fmt::Display for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AeadKey::Handle(kh) => kh.fmt(f),
            AeadKey::OtpKey(id) => write!(f, "otp-aead-key:0x{:04x}", id.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_key_directories_never_parse_as_a_key_handle() {
        for n in [0u16, 1, 5, 0x20, 0x4b53, 0xffff] {
            let k = AeadKey::OtpKey(ObjectId(n));
            let name = k.dir_name();
            assert!(KeyHandle::parse(&name).is_err(), "{name}");
            assert_eq!(AeadKey::from_dir_name(&name), Some(k), "{name}");
        }
        assert_eq!(
            AeadKey::OtpKey(ObjectId(5)).dir_name(),
            "otp-aead-key-0x0005"
        );
    }

    #[test]
    fn only_the_canonical_otp_key_directory_name_is_read() {
        for name in [
            "otp-aead-key-5",
            "otp-aead-key-0x5",
            "otp-aead-key-0x00005",
            "otp-aead-key-0x000A",
            "otp-aead-key-0x12345",
            "otp-aead-key-",
            "otp-aead-key-0xzzzz",
        ] {
            assert_eq!(AeadKey::from_dir_name(name), None, "{name}");
        }
        assert_eq!(
            AeadKey::from_dir_name("0x20"),
            Some(AeadKey::Handle(KeyHandle(0x20)))
        );
        assert_eq!(
            AeadKey::from_dir_name("KSM1"),
            Some(AeadKey::Handle(KeyHandle(0x314d_534b)))
        );
    }

    #[test]
    fn keys_parse_back_from_how_they_show() {
        for k in [
            AeadKey::Handle(KeyHandle(0x20)),
            AeadKey::OtpKey(ObjectId(7)),
            AeadKey::OtpKey(ObjectId(0xffff)),
        ] {
            assert_eq!(AeadKey::parse(&k.to_string()), Some(k));
            assert_eq!(AeadKey::parse(&k.dir_name()), Some(k));
        }
        assert_eq!(
            AeadKey::parse("otp-aead-key:12"),
            Some(AeadKey::OtpKey(ObjectId(12)))
        );
        assert_eq!(AeadKey::parse("otp-aead-key:0"), None);
        assert_eq!(AeadKey::parse("otp-aead-key:65536"), None);
        assert_eq!(AeadKey::parse("otp-aead-key:x"), None);
        assert_eq!(AeadKey::parse("32"), Some(AeadKey::Handle(KeyHandle(0x20))));
    }
}
