//! SCP03-style sessions: how a session is opened, and how each message inside it is
//! encrypted and authenticated (shared protocol notes §3).
//!
//! Opening: the host sends `CreateSession` with the authentication key's id and a random
//! host challenge; the device answers a session id, its card challenge and a card
//! cryptogram. Both sides derive three session keys from the static keys and the two
//! challenges ([`SessionKeys`]); the host checks the card cryptogram (so a wrong password
//! is caught before anything else is sent, as python-yubihsm does) and answers
//! `AuthenticateSession` with its host cryptogram under a C-MAC that starts the MAC chain.
//!
//! Each message: the inner frame is padded (`80`, then zeros to a whole block) and
//! encrypted with AES-128-CBC under S-ENC, the IV being the message counter encrypted
//! with S-ENC; the envelope is MACed with S-MAC over the previous chain value (C-MAC,
//! which becomes the new chain); the device answers in the same envelope, encrypted with
//! the same IV, under an R-MAC made with S-RMAC over the new chain.
//!
//! [`HostSession`] is the driver's side and [`DeviceSession`] the device's (for the
//! emulator): one implementation of the rules, each side tested against the other and both
//! against the vectors computed with python-yubihsm (§3.7).

mod channel;
mod device;
mod envelope;
mod keys;

pub use channel::HostSession;
pub use device::DeviceSession;
pub use keys::{Context, SessionKeys};

/// A session id (one byte; a device holds 16 sessions, so ids are 0 to 15 in practice, but
/// any byte is carried as sent: the range is the device's to enforce).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u8);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An 8-byte challenge: random bytes from the host or the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge(pub [u8; 8]);

impl Challenge {
    /// Eight bytes from the operating system's generator.
    pub fn random() -> Challenge {
        let mut c = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut c);
        Challenge(c)
    }
}

/// An 8-byte cryptogram: a CMAC under S-MAC proving one side holds the static keys. Only
/// ever compared in constant time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cryptogram(pub [u8; 8]);

/// The first 8 bytes of a chained CMAC, as sent after an envelope.
pub(crate) fn truncate(full: &[u8; 16]) -> [u8; 8] {
    let mut m = [0u8; 8];
    m.copy_from_slice(&full[..8]);
    m
}

/// Constant-time equality of two byte strings (MACs, cryptograms).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests;
