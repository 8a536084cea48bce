//! Get Device Public Key (`0x0a`), plain, firmware 2.3 and later: the public half of the
//! device's own P-256 key, which a host uses to open a session by asymmetric
//! authentication. The answer is the algorithm (`ecp256-yubico-authentication`) and the
//! point's X and Y, 32 bytes each (the `04` of an uncompressed point left off).

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{Algorithm, CommandCode, Result};

/// Get Device Public Key request: no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GetDevicePublicKey;

/// Get Device Public Key response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePublicKey {
    /// The key's algorithm: `ecp256-yubico-authentication` on every firmware so far.
    pub algorithm: Algorithm,
    /// The point's X then Y, big-endian.
    pub point: [u8; 64],
}

impl Message for GetDevicePublicKey {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetDevicePublicKey)
    }
}

impl Message for DevicePublicKey {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.algorithm.to_u8()).bytes(&self.point);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DevicePublicKey {
            algorithm: Algorithm::from_u8(r.u8()?),
            point: r.array()?,
        })
    }
}

impl Command for GetDevicePublicKey {
    const CODE: CommandCode = CommandCode::GetDevicePublicKey;
    type Response = DevicePublicKey;
}
