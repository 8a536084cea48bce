//! `YSM_AEAD_GENERATE` (0x01), `YSM_BUFFER_AEAD_GENERATE` (0x02) and
//! `YSM_RANDOM_AEAD_GENERATE` (0x03): three requests, one response
//! (`YSM_AEAD_GENERATE_RESP`).

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Error, KeyHandle, Nonce, Opcode, Result, SecretBytes, Status};

/// `YSM_AEAD_GENERATE_REQ`: seal caller data (at most 64 bytes). A zero nonce lets the
/// device choose one; any other nonce needs `YSM_USER_NONCE` on firmware 1.0.4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadGenerate {
    /// Nonce, or zero for "device chooses".
    pub nonce: Nonce,
    /// Key handle whose key seals.
    pub key_handle: KeyHandle,
    /// The plaintext.
    pub data: SecretBytes,
}

/// `YSM_BUFFER_AEAD_GENERATE_REQ`: seal the internal buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferAeadGenerate {
    /// Nonce, or zero for "device chooses".
    pub nonce: Nonce,
    /// Key handle whose key seals.
    pub key_handle: KeyHandle,
}

/// `YSM_RANDOM_AEAD_GENERATE_REQ`: seal `len` (1..=64) fresh random bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomAeadGenerate {
    /// Nonce, or zero for "device chooses".
    pub nonce: Nonce,
    /// Key handle whose key seals.
    pub key_handle: KeyHandle,
    /// Number of random bytes.
    pub len: u8,
}

/// `YSM_AEAD_GENERATE_RESP`: the nonce actually used, the echoed key handle, status and AEAD
/// (empty on error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadGenerateResponse {
    /// Nonce used (the device's choice when the request's was zero).
    pub nonce: Nonce,
    /// Echo of the request's key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
    /// Ciphertext ‖ MAC.
    pub aead: Vec<u8>,
}

impl AeadGenerateResponse {
    /// A refusal: zero AEAD length, as the device sends.
    pub fn refused(nonce: Nonce, key_handle: KeyHandle, status: Status) -> Self {
        AeadGenerateResponse {
            nonce,
            key_handle,
            status,
            aead: Vec::new(),
        }
    }
}

impl Message for AeadGenerate {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .len_prefixed(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadGenerate {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            data: SecretBytes::new(r.len_prefixed()?),
        })
    }
}

impl Message for BufferAeadGenerate {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce).key_handle(self.key_handle);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BufferAeadGenerate {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
        })
    }
}

impl Message for RandomAeadGenerate {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .u8(self.len);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RandomAeadGenerate {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            len: r.u8()?,
        })
    }
}

impl Message for AeadGenerateResponse {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.nonce)
            .key_handle(self.key_handle)
            .status(self.status)
            .len_prefixed(&self.aead);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadGenerateResponse {
            nonce: r.nonce()?,
            key_handle: r.key_handle()?,
            status: r.status()?,
            aead: r.len_prefixed()?.to_vec(),
        })
    }
}

impl Response for AeadGenerateResponse {
    fn status(&self) -> Status {
        self.status
    }
}

/// The checks pyhsm makes on every AEAD-generate response: key handle echoed; on success the
/// nonce is the requested one, or, if zero was requested, a device-chosen non-zero one.
fn check(op: Opcode, kh: KeyHandle, nonce: &Nonce, resp: &AeadGenerateResponse) -> Result<()> {
    echo_eq(op, "key handle", &kh, &resp.key_handle)?;
    if resp.status.is_ok() {
        if *nonce == Nonce::ZERO {
            if resp.nonce == Nonce::ZERO {
                return Err(Error::EchoMismatch {
                    cmd: op,
                    field: "nonce (device returned zero)",
                });
            }
        } else {
            echo_eq(op, "nonce", nonce, &resp.nonce)?;
        }
    }
    Ok(())
}

impl Command for AeadGenerate {
    const OPCODE: Opcode = Opcode::AeadGenerate;
    type Response = AeadGenerateResponse;
    fn check_echo(&self, resp: &AeadGenerateResponse) -> Result<()> {
        check(Self::OPCODE, self.key_handle, &self.nonce, resp)
    }
}

impl Command for BufferAeadGenerate {
    const OPCODE: Opcode = Opcode::BufferAeadGenerate;
    type Response = AeadGenerateResponse;
    fn check_echo(&self, resp: &AeadGenerateResponse) -> Result<()> {
        check(Self::OPCODE, self.key_handle, &self.nonce, resp)
    }
}

impl Command for RandomAeadGenerate {
    const OPCODE: Opcode = Opcode::RandomAeadGenerate;
    type Response = AeadGenerateResponse;
    fn check_echo(&self, resp: &AeadGenerateResponse) -> Result<()> {
        check(Self::OPCODE, self.key_handle, &self.nonce, resp)
    }
}
