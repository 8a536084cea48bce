//! Delete Object (`0x58`): removes one object, named by id and type; empty response.

use super::{Command, EmptyResponse, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, ObjectType, Result};

/// Delete Object request: object id (u16), type (u8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteObject {
    /// The object.
    pub id: ObjectId,
    /// Its type.
    pub object_type: ObjectType,
}

impl Message for DeleteObject {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0).u8(self.object_type.to_u8());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DeleteObject {
            id: ObjectId(r.u16()?),
            object_type: ObjectType::from_u8(r.u8()?),
        })
    }
}

impl Command for DeleteObject {
    const CODE: CommandCode = CommandCode::DeleteObject;
    type Response = EmptyResponse;
}
