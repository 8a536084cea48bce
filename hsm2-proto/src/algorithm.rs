//! Algorithms: one byte naming what a key is for; `DeviceInfo` lists those a device
//! supports.

use otp_core::wire_enum;

wire_enum! {
    /// An algorithm id. Values and names as `python-yubihsm`'s `ALGORITHM` table (kept
    /// whole so that a device's `DeviceInfo` list prints by name).
    Algorithm {
        /// RSA PKCS#1 v1.5 with SHA-1.
        RsaPkcs1Sha1 = 1 => "rsa-pkcs1-sha1",
        /// RSA PKCS#1 v1.5 with SHA-256.
        RsaPkcs1Sha256 = 2 => "rsa-pkcs1-sha256",
        /// RSA PKCS#1 v1.5 with SHA-384.
        RsaPkcs1Sha384 = 3 => "rsa-pkcs1-sha384",
        /// RSA PKCS#1 v1.5 with SHA-512.
        RsaPkcs1Sha512 = 4 => "rsa-pkcs1-sha512",
        /// RSA-PSS with SHA-1.
        RsaPssSha1 = 5 => "rsa-pss-sha1",
        /// RSA-PSS with SHA-256.
        RsaPssSha256 = 6 => "rsa-pss-sha256",
        /// RSA-PSS with SHA-384.
        RsaPssSha384 = 7 => "rsa-pss-sha384",
        /// RSA-PSS with SHA-512.
        RsaPssSha512 = 8 => "rsa-pss-sha512",
        /// RSA 2048-bit keys.
        Rsa2048 = 9 => "rsa2048",
        /// RSA 3072-bit keys.
        Rsa3072 = 10 => "rsa3072",
        /// RSA 4096-bit keys.
        Rsa4096 = 11 => "rsa4096",
        /// NIST P-256.
        EcP256 = 12 => "ecp256",
        /// NIST P-384.
        EcP384 = 13 => "ecp384",
        /// NIST P-521.
        EcP521 = 14 => "ecp521",
        /// secp256k1.
        EcK256 = 15 => "eck256",
        /// Brainpool P-256.
        EcBp256 = 16 => "ecbp256",
        /// Brainpool P-384.
        EcBp384 = 17 => "ecbp384",
        /// Brainpool P-512.
        EcBp512 = 18 => "ecbp512",
        /// HMAC-SHA-1.
        HmacSha1 = 19 => "hmac-sha1",
        /// HMAC-SHA-256.
        HmacSha256 = 20 => "hmac-sha256",
        /// HMAC-SHA-384.
        HmacSha384 = 21 => "hmac-sha384",
        /// HMAC-SHA-512.
        HmacSha512 = 22 => "hmac-sha512",
        /// ECDSA with SHA-1.
        EcEcdsaSha1 = 23 => "ecdsa-sha1",
        /// ECDH.
        EcEcdh = 24 => "ecdh",
        /// RSA-OAEP with SHA-1.
        RsaOaepSha1 = 25 => "rsa-oaep-sha1",
        /// RSA-OAEP with SHA-256.
        RsaOaepSha256 = 26 => "rsa-oaep-sha256",
        /// RSA-OAEP with SHA-384.
        RsaOaepSha384 = 27 => "rsa-oaep-sha384",
        /// RSA-OAEP with SHA-512.
        RsaOaepSha512 = 28 => "rsa-oaep-sha512",
        /// AES-128-CCM wrap keys.
        Aes128CcmWrap = 29 => "aes128-ccm-wrap",
        /// Opaque data.
        OpaqueData = 30 => "opaque-data",
        /// Opaque X.509 certificates.
        OpaqueX509Certificate = 31 => "opaque-x509-certificate",
        /// MGF1 with SHA-1.
        RsaMgf1Sha1 = 32 => "mgf1-sha1",
        /// MGF1 with SHA-256.
        RsaMgf1Sha256 = 33 => "mgf1-sha256",
        /// MGF1 with SHA-384.
        RsaMgf1Sha384 = 34 => "mgf1-sha384",
        /// MGF1 with SHA-512.
        RsaMgf1Sha512 = 35 => "mgf1-sha512",
        /// SSH templates.
        TemplateSsh = 36 => "template-ssh",
        /// otp-aead-key with an AES-128 key.
        Aes128YubicoOtp = 37 => "aes128-yubico-otp",
        /// Symmetric authentication key (K-ENC and K-MAC, AES-128).
        Aes128YubicoAuthentication = 38 => "aes128-yubico-authentication",
        /// otp-aead-key with an AES-192 key.
        Aes192YubicoOtp = 39 => "aes192-yubico-otp",
        /// otp-aead-key with an AES-256 key.
        Aes256YubicoOtp = 40 => "aes256-yubico-otp",
        /// AES-192-CCM wrap keys.
        Aes192CcmWrap = 41 => "aes192-ccm-wrap",
        /// AES-256-CCM wrap keys.
        Aes256CcmWrap = 42 => "aes256-ccm-wrap",
        /// ECDSA with SHA-256.
        EcEcdsaSha256 = 43 => "ecdsa-sha256",
        /// ECDSA with SHA-384.
        EcEcdsaSha384 = 44 => "ecdsa-sha384",
        /// ECDSA with SHA-512.
        EcEcdsaSha512 = 45 => "ecdsa-sha512",
        /// Ed25519.
        EcEd25519 = 46 => "ed25519",
        /// NIST P-224.
        EcP224 = 47 => "ecp224",
        /// RSA PKCS#1 v1.5 decryption.
        RsaPkcs1Decrypt = 48 => "rsa-pkcs1-decrypt",
        /// Asymmetric authentication key on P-256.
        EcP256YubicoAuthentication = 49 => "ecp256-yubico-authentication",
        /// AES-128 symmetric keys.
        Aes128 = 50 => "aes128",
        /// AES-192 symmetric keys.
        Aes192 = 51 => "aes192",
        /// AES-256 symmetric keys.
        Aes256 = 52 => "aes256",
        /// AES-ECB.
        AesEcb = 53 => "aes-ecb",
        /// AES-CBC.
        AesCbc = 54 => "aes-cbc",
        /// AES key wrap with padding.
        AesKwp = 55 => "aes-kwp",
    }
}

