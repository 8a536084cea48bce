//! What the object kinds added beside authentication and otp-aead-keys share: storing a
//! new one, finding one a command may use.

use rand::RngCore;
use zeroize::Zeroizing;

use super::{need, Answer, Caller, Device, KeyMaterial, Object};
use crate::cmd::{NewObject, ObjectIdResponse};
use crate::{Capabilities, Capability, ErrorCode, ObjectId, ObjectType, Origin};

impl Device {
    /// Checks `o` against the session and the store, then stores it with `key`; its size
    /// is `size` bytes.
    pub(super) fn put_object(
        &mut self,
        caller: Caller,
        o: &NewObject,
        object_type: ObjectType,
        delegated: Capabilities,
        key: KeyMaterial,
        origin: Origin,
    ) -> Answer<ObjectIdResponse> {
        let id = self.new_object_id(caller, o, object_type, delegated)?;
        let size = key.size();
        let info = self.new_info(
            id,
            object_type,
            o.algorithm,
            size,
            (o.label, o.domains, o.capabilities, delegated),
            origin,
        );
        self.objects
            .insert((id.0, object_type.to_u8()), Object { info, key });
        Ok(ObjectIdResponse { id })
    }

    /// The object `id` of `object_type` for a command needing `cap`: it must be visible,
    /// and both the session and the object must hold `cap` (the object lacking it is
    /// `lacking`: the firmware's code differs by command).
    pub(super) fn usable(
        &self,
        caller: Caller,
        id: ObjectId,
        object_type: ObjectType,
        cap: Capability,
        lacking: ErrorCode,
    ) -> Answer<&Object> {
        need(caller.capabilities, cap)?;
        let obj = self.visible(caller, id, object_type)?;
        if obj.info.capabilities.contains(cap) {
            Ok(obj)
        } else {
            Err(lacking)
        }
    }
}

impl KeyMaterial {
    /// The size Get Object Info reports: the length of what a wrapped export carries
    /// after its header, as the device's 40 for an authentication key (delegated
    /// capabilities, K-ENC, K-MAC); an otp-aead-key's is its AES key's.
    pub(super) fn size(&self) -> u16 {
        let len = match self {
            KeyMaterial::Otp { key, .. } => key.expose().len(),
            other => other.body(Capabilities::NONE).len(),
        };
        u16::try_from(len).unwrap_or(u16::MAX)
    }
}

/// `len` random bytes, wiped when dropped.
pub(super) fn random_key(len: usize) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
