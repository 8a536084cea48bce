//! Put OTP AEAD Key (`0x65`) and Generate OTP AEAD Key (`0x66`): the key that seals and
//! opens a KSM's OTP AEADs, with the 4-byte nonce id it puts in every CCM nonce (§4.3,
//! §4.4).

use super::new_object::check_id;
use super::{Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, NonceId, OtpAeadKeyBytes, Result};

/// Put OTP AEAD Key request: the object head (algorithm `aes128/192/256-yubico-otp`),
/// nonce id (4 bytes, sent as given), key (16, 24 or 32 bytes).
///
/// Whether the key's length fits the algorithm is the device's to judge (an emulator
/// answers `invalid-data`); the codec only takes the lengths a key can have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOtpAeadKey {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
    /// The nonce id.
    pub nonce_id: NonceId,
    /// The AES key.
    pub key: OtpAeadKeyBytes,
}

/// Generate OTP AEAD Key request: the object head and the nonce id; 57 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateOtpAeadKey {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
    /// The nonce id.
    pub nonce_id: NonceId,
}

impl Message for PutOtpAeadKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.bytes(&self.nonce_id.0).bytes(self.key.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let object = NewObject::decode(r)?;
        let nonce_id = NonceId(r.array()?);
        let key = OtpAeadKeyBytes::new(r.rest()).map_err(|_| r.invalid("key length"))?;
        Ok(PutOtpAeadKey {
            object,
            nonce_id,
            key,
        })
    }
}

impl Message for GenerateOtpAeadKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.bytes(&self.nonce_id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GenerateOtpAeadKey {
            object: NewObject::decode(r)?,
            nonce_id: NonceId(r.array()?),
        })
    }
}

impl Command for PutOtpAeadKey {
    const CODE: CommandCode = CommandCode::PutOtpAeadKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for GenerateOtpAeadKey {
    const CODE: CommandCode = CommandCode::GenerateOtpAeadKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}
