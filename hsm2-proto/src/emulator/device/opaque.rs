//! Opaque objects (`opaque-data`, `opaque-x509-certificate`): Put and Get Opaque. The
//! device keeps the bytes as given; reading them needs `get-opaque` on the session only
//! (python-yubihsm's test_opaque reads objects that have no capability at all).

use super::{answer, need, Answer, Caller, Device, KeyMaterial};
use crate::cmd;
use crate::codec::Frame;
use crate::{Algorithm, Capabilities, Capability, CommandCode, ErrorCode, ObjectType, Origin};

impl Device {
    /// Answers Put and Get Opaque; `None` for any other code.
    pub(super) fn opaque_command(&mut self, caller: Caller, inner: &Frame) -> Option<Frame> {
        Some(match CommandCode::from_u8(inner.cmd()) {
            CommandCode::PutOpaque => answer::<cmd::PutOpaque>(inner, |req| {
                need(caller.capabilities, Capability::PutOpaque)?;
                let data = material(req.object.algorithm, &req.data)?;
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::Opaque,
                    Capabilities::NONE,
                    data,
                    Origin::IMPORTED,
                )
            }),
            CommandCode::GetOpaque => answer::<cmd::GetOpaque>(inner, |req| {
                need(caller.capabilities, Capability::GetOpaque)?;
                match &self.visible(caller, req.id, ObjectType::Opaque)?.key {
                    KeyMaterial::Opaque(data) => Ok(cmd::OpaqueResponse { data: data.clone() }),
                    _ => Err(ErrorCode::ObjectNotFound),
                }
            }),
            _ => return None,
        })
    }
}

/// An opaque object's contents: some bytes, under an opaque algorithm.
pub(super) fn material(algorithm: Algorithm, data: &[u8]) -> Answer<KeyMaterial> {
    let opaque = matches!(
        algorithm,
        Algorithm::OpaqueData | Algorithm::OpaqueX509Certificate
    );
    if !opaque || data.is_empty() {
        return Err(ErrorCode::InvalidData);
    }
    Ok(KeyMaterial::Opaque(data.to_vec()))
}
