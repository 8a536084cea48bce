//! Every YubiHSM 1 command as a request type and its response type.
//!
//! Commands are data: the driver encodes requests and decodes responses, the emulator does
//! the reverse with the very same types, so one definition of each message is proven by
//! every test. Each file names the `YubiHSM_if.h` structs it mirrors.

mod aead_decrypt_cmp;
mod aead_generate;
mod aead_status;
mod aes_ecb;
mod buffer;
mod db_otp_validate;
mod db_store;
mod echo;
mod hmac;
mod monitor_exit;
mod nonce_get;
mod otp_decode;
mod random;
mod system_info;
mod temp_key_load;
mod unlock;

pub use aead_decrypt_cmp::{AeadDecryptCmp, AeadDecryptCmpResponse};
pub use aead_generate::{
    AeadGenerate, AeadGenerateResponse, BufferAeadGenerate, RandomAeadGenerate,
};
pub use aead_status::AeadStatusResponse;
pub use aes_ecb::{
    AesEcbBlockDecrypt, AesEcbBlockDecryptCmp, AesEcbBlockEncrypt, AesEcbCmpResponse,
    AesEcbResponse,
};
pub use buffer::{BufferLoad, BufferLoadResponse, BufferRandomLoad};
pub use db_otp_validate::{DbOtpValidate, DbOtpValidateResponse};
pub use db_store::{DbStoreResponse, DbYubikeyAeadStore, DbYubikeyAeadStore2};
pub use echo::{Echo, EchoResponse};
pub use hmac::{HmacFlags, HmacSha1Generate, HmacSha1Response};
pub use monitor_exit::{MonitorExit, NoResponse};
pub use nonce_get::{NonceGet, NonceGetResponse};
pub use otp_decode::{AeadOtpDecode, AeadOtpDecodeResponse};
pub use random::{RandomGenerate, RandomGenerateResponse, RandomReseed};
pub use system_info::{SystemInfo, SystemInfoQuery};
pub use temp_key_load::{TempKeyLoad, TempKeyLoadResponse};
pub use unlock::{HsmUnlock, KeyStorageUnlock, KeyStoreDecrypt, StatusResponse};

use crate::codec::{Frame, Reader, Writer};
use crate::{Error, KeyHandle, Opcode, Result, Status};

/// A message body with a fixed layout.
pub trait Message: Sized + std::fmt::Debug {
    /// Appends the payload.
    fn encode(&self, w: &mut Writer);
    /// Reads the payload; the caller rejects trailing bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self>;
}

/// A request, tied to its opcode and response type.
pub trait Command: Message {
    /// The command code.
    const OPCODE: Opcode;
    /// What the device answers.
    type Response: Response;

    /// Compares the fields the device echoes (key handle, nonce, public id) with the
    /// request. The driver calls this before it trusts the response's status.
    fn check_echo(&self, _resp: &Self::Response) -> Result<()> {
        Ok(())
    }
}

/// A response.
pub trait Response: Message {
    /// The status the response carries; responses without one are always OK.
    fn status(&self) -> Status {
        Status::Ok
    }
}

/// Fails with [`Error::EchoMismatch`] unless `a == b`.
pub(crate) fn echo_eq<T: PartialEq>(cmd: Opcode, field: &'static str, a: &T, b: &T) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::EchoMismatch { cmd, field })
    }
}

/// [`echo_eq`] on the key handle a command names, which most responses echo.
pub(crate) fn echo_key_handle(cmd: Opcode, sent: KeyHandle, echoed: KeyHandle) -> Result<()> {
    echo_eq(cmd, "key handle", &sent, &echoed)
}

/// Encodes a request frame: `bcnt, cmd, payload`.
pub fn encode_request<C: Command>(req: &C) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    req.encode(&mut w);
    let payload = zeroize::Zeroizing::new(w.into_inner());
    Ok(Frame::request(C::OPCODE, &payload)?.into_bytes())
}

/// Encodes a response frame: `bcnt, cmd | 0x80, payload` (the emulator's side).
pub fn encode_response<C: Command>(resp: &C::Response) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    resp.encode(&mut w);
    let payload = zeroize::Zeroizing::new(w.into_inner());
    Ok(Frame::response(C::OPCODE, &payload)?.into_bytes())
}

