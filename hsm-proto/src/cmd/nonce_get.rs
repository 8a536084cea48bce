//! `YSM_NONCE_GET` (0x22): read the device's nonce counter and advance it.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Nonce, Opcode, Result, Status};

/// `YSM_NONCE_GET_REQ`: returns the value before adding `post_increment` (0 just reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceGet {
    /// How much to advance after reading.
    pub post_increment: u16,
}

/// `YSM_NONCE_GET_RESP`: bytes 0–3 volatile counter (LE), 4–5 power-up count (LE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceGetResponse {
    /// Result.
    pub status: Status,
    /// The nonce.
    pub nonce: Nonce,
}

impl NonceGetResponse {
    /// pyhsm's integer view: `power_up << 32 | volatile`.
    pub fn as_u64(&self) -> u64 {
        let n = self.nonce.0;
        u64::from(u32::from_le_bytes([n[0], n[1], n[2], n[3]]))
            | u64::from(u16::from_le_bytes([n[4], n[5]])) << 32
    }
}

impl Message for NonceGet {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.post_increment);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(NonceGet {
            post_increment: r.u16()?,
        })
    }
}

impl Message for NonceGetResponse {
    fn encode(&self, w: &mut Writer) {
        w.status(self.status).nonce(&self.nonce);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(NonceGetResponse {
            status: r.status()?,
            nonce: r.nonce()?,
        })
    }
}

impl Response for NonceGetResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for NonceGet {
    const OPCODE: Opcode = Opcode::NonceGet;
    type Response = NonceGetResponse;
}
