//! Command codes (`YSM_*` in `YubiHSM_if.h`).

use otp_core::wire_enum;

wire_enum! {
    /// A YubiHSM 1 command code. A response carries the code with bit 0x80 set.
    Opcode {
        /// Resync: 96 zero bytes, no reply.
        Null = 0x00 => "YSM_NULL",
        /// Encrypt caller data into an AEAD.
        AeadGenerate = 0x01 => "YSM_AEAD_GENERATE",
        /// AEAD of the internal buffer.
        BufferAeadGenerate = 0x02 => "YSM_BUFFER_AEAD_GENERATE",
        /// AEAD of fresh random bytes.
        RandomAeadGenerate = 0x03 => "YSM_RANDOM_AEAD_GENERATE",
        /// Compare an AEAD's plaintext with caller data, inside the device.
        AeadDecryptCmp = 0x04 => "YSM_AEAD_DECRYPT_CMP",
        /// Store a YubiKey AEAD in the internal database (nonce = public id).
        DbYubikeyAeadStore = 0x05 => "YSM_DB_YUBIKEY_AEAD_STORE",
        /// Decode a YubiKey OTP with a host-held AEAD: the KSM primitive.
        AeadYubikeyOtpDecode = 0x06 => "YSM_AEAD_YUBIKEY_OTP_DECODE",
        /// Validate an OTP against the internal database, with replay check.
        DbOtpValidate = 0x07 => "YSM_DB_OTP_VALIDATE",
        /// Store a YubiKey AEAD with a separate nonce (firmware 1.0.4).
        DbYubikeyAeadStore2 = 0x08 => "YSM_DB_YUBIKEY_AEAD_STORE2",
        /// AES-ECB encrypt one block.
        AesEcbBlockEncrypt = 0x0d => "YSM_AES_ECB_BLOCK_ENCRYPT",
        /// AES-ECB decrypt one block.
        AesEcbBlockDecrypt = 0x0e => "YSM_AES_ECB_BLOCK_DECRYPT",
        /// AES-ECB decrypt one block and compare.
        AesEcbBlockDecryptCmp = 0x0f => "YSM_AES_ECB_BLOCK_DECRYPT_CMP",
        /// Streaming HMAC-SHA1.
        HmacSha1Generate = 0x10 => "YSM_HMAC_SHA1_GENERATE",
        /// Load a key from an AEAD into the phantom handle 0xffffffff.
        TempKeyLoad = 0x11 => "YSM_TEMP_KEY_LOAD",
        /// Load caller bytes into the internal buffer.
        BufferLoad = 0x20 => "YSM_BUFFER_LOAD",
        /// Load random bytes into the internal buffer.
        BufferRandomLoad = 0x21 => "YSM_BUFFER_RANDOM_LOAD",
        /// Read (and advance) the nonce counter.
        NonceGet = 0x22 => "YSM_NONCE_GET",
        /// Echo bytes back.
        Echo = 0x23 => "YSM_ECHO",
        /// Random bytes from the device DRBG.
        RandomGenerate = 0x24 => "YSM_RANDOM_GENERATE",
        /// Reseed the DRBG.
        RandomReseed = 0x25 => "YSM_RANDOM_RESEED",
        /// Firmware version, protocol version, system uid.
        SystemInfoQuery = 0x26 => "YSM_SYSTEM_INFO_QUERY",
        /// Firmware 0.x key storage unlock with a 16-byte password.
        KeyStorageUnlock = 0x27 => "YSM_KEY_STORAGE_UNLOCK",
        /// Firmware 1.0 unlock with an admin YubiKey OTP.
        HsmUnlock = 0x28 => "YSM_HSM_UNLOCK",
        /// Firmware 1.0 key store decrypt with the 32-byte master key.
        KeyStoreDecrypt = 0x29 => "YSM_KEY_STORE_DECRYPT",
        /// Leave HSM mode for the configuration console (debug mode only); no reply.
        MonitorExit = 0x7f => "YSM_MONITOR_EXIT",
    }
}

/// The bit a device sets in the command byte of every response.
pub const RESPONSE_BIT: u8 = 0x80;
