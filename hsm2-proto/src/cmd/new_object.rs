//! What every Put and Generate request starts with, and what each answers: the id used.

use super::Message;
use crate::codec::{Reader, Writer};
use crate::{Algorithm, Capabilities, Domains, Label, ObjectId, Result};

/// The head of a Put or Generate request: id (u16, 0 = the device chooses), label (40),
/// domains (u16), capabilities (u64), algorithm (u8); 53 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewObject {
    /// The id wanted, or 0.
    pub id: ObjectId,
    /// Label.
    pub label: Label,
    /// Domains the object lives in.
    pub domains: Domains,
    /// What the object may be used for.
    pub capabilities: Capabilities,
    /// Its algorithm.
    pub algorithm: Algorithm,
}

impl NewObject {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0)
            .bytes(&self.label.0)
            .u16(self.domains.0)
            .u64(self.capabilities.0)
            .u8(self.algorithm.to_u8());
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(NewObject {
            id: ObjectId(r.u16()?),
            label: Label(r.array()?),
            domains: Domains(r.u16()?),
            capabilities: Capabilities(r.u64()?),
            algorithm: Algorithm::from_u8(r.u8()?),
        })
    }
}

/// The answer to a Put or Generate: the id of the new object (u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectIdResponse {
    /// The id the object got.
    pub id: ObjectId,
}

impl Message for ObjectIdResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(ObjectIdResponse {
            id: ObjectId(r.u16()?),
        })
    }
}

/// A device that was asked for id `wanted` must answer it (id 0 lets it choose).
pub(crate) fn check_id(
    cmd: crate::CommandCode,
    wanted: ObjectId,
    resp: &ObjectIdResponse,
) -> Result<()> {
    if wanted.0 == 0 {
        return Ok(());
    }
    super::echo_eq(cmd, "object id", &wanted, &resp.id)
}
