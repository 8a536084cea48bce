//! `YSM_AES_ECB_BLOCK_ENCRYPT` (0x0d), `_DECRYPT` (0x0e) and `_DECRYPT_CMP` (0x0f): one AES
//! block with a key handle's key.

use super::{echo_key_handle, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Opcode, Result, SecretBytes, Status};

/// `YSM_AES_ECB_BLOCK_ENCRYPT_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcbBlockEncrypt {
    /// Key handle.
    pub key_handle: KeyHandle,
    /// Plaintext block (16 bytes; shorter input is zero-padded by the client).
    pub block: SecretBytes,
}

/// `YSM_AES_ECB_BLOCK_DECRYPT_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcbBlockDecrypt {
    /// Key handle.
    pub key_handle: KeyHandle,
    /// Ciphertext block.
    pub block: [u8; 16],
}

/// `YSM_AES_ECB_BLOCK_DECRYPT_CMP_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcbBlockDecryptCmp {
    /// Key handle.
    pub key_handle: KeyHandle,
    /// Ciphertext block.
    pub ciphertext: [u8; 16],
    /// Expected plaintext.
    pub plaintext: SecretBytes,
}

/// `YSM_AES_ECB_BLOCK_ENCRYPT_RESP` / `_DECRYPT_RESP` (21 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcbResponse {
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result block (zero on error).
    pub block: SecretBytes,
    /// Result.
    pub status: Status,
}

/// `YSM_AES_ECB_BLOCK_DECRYPT_CMP_RESP` (5 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcbCmpResponse {
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// OK = equal, MISMATCH = different.
    pub status: Status,
}

fn block16(r: &mut Reader<'_>) -> Result<SecretBytes> {
    Ok(SecretBytes::new(r.bytes(16)?))
}

fn put16(w: &mut Writer, b: &[u8]) {
    let mut blk = [0u8; 16];
    let n = b.len().min(16);
    blk[..n].copy_from_slice(&b[..n]);
    w.bytes(&blk);
}

impl Message for AesEcbBlockEncrypt {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle);
        put16(w, self.block.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcbBlockEncrypt {
            key_handle: r.key_handle()?,
            block: block16(r)?,
        })
    }
}

impl Message for AesEcbBlockDecrypt {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle).bytes(&self.block);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcbBlockDecrypt {
            key_handle: r.key_handle()?,
            block: r.array()?,
        })
    }
}

impl Message for AesEcbBlockDecryptCmp {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle).bytes(&self.ciphertext);
        put16(w, self.plaintext.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcbBlockDecryptCmp {
            key_handle: r.key_handle()?,
            ciphertext: r.array()?,
            plaintext: block16(r)?,
        })
    }
}

impl Message for AesEcbResponse {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle);
        put16(w, self.block.expose());
        w.status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcbResponse {
            key_handle: r.key_handle()?,
            block: block16(r)?,
            status: r.status()?,
        })
    }
}

impl Message for AesEcbCmpResponse {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle).status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcbCmpResponse {
            key_handle: r.key_handle()?,
            status: r.status()?,
        })
    }
}

impl Response for AesEcbResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Response for AesEcbCmpResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for AesEcbBlockEncrypt {
    const OPCODE: Opcode = Opcode::AesEcbBlockEncrypt;
    type Response = AesEcbResponse;
    fn check_echo(&self, resp: &AesEcbResponse) -> Result<()> {
        echo_key_handle(Self::OPCODE, self.key_handle, resp.key_handle)
    }
}

impl Command for AesEcbBlockDecrypt {
    const OPCODE: Opcode = Opcode::AesEcbBlockDecrypt;
    type Response = AesEcbResponse;
    fn check_echo(&self, resp: &AesEcbResponse) -> Result<()> {
        echo_key_handle(Self::OPCODE, self.key_handle, resp.key_handle)
    }
}

impl Command for AesEcbBlockDecryptCmp {
    const OPCODE: Opcode = Opcode::AesEcbBlockDecryptCmp;
    type Response = AesEcbCmpResponse;
    fn check_echo(&self, resp: &AesEcbCmpResponse) -> Result<()> {
        echo_key_handle(Self::OPCODE, self.key_handle, resp.key_handle)
    }
}