/// Decodes a payload as `M`, rejecting trailing bytes.
pub fn decode_exact<M: Message>(op: Opcode, payload: &[u8]) -> Result<M> {
    let mut r = Reader::new(op, payload);
    let m = M::decode(&mut r)?;
    r.finish()?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MAX_PAYLOAD;
    use rand::{Rng, RngCore, SeedableRng};

    /// Random payloads of every length: each decodes to a message that encodes back to the
    /// same bytes, or fails with a layout error naming this command, never anything else.
    fn never_panics<M: Message>(op: Opcode, rng: &mut rand::rngs::StdRng) {
        for len in 0..=MAX_PAYLOAD {
            let mut buf = vec![0u8; len];
            rng.fill_bytes(&mut buf);
            match decode_exact::<M>(op, &buf) {
                Ok(m) => {
                    let mut w = Writer::new();
                    m.encode(&mut w);
                    assert_eq!(
                        w.into_inner(),
                        buf,
                        "{op}: {m:?} encodes to what it was read from"
                    );
                }
                Err(Error::Truncated(o) | Error::TrailingBytes(o)) => assert_eq!(o, op),
                Err(Error::InvalidField { cmd, .. }) => assert_eq!(cmd, op),
                Err(e) => panic!("{op}: {len} random bytes gave {e:?}"),
            }
        }
    }

    macro_rules! all_messages {
        ($rng:expr; $($req:ty),*) => {$(
            never_panics::<$req>(<$req>::OPCODE, $rng);
            never_panics::<<$req as Command>::Response>(<$req>::OPCODE, $rng);
        )*};
    }

    #[test]
    fn decoders_never_panic_on_random_payloads() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            all_messages!(&mut rng; AeadGenerate, BufferAeadGenerate, RandomAeadGenerate, AeadDecryptCmp,
                DbYubikeyAeadStore, DbYubikeyAeadStore2, AeadOtpDecode, DbOtpValidate, AesEcbBlockEncrypt,
                AesEcbBlockDecrypt, AesEcbBlockDecryptCmp, HmacSha1Generate, TempKeyLoad, BufferLoad,
                BufferRandomLoad, NonceGet, Echo, RandomGenerate, RandomReseed, SystemInfoQuery,
                KeyStorageUnlock, HsmUnlock, KeyStoreDecrypt, MonitorExit);
        }
    }

    #[test]
    fn exact_lengths_are_enforced() {
        // OTP decode response is 17 bytes: one short and one long are both errors.
        assert_eq!(
            decode_exact::<AeadOtpDecodeResponse>(Opcode::AeadYubikeyOtpDecode, &[0; 16]),
            Err(Error::Truncated(Opcode::AeadYubikeyOtpDecode))
        );
        assert_eq!(
            decode_exact::<AeadOtpDecodeResponse>(Opcode::AeadYubikeyOtpDecode, &[0; 18]),
            Err(Error::TrailingBytes(Opcode::AeadYubikeyOtpDecode))
        );
        assert!(
            decode_exact::<AeadOtpDecodeResponse>(Opcode::AeadYubikeyOtpDecode, &[0; 17]).is_ok()
        );
        // A length byte that promises more than is there.
        assert_eq!(
            decode_exact::<EchoResponse>(Opcode::Echo, &[5, 1, 2]),
            Err(Error::Truncated(Opcode::Echo))
        );
    }

    #[test]
    fn frames_match_the_protocol_notes() {
        assert_eq!(
            encode_request(&Echo {
                data: b"test".to_vec()
            })
            .unwrap(),
            [0x06, 0x23, 0x04, b't', b'e', b's', b't']
        );
        assert_eq!(encode_request(&SystemInfoQuery).unwrap(), [0x01, 0x26]);
        assert_eq!(
            encode_request(&MonitorExit::new()).unwrap(),
            [0x09, 0x7f, 0xef, 0xbe, 0xad, 0xba, 0x10, 0x41, 0x52, 0x45]
        );
        assert!(matches!(
            encode_request(&Echo { data: vec![0; 96] }),
            Err(Error::TooLong { .. })
        ));
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n: u8 = rng.gen_range(0..=95);
        assert_eq!(
            encode_request(&Echo {
                data: vec![1; usize::from(n)]
            })
            .unwrap()
            .len(),
            usize::from(n) + 3
        );
    }
}
