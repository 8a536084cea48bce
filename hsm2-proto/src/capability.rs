//! Capabilities: what an object (or a session's authentication key) may be used for.
//!
//! On the wire a set of capabilities is a big-endian u64 whose bit *b* grants capability
//! number *b*. [`Capability`] is the table of those bit numbers, written once;
//! [`Capabilities`] is the set, which keeps bits the table does not name so that what a
//! device reports encodes back unchanged.

use std::fmt;

use otp_core::wire_enum;

wire_enum! {
    /// One capability, as its bit number. Names and numbers as `python-yubihsm`'s
    /// `CAPABILITY` table (yubihsm.rs has the same numbers).
    Capability {
        /// Read opaque objects.
        GetOpaque = 0x00 => "get-opaque",
        /// Write opaque objects.
        PutOpaque = 0x01 => "put-opaque",
        /// Import authentication keys.
        PutAuthenticationKey = 0x02 => "put-authentication-key",
        /// Import asymmetric keys.
        PutAsymmetric = 0x03 => "put-asymmetric",
        /// Generate asymmetric keys.
        GenerateAsymmetricKey = 0x04 => "generate-asymmetric-key",
        /// RSA PKCS#1 v1.5 signatures.
        SignPkcs = 0x05 => "sign-pkcs",
        /// RSA-PSS signatures.
        SignPss = 0x06 => "sign-pss",
        /// ECDSA signatures.
        SignEcdsa = 0x07 => "sign-ecdsa",
        /// EdDSA signatures.
        SignEddsa = 0x08 => "sign-eddsa",
        /// RSA PKCS#1 v1.5 decryption.
        DecryptPkcs = 0x09 => "decrypt-pkcs",
        /// RSA-OAEP decryption.
        DecryptOaep = 0x0a => "decrypt-oaep",
        /// ECDH.
        DeriveEcdh = 0x0b => "derive-ecdh",
        /// Export objects under a wrap key.
        ExportWrapped = 0x0c => "export-wrapped",
        /// Import wrapped objects.
        ImportWrapped = 0x0d => "import-wrapped",
        /// Import wrap keys.
        PutWrapKey = 0x0e => "put-wrap-key",
        /// Generate wrap keys.
        GenerateWrapKey = 0x0f => "generate-wrap-key",
        /// The object may be exported under a wrap key.
        ExportableUnderWrap = 0x10 => "exportable-under-wrap",
        /// Set device options.
        SetOption = 0x11 => "set-option",
        /// Read device options.
        GetOption = 0x12 => "get-option",
        /// `GetPseudoRandom`.
        GetPseudoRandom = 0x13 => "get-pseudo-random",
        /// Import HMAC keys.
        PutHmacKey = 0x14 => "put-hmac-key",
        /// Generate HMAC keys.
        GenerateHmacKey = 0x15 => "generate-hmac-key",
        /// HMAC signing.
        SignHmac = 0x16 => "sign-hmac",
        /// HMAC verification.
        VerifyHmac = 0x17 => "verify-hmac",
        /// Read the audit log.
        GetLogEntries = 0x18 => "get-log-entries",
        /// SSH certificates.
        SignSshCertificate = 0x19 => "sign-ssh-certificate",
        /// Read templates.
        GetTemplate = 0x1a => "get-template",
        /// Write templates.
        PutTemplate = 0x1b => "put-template",
        /// Factory reset.
        ResetDevice = 0x1c => "reset-device",
        /// `DecryptOtp`: the KSM's everyday capability.
        DecryptOtp = 0x1d => "decrypt-otp",
        /// `CreateOtpAead`.
        CreateOtpAead = 0x1e => "create-otp-aead",
        /// `RandomizeOtpAead`.
        RandomizeOtpAead = 0x1f => "randomize-otp-aead",
        /// `RewrapOtpAead`, on the key the AEAD leaves.
        RewrapFromOtpAeadKey = 0x20 => "rewrap-from-otp-aead-key",
        /// `RewrapOtpAead`, on the key the AEAD goes to.
        RewrapToOtpAeadKey = 0x21 => "rewrap-to-otp-aead-key",
        /// Attestation certificates.
        SignAttestationCertificate = 0x22 => "sign-attestation-certificate",
        /// `PutOtpAeadKey`.
        PutOtpAeadKey = 0x23 => "put-otp-aead-key",
        /// `GenerateOtpAeadKey`.
        GenerateOtpAeadKey = 0x24 => "generate-otp-aead-key",
        /// Wrap data.
        WrapData = 0x25 => "wrap-data",
        /// Unwrap data.
        UnwrapData = 0x26 => "unwrap-data",
        /// Delete opaque objects.
        DeleteOpaque = 0x27 => "delete-opaque",
        /// Delete authentication keys.
        DeleteAuthenticationKey = 0x28 => "delete-authentication-key",
        /// Delete asymmetric keys.
        DeleteAsymmetricKey = 0x29 => "delete-asymmetric-key",
        /// Delete wrap keys.
        DeleteWrapKey = 0x2a => "delete-wrap-key",
        /// Delete HMAC keys.
        DeleteHmacKey = 0x2b => "delete-hmac-key",
        /// Delete templates.
        DeleteTemplate = 0x2c => "delete-template",
        /// Delete otp-aead-keys.
        DeleteOtpAeadKey = 0x2d => "delete-otp-aead-key",
        /// Change one's own authentication key.
        ChangeAuthenticationKey = 0x2e => "change-authentication-key",
        /// Import symmetric keys.
        PutSymmetricKey = 0x2f => "put-symmetric-key",
        /// Generate symmetric keys.
        GenerateSymmetricKey = 0x30 => "generate-symmetric-key",
        /// Delete symmetric keys.
        DeleteSymmetricKey = 0x31 => "delete-symmetric-key",
        /// AES-ECB decryption.
        DecryptEcb = 0x32 => "decrypt-ecb",
        /// AES-ECB encryption.
        EncryptEcb = 0x33 => "encrypt-ecb",
        /// AES-CBC decryption.
        DecryptCbc = 0x34 => "decrypt-cbc",
        /// AES-CBC encryption.
        EncryptCbc = 0x35 => "encrypt-cbc",
        /// Import public wrap keys.
        PublicWrapKeyWrite = 0x36 => "public-wrap-key-write",
        /// Delete public wrap keys.
        PublicWrapKeyDelete = 0x37 => "public-wrap-key-delete",
    }
}

