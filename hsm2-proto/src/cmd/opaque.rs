//! Put Opaque (`0x42`) and Get Opaque (`0x43`): data the device stores and hands back
//! unchanged (`opaque-data`, `opaque-x509-certificate`).

use super::new_object::check_id;
use super::{Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, Result};

/// Put Opaque request: the object head, then the data (the rest of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOpaque {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
    /// The data; the device refuses none (python-yubihsm refuses it before sending).
    pub data: Vec<u8>,
}

/// Get Opaque request: the object id (u16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetOpaque {
    /// The opaque object.
    pub id: ObjectId,
}

/// Get Opaque response: the data as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueResponse {
    /// The data.
    pub data: Vec<u8>,
}

impl Message for PutOpaque {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.bytes(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PutOpaque {
            object: NewObject::decode(r)?,
            data: r.rest().to_vec(),
        })
    }
}

impl Message for GetOpaque {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GetOpaque {
            id: ObjectId(r.u16()?),
        })
    }
}

impl Message for OpaqueResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(OpaqueResponse {
            data: r.rest().to_vec(),
        })
    }
}

impl Command for PutOpaque {
    const CODE: CommandCode = CommandCode::PutOpaque;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for GetOpaque {
    const CODE: CommandCode = CommandCode::GetOpaque;
    type Response = OpaqueResponse;
}
