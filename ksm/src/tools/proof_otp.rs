//! The test OTP with which `ksm clone-hsm2` and `ksm provision-hsm2` prove that a YubiHSM 2
//! holds the right otp-aead-key: a throw-away YubiKey (a random secret, in memory only, wiped
//! on drop) and one OTP of it.
//!
//! The caller has the secret sealed into an AEAD by what holds the key it trusts (the source
//! device's otp-aead-key, or the YubiHSM 1 key-handle key in software), then asks the device
//! under test to decode the OTP with that AEAD. Only an otp-aead-key with the same AES key
//! (and nonce id) opens the AEAD, and only the right secret gives back the counters the OTP
//! was made with; so a decode proves the key without either side showing it. Both tools
//! read the device's refusals differently (a missing capability, another key), so the
//! device's error is handed back as it came.

use hsm2_proto::{ObjectId, OtpAead};
use hsm_proto::otp::{OtpCounters, Token};
use hsm_proto::{PublicId, YubiKeySecret};
use rand::RngCore;

use crate::device::hsm2::Hsm2Device;
use crate::Error;

/// The counters the test OTP carries: its first use, a tick after power-up.
const COUNTERS: OtpCounters = OtpCounters {
    use_ctr: 1,
    session_ctr: 0,
    ts_high: 0,
    ts_low: 1,
};

/// A throw-away YubiKey and one OTP of it.
pub(crate) struct ProofOtp {
    secret: YubiKeySecret,
    otp: [u8; 16],
}

impl ProofOtp {
    /// A fresh random secret (never stored, never shown) and its OTP.
    pub(crate) fn new() -> Result<ProofOtp, Error> {
        let mut secret = YubiKeySecret {
            key: [0; 16],
            uid: [0; 6],
        };
        rand::rngs::OsRng.fill_bytes(&mut secret.key);
        rand::rngs::OsRng.fill_bytes(&mut secret.uid);
        let token = Token {
            uid: secret.uid,
            counters: COUNTERS,
            rnd: 0,
        };
        // The public id travels beside the OTP, not inside it: any will do.
        let public_id = PublicId::from_number(1, 12)?;
        let otp = hsm_proto::otp::encrypt(&secret, &public_id, &token).ciphertext;
        Ok(ProofOtp { secret, otp })
    }

    /// The secret to seal into the AEAD the device is to open.
    pub(crate) fn secret(&self) -> &YubiKeySecret {
        &self.secret
    }

    /// Has `dev` decode the OTP with `aead` (which must seal [`ProofOtp::secret`]) under
    /// its otp-aead-key `key`. `Ok(true)`: it gave back the OTP's counters, so `key` opens
    /// what the sealer made; `Ok(false)`: other counters (a device to distrust); `Err`: the
    /// device's refusal (or a lost connection), as it came.
    pub(crate) fn decodes_on(
        &self,
        dev: &mut Hsm2Device,
        key: ObjectId,
        aead: OtpAead,
    ) -> Result<bool, Error> {
        let counters = dev.call(|c, s| c.decrypt_otp(s, key, aead, self.otp))?;
        Ok(counters == COUNTERS)
    }
}
