//! The session keys and cryptograms, derived with AES-CMAC as SCP03 derives them (§3.2).

use std::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::Aes128;
use cmac::{Cmac, Mac};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{truncate, Challenge, Cryptogram};
use crate::AuthKey;

/// Derivation constants (the byte after 11 zeros in the KDF input).
const CARD_CRYPTOGRAM: u8 = 0x00;
const HOST_CRYPTOGRAM: u8 = 0x01;
const S_ENC: u8 = 0x04;
const S_MAC: u8 = 0x06;
const S_RMAC: u8 = 0x07;

/// AES-CMAC of the concatenated `parts` under a 16-byte key.
pub(crate) fn cmac(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Cmac<Aes128> as cmac::digest::KeyInit>::new(GenericArray::from_slice(key));
    for p in parts {
        m.update(p);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&m.finalize().into_bytes());
    out
}

/// The session's context: host challenge followed by card challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context(pub [u8; 16]);

impl Context {
    /// `host ‖ card`.
    pub fn new(host: &Challenge, card: &Challenge) -> Context {
        let mut c = [0u8; 16];
        c[..8].copy_from_slice(&host.0);
        c[8..].copy_from_slice(&card.0);
        Context(c)
    }
}

/// One KDF output: the CMAC under `key` of 11 zero bytes, the constant, a zero separator,
/// the output length in bits (u16 big-endian), the counter 1, and the context. One CMAC
/// block covers every output used here (at most 128 bits); callers truncate.
fn derive(key: &[u8; 16], constant: u8, bits: u16, ctx: &Context) -> [u8; 16] {
    let mut input = [0u8; 16];
    input[11] = constant;
    input[13..15].copy_from_slice(&bits.to_be_bytes());
    input[15] = 0x01;
    cmac(key, &[&input, &ctx.0])
}

/// The three keys of one session: S-ENC (encryption), S-MAC (command MACs and
/// cryptograms), S-RMAC (response MACs). Wiped when dropped; `Debug` shows none of them.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    pub(crate) enc: [u8; 16],
    pub(crate) mac: [u8; 16],
    pub(crate) rmac: [u8; 16],
}

impl SessionKeys {
    /// The keys for `ctx` from the static keys: S-ENC from K-ENC, S-MAC and S-RMAC from
    /// K-MAC.
    pub fn derive(key: &AuthKey, ctx: &Context) -> SessionKeys {
        SessionKeys {
            enc: derive(key.enc(), S_ENC, 128, ctx),
            mac: derive(key.mac(), S_MAC, 128, ctx),
            rmac: derive(key.mac(), S_RMAC, 128, ctx),
        }
    }

    /// The card cryptogram the device must send for `ctx`.
    pub fn card_cryptogram(&self, ctx: &Context) -> Cryptogram {
        Cryptogram(truncate(&derive(&self.mac, CARD_CRYPTOGRAM, 64, ctx)))
    }

    /// The host cryptogram the host must send for `ctx`.
    pub fn host_cryptogram(&self, ctx: &Context) -> Cryptogram {
        Cryptogram(truncate(&derive(&self.mac, HOST_CRYPTOGRAM, 64, ctx)))
    }

    /// S-ENC, S-MAC and S-RMAC, for this crate's known-answer tests.
    #[cfg(test)]
    pub(crate) fn expose(&self) -> (&[u8; 16], &[u8; 16], &[u8; 16]) {
        (&self.enc, &self.mac, &self.rmac)
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(redacted)")
    }
}
