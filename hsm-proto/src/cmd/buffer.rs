//! `YSM_BUFFER_LOAD` (0x20) and `YSM_BUFFER_RANDOM_LOAD` (0x21): fill the device's 64-byte
//! internal buffer, the source of `BUFFER_AEAD_GENERATE`.

use super::{Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result, SecretBytes};

/// `YSM_BUFFER_LOAD_REQ`: write caller bytes at `offset` (offset 0 empties the buffer first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferLoad {
    /// Where to write.
    pub offset: u8,
    /// The bytes (at most 64).
    pub data: SecretBytes,
}

/// `YSM_BUFFER_RANDOM_LOAD_REQ`: write `len` random bytes at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferRandomLoad {
    /// Where to write.
    pub offset: u8,
    /// How many random bytes.
    pub len: u8,
}

/// `YSM_BUFFER_LOAD_RESP`: the number of bytes now in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferLoadResponse {
    /// Bytes in the buffer.
    pub count: u8,
}

impl Message for BufferLoad {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.offset).len_prefixed(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BufferLoad {
            offset: r.u8()?,
            data: SecretBytes::new(r.len_prefixed()?),
        })
    }
}

impl Message for BufferRandomLoad {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.offset).u8(self.len);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BufferRandomLoad {
            offset: r.u8()?,
            len: r.u8()?,
        })
    }
}

impl Message for BufferLoadResponse {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.count);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BufferLoadResponse { count: r.u8()? })
    }
}

impl Response for BufferLoadResponse {}

impl Command for BufferLoad {
    const OPCODE: Opcode = Opcode::BufferLoad;
    type Response = BufferLoadResponse;
}

impl Command for BufferRandomLoad {
    const OPCODE: Opcode = Opcode::BufferRandomLoad;
    type Response = BufferLoadResponse;
}
