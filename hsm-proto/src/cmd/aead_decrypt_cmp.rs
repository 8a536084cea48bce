//! `YSM_AEAD_DECRYPT_CMP` (0x04): does this AEAD hold this plaintext? Answered inside the
//! device (`YSM_AEAD_DECRYPT_CMP_REQ` / `_RESP`).

use super::aead_status::{echo_aead_names, AeadStatusResponse};
use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, SecretBytes};

/// Request: `data` is the expected plaintext followed by the AEAD (pyhsm's form), or the
/// AEAD alone to have the device only authenticate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadDecryptCmp {
    /// The AEAD's nonce.
    pub nonce: Nonce,
    /// The AEAD's key handle.
    pub key_handle: KeyHandle,
    /// Plaintext ‖ AEAD, or AEAD only.
    pub data: SecretBytes,
}

/// Response (`YSM_AEAD_DECRYPT_CMP_RESP`): OK = match (or authentic), MISMATCH = differs.
pub type AeadDecryptCmpResponse = AeadStatusResponse;

impl Message for AeadDecryptCmp {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .len_prefixed(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadDecryptCmp {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            data: SecretBytes::new(r.len_prefixed()?),
        })
    }
}

impl Command for AeadDecryptCmp {
    const OPCODE: Opcode = Opcode::AeadDecryptCmp;
    type Response = AeadDecryptCmpResponse;
    fn check_echo(&self, resp: &AeadDecryptCmpResponse) -> Result<()> {
        echo_aead_names(
            Self::OPCODE,
            "nonce",
            (self.key_handle, &self.nonce),
            (resp.key_handle, &resp.nonce),
        )
    }
}
