//! The device's error codes: the byte after `7f 00 01`.

use otp_core::wire_enum;

wire_enum! {
    /// Why the device refused a command. Values and names as `python-yubihsm`'s `ERROR`
    /// table and libyubihsm give them; `0x0d` is unassigned in both.
    ErrorCode {
        /// Success; never seen in an error frame, but part of the table.
        Ok = 0x00 => "ok",
        /// Unknown command code.
        InvalidCommand = 0x01 => "invalid-command",
        /// Malformed command data.
        InvalidData = 0x02 => "invalid-data",
        /// No such session, or it expired.
        InvalidSession = 0x03 => "invalid-session",
        /// Wrong authentication key, cryptogram or MAC.
        AuthenticationFailed = 0x04 => "authentication-failed",
        /// Every session slot is taken.
        SessionsFull = 0x05 => "sessions-full",
        /// The session could not be set up.
        SessionFailed = 0x06 => "session-failed",
        /// Flash storage failed.
        StorageFailed = 0x07 => "storage-failed",
        /// The command data has the wrong length.
        WrongLength = 0x08 => "wrong-length",
        /// The session's key or the target object lacks a capability.
        InsufficientPermissions = 0x09 => "insufficient-permissions",
        /// The audit log is full and set to block.
        LogFull = 0x0a => "log-full",
        /// No object with that id and type.
        ObjectNotFound = 0x0b => "object-not-found",
        /// An id that cannot be used.
        InvalidId = 0x0c => "invalid-id",
        /// An SSH certificate template constraint failed.
        SshCaConstraintViolation = 0x0e => "ssh-ca-constraint-violation",
        /// The OTP or its AEAD did not check out.
        InvalidOtp = 0x0f => "invalid-otp",
        /// The device runs in demo mode and must be power-cycled.
        DemoMode = 0x10 => "demo-mode",
        /// An object with that id and type already exists.
        ObjectExists = 0x11 => "object-exists",
        /// The algorithm is disabled on this device.
        AlgorithmDisabled = 0x12 => "algorithm-disabled",
        /// The command was not executed.
        CommandUnexecuted = 0xff => "command-unexecuted",
    }
}
