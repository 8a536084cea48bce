//! `YSM_ECHO` (0x23): bytes out, same bytes back; the link test.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result};

/// `YSM_ECHO_REQ`: up to 95 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// The bytes.
    pub data: Vec<u8>,
}

/// `YSM_ECHO_RESP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoResponse {
    /// The bytes, echoed.
    pub data: Vec<u8>,
}

impl Message for Echo {
    fn encode(&self, w: &mut Writer) {
        w.len_prefixed(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Echo {
            data: r.len_prefixed()?.to_vec(),
        })
    }
}

impl Message for EchoResponse {
    fn encode(&self, w: &mut Writer) {
        w.len_prefixed(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(EchoResponse {
            data: r.len_prefixed()?.to_vec(),
        })
    }
}

impl Response for EchoResponse {}

impl Command for Echo {
    const OPCODE: Opcode = Opcode::Echo;
    type Response = EchoResponse;
}
