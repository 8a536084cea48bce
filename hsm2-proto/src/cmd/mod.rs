//! Every command a KSM sends a YubiHSM 2, as a request type and its response type.
//!
//! Commands are data: the driver encodes requests and decodes responses, and the emulator
//! (`crate::emulator`, feature `emulator`) decodes requests and encodes responses with the very same
//! types, so each layout is written once and every test of either side proves it. Each
//! file's doc names the command and its layout in the shared protocol notes (§4).
//!
//! Every decoder checks lengths exactly and refuses trailing bytes; none panics on any
//! input (the fuzz targets `hsm2_frames`, `hsm2_session` and `hsm2_device` hold them to
//! it).

mod authenticate_session;
mod change_authentication_key;
mod close_session;
mod create_session;
mod decrypt_otp;
mod delete_object;
mod device_info;
mod device_public_key;
mod echo;
mod get_object_info;
mod get_pseudo_random;
mod hmac;
mod list_objects;
mod log;
mod new_object;
mod opaque;
mod option;
mod otp_aead;
mod otp_aead_key;
mod put_authentication_key;
mod reset_device;
mod session_message;
mod symmetric;
mod wrap_key;
mod wrapped;

pub use authenticate_session::AuthenticateSession;
pub use change_authentication_key::ChangeAuthenticationKey;
pub use close_session::CloseSession;
pub use create_session::{CreateSession, CreateSessionResponse};
pub use decrypt_otp::{DecryptOtp, DecryptOtpResponse};
pub use delete_object::DeleteObject;
pub use device_info::{DeviceInfo, DeviceInfoResponse};
pub use device_public_key::{DevicePublicKey, GetDevicePublicKey};
pub use echo::{Echo, EchoResponse};
pub use get_object_info::{GetObjectInfo, ObjectInfo};
pub use get_pseudo_random::{GetPseudoRandom, PseudoRandomResponse};
pub use hmac::{GenerateHmacKey, HmacResponse, PutHmacKey, SignHmac, VerifyHmac, VerifyResponse};
pub use list_objects::{ListObjects, ListObjectsResponse, ListedObject, ObjectFilter};
pub use log::{GetLogEntries, LogEntries, LogEntry, SetLogIndex};
pub use new_object::{NewObject, ObjectIdResponse};
pub use opaque::{GetOpaque, OpaqueResponse, PutOpaque};
pub use option::{AuditSetting, DeviceOption, GetOption, OptionValue, SetOption};
pub use otp_aead::{CreateOtpAead, OtpAeadResponse, RandomizeOtpAead, RewrapOtpAead};
pub use otp_aead_key::{GenerateOtpAeadKey, PutOtpAeadKey};
pub use put_authentication_key::PutAuthenticationKey;
pub use reset_device::ResetDevice;
pub use session_message::{SessionMessage, SessionMessageResponse};
pub use symmetric::{
    AesCbc, AesEcb, AesResponse, DecryptCbc, DecryptEcb, EncryptCbc, EncryptEcb,
    GenerateSymmetricKey, PutSymmetricKey,
};
pub use wrap_key::{GenerateWrapKey, PutWrapKey};
pub use wrapped::{
    ExportWrapped, ImportWrapped, ImportedObject, UnwrapData, UnwrappedResponse, WrapData,
    WrappedResponse, WRAP_NONCE_LEN, WRAP_TAG_LEN,
};

use crate::codec::{Frame, Reader, Writer};
use crate::{CommandCode, Error, ErrorCode, Result};

/// A message's data with a fixed layout.
pub trait Message: Sized + std::fmt::Debug {
    /// Appends the data.
    fn encode(&self, w: &mut Writer);
    /// Reads the data; [`decode_exact`] then refuses trailing bytes.
    fn decode(r: &mut Reader<'_>) -> Result<Self>;
}

/// A request, tied to its command code and its response type.
pub trait Command: Message {
    /// The command code.
    const CODE: CommandCode;
    /// What the device answers.
    type Response: Message;

    /// Compares what the response echoes or promises (data, ids, lengths) with the
    /// request. The driver calls it on every success it returns.
    fn check_response(&self, _resp: &Self::Response) -> Result<()> {
        Ok(())
    }
}

/// The empty answer of commands that only succeed or fail (`DeleteObject`,
/// `CloseSession`, `AuthenticateSession`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EmptyResponse;

impl Message for EmptyResponse {
    fn encode(&self, _w: &mut Writer) {}
    fn decode(_r: &mut Reader<'_>) -> Result<Self> {
        Ok(EmptyResponse)
    }
}

/// Fails with [`Error::EchoMismatch`] unless `a == b`.
pub(crate) fn echo_eq<T: PartialEq>(
    cmd: CommandCode,
    field: &'static str,
    a: &T,
    b: &T,
) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::EchoMismatch { cmd, field })
    }
}

