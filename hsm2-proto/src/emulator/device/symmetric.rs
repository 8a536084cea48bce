//! Symmetric keys (`aes128`, `aes192`, `aes256`) as firmware 2.3 has them: Put and
//! Generate Symmetric Key, and AES-ECB and AES-CBC encryption and decryption of whole
//! blocks (no padding; data that is not a non-empty multiple of 16 bytes is
//! `invalid-data`).

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{
    BlockCipher, BlockDecrypt, BlockDecryptMut, BlockEncrypt, BlockEncryptMut, BlockSizeUser,
    KeyInit, KeyIvInit,
};
use aes::{Aes128, Aes192, Aes256};
use zeroize::Zeroizing;

use super::objects::random_key;
use super::{answer, need, Answer, Caller, Device, KeyMaterial, Object};
use crate::cmd;
use crate::codec::Frame;
use crate::{
    Algorithm, Capabilities, Capability, CommandCode, ErrorCode, ObjectId, ObjectType, Origin,
    SecretBytes,
};

/// ECB or CBC, and which way.
#[derive(Clone, Copy)]
enum Mode {
    Ecb,
    Cbc([u8; 16]),
}

impl Device {
    /// Answers the symmetric key commands; `None` for any other code.
    pub(super) fn symmetric_command(&mut self, caller: Caller, inner: &Frame) -> Option<Frame> {
        use CommandCode as C;
        Some(match CommandCode::from_u8(inner.cmd()) {
            C::PutSymmetricKey => answer::<cmd::PutSymmetricKey>(inner, |req| {
                need(caller.capabilities, Capability::PutSymmetricKey)?;
                let key = material(req.object.algorithm, req.key.expose())?;
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::SymmetricKey,
                    Capabilities::NONE,
                    key,
                    Origin::IMPORTED,
                )
            }),
            C::GenerateSymmetricKey => answer::<cmd::GenerateSymmetricKey>(inner, |req| {
                need(caller.capabilities, Capability::GenerateSymmetricKey)?;
                let len = key_len(req.object.algorithm).ok_or(ErrorCode::InvalidData)?;
                let key = KeyMaterial::Symmetric(SecretBytes::new(random_key(len).as_slice()));
                self.put_object(
                    caller,
                    &req.object,
                    ObjectType::SymmetricKey,
                    Capabilities::NONE,
                    key,
                    Origin::GENERATED,
                )
            }),
            C::EncryptEcb => answer::<cmd::EncryptEcb>(inner, |req| {
                self.aes(
                    caller,
                    req.key_id,
                    Capability::EncryptEcb,
                    Mode::Ecb,
                    true,
                    &req.data,
                )
            }),
            C::DecryptEcb => answer::<cmd::DecryptEcb>(inner, |req| {
                self.aes(
                    caller,
                    req.key_id,
                    Capability::DecryptEcb,
                    Mode::Ecb,
                    false,
                    &req.data,
                )
            }),
            C::EncryptCbc => answer::<cmd::EncryptCbc>(inner, |req| {
                let mode = Mode::Cbc(req.iv);
                self.aes(
                    caller,
                    req.key_id,
                    Capability::EncryptCbc,
                    mode,
                    true,
                    &req.data,
                )
            }),
            C::DecryptCbc => answer::<cmd::DecryptCbc>(inner, |req| {
                let mode = Mode::Cbc(req.iv);
                self.aes(
                    caller,
                    req.key_id,
                    Capability::DecryptCbc,
                    mode,
                    false,
                    &req.data,
                )
            }),
            _ => return None,
        })
    }

    fn aes(
        &self,
        caller: Caller,
        id: ObjectId,
        cap: Capability,
        mode: Mode,
        encrypt: bool,
        data: &SecretBytes,
    ) -> Answer<cmd::AesResponse> {
        let k = self.usable(
            caller,
            id,
            ObjectType::SymmetricKey,
            cap,
            ErrorCode::InsufficientPermissions,
        )?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(ErrorCode::InvalidData);
        }
        let key = symmetric_key(k)?;
        let mut buf = Zeroizing::new(data.expose().to_vec());
        let done = match key.len() {
            16 => run::<Aes128>(key, mode, encrypt, &mut buf),
            24 => run::<Aes192>(key, mode, encrypt, &mut buf),
            32 => run::<Aes256>(key, mode, encrypt, &mut buf),
            _ => None,
        };
        done.ok_or(ErrorCode::InvalidData)?;
        Ok(cmd::AesResponse {
            data: SecretBytes::new(buf.as_slice()),
        })
    }
}

fn key_len(a: Algorithm) -> Option<usize> {
    match a {
        Algorithm::Aes128 => Some(16),
        Algorithm::Aes192 => Some(24),
        Algorithm::Aes256 => Some(32),
        _ => None,
    }
}

/// A symmetric key of `algorithm`: exactly its AES key length.
pub(super) fn material(algorithm: Algorithm, key: &[u8]) -> Answer<KeyMaterial> {
    if key_len(algorithm) != Some(key.len()) {
        return Err(ErrorCode::InvalidData);
    }
    Ok(KeyMaterial::Symmetric(SecretBytes::new(key)))
}

fn symmetric_key(k: &Object) -> Answer<&[u8]> {
    match &k.key {
        KeyMaterial::Symmetric(key) => Ok(key.expose()),
        _ => Err(ErrorCode::ObjectNotFound),
    }
}

/// Runs `mode` over whole blocks in place; `None` if the key does not fit the cipher.
fn run<C>(key: &[u8], mode: Mode, encrypt: bool, buf: &mut [u8]) -> Option<()>
where
    C: BlockCipher
        + BlockSizeUser<BlockSize = aes::cipher::consts::U16>
        + BlockEncrypt
        + BlockDecrypt
        + KeyInit,
{
    let len = buf.len();
    match (mode, encrypt) {
        (Mode::Ecb, true) => {
            let c = C::new_from_slice(key).ok()?;
            for block in buf.chunks_exact_mut(16) {
                c.encrypt_block(block.into());
            }
        }
        (Mode::Ecb, false) => {
            let c = C::new_from_slice(key).ok()?;
            for block in buf.chunks_exact_mut(16) {
                c.decrypt_block(block.into());
            }
        }
        (Mode::Cbc(iv), true) => {
            cbc::Encryptor::<C>::new_from_slices(key, &iv)
                .ok()?
                .encrypt_padded_mut::<NoPadding>(buf, len)
                .ok()?;
        }
        (Mode::Cbc(iv), false) => {
            cbc::Decryptor::<C>::new_from_slices(key, &iv)
                .ok()?
                .decrypt_padded_mut::<NoPadding>(buf)
                .ok()?;
        }
    }
    Some(())
}
