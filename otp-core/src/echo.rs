//! The echo link test's two messages: bytes out, the same bytes back.
//!
//! Both devices have the command and it means the same on both, so its request and answer
//! are one pair of types. Each driver gives them its wire layout and command code (a
//! YubiHSM 1 prefixes the bytes with their length, a YubiHSM 2's frame carries the length)
//! in its own `cmd::echo`.

/// The echo request: the bytes to send back (up to what the device's frame holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// The bytes.
    pub data: Vec<u8>,
}

/// The echo answer: the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoResponse {
    /// The bytes, echoed.
    pub data: Vec<u8>,
}
