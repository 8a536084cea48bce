//! Create Session (`0x03`), plain: the first half of opening a session (§3.1).

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::session::{Challenge, Cryptogram, SessionId};
use crate::{CommandCode, ObjectId, Result};

/// Create Session request: authentication key id (u16), host challenge (8); 10 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSession {
    /// The authentication key the session is opened with.
    pub auth_key_id: ObjectId,
    /// Fresh random bytes from the host.
    pub host_challenge: Challenge,
}

/// Create Session response: session id (1), card challenge (8), card cryptogram (8); 17
/// bytes (libyubihsm refuses any other length, and so do we).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateSessionResponse {
    /// The session's id.
    pub session_id: SessionId,
    /// Fresh random bytes from the device.
    pub card_challenge: Challenge,
    /// Proof that the device holds the authentication key.
    pub card_cryptogram: Cryptogram,
}

impl Message for CreateSession {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.auth_key_id.0).bytes(&self.host_challenge.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(CreateSession {
            auth_key_id: ObjectId(r.u16()?),
            host_challenge: Challenge(r.array()?),
        })
    }
}

impl Message for CreateSessionResponse {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.session_id.0)
            .bytes(&self.card_challenge.0)
            .bytes(&self.card_cryptogram.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(CreateSessionResponse {
            session_id: SessionId(r.u8()?),
            card_challenge: Challenge(r.array()?),
            card_cryptogram: Cryptogram(r.array()?),
        })
    }
}

impl Command for CreateSession {
    const CODE: CommandCode = CommandCode::CreateSession;
    type Response = CreateSessionResponse;
}
