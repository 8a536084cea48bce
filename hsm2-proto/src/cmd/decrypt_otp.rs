//! Decrypt OTP (`0x60`): the KSM primitive. The device opens the AEAD with the
//! otp-aead-key, decrypts the OTP with the YubiKey key inside, checks it, and answers only
//! the counters (§4.3).

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, OtpAead, OtpCounters, Result, Secret};

/// Decrypt OTP request: otp-aead-key id (u16), AEAD (36), OTP (16: the raw AES block, not
/// modhex). The OTP is a one-time credential until the validator has seen it: redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptOtp {
    /// The otp-aead-key.
    pub key_id: ObjectId,
    /// The YubiKey's AEAD.
    pub aead: OtpAead,
    /// The OTP's 16-byte ciphertext.
    pub otp: Secret<16>,
}

/// Decrypt OTP response: 6 bytes, use counter (u16 **little-endian**), session counter,
/// timestamp high byte, timestamp low (u16 **little-endian**).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecryptOtpResponse {
    /// The token's counters.
    pub counters: OtpCounters,
}

impl Message for DecryptOtp {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0)
            .bytes(&self.aead.0)
            .bytes(self.otp.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DecryptOtp {
            key_id: ObjectId(r.u16()?),
            aead: OtpAead(r.array()?),
            otp: Secret(r.array()?),
        })
    }
}

impl Message for DecryptOtpResponse {
    fn encode(&self, w: &mut Writer) {
        let c = &self.counters;
        w.bytes(&c.use_ctr.to_le_bytes())
            .u8(c.session_ctr)
            .u8(c.ts_high)
            .bytes(&c.ts_low.to_le_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let use_ctr = u16::from_le_bytes(r.array()?);
        let session_ctr = r.u8()?;
        let ts_high = r.u8()?;
        let ts_low = u16::from_le_bytes(r.array()?);
        Ok(DecryptOtpResponse {
            counters: OtpCounters {
                use_ctr,
                session_ctr,
                ts_high,
                ts_low,
            },
        })
    }
}

impl Command for DecryptOtp {
    const CODE: CommandCode = CommandCode::DecryptOtp;
    type Response = DecryptOtpResponse;
}
