//! Put Authentication Key (`0x44`): imports an `aes128-yubico-authentication` key, its
//! K-ENC and K-MAC, for opening sessions (§4.3); 93 bytes.

use super::new_object::check_id;
use super::{Command, Message, NewObject, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{AuthKey, Capabilities, CommandCode, Result};

/// Put Authentication Key request: the object head, delegated capabilities (u64: what
/// objects this key's sessions create may be given), K-ENC (16), K-MAC (16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutAuthenticationKey {
    /// Id, label, domains, capabilities, algorithm (`aes128-yubico-authentication`).
    pub object: NewObject,
    /// Delegated capabilities.
    pub delegated: Capabilities,
    /// The key.
    pub key: AuthKey,
}

impl Message for PutAuthenticationKey {
    fn encode(&self, w: &mut Writer) {
        self.object.encode(w);
        w.u64(self.delegated.0)
            .bytes(self.key.enc())
            .bytes(self.key.mac());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let object = NewObject::decode(r)?;
        let delegated = Capabilities(r.u64()?);
        let enc = r.array()?;
        let mac = r.array()?;
        Ok(PutAuthenticationKey {
            object,
            delegated,
            key: AuthKey::new(enc, mac),
        })
    }
}

impl Command for PutAuthenticationKey {
    const CODE: CommandCode = CommandCode::PutAuthenticationKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        check_id(Self::CODE, self.object.id, resp)
    }
}