/// Decodes `data` as `M`, refusing trailing bytes.
pub fn decode_exact<M: Message>(cmd: CommandCode, data: &[u8]) -> Result<M> {
    let mut r = Reader::new(cmd, data);
    let m = M::decode(&mut r)?;
    r.finish()?;
    Ok(m)
}

fn encode_data<M: Message>(m: &M) -> zeroize::Zeroizing<Vec<u8>> {
    let mut w = Writer::new();
    m.encode(&mut w);
    w.into_inner()
}

/// The request frame `C::CODE, len, data` (the driver's side).
pub fn encode_request<C: Command>(req: &C) -> Result<Frame> {
    Frame::new(C::CODE.to_u8(), &encode_data(req))
}

/// The request a frame carries, if it is a `C` (the emulator's side).
pub fn decode_request<C: Command>(frame: &Frame) -> Result<C> {
    if frame.cmd() != C::CODE.to_u8() {
        return Err(Error::WrongCommand {
            sent: C::CODE,
            got: frame.cmd(),
        });
    }
    decode_exact(C::CODE, frame.data())
}

/// The success frame `C::CODE | 0x80, len, data` (the emulator's side).
pub fn encode_response<C: Command>(resp: &C::Response) -> Result<Frame> {
    Frame::new(C::CODE.response_byte(), &encode_data(resp))
}

/// The error frame `7f 00 01 <code>`.
pub fn error_frame(code: ErrorCode) -> Frame {
    let bytes = [CommandCode::Error.to_u8(), 0, 1, code.to_u8()];
    Frame::parse(&bytes).unwrap_or_else(|_| unreachable!("a 4-byte error frame is a frame"))
}

/// The device's error code, if `frame` is an error frame (`7f 00 01 <code>`); an error
/// frame of another length is malformed.
pub fn device_error(frame: &Frame) -> Result<Option<ErrorCode>> {
    if frame.cmd() != CommandCode::Error.to_u8() {
        return Ok(None);
    }
    match frame.data() {
        [code] => Ok(Some(ErrorCode::from_u8(*code))),
        _ => Err(Error::InvalidField {
            cmd: CommandCode::Error,
            field: "error frame length",
        }),
    }
}

/// The answer to a `C` request: its response, or [`Error::Device`] for an error frame
/// (the driver's side). Does not call [`Command::check_response`]: that needs the request.
pub fn decode_response<C: Command>(frame: &Frame) -> Result<C::Response> {
    if let Some(code) = device_error(frame)? {
        return Err(Error::Device { cmd: C::CODE, code });
    }
    if frame.cmd() != C::CODE.response_byte() {
        return Err(Error::WrongCommand {
            sent: C::CODE,
            got: frame.cmd(),
        });
    }
    decode_exact(C::CODE, frame.data())
}

/// Calls `$f::<C>($args)` for the request type `C` whose code is `$code`, or evaluates
/// `$other` for codes with no request type here. The one list of every command, for the
/// tests and fuzz targets that must cover them all.
#[macro_export]
macro_rules! with_command {
    ($code:expr, $f:ident $args:tt, $other:expr) => {
        $crate::with_command!(@list $code, $f $args, $other;
            Echo, CreateSession, AuthenticateSession, SessionMessage, DeviceInfo, GetDevicePublicKey,
            CloseSession,
            PutAuthenticationKey, ListObjects, GetObjectInfo, GetPseudoRandom, DeleteObject,
            DecryptOtp, CreateOtpAead, RandomizeOtpAead, RewrapOtpAead, PutOtpAeadKey,
            GenerateOtpAeadKey, PutOpaque, GetOpaque, PutWrapKey, GenerateWrapKey, ExportWrapped,
            ImportWrapped, WrapData, UnwrapData, PutHmacKey, GenerateHmacKey, SignHmac,
            VerifyHmac, PutSymmetricKey, GenerateSymmetricKey, EncryptEcb, DecryptEcb,
            EncryptCbc, DecryptCbc,
            ResetDevice, GetLogEntries, SetLogIndex, SetOption, GetOption, ChangeAuthenticationKey)
    };
    (@list $code:expr, $f:ident $args:tt, $other:expr; $($ty:ident),*) => {
        match $code {
            $(c if c == <$crate::cmd::$ty as $crate::cmd::Command>::CODE => {
                $f::<$crate::cmd::$ty> $args
            })*
            _ => $other,
        }
    };
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod log_tests;

#[cfg(test)]
mod objects_tests;
