//! Get Pseudo Random (`0x51`): random bytes from the device's generator.

use super::{echo_eq, Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, Result, SecretBytes};

/// Get Pseudo Random request: how many bytes (u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetPseudoRandom {
    /// Number of bytes wanted.
    pub length: u16,
}

/// Get Pseudo Random response: the bytes. Treated as secret, since callers may make keys
/// of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudoRandomResponse {
    /// The random bytes.
    pub bytes: SecretBytes,
}

impl Message for GetPseudoRandom {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.length);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetPseudoRandom { length: r.u16()? })
    }
}

impl Message for PseudoRandomResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.bytes.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PseudoRandomResponse {
            bytes: SecretBytes::new(r.rest()),
        })
    }
}

impl Command for GetPseudoRandom {
    const CODE: CommandCode = CommandCode::GetPseudoRandom;
    type Response = PseudoRandomResponse;
    fn check_response(&self, resp: &PseudoRandomResponse) -> Result<()> {
        echo_eq(
            Self::CODE,
            "length",
            &usize::from(self.length),
            &resp.bytes.len(),
        )
    }
}
