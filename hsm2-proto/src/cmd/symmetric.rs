//! Put Symmetric Key (`0x6d`), Generate Symmetric Key (`0x6e`), and AES-ECB and AES-CBC
//! encryption and decryption (`0x6f` to `0x72`) under an `aes128/192/256` key, as firmware
//! 2.3 has them: whole blocks only, no padding.

use super::new_object::check_id;
use super::{echo_eq, Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, Result, SecretBytes};

/// Put Symmetric Key request: the object head, then the AES key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutSymmetricKey {
    /// Id, label, domains, capabilities, algorithm (`aes128`, `aes192`, `aes256`).
    pub object: NewObject,
    /// The key.
    pub key: SecretBytes,
}

/// Generate Symmetric Key request: the object head; 53 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateSymmetricKey {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
}

/// An AES-ECB request (Encrypt ECB, Decrypt ECB): key id (u16), the blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesEcb<const ENCRYPT: bool> {
    /// The symmetric key.
    pub key_id: ObjectId,
    /// Whole 16-byte blocks.
    pub data: SecretBytes,
}

/// An AES-CBC request (Encrypt CBC, Decrypt CBC): key id (u16), IV (16), the blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesCbc<const ENCRYPT: bool> {
    /// The symmetric key.
    pub key_id: ObjectId,
    /// The initial vector.
    pub iv: [u8; 16],
    /// Whole 16-byte blocks.
    pub data: SecretBytes,
}

/// Encrypt ECB (`0x70`).
pub type EncryptEcb = AesEcb<true>;
/// Decrypt ECB (`0x6f`).
pub type DecryptEcb = AesEcb<false>;
/// Encrypt CBC (`0x72`).
pub type EncryptCbc = AesCbc<true>;
/// Decrypt CBC (`0x71`).
pub type DecryptCbc = AesCbc<false>;

/// The answer of the four: as many bytes as were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AesResponse {
    /// Ciphertext or plaintext.
    pub data: SecretBytes,
}

impl Message for PutSymmetricKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.bytes(self.key.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PutSymmetricKey {
            object: NewObject::decode(r)?,
            key: SecretBytes::new(r.rest()),
        })
    }
}

impl Message for GenerateSymmetricKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GenerateSymmetricKey {
            object: NewObject::decode(r)?,
        })
    }
}

impl<const E: bool> Message for AesEcb<E> {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0).bytes(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesEcb {
            key_id: ObjectId(r.u16()?),
            data: SecretBytes::new(r.rest()),
        })
    }
}

impl<const E: bool> Message for AesCbc<E> {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0)
            .bytes(&self.iv)
            .bytes(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesCbc {
            key_id: ObjectId(r.u16()?),
            iv: r.array()?,
            data: SecretBytes::new(r.rest()),
        })
    }
}

impl Message for AesResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AesResponse {
            data: SecretBytes::new(r.rest()),
        })
    }
}

impl Command for PutSymmetricKey {
    const CODE: CommandCode = CommandCode::PutSymmetricKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for GenerateSymmetricKey {
    const CODE: CommandCode = CommandCode::GenerateSymmetricKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl<const E: bool> Command for AesEcb<E> {
    const CODE: CommandCode = if E {
        CommandCode::EncryptEcb
    } else {
        CommandCode::DecryptEcb
    };
    type Response = AesResponse;
    fn check_response(&self, resp: &AesResponse) -> Result<()> {
        echo_eq(Self::CODE, "length", &self.data.len(), &resp.data.len())
    }
}

impl<const E: bool> Command for AesCbc<E> {
    const CODE: CommandCode = if E {
        CommandCode::EncryptCbc
    } else {
        CommandCode::DecryptCbc
    };
    type Response = AesResponse;
    fn check_response(&self, resp: &AesResponse) -> Result<()> {
        echo_eq(Self::CODE, "length", &self.data.len(), &resp.data.len())
    }
}
