//! `YSM_DB_YUBIKEY_AEAD_STORE` (0x05) and `YSM_DB_YUBIKEY_AEAD_STORE2` (0x08, firmware
//! 1.0.4): put a YubiKey into the device's internal database.

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, Status};

/// `YSM_DB_YUBIKEY_AEAD_STORE_REQ`: the public id is also the AEAD's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbYubikeyAeadStore {
    /// Binary public id.
    pub public_id: Nonce,
    /// Key handle that sealed the AEAD.
    pub key_handle: KeyHandle,
    /// The 30-byte YubiKey AEAD.
    pub aead: [u8; 30],
}

/// `YSM_DB_YUBIKEY_AEAD_STORE2_REQ`: as 0x05 with the AEAD's nonce given separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbYubikeyAeadStore2 {
    /// Binary public id.
    pub public_id: Nonce,
    /// Key handle that sealed the AEAD.
    pub key_handle: KeyHandle,
    /// The 30-byte YubiKey AEAD.
    pub aead: [u8; 30],
    /// The AEAD's nonce.
    pub nonce: Nonce,
}

/// `YSM_DB_YUBIKEY_AEAD_STORE_RESP` (both commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbStoreResponse {
    /// Echoed public id.
    pub public_id: Nonce,
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
}

impl Message for DbYubikeyAeadStore {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id)
            .key_handle(self.key_handle)
            .bytes(&self.aead);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DbYubikeyAeadStore {
            public_id: r.nonce()?,
            key_handle: r.key_handle()?,
            aead: r.array()?,
        })
    }
}

impl Message for DbYubikeyAeadStore2 {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id)
            .key_handle(self.key_handle)
            .bytes(&self.aead)
            .nonce(&self.nonce);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DbYubikeyAeadStore2 {
            public_id: r.nonce()?,
            key_handle: r.key_handle()?,
            aead: r.array()?,
            nonce: r.nonce()?,
        })
    }
}

impl Message for DbStoreResponse {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id)
            .key_handle(self.key_handle)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DbStoreResponse {
            public_id: r.nonce()?,
            key_handle: r.key_handle()?,
            status: r.status()?,
        })
    }
}

impl Response for DbStoreResponse {
    fn status(&self) -> Status {
        self.status
    }
}

fn check(op: Opcode, id: &Nonce, kh: KeyHandle, resp: &DbStoreResponse) -> Result<()> {
    echo_eq(op, "key handle", &kh, &resp.key_handle)?;
    echo_eq(op, "public id", id, &resp.public_id)
}

impl Command for DbYubikeyAeadStore {
    const OPCODE: Opcode = Opcode::DbYubikeyAeadStore;
    type Response = DbStoreResponse;
    fn check_echo(&self, resp: &DbStoreResponse) -> Result<()> {
        check(Self::OPCODE, &self.public_id, self.key_handle, resp)
    }
}

impl Command for DbYubikeyAeadStore2 {
    const OPCODE: Opcode = Opcode::DbYubikeyAeadStore2;
    type Response = DbStoreResponse;
    fn check_echo(&self, resp: &DbStoreResponse) -> Result<()> {
        check(Self::OPCODE, &self.public_id, self.key_handle, resp)
    }
}
