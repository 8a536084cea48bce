//! The 6-byte nonce that, with the key handle, makes the AES-CCM nonce of an AEAD.

use std::fmt;

/// A YubiHSM AEAD nonce. For YubiKey AEADs it is, by convention, the binary public id.
/// All zeros in a generate request asks the device to choose one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Nonce(pub [u8; 6]);

impl Nonce {
    /// The all-zero nonce: "device, choose".
    pub const ZERO: Nonce = Nonce([0; 6]);

    /// Builds a nonce from up to 6 bytes, right-padded with zeros as pyhsm pads.
    #[inline]
    pub fn padded(b: &[u8]) -> Option<Nonce> {
        if b.len() > 6 {
            return None;
        }
        let mut n = [0u8; 6];
        n[..b.len()].copy_from_slice(b);
        Some(Nonce(n))
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Nonce({})", hex::encode(self.0))
    }
}
