//! Export Wrapped (`0x4a`), Import Wrapped (`0x4b`), Wrap Data (`0x68`) and Unwrap Data
//! (`0x69`): objects and data encrypted under a wrap key.
//!
//! What travels is `nonce (13) ‖ AES-CCM ciphertext ‖ tag (16)`, as Yubico's `yubihsm-wrap`
//! builds it; the layout of an exported object's plaintext is the emulator's business
//! (`crate::emulator`): the host only carries the bytes from one device to another.

use super::{echo_eq, Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, ObjectType, Result, SecretBytes};

/// The nonce at the head of everything a wrap key encrypts.
pub const WRAP_NONCE_LEN: usize = 13;
/// The CCM tag at its end.
pub const WRAP_TAG_LEN: usize = 16;

/// Export Wrapped request: wrap key id (u16), the object's type (u8) and id (u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportWrapped {
    /// The wrap key.
    pub wrap_key_id: ObjectId,
    /// The object's type.
    pub object_type: ObjectType,
    /// The object's id.
    pub id: ObjectId,
}

/// Import Wrapped request: wrap key id (u16), then what Export Wrapped gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportWrapped {
    /// The wrap key.
    pub wrap_key_id: ObjectId,
    /// Nonce, ciphertext and tag.
    pub wrapped: Vec<u8>,
}

/// Wrap Data request: wrap key id (u16), the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapData {
    /// The wrap key.
    pub wrap_key_id: ObjectId,
    /// The plaintext.
    pub data: SecretBytes,
}

/// Unwrap Data request: wrap key id (u16), then what Wrap Data gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwrapData {
    /// The wrap key.
    pub wrap_key_id: ObjectId,
    /// Nonce, ciphertext and tag.
    pub wrapped: Vec<u8>,
}

/// The answer of Export Wrapped and Wrap Data: nonce, ciphertext and tag. Not secret
/// without the wrap key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedResponse {
    /// The bytes.
    pub wrapped: Vec<u8>,
}

/// The answer of Import Wrapped: the new object's type (u8) and id (u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedObject {
    /// Its type.
    pub object_type: ObjectType,
    /// Its id.
    pub id: ObjectId,
}

/// The answer of Unwrap Data: the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwrappedResponse {
    /// The plaintext.
    pub data: SecretBytes,
}

impl Message for ExportWrapped {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.wrap_key_id.0)
            .u8(self.object_type.to_u8())
            .u16(self.id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ExportWrapped {
            wrap_key_id: ObjectId(r.u16()?),
            object_type: ObjectType::from_u8(r.u8()?),
            id: ObjectId(r.u16()?),
        })
    }
}

impl Message for ImportWrapped {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.wrap_key_id.0).bytes(&self.wrapped);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ImportWrapped {
            wrap_key_id: ObjectId(r.u16()?),
            wrapped: r.rest().to_vec(),
        })
    }
}

impl Message for WrapData {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.wrap_key_id.0).bytes(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(WrapData {
            wrap_key_id: ObjectId(r.u16()?),
            data: SecretBytes::new(r.rest()),
        })
    }
}

impl Message for UnwrapData {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.wrap_key_id.0).bytes(&self.wrapped);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(UnwrapData {
            wrap_key_id: ObjectId(r.u16()?),
            wrapped: r.rest().to_vec(),
        })
    }
}

impl Message for WrappedResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.wrapped);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        if r.remaining() < WRAP_NONCE_LEN + WRAP_TAG_LEN {
            return Err(r.invalid("wrapped data shorter than nonce and tag"));
        }
        Ok(WrappedResponse {
            wrapped: r.rest().to_vec(),
        })
    }
}

impl Message for ImportedObject {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.object_type.to_u8()).u16(self.id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ImportedObject {
            object_type: ObjectType::from_u8(r.u8()?),
            id: ObjectId(r.u16()?),
        })
    }
}

impl Message for UnwrappedResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(UnwrappedResponse {
            data: SecretBytes::new(r.rest()),
        })
    }
}

impl Command for ExportWrapped {
    const CODE: CommandCode = CommandCode::ExportWrapped;
    type Response = WrappedResponse;
}

impl Command for ImportWrapped {
    const CODE: CommandCode = CommandCode::ImportWrapped;
    type Response = ImportedObject;
}

impl Command for WrapData {
    const CODE: CommandCode = CommandCode::WrapData;
    type Response = WrappedResponse;
    fn check_response(&self, resp: &WrappedResponse) -> Result<()> {
        let len = WRAP_NONCE_LEN + self.data.len() + WRAP_TAG_LEN;
        echo_eq(Self::CODE, "wrapped length", &len, &resp.wrapped.len())
    }
}

impl Command for UnwrapData {
    const CODE: CommandCode = CommandCode::UnwrapData;
    type Response = UnwrappedResponse;
    fn check_response(&self, resp: &UnwrappedResponse) -> Result<()> {
        let len = self
            .wrapped
            .len()
            .saturating_sub(WRAP_NONCE_LEN + WRAP_TAG_LEN);
        echo_eq(Self::CODE, "plaintext length", &len, &resp.data.len())
    }
}
