//! `YSM_MONITOR_EXIT` (0x7f): leave HSM mode for the configuration console. Only a device in
//! debug mode obeys, and it sends no response.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result};

/// `YSM_MONITOR_EXIT_REQ`: a magic word and its complement, so line noise cannot trigger it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorExit {
    /// `0xbaadbeef`.
    pub magic: u32,
    /// `!magic`.
    pub magic_inv: u32,
}

impl MonitorExit {
    /// The magic value.
    pub const MAGIC: u32 = 0xbaad_beef;

    /// The request with the right magic.
    pub fn new() -> MonitorExit {
        MonitorExit {
            magic: Self::MAGIC,
            magic_inv: !Self::MAGIC,
        }
    }
}

impl Default for MonitorExit {
    fn default() -> Self {
        Self::new()
    }
}

/// The (absent) response to `MONITOR_EXIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoResponse;

impl Message for MonitorExit {
    fn encode(&self, w: &mut Writer) {
        w.u32(self.magic).u32(self.magic_inv);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(MonitorExit {
            magic: r.u32()?,
            magic_inv: r.u32()?,
        })
    }
}

impl Message for NoResponse {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(NoResponse)
    }
}

impl Response for NoResponse {}

impl Command for MonitorExit {
    const OPCODE: Opcode = Opcode::MonitorExit;
    type Response = NoResponse;
}
