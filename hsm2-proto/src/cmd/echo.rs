//! Echo (`0x01`): bytes out, the same bytes back. Works plain and inside a session; the
//! link test. The two messages are the core's ([`otp_core::echo`], the same for both
//! devices); here is their YubiHSM 2 layout: the bytes alone, the frame gives the length.

pub use otp_core::echo::{Echo, EchoResponse};

use super::{echo_eq, Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Result};

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
