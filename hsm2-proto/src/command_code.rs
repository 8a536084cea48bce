//! Command codes: the first byte of every frame.

use otp_core::wire_enum;

/// Set in the command byte of a successful response (`cmd | 0x80`).
pub const RESPONSE_BIT: u8 = 0x80;

wire_enum! {
    /// The commands a YubiKey KSM sends or the emulator models, and the error marker. The codes are the same in
    /// `python-yubihsm`, libyubihsm and yubihsm.rs.
    CommandCode {
        /// Bytes out, same bytes back.
        Echo = 0x01 => "echo",
        /// Opens a session: authentication key id and host challenge.
        CreateSession = 0x03 => "create-session",
        /// Proves the host knows the authentication key; the session is then open.
        AuthenticateSession = 0x04 => "authenticate-session",
        /// An encrypted and MACed command inside a session.
        SessionMessage = 0x05 => "session-message",
        /// Firmware version, serial number, algorithms.
        DeviceInfo = 0x06 => "device-info",
        /// Factory reset: every object but the default authentication key deleted, then a
        /// reboot.
        ResetDevice = 0x08 => "reset-device",
        /// The public half of the device's own key, for asymmetric authentication.
        GetDevicePublicKey = 0x0a => "get-device-public-key",
        /// Ends a session.
        CloseSession = 0x40 => "close-session",
        /// Stores opaque data.
        PutOpaque = 0x42 => "put-opaque",
        /// Reads opaque data back.
        GetOpaque = 0x43 => "get-opaque",
        /// Imports an authentication key (K-ENC and K-MAC).
        PutAuthenticationKey = 0x44 => "put-authentication-key",
        /// Lists objects, optionally filtered.
        ListObjects = 0x48 => "list-objects",
        /// Exports an object encrypted under a wrap key.
        ExportWrapped = 0x4a => "export-wrapped",
        /// Imports an object exported under a wrap key.
        ImportWrapped = 0x4b => "import-wrapped",
        /// Imports a wrap key.
        PutWrapKey = 0x4c => "put-wrap-key",
        /// The audit log's entries and its unlogged-event counters.
        GetLogEntries = 0x4d => "get-log-entries",
        /// One object's metadata.
        GetObjectInfo = 0x4e => "get-object-info",
        /// Sets a device option.
        SetOption = 0x4f => "set-option",
        /// Reads a device option.
        GetOption = 0x50 => "get-option",
        /// Random bytes from the device.
        GetPseudoRandom = 0x51 => "get-pseudo-random",
        /// Imports an HMAC key.
        PutHmacKey = 0x52 => "put-hmac-key",
        /// HMAC of data under an HMAC key.
        SignHmac = 0x53 => "sign-hmac",
        /// Deletes an object.
        DeleteObject = 0x58 => "delete-object",
        /// Has the device generate an HMAC key.
        GenerateHmacKey = 0x5a => "generate-hmac-key",
        /// Has the device generate a wrap key.
        GenerateWrapKey = 0x5b => "generate-wrap-key",
        /// Checks an HMAC of data under an HMAC key.
        VerifyHmac = 0x5c => "verify-hmac",
        /// Opens an OTP AEAD and decrypts an OTP with the key inside; returns counters.
        DecryptOtp = 0x60 => "decrypt-otp",
        /// Seals a given YubiKey key and private id into an OTP AEAD.
        CreateOtpAead = 0x61 => "create-otp-aead",
        /// Seals a device-random YubiKey key and private id into an OTP AEAD.
        RandomizeOtpAead = 0x62 => "randomize-otp-aead",
        /// Moves an OTP AEAD from one otp-aead-key to another inside the device.
        RewrapOtpAead = 0x63 => "rewrap-otp-aead",
        /// Imports an otp-aead-key.
        PutOtpAeadKey = 0x65 => "put-otp-aead-key",
        /// Has the device generate an otp-aead-key.
        GenerateOtpAeadKey = 0x66 => "generate-otp-aead-key",
        /// Frees the audit log up to an entry the host has kept.
        SetLogIndex = 0x67 => "set-log-index",
        /// Encrypts data under a wrap key (AES-CCM).
        WrapData = 0x68 => "wrap-data",
        /// Decrypts data wrapped under a wrap key.
        UnwrapData = 0x69 => "unwrap-data",
        /// Replaces the session's own authentication key.
        ChangeAuthenticationKey = 0x6c => "change-authentication-key",
        /// Imports an AES key.
        PutSymmetricKey = 0x6d => "put-symmetric-key",
        /// Has the device generate an AES key.
        GenerateSymmetricKey = 0x6e => "generate-symmetric-key",
        /// AES-ECB decryption.
        DecryptEcb = 0x6f => "decrypt-ecb",
        /// AES-ECB encryption.
        EncryptEcb = 0x70 => "encrypt-ecb",
        /// AES-CBC decryption.
        DecryptCbc = 0x71 => "decrypt-cbc",
        /// AES-CBC encryption.
        EncryptCbc = 0x72 => "encrypt-cbc",
        /// Marks an error response: `7f 00 01 <error code>`.
        Error = 0x7f => "error",
    }
}

impl CommandCode {
    /// The command byte of this command's successful response.
    pub const fn response_byte(self) -> u8 {
        self.to_u8() | RESPONSE_BIT
    }
}
