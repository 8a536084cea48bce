//! `YSM_AEAD_YUBIKEY_OTP_DECODE` (0x06): the KSM primitive. The device opens the AEAD,
//! decrypts the OTP with the key inside, checks CRC and uid, and returns only counters.

use otp_core::otp::OtpCounters;

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{KeyHandle, Nonce, Opcode, Result, Status};

/// `YSM_AEAD_YUBIKEY_OTP_DECODE_REQ`. The `public_id` field doubles as the AEAD nonce, so
/// callers put the AEAD's stored nonce there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadOtpDecode {
    /// The AEAD nonce (the binary public id for conventional AEADs).
    pub public_id: Nonce,
    /// Key handle that sealed the AEAD.
    pub key_handle: KeyHandle,
    /// The OTP's 16-byte ciphertext.
    pub otp: [u8; 16],
    /// The 30-byte YubiKey AEAD.
    pub aead: [u8; 30],
}

/// `YSM_AEAD_YUBIKEY_OTP_DECODE_RESP` (17 bytes, counters zero on error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AeadOtpDecodeResponse {
    /// Echoed public id.
    pub public_id: Nonce,
    /// Echoed key handle.
    pub key_handle: KeyHandle,
    /// The token's counters.
    pub counters: OtpCounters,
    /// Result.
    pub status: Status,
}

impl Message for AeadOtpDecode {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id)
            .key_handle(self.key_handle)
            .bytes(&self.otp)
            .bytes(&self.aead);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(AeadOtpDecode {
            public_id: r.nonce()?,
            key_handle: r.key_handle()?,
            otp: r.array()?,
            aead: r.array()?,
        })
    }
}

impl Message for AeadOtpDecodeResponse {
    fn encode(&self, w: &mut Writer) {
        let c = &self.counters;
        w.nonce(&self.public_id).key_handle(self.key_handle);
        w.u16(c.use_ctr)
            .u8(c.session_ctr)
            .u8(c.ts_high)
            .u16(c.ts_low)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let public_id = r.nonce()?;
        let key_handle = r.key_handle()?;
        let use_ctr = r.u16()?;
        let session_ctr = r.u8()?;
        let ts_high = r.u8()?;
        let ts_low = r.u16()?;
        let status = r.status()?;
        Ok(AeadOtpDecodeResponse {
            public_id,
            key_handle,
            counters: OtpCounters {
                use_ctr,
                session_ctr,
                ts_high,
                ts_low,
            },
            status,
        })
    }
}

impl Response for AeadOtpDecodeResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for AeadOtpDecode {
    const OPCODE: Opcode = Opcode::AeadYubikeyOtpDecode;
    type Response = AeadOtpDecodeResponse;
    fn check_echo(&self, resp: &AeadOtpDecodeResponse) -> Result<()> {
        echo_eq(
            Self::OPCODE,
            "key handle",
            &self.key_handle,
            &resp.key_handle,
        )?;
        echo_eq(Self::OPCODE, "public id", &self.public_id, &resp.public_id)
    }
}
