//! Permission flags: one bit per permitted operation, on a key handle and system-wide.

use std::fmt;

use crate::Error;

/// A 32-bit permission word.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u32);

/// Writes the flag table once: each row becomes a `Flags` constant and an entry of
/// [`FLAG_NAMES`].
macro_rules! flag_table {
    ($($name:ident = $bit:literal => $text:literal;)*) => {
        /// The flag table: bit and the name the device prints, in bit order.
        pub const FLAG_NAMES: &[(u32, &str)] = &[$(($bit, $text)),*];

        impl Flags {
            $(
                #[doc = concat!("`", $text, "`, bit ", stringify!($bit), ".")]
                pub const $name: Flags = Flags($bit);
            )*
        }
    };
}

// Bits not named by a Yubico source follow the `1 << command code` pattern every known bit
// obeys (see the protocol notes).
flag_table! {
    AEAD_GENERATE = 0x0000_0002 => "YSM_AEAD_GENERATE";
    BUFFER_AEAD_GENERATE = 0x0000_0004 => "YSM_BUFFER_AEAD_GENERATE";
    RANDOM_AEAD_GENERATE = 0x0000_0008 => "YSM_RANDOM_AEAD_GENERATE";
    AEAD_DECRYPT_CMP = 0x0000_0010 => "YSM_AEAD_DECRYPT_CMP";
    DB_YUBIKEY_AEAD_STORE = 0x0000_0020 => "YSM_DB_YUBIKEY_AEAD_STORE";
    AEAD_YUBIKEY_OTP_DECODE = 0x0000_0040 => "YSM_AEAD_YUBIKEY_OTP_DECODE";
    DB_YUBIKEY_OTP_VALIDATE = 0x0000_0080 => "YSM_DB_YUBIKEY_OTP_VALIDATE";
    AES_ECB_BLOCK_ENCRYPT = 0x0000_2000 => "YSM_AES_ECB_BLOCK_ENCRYPT";
    AES_ECB_BLOCK_DECRYPT = 0x0000_4000 => "YSM_AES_ECB_BLOCK_DECRYPT";
    AES_ECB_BLOCK_DECRYPT_CMP = 0x0000_8000 => "YSM_AES_ECB_BLOCK_DECRYPT_CMP";
    HMAC_SHA1_GENERATE = 0x0001_0000 => "YSM_HMAC_SHA1_GENERATE";
    TEMP_KEY_LOAD = 0x0002_0000 => "YSM_TEMP_KEY_LOAD";
    USER_NONCE = 0x2000_0000 => "YSM_USER_NONCE";
    BUFFER_LOAD = 0x4000_0000 => "YSM_BUFFER_LOAD";
    DEBUG = 0x8000_0000 => "FLAG_DEBUG";
}

impl Flags {
    /// Every bit set.
    pub const ALL: Flags = Flags(0xffff_ffff);

    /// True if every bit of `other` is set here.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses one flag given by number (`0x20000002`, `64`) or by name, with or without the
    /// `YSM_` prefix (`AEAD_GENERATE`, `YSM_USER_NONCE`).
    pub fn parse_one(s: &str) -> Result<Flags, Error> {
        let t = s.trim();
        if let Some(h) = t.strip_prefix("0x") {
            return u32::from_str_radix(h, 16)
                .map(Flags)
                .map_err(|_| Error::InvalidFlag(t.into()));
        }
        if let Ok(n) = t.parse::<u32>() {
            return Ok(Flags(n));
        }
        let up = t.to_ascii_uppercase();
        FLAG_NAMES
            .iter()
            .find(|(_, name)| *name == up || name.strip_prefix("YSM_") == Some(up.as_str()))
            .map(|(bit, _)| Flags(*bit))
            .ok_or_else(|| Error::InvalidFlag(t.into()))
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flags(0x{:08x}", self.0)?;
        let mut rest = self.0;
        for (bit, name) in FLAG_NAMES {
            if rest & bit != 0 {
                write!(f, " {name}")?;
                rest &= !bit;
            }
        }
        if rest != 0 {
            write!(f, " 0x{rest:x}")?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_numbers() {
        assert_eq!(Flags::parse_one("0x20000002").unwrap(), Flags(0x2000_0002));
        assert_eq!(
            Flags::parse_one("64").unwrap(),
            Flags::AEAD_YUBIKEY_OTP_DECODE
        );
        assert_eq!(Flags::parse_one("user_nonce").unwrap(), Flags::USER_NONCE);
        assert_eq!(
            Flags::parse_one("YSM_BUFFER_LOAD").unwrap(),
            Flags::BUFFER_LOAD
        );
        assert!(Flags::parse_one("FLY").is_err());
    }

    #[test]
    fn constants_and_names_are_one_table() {
        assert_eq!(Flags::DEBUG, Flags(0x8000_0000));
        assert_eq!(
            format!("{:?}", Flags::DEBUG),
            "Flags(0x80000000 FLAG_DEBUG)"
        );
        assert_eq!(
            format!("{:?}", Flags::AEAD_GENERATE | Flags(0x100)),
            "Flags(0x00000102 YSM_AEAD_GENERATE 0x100)"
        );
        assert_eq!(FLAG_NAMES.len(), 15);
        assert!(FLAG_NAMES.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
