//! Command codes: the first byte of every frame.

use otp_core::wire_enum;

/// Set in the command byte of a successful response (`cmd | 0x80`).
pub const RESPONSE_BIT: u8 = 0x80;

wire_enum! {
    /// The commands a YubiKey KSM sends, and the error marker. The codes are the same in
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
        /// Ends a session.
        CloseSession = 0x40 => "close-session",
        /// Imports an authentication key (K-ENC and K-MAC).
        PutAuthenticationKey = 0x44 => "put-authentication-key",
        /// Lists objects, optionally filtered.
        ListObjects = 0x48 => "list-objects",
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
        /// Deletes an object.
        DeleteObject = 0x58 => "delete-object",
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
        /// Replaces the session's own authentication key.
        ChangeAuthenticationKey = 0x6c => "change-authentication-key",
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
