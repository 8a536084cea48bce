//! The unlock commands: `YSM_KEY_STORAGE_UNLOCK` (0x27, firmware 0.x), `YSM_HSM_UNLOCK`
//! (0x28) and `YSM_KEY_STORE_DECRYPT` (0x29, firmware 1.0). All answer a bare status.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Nonce, Opcode, Result, SecretBytes, Status};

/// `YSM_KEY_STORAGE_UNLOCK_REQ`: the 16-byte HSM password (zero-padded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStorageUnlock {
    /// The password.
    pub password: SecretBytes,
}

/// `YSM_HSM_UNLOCK_REQ`: an OTP of an admin YubiKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HsmUnlock {
    /// Binary public id of the admin YubiKey.
    pub public_id: Nonce,
    /// The OTP's 16-byte ciphertext.
    pub otp: [u8; 16],
}

/// `YSM_KEY_STORE_DECRYPT_REQ`: the 32-byte master key (zero-padded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStoreDecrypt {
    /// The master key.
    pub key: SecretBytes,
}

/// A response that is only a status byte (`YSM_*_RESP` of 0x25, 0x27, 0x28, 0x29).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    /// Result.
    pub status: Status,
}

fn padded(w: &mut Writer, b: &[u8], n: usize) {
    let take = b.len().min(n);
    w.bytes(&b[..take]);
    for _ in take..n {
        w.u8(0);
    }
}

impl Message for KeyStorageUnlock {
    fn encode(&self, w: &mut Writer) {
        padded(w, self.password.expose(), 16);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(KeyStorageUnlock {
            password: SecretBytes::new(r.bytes(16)?),
        })
    }
}

impl Message for HsmUnlock {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id).bytes(&self.otp);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(HsmUnlock {
            public_id: r.nonce()?,
            otp: r.array()?,
        })
    }
}

impl Message for KeyStoreDecrypt {
    fn encode(&self, w: &mut Writer) {
        padded(w, self.key.expose(), 32);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(KeyStoreDecrypt {
            key: SecretBytes::new(r.bytes(32)?),
        })
    }
}

impl Message for StatusResponse {
    fn encode(&self, w: &mut Writer) {
        w.status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(StatusResponse {
            status: r.status()?,
        })
    }
}

impl Response for StatusResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for KeyStorageUnlock {
    const OPCODE: Opcode = Opcode::KeyStorageUnlock;
    type Response = StatusResponse;
}

impl Command for HsmUnlock {
    const OPCODE: Opcode = Opcode::HsmUnlock;
    type Response = StatusResponse;
}

impl Command for KeyStoreDecrypt {
    const OPCODE: Opcode = Opcode::KeyStoreDecrypt;
    type Response = StatusResponse;
}
