//! A software YubiHSM 1 (firmware 1.0 by default, 0.9.x selectable).
//!
//! It decodes the driver's own request types and encodes its response types, and speaks the
//! real wire: on a pty through [`PtyEmulator`], or in-process through [`SoftLine`] (the
//! "soft HSM" backend for staging and the demo). Every refusal uses the status the device
//! gives.
//!
//! What it models: key handles with keys and 32-bit flags (checked against both the key and
//! the system flags), disabled keys, the key store locked at power-on when a master key is set
//! and opened by `KEY_STORE_DECRYPT` (a wrong key answers MISMATCH and locks it again),
//! `HSM_UNLOCK` with an admin YubiKey OTP under the replay rule, the internal YubiKey
//! database (1024 entries) with replay detection, the 64-byte buffer with offsets and its
//! "host data" taint, the nonce counter with power-up count, the temp key handle 0xffffffff,
//! multi-packet HMAC-SHA1, random bytes, system info, `MONITOR_EXIT` in debug mode, and the
//! configuration console (texts in [`crate::console`]): echo and line editing, the prompts
//! (`NO_CFG> `, `HSM> `, `HSM (keys changed)> `, `HSM (keys not decrypted)> `), `help`,
//! `sysinfo`, `exit`, `zap`, `hsm <flags>` with its questions, `flags`, `keyload`, `keylist`,
//! `keydis`, `keycommit`, `dbload` and `dblist`. What is configured at the console is the
//! state the wire commands see; a configuration file describes the same state.
//!
//! What it does not model (and what it chose where Yubico's sources are silent):
//! - the console's `hsm` without flags (1.0's interactive toggle menu), `keygen` and
//!   `otpver`; the cfg password is kept but never asked for again;
//! - console texts the sources do not show are ours and plain: `keylist` prints
//!   `KKKKKKKK,FFFFFFFF[,disabled]`, `dblist` `<public id>,<use>,<session>`, `sysinfo`
//!   `Version A.B.C  Protocol=1  SysId: <hex>`; unknown commands and malformed lines get a
//!   one-line error that never repeats what was typed (it may be a key); `zap` and `hsm`
//!   answered with anything but `yes` print `aborted` and change nothing;
//! - what the console refuses: with no configuration, everything but `help`, `sysinfo`,
//!   `zap`, `hsm`, `flags` and `exit`; with the key store not decrypted, `hsm` too (the
//!   documented way out is `zap`, as pyhsm's test README does it);
//! - `hsm` erases the configuration, the key store and the internal database (pyhsm's suite
//!   reruns its database tests after it); the new store is open until the next power-on
//!   (no admin OTP needed right after set-up) and shows `keys changed` until `keycommit`;
//!   an empty master key means none (no lock at power-on); `g` generates a key and prints
//!   it, as the operator must be able to write it down;
//! - `zap` leaves no system flags (nothing is enabled until `hsm`);
//! - flash: the configuration, the committed key table and the internal database survive a
//!   power cycle; key edits not committed (firmware 1.x) are lost; firmware 0.x, which has
//!   no `keycommit`, writes every edit at once. The process's exit loses everything;
//! - the key store holds at most 1024 handles (the device's limit is undocumented);
//! - timing: answers are as fast as the host, not the device's milliseconds;
//! - unknown opcodes and requests of the wrong length: answered with a bare
//!   `YSM_INVALID_PARAMETER` status frame (the device's reaction is undocumented);
//! - `AEAD_DECRYPT_CMP` with only an AEAD (no plaintext) authenticates it; a bad MAC is
//!   `YSM_AEAD_INVALID`, a good MAC over other plaintext `YSM_MISMATCH`;
//! - while locked, every key-handle command answers `YSM_KEY_STORAGE_LOCKED`; `DB_OTP_VALIDATE`,
//!   buffer, nonce, random, echo and system info keep working;
//! - the DRBG is the host's; `RANDOM_RESEED` is accepted and ignored.

mod config;
mod engine;
mod error;
mod pty;
mod soft;

pub use config::{
    EmulatorConfig, FaultConfig, FlagSpec, HandleSpec, KeyConfig, ResolvedConfig, YubiKeyConfig,
};
pub use engine::{Engine, DB_CAPACITY};
pub use error::ConfigError;
pub use pty::{PtyEmulator, MAX_GARBAGE};
pub use soft::SoftLine;

use std::sync::{Arc, Mutex};

use crate::{Hsm, Result, Timeouts};

/// Opens an in-process soft HSM for `cfg`: the full driver start-up over a [`SoftLine`].
pub fn soft_hsm(cfg: &ResolvedConfig) -> Result<(Hsm, Arc<Mutex<Engine>>)> {
    let engine = Arc::new(Mutex::new(Engine::new(cfg)));
    let hsm = Hsm::open(Box::new(SoftLine::new(engine.clone())), Timeouts::default())?;
    Ok((hsm, engine))
}
