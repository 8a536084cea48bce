//! `YSM_RANDOM_GENERATE` (0x24) and `YSM_RANDOM_RESEED` (0x25): the device DRBG.

use super::{echo_eq, Command, Message, StatusResponse};
use crate::codec::{Reader, Writer};
use crate::{Opcode, Result, SecretBytes};

/// `YSM_RANDOM_GENERATE_REQ`: up to 95 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomGenerate {
    /// How many bytes.
    pub len: u8,
}

/// `YSM_RANDOM_GENERATE_RESP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomGenerateResponse {
    /// The random bytes.
    pub data: SecretBytes,
}

/// `YSM_RANDOM_RESEED_REQ`: exactly 32 seed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomReseed {
    /// The seed.
    pub seed: SecretBytes,
}

impl Message for RandomGenerate {
    fn encode(&self, w: &mut Writer) {
        w.u8(self.len);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RandomGenerate { len: r.u8()? })
    }
}

impl Message for RandomGenerateResponse {
    fn encode(&self, w: &mut Writer) {
        w.len_prefixed(self.data.expose());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RandomGenerateResponse {
            data: SecretBytes::new(r.len_prefixed()?),
        })
    }
}

impl super::Response for RandomGenerateResponse {}

impl Message for RandomReseed {
    fn encode(&self, w: &mut Writer) {
        let mut seed = [0u8; 32];
        let n = self.seed.len().min(32);
        seed[..n].copy_from_slice(&self.seed.expose()[..n]);
        w.bytes(&seed);
        zeroize::Zeroize::zeroize(&mut seed);
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RandomReseed {
            seed: SecretBytes::new(r.bytes(32)?),
        })
    }
}

impl Command for RandomGenerate {
    const OPCODE: Opcode = Opcode::RandomGenerate;
    type Response = RandomGenerateResponse;
    fn check_echo(&self, resp: &RandomGenerateResponse) -> Result<()> {
        echo_eq(
            Self::OPCODE,
            "length",
            &usize::from(self.len),
            &resp.data.len(),
        )
    }
}

impl Command for RandomReseed {
    const OPCODE: Opcode = Opcode::RandomReseed;
    type Response = StatusResponse;
}
