//! `YSM_DB_OTP_VALIDATE` (0x07): validate an OTP against the internal database, with the
//! device's own replay check.

use otp_core::otp::OtpCounters;

use super::{echo_eq, Command, Message, Response};
use crate::codec::{Reader, Writer};
use crate::{Nonce, Opcode, Result, Status};

/// `YSM_DB_OTP_VALIDATE_REQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOtpValidate {
    /// Binary public id.
    pub public_id: Nonce,
    /// The OTP's 16-byte ciphertext.
    pub otp: [u8; 16],
}

/// `YSM_DB_OTP_VALIDATE_RESP` (13 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbOtpValidateResponse {
    /// Echoed public id.
    pub public_id: Nonce,
    /// The token's counters.
    pub counters: OtpCounters,
    /// Result.
    pub status: Status,
}

impl Message for DbOtpValidate {
    fn encode(&self, w: &mut Writer) {
        w.nonce(&self.public_id).bytes(&self.otp);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DbOtpValidate {
            public_id: r.nonce()?,
            otp: r.array()?,
        })
    }
}

impl Message for DbOtpValidateResponse {
    fn encode(&self, w: &mut Writer) {
        let c = &self.counters;
        w.nonce(&self.public_id)
            .u16(c.use_ctr)
            .u8(c.session_ctr)
            .u8(c.ts_high)
            .u16(c.ts_low)
            .status(self.status);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let public_id = r.nonce()?;
        let use_ctr = r.u16()?;
        let session_ctr = r.u8()?;
        let ts_high = r.u8()?;
        let ts_low = r.u16()?;
        Ok(DbOtpValidateResponse {
            public_id,
            counters: OtpCounters {
                use_ctr,
                session_ctr,
                ts_high,
                ts_low,
            },
            status: r.status()?,
        })
    }
}

impl Response for DbOtpValidateResponse {
    fn status(&self) -> Status {
        self.status
    }
}

impl Command for DbOtpValidate {
    const OPCODE: Opcode = Opcode::DbOtpValidate;
    type Response = DbOtpValidateResponse;
    fn check_echo(&self, resp: &DbOtpValidateResponse) -> Result<()> {
        echo_eq(Self::OPCODE, "public id", &self.public_id, &resp.public_id)
    }
}
