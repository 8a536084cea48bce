//! `YSM_ECHO` (0x23): bytes out, same bytes back; the link test. The two messages are the
//! core's ([`otp_core::echo`], the same for both devices); here is their YubiHSM 1 layout,
//! `YSM_ECHO_REQ` and `YSM_ECHO_RESP`: a length byte, then up to 95 bytes.

pub use otp_core::echo::{Echo, EchoResponse};

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result};

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