impl Capability {
    /// The capability's bit in the u64 mask; `None` for a bit number over 63.
    pub fn mask(self) -> Option<u64> {
        1u64.checked_shl(u32::from(self.to_u8()))
    }
}

/// A set of capabilities: the u64 mask as the device sends it, unknown bits included.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// No capability.
    pub const NONE: Capabilities = Capabilities(0);

    /// Every capability the table names: what a new device's authentication key 1 has.
    pub fn all_known() -> Capabilities {
        Capability::ALL.iter().copied().collect()
    }

    /// True if `c` is in the set.
    pub fn contains(self, c: Capability) -> bool {
        c.mask().is_some_and(|m| self.0 & m != 0)
    }

    /// True if every capability of `other` is in this set.
    pub fn contains_all(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// This set with `c` added (a bit number over 63 adds nothing).
    #[must_use]
    pub fn with(self, c: Capability) -> Capabilities {
        Capabilities(self.0 | c.mask().unwrap_or(0))
    }

    /// The capabilities in the set, lowest bit first; bits the table does not name come
    /// as [`Capability::Unknown`].
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        (0u8..64)
            .filter(move |b| self.0 & (1u64 << b) != 0)
            .map(Capability::from_u8)
    }

    /// Parses a comma- or colon-separated list of names (`decrypt-otp:create-otp-aead`,
    /// yubihsm-shell's spelling), or a number (`0x20000000`). Returns the name that failed.
    pub fn parse(text: &str) -> Result<Capabilities, String> {
        let text = text.trim();
        if let Some(hex) = text.strip_prefix("0x") {
            return u64::from_str_radix(hex, 16)
                .map(Capabilities)
                .map_err(|_| text.to_string());
        }
        text.split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| Capability::from_name(name).ok_or_else(|| name.to_string()))
            .collect()
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Capabilities {
        iter.into_iter()
            .fold(Capabilities::NONE, Capabilities::with)
    }
}

/// Names the capabilities (`decrypt-otp:create-otp-aead`), unknown bits in hex.
impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(|c| c.name()).collect();
        write!(f, "Capabilities({})", names.join(":"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_numbers_match_the_protocol_table() {
        // The KSM's capabilities, with the masks of the shared protocol notes (§4.1).
        for (c, mask) in [
            (Capability::PutAuthenticationKey, 0x0000_0000_0000_0004),
            (Capability::GetPseudoRandom, 0x0000_0000_0008_0000),
            (Capability::DecryptOtp, 0x0000_0000_2000_0000),
            (Capability::CreateOtpAead, 0x0000_0000_4000_0000),
            (Capability::RandomizeOtpAead, 0x0000_0000_8000_0000),
            (Capability::RewrapFromOtpAeadKey, 0x0000_0001_0000_0000),
            (Capability::RewrapToOtpAeadKey, 0x0000_0002_0000_0000),
            (Capability::PutOtpAeadKey, 0x0000_0008_0000_0000),
            (Capability::GenerateOtpAeadKey, 0x0000_0010_0000_0000),
            (Capability::DeleteAuthenticationKey, 0x0000_0100_0000_0000),
            (Capability::DeleteOtpAeadKey, 0x0000_2000_0000_0000),
            (Capability::ChangeAuthenticationKey, 0x0000_4000_0000_0000),
        ] {
            assert_eq!(c.mask(), Some(mask), "{c}");
        }
        assert_eq!(Capabilities::all_known().0, (1u64 << 0x38) - 1);
        assert_eq!(Capability::from_u8(64).mask(), None);
    }

    #[test]
    fn sets_keep_unknown_bits_and_parse_names() {
        let s = Capabilities::parse("decrypt-otp:create-otp-aead, randomize-otp-aead").unwrap();
        assert_eq!(s.0, 0xe000_0000);
        assert!(s.contains(Capability::DecryptOtp));
        assert!(!s.contains(Capability::RewrapToOtpAeadKey));
        assert!(s.contains_all(Capabilities(0x2000_0000)));
        assert_eq!(
            format!("{s:?}"),
            "Capabilities(decrypt-otp:create-otp-aead:randomize-otp-aead)"
        );
        let odd = Capabilities(1 << 63 | 1);
        assert_eq!(format!("{odd:?}"), "Capabilities(get-opaque:0x3f)");
        assert_eq!(odd.iter().collect::<Capabilities>(), odd);
        assert_eq!(
            Capabilities::parse("0x20000000"),
            Ok(Capabilities(0x2000_0000))
        );
        assert_eq!(Capabilities::parse("decrypt-otp:nope"), Err("nope".into()));
    }
}
