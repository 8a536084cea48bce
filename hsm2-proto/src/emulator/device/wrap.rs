//! Wrap keys (`aes128/192/256-ccm-wrap`): Put and Generate Wrap Key, Export and Import
//! Wrapped, Wrap and Unwrap Data.
//!
//! Everything a wrap key encrypts is `nonce (13) ‖ AES-CCM ciphertext ‖ tag (16)`, no
//! associated data, a fresh random nonce each time (Yubico's `yubihsm-wrap` builds the
//! same). An exported object's plaintext is the 59-byte header `yubihsm-wrap` writes —
//! the wrap key's algorithm (1), the object's capabilities (8), id (2), body length (2),
//! domains (2), type (1), algorithm (1), sequence (1), origin (1), label (40) — then its
//! body ([`KeyMaterial::body`]).

use ccm::aead::{Aead, KeyInit, Payload};
use ccm::consts::{U13, U16};
use ccm::Ccm;
use zeroize::Zeroizing;

use super::objects::random_key;
use super::{answer, need, Answer, Caller, Device, KeyMaterial, Object};
use crate::cmd::{self, ObjectInfo, WRAP_NONCE_LEN, WRAP_TAG_LEN};
use crate::codec::{Frame, Reader, Writer};
use crate::{
    Algorithm, AuthKey, Capabilities, Capability, CommandCode, ErrorCode, Label, NonceId, ObjectId,
    ObjectType, Origin, SecretBytes,
};

/// The header before an exported object's body.
const HEADER_LEN: usize = 59;

impl Device {
    /// Answers the wrap key commands; `None` for any other code.
    pub(super) fn wrap_command(&mut self, caller: Caller, inner: &Frame) -> Option<Frame> {
        use CommandCode as C;
        Some(match CommandCode::from_u8(inner.cmd()) {
            C::PutWrapKey => answer::<cmd::PutWrapKey>(inner, |req| {
                need(caller.capabilities, Capability::PutWrapKey)?;
                if req.object.algorithm.wrap_key_len() != Some(req.key.len()) {
                    return Err(ErrorCode::InvalidData);
                }
                let key = KeyMaterial::Wrap(req.key.clone());
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::WrapKey,
                    req.delegated,
                    key,
                    Origin::IMPORTED,
                )
            }),
            C::GenerateWrapKey => answer::<cmd::GenerateWrapKey>(inner, |req| {
                need(caller.capabilities, Capability::GenerateWrapKey)?;
                let len = req
                    .object
                    .algorithm
                    .wrap_key_len()
                    .ok_or(ErrorCode::InvalidData)?;
                let key = KeyMaterial::Wrap(SecretBytes::new(random_key(len).as_slice()));
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::WrapKey,
                    req.delegated,
                    key,
                    Origin::GENERATED,
                )
            }),
            C::ExportWrapped => answer::<cmd::ExportWrapped>(inner, |req| {
                Ok(cmd::WrappedResponse {
                    wrapped: self.export(caller, &req)?,
                })
            }),
            C::ImportWrapped => {
                answer::<cmd::ImportWrapped>(inner, |req| self.import(caller, &req))
            }
            C::WrapData => answer::<cmd::WrapData>(inner, |req| {
                // Firmware before 2.5 answers `invalid-data` for a key lacking the
                // capability (python-yubihsm's test_wrap_data_many).
                let w = self.usable(
                    caller,
                    req.wrap_key_id,
                    ObjectType::WrapKey,
                    Capability::WrapData,
                    ErrorCode::InvalidData,
                )?;
                if req.data.is_empty() {
                    return Err(ErrorCode::InvalidData);
                }
                Ok(cmd::WrappedResponse {
                    wrapped: seal(wrap_key(w)?, req.data.expose())?,
                })
            }),
            C::UnwrapData => answer::<cmd::UnwrapData>(inner, |req| {
                let w = self.usable(
                    caller,
                    req.wrap_key_id,
                    ObjectType::WrapKey,
                    Capability::UnwrapData,
                    ErrorCode::InvalidData,
                )?;
                let data = open(wrap_key(w)?, &req.wrapped)?;
                Ok(cmd::UnwrappedResponse {
                    data: SecretBytes::new(data.as_slice()),
                })
            }),
            _ => return None,
        })
    }

    fn export(&self, caller: Caller, req: &cmd::ExportWrapped) -> Answer<Vec<u8>> {
        let w = self.usable(
            caller,
            req.wrap_key_id,
            ObjectType::WrapKey,
            Capability::ExportWrapped,
            ErrorCode::InsufficientPermissions,
        )?;
        let obj = self.visible(caller, req.id, req.object_type)?;
        // The object must allow it, and the wrap key's delegated capabilities bound what
        // it may carry out: all of the object's capabilities.
        if !obj
            .info
            .capabilities
            .contains(Capability::ExportableUnderWrap)
            || !w.info.delegated.contains_all(obj.info.capabilities)
        {
            return Err(ErrorCode::InsufficientPermissions);
        }
        let body = obj.key.body(obj.info.delegated);
        let mut plain = Writer::new();
        plain
            .u8(w.info.algorithm.to_u8())
            .u64(obj.info.capabilities.0)
            .u16(obj.info.id.0)
            .u16(u16::try_from(body.len()).map_err(|_| ErrorCode::InvalidData)?)
            .u16(obj.info.domains.0)
            .u8(obj.info.object_type.to_u8())
            .u8(obj.info.algorithm.to_u8())
            .u8(obj.info.sequence)
            .u8(obj.info.origin.0)
            .bytes(&obj.info.label.0)
            .bytes(&body);
        seal(wrap_key(w)?, &plain.into_inner())
    }

    fn import(&mut self, caller: Caller, req: &cmd::ImportWrapped) -> Answer<cmd::ImportedObject> {
        let w = self.usable(
            caller,
            req.wrap_key_id,
            ObjectType::WrapKey,
            Capability::ImportWrapped,
            ErrorCode::InsufficientPermissions,
        )?;
        let wrap_algorithm = w.info.algorithm;
        let bound = w.info.delegated;
        let plain = open(wrap_key(w)?, &req.wrapped)?;
        let (head, key) = parse(&plain).ok_or(ErrorCode::InvalidData)?;
        if head.algorithm_of_wrap_key != wrap_algorithm {
            return Err(ErrorCode::InvalidData);
        }
        let info = head.info;
        // The wrap key's delegated capabilities bound what an imported object may have;
        // its domains must be the session's, as for any new object.
        if !bound.contains_all(info.capabilities)
            || info.domains.0 & caller.domains.0 != info.domains.0
        {
            return Err(ErrorCode::InsufficientPermissions);
        }
        if info.domains.0 == 0 || info.id.0 == 0 || info.id.0 == 0xffff {
            return Err(ErrorCode::InvalidData);
        }
        if self
            .objects
            .contains_key(&(info.id.0, info.object_type.to_u8()))
        {
            return Err(ErrorCode::ObjectExists);
        }
        if self.objects.len() >= super::MAX_OBJECTS {
            return Err(ErrorCode::StorageFailed);
        }
        let origin = Origin(info.origin.0 | Origin::WRAPPED_FLAG);
        let new = self.new_info(
            info.id,
            info.object_type,
            info.algorithm,
            key.size(),
            (info.label, info.domains, info.capabilities, info.delegated),
            origin,
        );
        self.objects.insert(
            (info.id.0, info.object_type.to_u8()),
            Object { info: new, key },
        );
        Ok(cmd::ImportedObject {
            object_type: info.object_type,
            id: info.id,
        })
    }
}

