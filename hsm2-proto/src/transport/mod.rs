//! The transport seam below framing: whatever carries one request frame to a YubiHSM 2 and
//! brings back its one answer.
//!
//! yubihsm-connector's HTTP API ([`Connector`]) and USB (`usb` feature, [`usb`]) implement
//! [`Transport`]; so do the tests' scripted devices and the in-process emulator the device
//! tests drive (`emulator` feature).
//! Sessions live above it ([`crate::Client`]), so every transport carries the same bytes.

mod http;
pub mod usb;

pub use http::{Connector, ConnectorStatus, HttpTimeouts, DEFAULT_URL};

use std::time::Instant;

use crate::codec::Frame;
use crate::Result;

/// Carries frames to one YubiHSM 2, strictly one request then its answer.
///
/// Every implementation bounds every wait: an answer that does not come in time is
/// [`crate::Error::Timeout`], and a device or connector that went away is a typed error
/// ([`crate::Error::ConnectorUnreachable`], [`crate::Error::Usb`], …) for which
/// [`crate::Error::is_transport_error`] is true. Implementations trace command bytes and
/// lengths at most, never frame contents (they hold keys and OTPs).
pub trait Transport: Send {
    /// Sends `request` and returns the device's answer, parsed as one frame.
    fn exchange(&mut self, request: &Frame) -> Result<Frame>;

    /// Ends every later exchange by `deadline` at the latest, besides the transport's own
    /// timeout (`None`: that timeout alone). A caller serving requests that each have a
    /// deadline (the daemon) sets it, so a stalled device holds its caller no longer than
    /// the request it serves still waits: a command takes several exchanges (a session
    /// takes two), each of which could otherwise wait the full timeout. One with no time
    /// left fails at once with [`crate::Error::Timeout`], sending nothing. A transport that
    /// cannot shorten a wait may ignore it.
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        let _ = deadline;
    }
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn exchange(&mut self, request: &Frame) -> Result<Frame> {
        (**self).exchange(request)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        (**self).set_deadline(deadline)
    }
}
