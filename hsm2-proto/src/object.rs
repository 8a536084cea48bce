//! What describes an object besides its id (`otp_core::ObjectId`): its type, domains, label
//! and origin.

use std::fmt;

use crate::{Error, Result};
use otp_core::wire_enum;

wire_enum! {
    /// The kind of an object; an id is unique per type.
    ObjectType {
        /// Opaque data.
        Opaque = 0x01 => "opaque",
        /// Symmetric authentication key: opens sessions.
        AuthenticationKey = 0x02 => "authentication-key",
        /// Asymmetric key.
        AsymmetricKey = 0x03 => "asymmetric-key",
        /// Wrap key.
        WrapKey = 0x04 => "wrap-key",
        /// HMAC key.
        HmacKey = 0x05 => "hmac-key",
        /// Template.
        Template = 0x06 => "template",
        /// The key that seals and opens OTP AEADs.
        OtpAeadKey = 0x07 => "otp-aead-key",
        /// Symmetric key.
        SymmetricKey = 0x08 => "symmetric-key",
        /// Public wrap key.
        PublicWrapKey = 0x09 => "public-wrap-key",
    }
}

/// Domains: a u16 where domain *n* (1 to 16) is bit *n − 1*. An object can be used only
/// by a session whose authentication key shares a domain with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Domains(pub u16);

impl Domains {
    /// All sixteen domains (a new device's authentication key 1).
    pub const ALL: Domains = Domains(0xffff);

    /// The set holding domain `n`; `None` unless `1 <= n <= 16`.
    pub fn domain(n: u8) -> Option<Domains> {
        (1..=16).contains(&n).then(|| Domains(1 << (n - 1)))
    }

    /// True if the two sets share a domain.
    pub fn intersects(self, other: Domains) -> bool {
        self.0 & other.0 != 0
    }

    /// The domain numbers in the set.
    pub fn numbers(self) -> impl Iterator<Item = u8> {
        (1u8..=16).filter(move |n| self.0 & (1 << (n - 1)) != 0)
    }
}

/// Lists the domain numbers, `Domains(1,2,16)`.
impl fmt::Debug for Domains {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n: Vec<String> = self.numbers().map(|n| n.to_string()).collect();
        write!(f, "Domains({})", n.join(","))
    }
}

/// An object's label: exactly 40 bytes on the wire, UTF-8 text right-padded with zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label(pub [u8; Label::LEN]);

impl Label {
    /// Size on the wire.
    pub const LEN: usize = 40;

    /// A label from text of at most 40 bytes (python-yubihsm's limit).
    pub fn new(text: &str) -> Result<Label> {
        let b = text.as_bytes();
        if b.len() > Label::LEN {
            return Err(Error::Length {
                what: "label",
                expected: "at most 40 bytes of UTF-8",
                len: b.len(),
            });
        }
        let mut l = [0u8; Label::LEN];
        l[..b.len()].copy_from_slice(b);
        Ok(Label(l))
    }

    /// The text up to the first zero byte, as python-yubihsm reads it (lossy for bytes
    /// that are not UTF-8).
    pub fn text(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(Label::LEN);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl Default for Label {
    fn default() -> Label {
        Label([0; Label::LEN])
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Label({:?})", self.text())
    }
}

/// How an object came to be: bit `0x01` generated on the device, `0x02` imported, `0x10`
/// (with one of those) imported under a wrap key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(pub u8);

impl Origin {
    /// Generated on the device.
    pub const GENERATED: Origin = Origin(0x01);
    /// Imported in clear (inside a session).
    pub const IMPORTED: Origin = Origin(0x02);
    /// Flag: imported wrapped.
    pub const WRAPPED_FLAG: u8 = 0x10;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_forty_bytes_padded_with_zeros() {
        let l = Label::new("ksm otp key").unwrap();
        assert_eq!(&l.0[..11], b"ksm otp key");
        assert!(l.0[11..].iter().all(|&b| b == 0));
        assert_eq!(l.text(), "ksm otp key");
        assert!(Label::new(&"x".repeat(40)).is_ok());
        assert!(matches!(
            Label::new(&"x".repeat(41)),
            Err(Error::Length { len: 41, .. })
        ));
        // Text after the first zero is not part of the label as read.
        let mut raw = [b'a'; 40];
        raw[2] = 0;
        assert_eq!(Label(raw).text(), "aa");
    }

    #[test]
    fn domain_n_is_bit_n_minus_one() {
        assert_eq!(Domains::domain(1), Some(Domains(0x0001)));
        assert_eq!(Domains::domain(16), Some(Domains(0x8000)));
        assert_eq!(Domains::domain(0), None);
        assert_eq!(Domains::domain(17), None);
        assert_eq!(format!("{:?}", Domains(0x8003)), "Domains(1,2,16)");
        assert!(Domains(0x0003).intersects(Domains(0x0002)));
        assert!(!Domains(0x0001).intersects(Domains(0x0002)));
        assert_eq!(ObjectType::OtpAeadKey.to_u8(), 0x07);
    }
}
