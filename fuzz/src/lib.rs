//! What the fuzz targets share: the fixtures they stand on and one list of every command.
//!
//! The targets in `fuzz_targets/` are thin; the helpers live here so that each target reads
//! as the property it checks. Fixtures are compiled in or named by absolute path at build
//! time (from `CARGO_MANIFEST_DIR`), so a target runs from any working directory.
#![forbid(unsafe_code)]

use std::sync::{Mutex, MutexGuard};

use hsm_proto::emulator::{EmulatorConfig, ResolvedConfig};

/// The demo device: key handles 0x20 and 0x21 of `fixtures/otp-vectors.json`, unlocked.
pub const DEMO_DEVICE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/emulator/demo.toml"
));

/// pyhsm's hardware test set-up: 31 single-flag key handles, a master key (so the key store
/// starts locked), an admin YubiKey and every system flag (debug too, so `MONITOR_EXIT` reaches
/// the console). Reaches the refusal paths the demo cannot. `fixtures/fuzz/make_seeds.py`
/// reads its master key for the unlock seeds.
pub const PYHSM_TEST_DEVICE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/emulator/pyhsm-test-setup.toml"
));

/// The AEAD directory of the demo (every file format, several key-handle spellings).
pub const AEAD_STORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/aead-files/store");

/// Parses one of the device files above. They are fixtures of this repository, so failing
/// here is a broken checkout, not a finding.
pub fn device_config(toml: &str) -> ResolvedConfig {
    EmulatorConfig::parse(toml)
        .and_then(|c| c.resolve())
        .expect("fixture device file parses")
}

/// Locks a mutex, ignoring poisoning: a panic has already ended the fuzz run by then.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Calls `$f::<C>($args)` for the request type `C` whose opcode is `$op`, or evaluates
/// `$other` for opcodes with no request type (`NULL`, unknown codes).
///
/// The one list of every command, so no target forgets one when a command is added.
#[macro_export]
macro_rules! with_command {
    ($op:expr, $f:ident $args:tt, $other:expr) => {
        $crate::with_command!(@list $op, $f $args, $other;
            AeadGenerate, BufferAeadGenerate, RandomAeadGenerate, AeadDecryptCmp,
            DbYubikeyAeadStore, AeadOtpDecode, DbOtpValidate, DbYubikeyAeadStore2,
            AesEcbBlockEncrypt, AesEcbBlockDecrypt, AesEcbBlockDecryptCmp, HmacSha1Generate,
            TempKeyLoad, BufferLoad, BufferRandomLoad, NonceGet, Echo, RandomGenerate,
            RandomReseed, SystemInfoQuery, KeyStorageUnlock, HsmUnlock, KeyStoreDecrypt,
            MonitorExit)
    };
    (@list $op:expr, $f:ident $args:tt, $other:expr; $($ty:ident),*) => {
        match $op {
            $(o if o == <hsm_proto::cmd::$ty as hsm_proto::cmd::Command>::OPCODE => {
                $f::<hsm_proto::cmd::$ty> $args
            })*
            _ => $other,
        }
    };
}
