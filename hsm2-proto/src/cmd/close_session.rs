//! Close Session (`0x40`), inside the session it ends: no data either way. The device
//! frees the session's slot; the host then forgets (wipes) its keys.

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Result};

/// Close Session request: no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CloseSession;

impl Message for CloseSession {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(CloseSession)
    }
}

impl Command for CloseSession {
    const CODE: CommandCode = CommandCode::CloseSession;
    type Response = EmptyResponse;
}
