//! Authenticate Session (`0x04`), plain: the host proves it holds the authentication key,
//! and the session opens (§3.3). Built and checked by [`crate::session`], which owns the
//! MAC; this is only its layout.

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::session::{Cryptogram, SessionId};
use crate::{CommandCode, Result};

/// Authenticate Session request: session id (1), host cryptogram (8), C-MAC (8); 17 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticateSession {
    /// The session being opened.
    pub session_id: SessionId,
    /// Proof that the host holds the authentication key.
    pub host_cryptogram: Cryptogram,
    /// The first 8 bytes of the CMAC over the frame before it; starts the MAC chain.
    pub mac: [u8; 8],
}

impl Message for AuthenticateSession {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.session_id.0)
            .bytes(&self.host_cryptogram.0)
            .bytes(&self.mac);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AuthenticateSession {
            session_id: SessionId(r.u8()?),
            host_cryptogram: Cryptogram(r.array()?),
            mac: r.array()?,
        })
    }
}

impl Command for AuthenticateSession {
    const CODE: CommandCode = CommandCode::AuthenticateSession;
    type Response = EmptyResponse;
}