/// An exported object's header, read back.
struct Header {
    /// The algorithm of the wrap key that exported it.
    algorithm_of_wrap_key: Algorithm,
    /// The object as it was, delegated capabilities included.
    info: ObjectInfo,
}

impl KeyMaterial {
    /// What an exported object carries after its header. Authentication and wrap keys
    /// start with their delegated capabilities (u64), as `yubihsm-wrap` writes them, then
    /// the key (K-ENC and K-MAC for an authentication key); opaque objects, HMAC and
    /// symmetric keys are their bytes. Yubico documents no body for otp-aead-keys: this
    /// emulator writes the nonce id (4 bytes, as received) then the key.
    pub(super) fn body(&self, delegated: Capabilities) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        match self {
            KeyMaterial::Auth(k) => {
                w.u64(delegated.0).bytes(k.enc()).bytes(k.mac());
            }
            KeyMaterial::Wrap(k) => {
                w.u64(delegated.0).bytes(k.expose());
            }
            KeyMaterial::Otp { nonce_id, key } => {
                w.bytes(&nonce_id.0).bytes(key.expose());
            }
            KeyMaterial::Opaque(data) => {
                w.bytes(data);
            }
            KeyMaterial::Hmac(k) | KeyMaterial::Symmetric(k) => {
                w.bytes(k.expose());
            }
        }
        w.into_inner()
    }

    /// The key an exported body of `object_type` and `algorithm` holds, and its delegated
    /// capabilities; `None` if the body does not fit them (or the type is not modelled).
    fn from_body(
        object_type: ObjectType,
        algorithm: Algorithm,
        body: &[u8],
    ) -> Option<(KeyMaterial, Capabilities)> {
        let mut r = Reader::new(CommandCode::ImportWrapped, body);
        let delegated = match object_type {
            ObjectType::AuthenticationKey | ObjectType::WrapKey => Capabilities(r.u64().ok()?),
            _ => Capabilities::NONE,
        };
        let rest = r.rest();
        let key = match object_type {
            ObjectType::AuthenticationKey => (algorithm == Algorithm::Aes128YubicoAuthentication
                && rest.len() == 32)
                .then(|| {
                    let mut enc = [0u8; 16];
                    let mut mac = [0u8; 16];
                    enc.copy_from_slice(&rest[..16]);
                    mac.copy_from_slice(&rest[16..]);
                    KeyMaterial::Auth(AuthKey::new(enc, mac))
                })?,
            ObjectType::WrapKey => (algorithm.wrap_key_len() == Some(rest.len()))
                .then(|| KeyMaterial::Wrap(SecretBytes::new(rest)))?,
            ObjectType::OtpAeadKey => {
                let (nonce_id, key) = rest.split_first_chunk::<4>()?;
                if algorithm.otp_key_len() != Some(key.len()) {
                    return None;
                }
                KeyMaterial::Otp {
                    nonce_id: NonceId(*nonce_id),
                    key: otp_core::AesKey::new(key).ok()?,
                }
            }
            ObjectType::Opaque => super::opaque::material(algorithm, rest).ok()?,
            ObjectType::HmacKey => super::hmac::material(algorithm, rest).ok()?,
            ObjectType::SymmetricKey => super::symmetric::material(algorithm, rest).ok()?,
            _ => return None,
        };
        Some((key, delegated))
    }
}

