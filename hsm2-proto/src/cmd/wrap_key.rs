//! Put Wrap Key (`0x4c`) and Generate Wrap Key (`0x5b`): the AES-CCM keys that export and
//! import objects (Export Wrapped, Import Wrapped) and wrap data (Wrap Data, Unwrap Data).
//! Only the symmetric algorithms `aes128-ccm-wrap`, `aes192-ccm-wrap`, `aes256-ccm-wrap`.

use super::new_object::check_id;
use super::{Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{Algorithm, Capabilities, CommandCode, Result, SecretBytes};

/// Put Wrap Key request: the object head, delegated capabilities (u64: the most an object
/// exported or imported under this key may have), the key (16, 24 or 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutWrapKey {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
    /// Delegated capabilities.
    pub delegated: Capabilities,
    /// The AES key; whether its length fits the algorithm is the device's to judge.
    pub key: SecretBytes,
}

/// Generate Wrap Key request: the object head and the delegated capabilities; 61 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerateWrapKey {
    /// Id, label, domains, capabilities, algorithm.
    pub object: NewObject,
    /// Delegated capabilities.
    pub delegated: Capabilities,
}

impl Algorithm {
    /// The key length of an AES-CCM wrap key algorithm; `None` for any other.
    pub fn wrap_key_len(self) -> Option<usize> {
        match self {
            Algorithm::Aes128CcmWrap => Some(16),
            Algorithm::Aes192CcmWrap => Some(24),
            Algorithm::Aes256CcmWrap => Some(32),
            _ => None,
        }
    }

    /// The AES-CCM wrap key algorithm for a key of `len` bytes.
    pub fn for_wrap_key_len(len: usize) -> Option<Algorithm> {
        [
            Algorithm::Aes128CcmWrap,
            Algorithm::Aes192CcmWrap,
            Algorithm::Aes256CcmWrap,
        ]
        .into_iter()
        .find(|a| a.wrap_key_len() == Some(len))
    }
}

impl Message for PutWrapKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.u64(self.delegated.0).bytes(self.key.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PutWrapKey {
            object: NewObject::decode(r)?,
            delegated: Capabilities(r.u64()?),
            key: SecretBytes::new(r.rest()),
        })
    }
}

impl Message for GenerateWrapKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.u64(self.delegated.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(GenerateWrapKey {
            object: NewObject::decode(r)?,
            delegated: Capabilities(r.u64()?),
        })
    }
}

impl Command for PutWrapKey {
    const CODE: CommandCode = CommandCode::PutWrapKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}

impl Command for GenerateWrapKey {
    const CODE: CommandCode = CommandCode::GenerateWrapKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}
