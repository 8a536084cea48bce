//! `YSM_TEMP_KEY_LOAD` (0x11): unseal `key ‖ flags` from an AEAD into the phantom key handle
//! 0xffffffff.

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, Status};

/// `YSM_TEMP_KEY_LOAD_REQ`: the AEAD (28, 32, 36 or 44 bytes) holds a 16/20/24/32-byte key
/// and its u32 flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempKeyLoad {
    /// The AEAD's nonce.
    pub nonce: Nonce,
    /// Key handle that sealed it.
    pub key_handle: KeyHandle,
    /// The AEAD.
    pub aead: Vec<u8>,
}

/// `YSM_TEMP_KEY_LOAD_RESP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempKeyLoadResponse {
    /// Echoed nonce.
    pub nonce: Nonce,
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
}

impl Message for TempKeyLoad {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .len_prefixed(&self.aead);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(TempKeyLoad {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            aead: r.len_prefixed()?.to_vec(),
        })
    }
}

impl Message for TempKeyLoadResponse {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(TempKeyLoadResponse {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            status: r.status()?,
        })
    }
}

impl Response for TempKeyLoadResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for TempKeyLoad {
    const OPCODE: Opcode = Opcode::TempKeyLoad;
    type Response = TempKeyLoadResponse;
    fn check_echo(&self, resp: &TempKeyLoadResponse) -> Result<()> {
        echo_eq(
            Self::OPCODE,
            "key handle",
            &self.key_handle,
            &resp.key_handle,
        )?;
        echo_eq(Self::OPCODE, "nonce", &self.nonce, &resp.nonce)
    }
}
