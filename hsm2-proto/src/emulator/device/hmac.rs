//! HMAC keys (`hmac-sha1`, `-sha256`, `-sha384`, `-sha512`): Put and Generate HMAC Key,
//! Sign and Verify HMAC. A key is at most its hash's block size (python-yubihsm hashes a
//! longer one before sending it); a generated key is one block of random bytes.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};

use super::objects::random_key;
use super::{answer, need, Answer, Caller, Device, KeyMaterial, Object};
use crate::cmd;
use crate::codec::Frame;
use crate::{
    Algorithm, Capabilities, Capability, CommandCode, ErrorCode, ObjectType, Origin, SecretBytes,
};

impl Device {
    /// Answers the HMAC commands; `None` for any other code.
    pub(super) fn hmac_command(&mut self, caller: Caller, inner: &Frame) -> Option<Frame> {
        use CommandCode as C;
        Some(match CommandCode::from_u8(inner.cmd()) {
            C::PutHmacKey => answer::<cmd::PutHmacKey>(inner, |req| {
                need(caller.capabilities, Capability::PutHmacKey)?;
                let key = material(req.object.algorithm, req.key.expose())?;
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::HmacKey,
                    Capabilities::NONE,
                    key,
                    Origin::IMPORTED,
                )
            }),
            C::GenerateHmacKey => answer::<cmd::GenerateHmacKey>(inner, |req| {
                need(caller.capabilities, Capability::GenerateHmacKey)?;
                let (block, _) = sizes(req.object.algorithm).ok_or(ErrorCode::InvalidData)?;
                let key = KeyMaterial::Hmac(SecretBytes::new(random_key(block).as_slice()));
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::HmacKey,
                    Capabilities::NONE,
                    key,
                    Origin::GENERATED,
                )
            }),
            C::SignHmac => answer::<cmd::SignHmac>(inner, |req| {
                let k = self.hmac_key(caller, req.key_id, Capability::SignHmac)?;
                if req.data.is_empty() {
                    return Err(ErrorCode::InvalidData);
                }
                Ok(cmd::HmacResponse {
                    mac: mac(k, &req.data)?,
                })
            }),
            C::VerifyHmac => answer::<cmd::VerifyHmac>(inner, |req| {
                let k = self.hmac_key(caller, req.key_id, Capability::VerifyHmac)?;
                let (_, out) = sizes(k.info.algorithm).ok_or(ErrorCode::InvalidData)?;
                if req.mac_and_data.len() <= out {
                    return Err(ErrorCode::InvalidData);
                }
                let (given, data) = req.mac_and_data.split_at(out);
                let right = mac(k, data)?;
                Ok(cmd::VerifyResponse {
                    valid: subtle::ConstantTimeEq::ct_eq(given, right.as_slice()).into(),
                })
            }),
            _ => return None,
        })
    }

    fn hmac_key(&self, caller: Caller, id: crate::ObjectId, cap: Capability) -> Answer<&Object> {
        self.usable(
            caller,
            id,
            ObjectType::HmacKey,
            cap,
            ErrorCode::InsufficientPermissions,
        )
    }
}

/// Block size and output length of an HMAC algorithm.
fn sizes(a: Algorithm) -> Option<(usize, usize)> {
    match a {
        Algorithm::HmacSha1 => Some((64, 20)),
        Algorithm::HmacSha256 => Some((64, 32)),
        Algorithm::HmacSha384 => Some((128, 48)),
        Algorithm::HmacSha512 => Some((128, 64)),
        _ => None,
    }
}

/// An HMAC key of `algorithm`: 1 byte up to the hash's block size.
pub(super) fn material(algorithm: Algorithm, key: &[u8]) -> Answer<KeyMaterial> {
    let (block, _) = sizes(algorithm).ok_or(ErrorCode::InvalidData)?;
    if key.is_empty() || key.len() > block {
        return Err(ErrorCode::InvalidData);
    }
    Ok(KeyMaterial::Hmac(SecretBytes::new(key)))
}

fn mac(k: &Object, data: &[u8]) -> Answer<Vec<u8>> {
    let KeyMaterial::Hmac(key) = &k.key else {
        return Err(ErrorCode::ObjectNotFound);
    };
    let key = key.expose();
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Answer<Vec<u8>> {
        let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .map_err(|_| ErrorCode::InvalidData)?;
        m.update(data);
        Ok(m.finalize().into_bytes().to_vec())
    }
    match k.info.algorithm {
        Algorithm::HmacSha1 => run::<Hmac<Sha1>>(key, data),
        Algorithm::HmacSha256 => run::<Hmac<Sha256>>(key, data),
        Algorithm::HmacSha384 => run::<Hmac<Sha384>>(key, data),
        Algorithm::HmacSha512 => run::<Hmac<Sha512>>(key, data),
        _ => Err(ErrorCode::InvalidData),
    }
}
