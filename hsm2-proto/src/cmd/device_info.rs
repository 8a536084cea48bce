//! Device Info (`0x06`), plain: firmware version, serial number, log use and the
//! algorithms the device supports (§4.2).
//!
//! Only page 0 (the empty request) is modelled. python-yubihsm asks for page 1 (the part
//! number, request data `01`) only of firmware 2.4.0 and later; a YubiKey KSM needs none
//! of it, and an emulator that reports an older firmware is never asked.

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{Algorithm, CommandCode, Result};

/// Device Info request, page 0: no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceInfo;

/// Device Info response, page 0: 9 bytes, then one byte per supported algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfoResponse {
    /// Firmware major, minor, patch.
    pub version: [u8; 3],
    /// Serial number.
    pub serial: u32,
    /// Log capacity (entries).
    pub log_capacity: u8,
    /// Log entries in use.
    pub log_used: u8,
    /// Supported algorithms, in the order the device lists them (kept, so that what is
    /// decoded encodes back to the same bytes).
    pub algorithms: Vec<Algorithm>,
}

impl DeviceInfoResponse {
    /// True if the device lists `a`.
    pub fn supports(&self, a: Algorithm) -> bool {
        self.algorithms.contains(&a)
    }
}

impl Message for DeviceInfo {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(DeviceInfo)
    }
}

impl Message for DeviceInfoResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.version)
            .u32(self.serial)
            .u8(self.log_capacity)
            .u8(self.log_used);
        for a in &self.algorithms {
            w.u8(a.to_u8());
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DeviceInfoResponse {
            version: r.array()?,
            serial: r.u32()?,
            log_capacity: r.u8()?,
            log_used: r.u8()?,
            algorithms: r.rest().iter().map(|&b| Algorithm::from_u8(b)).collect(),
        })
    }
}

impl Command for DeviceInfo {
    const CODE: CommandCode = CommandCode::DeviceInfo;
    type Response = DeviceInfoResponse;
}
