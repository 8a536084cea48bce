//! `YSM_HMAC_SHA1_GENERATE` (0x10): HMAC-SHA1 streamed over several packets.

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Opcode, Result, SecretBytes, Status};

/// The packet flags of an HMAC request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HmacFlags(pub u8);

impl HmacFlags {
    /// Start a new HMAC.
    pub const RESET: u8 = 0x01;
    /// Finish and output the 20-byte MAC.
    pub const FINAL: u8 = 0x02;
    /// Also place the MAC in the internal buffer.
    pub const TO_BUFFER: u8 = 0x04;

    /// True if `bit` is set.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// `YSM_HMAC_SHA1_GENERATE_REQ`: up to 90 data bytes per packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSha1Generate {
    /// Key handle.
    pub key_handle: KeyHandle,
    /// Packet flags.
    pub flags: HmacFlags,
    /// Data.
    pub data: SecretBytes,
}

/// `YSM_HMAC_SHA1_GENERATE_RESP`: the MAC after a FINAL packet, empty otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacSha1Response {
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// Result.
    pub status: Status,
    /// The MAC (20 bytes) or nothing.
    pub hash: Vec<u8>,
}

impl Message for HmacSha1Generate {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle)
            .u8(self.flags.0)
            .len_prefixed(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(HmacSha1Generate {
            key_handle: r.key_handle()?,
            flags: HmacFlags(r.u8()?),
            data: SecretBytes::new(r.len_prefixed()?),
        })
    }
}

impl Message for HmacSha1Response {
    fn encode(&self, w: &mut Writer) {
        w.key_handle(self.key_handle)
            .status(self.status)
            .len_prefixed(&self.hash);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(HmacSha1Response {
            key_handle: r.key_handle()?,
            status: r.status()?,
            hash: r.len_prefixed()?.to_vec(),
        })
    }
}

impl Response for HmacSha1Response {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for HmacSha1Generate {
    const OPCODE: Opcode = Opcode::HmacSha1Generate;
    type Response = HmacSha1Response;
    fn check_echo(&self, resp: &HmacSha1Response) -> Result<()> {
        echo_eq(
            Self::OPCODE,
            "key handle",
            &self.key_handle,
            &resp.key_handle,
        )
    }
}
