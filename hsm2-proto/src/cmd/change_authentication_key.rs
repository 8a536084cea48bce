//! Change Authentication Key (`0x6c`): a session replaces its own authentication key's
//! K-ENC and K-MAC; answers the key's id. 35 bytes: id (u16), algorithm
//! (`aes128-yubico-authentication`), K-ENC (16), K-MAC (16).

use super::{echo_eq, Command, Message, ObjectIdResponse};
use crate::codec::{Reader, Writer};
use crate::{Algorithm, AuthKey, CommandCode, ObjectId, Result};

/// Change Authentication Key request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeAuthenticationKey {
    /// The key to change: the session's own.
    pub id: ObjectId,
    /// Its algorithm (`aes128-yubico-authentication`; the asymmetric kind is not modelled).
    pub algorithm: Algorithm,
    /// The new K-ENC and K-MAC.
    pub key: AuthKey,
}

impl Message for ChangeAuthenticationKey {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.id.0)
            .u8(self.algorithm.to_u8())
            .bytes(self.key.enc())
            .bytes(self.key.mac());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let id = ObjectId(r.u16()?);
        let algorithm = Algorithm::from_u8(r.u8()?);
        let enc = r.array()?;
        let mac = r.array()?;
        Ok(ChangeAuthenticationKey {
            id,
            algorithm,
            key: AuthKey::new(enc, mac),
        })
    }
}

impl Command for ChangeAuthenticationKey {
    const CODE: CommandCode = CommandCode::ChangeAuthenticationKey;
    type Response = ObjectIdResponse;
    fn check_response(&self, resp: &ObjectIdResponse) -> Result<()> {
        echo_eq(Self::CODE, "object id", &self.id, &resp.id)
    }
}