/// The header and key of an exported object's plaintext; `None` if it is malformed.
fn parse(plain: &[u8]) -> Option<(Header, KeyMaterial)> {
    if plain.len() < HEADER_LEN {
        return None;
    }
    let mut r = Reader::new(CommandCode::ImportWrapped, plain);
    let algorithm_of_wrap_key = Algorithm::from_u8(r.u8().ok()?);
    let capabilities = Capabilities(r.u64().ok()?);
    let id = ObjectId(r.u16().ok()?);
    let len = usize::from(r.u16().ok()?);
    let domains = crate::Domains(r.u16().ok()?);
    let object_type = ObjectType::from_u8(r.u8().ok()?);
    let algorithm = Algorithm::from_u8(r.u8().ok()?);
    let sequence = r.u8().ok()?;
    let origin = Origin(r.u8().ok()?);
    let label = Label(r.array().ok()?);
    let body = r.rest();
    if body.len() != len {
        return None;
    }
    let (key, delegated) = KeyMaterial::from_body(object_type, algorithm, body)?;
    let info = ObjectInfo {
        capabilities,
        id,
        size: key.size(),
        domains,
        object_type,
        algorithm,
        sequence,
        origin,
        label,
        delegated,
    };
    Some((
        Header {
            algorithm_of_wrap_key,
            info,
        },
        key,
    ))
}

/// A wrap key's AES key.
fn wrap_key(w: &Object) -> Answer<&[u8]> {
    match &w.key {
        KeyMaterial::Wrap(k) => Ok(k.expose()),
        _ => Err(ErrorCode::ObjectNotFound),
    }
}

/// `nonce ‖ ciphertext ‖ tag` of `plain` under `key`, with a fresh nonce.
fn seal(key: &[u8], plain: &[u8]) -> Answer<Vec<u8>> {
    let nonce = random_key(WRAP_NONCE_LEN);
    let ct = match key.len() {
        16 => ccm_seal::<aes::Aes128>(key, &nonce, plain),
        24 => ccm_seal::<aes::Aes192>(key, &nonce, plain),
        32 => ccm_seal::<aes::Aes256>(key, &nonce, plain),
        _ => None,
    }
    .ok_or(ErrorCode::InvalidData)?;
    let mut out = nonce.to_vec();
    out.extend(ct);
    Ok(out)
}

/// The plaintext of `nonce ‖ ciphertext ‖ tag` under `key`; `invalid-data` if it is too
/// short or does not authenticate.
fn open(key: &[u8], wrapped: &[u8]) -> Answer<Zeroizing<Vec<u8>>> {
    if wrapped.len() < WRAP_NONCE_LEN + WRAP_TAG_LEN {
        return Err(ErrorCode::InvalidData);
    }
    let (nonce, ct) = wrapped.split_at(WRAP_NONCE_LEN);
    match key.len() {
        16 => ccm_open::<aes::Aes128>(key, nonce, ct),
        24 => ccm_open::<aes::Aes192>(key, nonce, ct),
        32 => ccm_open::<aes::Aes256>(key, nonce, ct),
        _ => None,
    }
    .map(Zeroizing::new)
    .ok_or(ErrorCode::InvalidData)
}

type WrapCcm<C> = Ccm<C, U16, U13>;

fn ccm_seal<C>(key: &[u8], nonce: &[u8], plain: &[u8]) -> Option<Vec<u8>>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
{
    let cipher = WrapCcm::<C>::new_from_slice(key).ok()?;
    cipher
        .encrypt(
            ccm::aead::generic_array::GenericArray::from_slice(nonce),
            Payload {
                msg: plain,
                aad: &[],
            },
        )
        .ok()
}

fn ccm_open<C>(key: &[u8], nonce: &[u8], ct: &[u8]) -> Option<Vec<u8>>
where
    C: aes::cipher::BlockCipher
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + aes::cipher::BlockEncrypt
        + KeyInit,
{
    let cipher = WrapCcm::<C>::new_from_slice(key).ok()?;
    cipher
        .decrypt(
            ccm::aead::generic_array::GenericArray::from_slice(nonce),
            Payload { msg: ct, aad: &[] },
        )
        .ok()
}
