//! `YSM_TEMP_KEY_LOAD` (0x11): unseal `key ‖ flags` from an AEAD into the phantom key handle
//! 0xffffffff.

use super::aead_status::{echo_aead_names, AeadStatusResponse};
use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result};

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
pub type TempKeyLoadResponse = AeadStatusResponse;

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

impl Command for TempKeyLoad {
    const OPCODE: Opcode = Opcode::TempKeyLoad;
    type Response = TempKeyLoadResponse;
    fn check_echo(&self, resp: &TempKeyLoadResponse) -> Result<()> {
        echo_aead_names(
            Self::OPCODE,
            "nonce",
            (self.key_handle, &self.nonce),
            (resp.key_handle, &resp.nonce),
        )
    }
}
