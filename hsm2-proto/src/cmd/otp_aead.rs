//! Create (`0x61`), Randomize (`0x62`) and Rewrap (`0x63`) OTP AEAD: the device seals a
//! YubiKey's AES key and private id under an otp-aead-key, or moves a sealed one to
//! another key, and answers the 36-byte AEAD (§4.3, §5).

use super::{Command, Message};
use crate::codec::{Reader, Writer};
use crate::{CommandCode, ObjectId, OtpAead, Result, Secret};

/// Create OTP AEAD request: otp-aead-key id (u16), the YubiKey's AES key (16), its
/// private id (6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOtpAead {
    /// The otp-aead-key.
    pub key_id: ObjectId,
    /// The YubiKey's AES-128 key.
    pub aes_key: Secret<16>,
    /// The YubiKey's private id (uid).
    pub private_id: Secret<6>,
}

/// Randomize OTP AEAD request: otp-aead-key id (u16). The device draws the YubiKey key
/// and private id itself; only the AEAD leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomizeOtpAead {
    /// The otp-aead-key.
    pub key_id: ObjectId,
}

/// Rewrap OTP AEAD request: from key id (u16), to key id (u16), the AEAD (36).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewrapOtpAead {
    /// The otp-aead-key the AEAD is sealed under.
    pub from: ObjectId,
    /// The otp-aead-key to seal it under.
    pub to: ObjectId,
    /// The AEAD.
    pub aead: OtpAead,
}

/// The answer of all three: one AEAD (36 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpAeadResponse {
    /// The AEAD.
    pub aead: OtpAead,
}

impl Message for CreateOtpAead {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0)
            .bytes(self.aes_key.expose())
            .bytes(self.private_id.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(CreateOtpAead {
            key_id: ObjectId(r.u16()?),
            aes_key: Secret(r.array()?),
            private_id: Secret(r.array()?),
        })
    }
}

impl Message for RandomizeOtpAead {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.key_id.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RandomizeOtpAead {
            key_id: ObjectId(r.u16()?),
        })
    }
}

impl Message for RewrapOtpAead {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.from.0).u16(self.to.0).bytes(&self.aead.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RewrapOtpAead {
            from: ObjectId(r.u16()?),
            to: ObjectId(r.u16()?),
            aead: OtpAead(r.array()?),
        })
    }
}

impl Message for OtpAeadResponse {
    fn encode(&self, w: &mut Writer) {
        w.bytes(&self.aead.0);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(OtpAeadResponse {
            aead: OtpAead(r.array()?),
        })
    }
}

impl Command for CreateOtpAead {
    const CODE: CommandCode = CommandCode::CreateOtpAead;
    type Response = OtpAeadResponse;
}

impl Command for RandomizeOtpAead {
    const CODE: CommandCode = CommandCode::RandomizeOtpAead;
    type Response = OtpAeadResponse;
}

impl Command for RewrapOtpAead {
    const CODE: CommandCode = CommandCode::RewrapOtpAead;
    type Response = OtpAeadResponse;
}
