//! YubiHSM 2 object ids: the 16-bit names of objects on the device, the otp-aead-key an
//! AEAD is sealed under among them.

use std::fmt;

/// An object id (u16). Id 0 in a Put or Generate request asks the device to choose one;
/// the response names the id used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub u16);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}
