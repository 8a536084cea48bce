//! Put HMAC Key (`0x52`), Generate HMAC Key (`0x5a`), Sign HMAC (`0x53`) and Verify HMAC
//! (`0x5c`): HMAC-SHA-1, -256, -384 and -512 under a key the device holds.

use super::new_object::check_id;
use super::{Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, Result, SecretBytes};

/// Put HMAC Key request: the object head, then the key (at most the hash's block size;
/// python-yubihsm hashes a longer one first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutHmacKey {
    /// Id, label, domains, capabilities, algorithm (`hmac-sha*`).
    pub object: NewObject,
    /// The key.
    pub key: SecretBytes,
}

/// Generate HMAC Key request: the object head; 53 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateHmacKey {
    /// Id, label, domains, capabilities, algorithm (`hmac-sha*`).
    pub object: NewObject,
}

/// Sign HMAC request: key id (u16), the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignHmac {
    /// The HMAC key.
    pub key_id: ObjectId,
    /// The data.
    pub data: Vec<u8>,
}

/// Sign HMAC response: the MAC (as long as the hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HmacResponse {
    /// The MAC.
    pub mac: Vec<u8>,
}

/// Verify HMAC request: key id (u16), then the MAC and the data with no length between
/// them: the device splits them by the key's hash length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyHmac {
    /// The HMAC key.
    pub key_id: ObjectId,
    /// The MAC followed by the data.
    pub mac_and_data: Vec<u8>,
}

/// Verify HMAC response: one byte, 1 if the MAC is right, 0 if not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyResponse {
    /// True for a right MAC.
    pub valid: bool,
}

impl Message for PutHmacKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.bytes(self.key.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PutHmacKey {
            object: NewObject::decode(r)?,
            key: SecretBytes::new(r.rest()),
        })
    }
}

impl Message for GenerateHmacKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GenerateHmacKey {
            object: NewObject::decode(r)?,
        })
    }
}

impl Message for SignHmac {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0).bytes(&self.data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(SignHmac {
            key_id: ObjectId(r.u16()?),
            data: r.rest().to_vec(),
        })
    }
}

impl Message for HmacResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.mac);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(HmacResponse {
            mac: r.rest().to_vec(),
        })
    }
}

impl Message for VerifyHmac {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0).bytes(&self.mac_and_data);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(VerifyHmac {
            key_id: ObjectId(r.u16()?),
            mac_and_data: r.rest().to_vec(),
        })
    }
}

impl Message for VerifyResponse {
    fn encode(&self, w: &mut Writer) {
        w.u8(u8::from(self.valid));
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        match r.u8()? {
            0 => Ok(VerifyResponse { valid: false }),
            1 => Ok(VerifyResponse { valid: true }),
            _ => Err(r.invalid("verify result")),
        }
    }
}

impl Command for PutHmacKey {
    const CODE: CommandCode = CommandCode::PutHmacKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for GenerateHmacKey {
    const CODE: CommandCode = CommandCode::GenerateHmacKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for SignHmac {
    const CODE: CommandCode = CommandCode::SignHmac;
    type Response = HmacResponse;
}

impl Command for VerifyHmac {
    const CODE: CommandCode = CommandCode::VerifyHmac;
    type Response = VerifyResponse;
}
