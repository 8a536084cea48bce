//! Reset Device (`0x08`), in a session: a factory reset. Every object but a new default
//! authentication key is deleted, the options and the log start again, and the device
//! reboots, which ends every session; the empty answer comes before the reboot.

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Result};

/// Reset Device request: no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResetDevice;

impl Message for ResetDevice {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(ResetDevice)
    }
}

impl Command for ResetDevice {
    const CODE: CommandCode = CommandCode::ResetDevice;
    type Response = EmptyResponse;
}
