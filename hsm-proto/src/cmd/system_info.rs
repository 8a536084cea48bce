//! `YSM_SYSTEM_INFO_QUERY` (0x26): firmware version, protocol version, system uid.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result};

/// `YSM_SYSTEM_INFO_QUERY` has an empty request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfoQuery;

/// `YSM_SYSTEM_INFO_RESP` (16 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// Firmware major version.
    pub version_major: u8,
    /// Firmware minor version.
    pub version_minor: u8,
    /// Firmware build.
    pub version_build: u8,
    /// Wire protocol version; 1 for every known device.
    pub protocol: u8,
    /// The device's unique id.
    pub system_uid: [u8; 12],
}

impl SystemInfo {
    /// `(major, minor, build)` for the capability checks pyhsm makes.
    pub fn version(&self) -> (u8, u8, u8) {
        (self.version_major, self.version_minor, self.version_build)
    }
}

impl Message for SystemInfoQuery {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(SystemInfoQuery)
    }
}

impl Message for SystemInfo {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.version_major)
            .u8(self.version_minor)
            .u8(self.version_build)
            .u8(self.protocol)
            .bytes(&self.system_uid);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SystemInfo {
            version_major: r.u8()?,
            version_minor: r.u8()?,
            version_build: r.u8()?,
            protocol: r.u8()?,
            system_uid: r.array()?,
        })
    }
}

impl Response for SystemInfo {}

impl Command for SystemInfoQuery {
    const OPCODE: Opcode = Opcode::SystemInfoQuery;
    type Response = SystemInfo;
}
