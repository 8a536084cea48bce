//! Session Message (`0x05`): the envelope of every command inside a session, and of its
//! answer (§3.4). [`crate::session`] seals and opens it; this is only its layout.

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::session::SessionId;
use crate::{CommandCode, Result};

/// The smallest ciphertext: one AES block (an empty inner frame still pads to 16 bytes).
const BLOCK: usize = 16;

/// Session Message request: session id (1), AES-CBC ciphertext of the padded inner
/// command (a non-zero multiple of 16), C-MAC (8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessage {
    /// The session.
    pub session_id: SessionId,
    /// The encrypted inner frame.
    pub ciphertext: Vec<u8>,
    /// The first 8 bytes of the chained CMAC.
    pub mac: [u8; 8],
}

/// Session Message response: the same layout, with the R-MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMessageResponse {
    /// The session (must be the request's).
    pub session_id: SessionId,
    /// The encrypted inner response.
    pub ciphertext: Vec<u8>,
    /// The first 8 bytes of the R-MAC.
    pub mac: [u8; 8],
}

fn encode(w: &mut Writer, sid: SessionId, ciphertext: &[u8], mac: &[u8; 8]) {
    w.u8(sid.0).bytes(ciphertext).bytes(mac);
}

fn decode(r: &mut Reader<'_>) -> Result<(SessionId, Vec<u8>, [u8; 8])> {
    let sid = SessionId(r.u8()?);
    let Some(n) = r.remaining().checked_sub(8) else {
        return Err(crate::Error::Truncated(r.cmd()));
    };
    if n == 0 || n % BLOCK != 0 {
        return Err(r.invalid("ciphertext length (not a non-zero multiple of 16)"));
    }
    let ciphertext = r.bytes(n)?.to_vec();
    Ok((sid, ciphertext, r.array()?))
}

impl Message for SessionMessage {
    fn encode(&self, w: &mut Writer) {
        encode(w, self.session_id, &self.ciphertext, &self.mac);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (session_id, ciphertext, mac) = decode(r)?;
        Ok(SessionMessage {
            session_id,
            ciphertext,
            mac,
        })
    }
}

impl Message for SessionMessageResponse {
    fn encode(&self, w: &mut Writer) {
        encode(w, self.session_id, &self.ciphertext, &self.mac);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let (session_id, ciphertext, mac) = decode(r)?;
        Ok(SessionMessageResponse {
            session_id,
            ciphertext,
            mac,
        })
    }
}

impl Command for SessionMessage {
    const CODE: CommandCode = CommandCode::SessionMessage;
    type Response = SessionMessageResponse;
    fn check_response(&self, resp: &SessionMessageResponse) -> Result<()> {
        super::echo_eq(Self::CODE, "session id", &self.session_id, &resp.session_id)
    }
}
