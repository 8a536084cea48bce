//! What both sides do to one Session Message envelope: the IV, the padded AES-CBC, and the
//! chained MAC over the frame. [`super::HostSession`] and [`super::DeviceSession`] differ
//! only in which key MACs which direction.

use aes::cipher::block_padding::Iso7816;
use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use aes::Aes128;
use zeroize::Zeroizing;

use super::keys::cmac;
use super::{truncate, SessionId};
use crate::cmd::{self, SessionMessage, SessionMessageResponse};
use crate::codec::{Frame, MAX_DATA};
use crate::{CommandCode, Error, Result};

/// Bytes of the envelope around the ciphertext: session id and MAC.
const OVERHEAD: usize = 1 + 8;

/// The CBC IV of message number `counter`: the counter as a 16-byte big-endian number,
/// encrypted (one block, AES-ECB) with S-ENC.
pub(crate) fn iv(enc: &[u8; 16], counter: u32) -> [u8; 16] {
    let mut block = GenericArray::from(u128::from(counter).to_be_bytes());
    Aes128::new(GenericArray::from_slice(enc)).encrypt_block(&mut block);
    block.into()
}

/// Pads (`80`, then zeros up to a whole block; always at least one byte, so a frame that
/// fills its blocks gets a whole extra one) and encrypts an inner frame.
pub(crate) fn encrypt(enc: &[u8; 16], iv: &[u8; 16], inner: &Frame) -> Result<Vec<u8>> {
    let padded_len = (inner.as_bytes().len() / 16 + 1) * 16;
    if OVERHEAD + padded_len > MAX_DATA {
        return Err(Error::TooLong {
            what: "inner frame",
            len: inner.as_bytes().len(),
            max: (MAX_DATA - OVERHEAD) / 16 * 16 - 1,
        });
    }
    let cbc =
        cbc::Encryptor::<Aes128>::new(GenericArray::from_slice(enc), GenericArray::from_slice(iv));
    Ok(cbc.encrypt_padded_vec_mut::<Iso7816>(inner.as_bytes()))
}

/// Decrypts and unpads a ciphertext, and reads the inner frame it holds: its length field
/// must account for every byte before the padding (libyubihsm's rule).
pub(crate) fn decrypt(enc: &[u8; 16], iv: &[u8; 16], ciphertext: &[u8]) -> Result<Frame> {
    let cbc =
        cbc::Decryptor::<Aes128>::new(GenericArray::from_slice(enc), GenericArray::from_slice(iv));
    // Decrypted in a buffer of our own, wiped on drop whether or not the padding is good
    // (decrypt_padded_vec_mut drops its plaintext unwiped when unpadding fails).
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let plain = cbc
        .decrypt_padded_mut::<Iso7816>(&mut buf)
        .map_err(|_| Error::Padding)?;
    Frame::parse(plain)
}

/// A Session Message frame (`cmd` is the request's or the response's command byte) whose
/// MAC is the first 8 bytes of CMAC(`key`, `chain` ‖ the frame before its MAC). Returns
/// the frame and the full CMAC.
pub(crate) fn seal(
    key: &[u8; 16],
    chain: &[u8; 16],
    response: bool,
    sid: SessionId,
    ciphertext: Vec<u8>,
) -> Result<(Frame, [u8; 16])> {
    let mut msg = SessionMessage {
        session_id: sid,
        ciphertext,
        mac: [0; 8],
    };
    let unmaced = envelope(response, &msg)?;
    let full = cmac(key, &[chain, mac_input(&unmaced)]);
    msg.mac = truncate(&full);
    Ok((envelope(response, &msg)?, full))
}

fn envelope(response: bool, msg: &SessionMessage) -> Result<Frame> {
    if response {
        cmd::encode_response::<SessionMessage>(&SessionMessageResponse {
            session_id: msg.session_id,
            ciphertext: msg.ciphertext.clone(),
            mac: msg.mac,
        })
    } else {
        cmd::encode_request(msg)
    }
}

/// The bytes a MAC covers: the whole frame (its length field counting the MAC) but the
/// MAC itself.
pub(crate) fn mac_input(frame: &Frame) -> &[u8] {
    let b = frame.as_bytes();
    &b[..b.len().saturating_sub(8)]
}

/// The full CMAC over `chain` ‖ the frame before its MAC, under `key`.
pub(crate) fn chained_mac(key: &[u8; 16], chain: &[u8; 16], frame: &Frame) -> [u8; 16] {
    cmac(key, &[chain, mac_input(frame)])
}

/// The command code named in errors about envelopes.
pub(crate) const CODE: CommandCode = CommandCode::SessionMessage;
