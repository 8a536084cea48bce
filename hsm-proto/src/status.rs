//! Status codes (`YSM_STATUS_*` in `YubiHSM_if.h`).

use otp_core::wire_enum;

wire_enum! {
    /// The one-byte result code most responses carry.
    Status {
        /// Success.
        Ok = 0x80 => "YSM_STATUS_OK",
        /// No such key handle.
        KeyHandleInvalid = 0x81 => "YSM_KEY_HANDLE_INVALID",
        /// The AEAD failed authentication or is malformed.
        AeadInvalid = 0x82 => "YSM_AEAD_INVALID",
        /// OTP CRC wrong or uid mismatch.
        OtpInvalid = 0x83 => "YSM_OTP_INVALID",
        /// OTP counters not newer than stored.
        OtpReplay = 0x84 => "YSM_OTP_REPLAY",
        /// Public id already in the internal database.
        IdDuplicate = 0x85 => "YSM_ID_DUPLICATE",
        /// Public id not in the internal database.
        IdNotFound = 0x86 => "YSM_ID_NOT_FOUND",
        /// Internal database full.
        DbFull = 0x87 => "YSM_DB_FULL",
        /// Flash read/write error.
        MemoryError = 0x88 => "YSM_MEMORY_ERROR",
        /// Permission flag missing, key disabled, or user nonce forbidden.
        FunctionDisabled = 0x89 => "YSM_FUNCTION_DISABLED",
        /// The key store is locked.
        KeyStorageLocked = 0x8a => "YSM_KEY_STORAGE_LOCKED",
        /// A comparison failed (also: wrong master key).
        Mismatch = 0x8b => "YSM_MISMATCH",
        /// Bad length or parameter.
        InvalidParameter = 0x8c => "YSM_INVALID_PARAMETER",
    }
}

impl Status {
    /// True for `YSM_STATUS_OK`.
    pub fn is_ok(self) -> bool {
        self == Status::Ok
    }
}
