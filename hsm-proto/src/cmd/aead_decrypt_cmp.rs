//! `YSM_AEAD_DECRYPT_CMP` (0x04): does this AEAD hold this plaintext? Answered inside the
//! device (`YSM_AEAD_DECRYPT_CMP_REQ` / `_RESP`).

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, SecretBytes, Status};

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

/// Response: OK = match (or authentic), MISMATCH = differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadDecryptCmpResponse {
    /// Echoed nonce.
    pub nonce: Nonce,
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
}

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

impl Message for AeadDecryptCmpResponse {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadDecryptCmpResponse {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            status: r.status()?,
        })
    }
}

impl Response for AeadDecryptCmpResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for AeadDecryptCmp {
    const OPCODE: Opcode = Opcode::AeadDecryptCmp;
    type Response = AeadDecryptCmpResponse;
    fn check_echo(&self, resp: &AeadDecryptCmpResponse) -> Result<()> {
        echo_eq(
            Self::OPCODE,
            "key handle",
            &self.key_handle,
            &resp.key_handle,
        )?;
        echo_eq(Self::OPCODE, "nonce", &self.nonce, &resp.nonce)
    }
}