impl Algorithm {
    /// The key length of an otp-aead-key algorithm (16, 24 or 32 bytes); `None` for any
    /// other algorithm.
    pub fn otp_key_len(self) -> Option<usize> {
        match self {
            Algorithm::Aes128YubicoOtp => Some(16),
            Algorithm::Aes192YubicoOtp => Some(24),
            Algorithm::Aes256YubicoOtp => Some(32),
            _ => None,
        }
    }

    /// The otp-aead-key algorithm for a key of `len` bytes.
    pub fn for_otp_key_len(len: usize) -> Option<Algorithm> {
        [
            Algorithm::Aes128YubicoOtp,
            Algorithm::Aes192YubicoOtp,
            Algorithm::Aes256YubicoOtp,
        ]
        .into_iter()
        .find(|a| a.otp_key_len() == Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ksm_algorithms_have_their_wire_values() {
        assert_eq!(Algorithm::Aes128YubicoOtp.to_u8(), 0x25);
        assert_eq!(Algorithm::Aes128YubicoAuthentication.to_u8(), 0x26);
        assert_eq!(Algorithm::Aes192YubicoOtp.to_u8(), 0x27);
        assert_eq!(Algorithm::Aes256YubicoOtp.to_u8(), 0x28);
        assert_eq!(
            Algorithm::for_otp_key_len(24),
            Some(Algorithm::Aes192YubicoOtp)
        );
        assert_eq!(Algorithm::for_otp_key_len(20), None);
        assert_eq!(Algorithm::Aes128YubicoAuthentication.otp_key_len(), None);
        assert_eq!(Algorithm::from_u8(200), Algorithm::Unknown(200));
        assert_eq!(Algorithm::Unknown(200).to_string(), "0xc8");
        assert_eq!(
            Algorithm::from_name("aes256-yubico-otp"),
            Some(Algorithm::Aes256YubicoOtp)
        );
        // Every named value decodes to itself: no value is written twice in the table.
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_u8(a.to_u8()), *a);
        }
    }
}
