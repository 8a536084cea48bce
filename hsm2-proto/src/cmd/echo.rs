//! Echo (`0x01`): bytes out, the same bytes back. Works plain and inside a session; the
//! link test.

use super::{echo_eq, Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Result};

/// Echo request: any bytes (up to the frame limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// The bytes.
    pub data: Vec<u8>,
}

/// Echo response: the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoResponse {
    /// The bytes, echoed.
    pub data: Vec<u8>,
}

impl Message for Echo {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Echo {
            data: r.rest().to_vec(),
        })
    }
}

impl Message for EchoResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(EchoResponse {
            data: r.rest().to_vec(),
        })
    }
}

impl Command for Echo {
    const CODE: CommandCode = CommandCode::Echo;
    type Response = EchoResponse;
    fn check_response(&self, resp: &EchoResponse) -> Result<()> {
        echo_eq(Self::CODE, "data", &self.data, &resp.data)
    }
}
