//! Get Object Info (`0x4e`): one object's metadata, 66 bytes (§4.3).

use super::{echo_eq, Command, Message};
use crate::codec::{Reader, Writer};
use crate::{
    Algorithm, Capabilities, CommandCode, Domains, Label, ObjectId, ObjectType, Origin, Result,
};

/// Get Object Info request: object id (u16), type (u8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetObjectInfo {
    /// The object.
    pub id: ObjectId,
    /// Its type.
    pub object_type: ObjectType,
}

/// Get Object Info response: capabilities (u64), id (u16), size (u16), domains (u16),
/// type, algorithm, sequence, origin (u8 each), label (40), delegated capabilities (u64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectInfo {
    /// What the object may be used for.
    pub capabilities: Capabilities,
    /// Its id.
    pub id: ObjectId,
    /// Key or data length in bytes.
    pub size: u16,
    /// Its domains.
    pub domains: Domains,
    /// Its type.
    pub object_type: ObjectType,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Sequence number.
    pub sequence: u8,
    /// Generated, imported, or imported wrapped.
    pub origin: Origin,
    /// Its label.
    pub label: Label,
    /// Capabilities it may pass on (authentication and wrap keys).
    pub delegated: Capabilities,
}

impl Message for GetObjectInfo {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0).u8(self.object_type.to_u8());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetObjectInfo {
            id: ObjectId(r.u16()?),
            object_type: ObjectType::from_u8(r.u8()?),
        })
    }
}

impl Message for ObjectInfo {
    fn encode(&self, w: &mut Writer) {
        w.u64(self.capabilities.0)
            .u16(self.id.0)
            .u16(self.size)
            .u16(self.domains.0)
            .u8(self.object_type.to_u8())
            .u8(self.algorithm.to_u8())
            .u8(self.sequence)
            .u8(self.origin.0)
            .bytes(&self.label.0)
            .u64(self.delegated.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ObjectInfo {
            capabilities: Capabilities(r.u64()?),
            id: ObjectId(r.u16()?),
            size: r.u16()?,
            domains: Domains(r.u16()?),
            object_type: ObjectType::from_u8(r.u8()?),
            algorithm: Algorithm::from_u8(r.u8()?),
            sequence: r.u8()?,
            origin: Origin(r.u8()?),
            label: Label(r.array()?),
            delegated: Capabilities(r.u64()?),
        })
    }
}

impl Command for GetObjectInfo {
    const CODE: CommandCode = CommandCode::GetObjectInfo;
    type Response = ObjectInfo;
    fn check_response(&self, resp: &ObjectInfo) -> Result<()> {
        echo_eq(Self::CODE, "object id", &self.id, &resp.id)?;
        echo_eq(
            Self::CODE,
            "object type",
            &self.object_type,
            &resp.object_type,
        )
    }
}
