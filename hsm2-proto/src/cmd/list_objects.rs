//! List Objects (`0x48`): the objects a session may see, optionally filtered (§4.3).

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{Algorithm, Capabilities, CommandCode, Domains, Label, ObjectId, ObjectType, Result};

/// One filter: a tag byte, then a value of the tag's fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFilter {
    /// Tag `01`: object id (u16).
    Id(ObjectId),
    /// Tag `02`: object type (u8).
    Type(ObjectType),
    /// Tag `03`: domains (u16).
    Domains(Domains),
    /// Tag `04`: capabilities (u64).
    Capabilities(Capabilities),
    /// Tag `05`: algorithm (u8).
    Algorithm(Algorithm),
    /// Tag `06`: label (40).
    Label(Label),
}

/// List Objects request: zero or more filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListObjects {
    /// The filters, in the order sent.
    pub filters: Vec<ObjectFilter>,
}

/// One listed object: id (u16), type (u8), sequence (u8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedObject {
    /// The id.
    pub id: ObjectId,
    /// The type.
    pub object_type: ObjectType,
    /// How many times an object of this id and type has been (re)created.
    pub sequence: u8,
}

/// List Objects response: 4 bytes per object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListObjectsResponse {
    /// The objects, in the device's order.
    pub objects: Vec<ListedObject>,
}

impl Message for ListObjects {
    fn encode(&self, w: &mut Writer) {
        for f in &self.filters {
            match f {
                ObjectFilter::Id(id) => w.u8(0x01).u16(id.0),
                ObjectFilter::Type(t) => w.u8(0x02).u8(t.to_u8()),
                ObjectFilter::Domains(d) => w.u8(0x03).u16(d.0),
                ObjectFilter::Capabilities(c) => w.u8(0x04).u64(c.0),
                ObjectFilter::Algorithm(a) => w.u8(0x05).u8(a.to_u8()),
                ObjectFilter::Label(l) => w.u8(0x06).bytes(&l.0),
            };
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            filters.push(match r.u8()? {
                0x01 => ObjectFilter::Id(ObjectId(r.u16()?)),
                0x02 => ObjectFilter::Type(ObjectType::from_u8(r.u8()?)),
                0x03 => ObjectFilter::Domains(Domains(r.u16()?)),
                0x04 => ObjectFilter::Capabilities(Capabilities(r.u64()?)),
                0x05 => ObjectFilter::Algorithm(Algorithm::from_u8(r.u8()?)),
                0x06 => ObjectFilter::Label(Label(r.array()?)),
                _ => return Err(r.invalid("filter tag")),
            });
        }
        Ok(ListObjects { filters })
    }
}

impl Message for ListObjectsResponse {
    fn encode(&self, w: &mut Writer) {
        for o in &self.objects {
            w.u16(o.id.0).u8(o.object_type.to_u8()).u8(o.sequence);
        }
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        if r.remaining() % 4 != 0 {
            return Err(r.invalid("object list length (not a multiple of 4)"));
        }
        let mut objects = Vec::with_capacity(r.remaining() / 4);
        while r.remaining() > 0 {
            objects.push(ListedObject {
                id: ObjectId(r.u16()?),
                object_type: ObjectType::from_u8(r.u8()?),
                sequence: r.u8()?,
            });
        }
        Ok(ListObjectsResponse { objects })
    }
}

impl Command for ListObjects {
    const CODE: CommandCode = CommandCode::ListObjects;
    type Response = ListObjectsResponse;
}
