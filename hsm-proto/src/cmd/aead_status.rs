//! The answer of the commands that hand the device an AEAD to open and learn only whether
//! that worked: nonce, key handle, status (`YSM_AEAD_DECRYPT_CMP_RESP` and
//! `YSM_TEMP_KEY_LOAD_RESP` are this one struct), and the echo check of the commands that
//! name an AEAD by its key handle and nonce.

use super::{echo_eq, echo_key_handle, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, Status};

/// `{ nonce[6], keyHandle, status }`: the AEAD's names echoed, and the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadStatusResponse {
    /// Echoed nonce.
    pub nonce: Nonce,
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
}

impl Message for AeadStatusResponse {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadStatusResponse {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            status: r.status()?,
        })
    }
}

impl Response for AeadStatusResponse {
    fn status(&self) -> Status {
        self.status
    }
}

/// Checks the echo of a command that names an AEAD by key handle and nonce: the key handle
/// first, then the nonce, called `nonce_field` in the error (`nonce`, or `public id` where
/// the nonce is one).
pub(super) fn echo_aead_names(
    cmd: Opcode,
    nonce_field: &'static str,
    sent: (KeyHandle, &Nonce),
    echoed: (KeyHandle, &Nonce),
) -> Result<()> {
    echo_key_handle(cmd, sent.0, echoed.0)?;
    echo_eq(cmd, nonce_field, sent.1, echoed.1)
}
