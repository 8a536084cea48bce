//! The emulator's configuration: a TOML file (or pyhsm's soft-HSM JSON key file).
//!
//! Everything the real device's `hsm`, `keyload`, `keydis` and `dbload` console commands set
//! up can be written here, so a test can stand up the same device pyhsm's hardware test
//! suite configures.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;

use crate::{AesKey, Error, Flags, KeyHandle, PublicId, Result, YubiKeySecret};

/// A parsed configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    /// Firmware version to report and model, `major.minor.build` (default `1.0.4`).
    #[serde(default = "default_firmware")]
    pub firmware: String,
    /// System uid, 24 hex digits (default: derived from nothing, all `0x55`).
    #[serde(default)]
    pub system_uid: Option<String>,
    /// System-wide flags (`hsm <flags>`); default `0x7fffffff` (all but debug mode).
    #[serde(default)]
    pub system_flags: Option<FlagSpec>,
    /// Master key (hex, up to 64 digits, zero-padded). When set, the key store is locked at
    /// every power-on until `KEY_STORE_DECRYPT` gives it.
    #[serde(default)]
    pub master_key: Option<String>,
    /// Public ids of admin YubiKeys (each must also be a `[[yubikey]]`): when any is set,
    /// `HSM_UNLOCK` with an OTP of one of them is needed after the master key.
    #[serde(default)]
    pub admin_yubikeys: Vec<String>,
    /// Key store entries.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyConfig>,
    /// Internal YubiKey database entries.
    #[serde(default, rename = "yubikey")]
    pub yubikeys: Vec<YubiKeyConfig>,
    /// Fault knobs active from start-up.
    #[serde(default)]
    pub faults: FaultConfig,
}

/// One key handle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The handle: a number or any pyhsm spelling (`"0x20"`, `"KSM1"`).
    pub handle: HandleSpec,
    /// The key, hex (32 bytes on a real device; 16 and 24 also accepted).
    pub key: String,
    /// Permission flags.
    #[serde(default = "all_flags")]
    pub flags: FlagSpec,
    /// Disabled with `keydis`: every use answers FUNCTION_DISABLED.
    #[serde(default)]
    pub disabled: bool,
}

/// One internal-database YubiKey (`dbload`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YubiKeyConfig {
    /// Modhex public id (12 characters).
    pub public_id: String,
    /// AES-128 key, hex.
    pub aes_key: String,
    /// Private uid, 12 hex digits.
    pub uid: String,
    /// Stored usage counter (default 0).
    #[serde(default)]
    pub use_ctr: u16,
    /// Stored session counter (default 0).
    #[serde(default)]
    pub session_ctr: u8,
}

/// Faults the emulator shows from start-up; the same knobs can be turned at run time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Read requests but never answer.
    #[serde(default)]
    pub stall: bool,
    /// Sit at the configuration console.
    #[serde(default)]
    pub config_mode: bool,
    /// Put this many garbage bytes on the line before the next response.
    #[serde(default)]
    pub garbage: usize,
}

/// A key handle written as a number or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HandleSpec {
    /// `handle = 32`
    Number(u32),
    /// `handle = "0x20"`
    Text(String),
}

/// Flags written as a number, a name or number string, or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FlagSpec {
    /// `flags = 0x20000002`
    Number(u32),
    /// `flags = "ALL"`, `"0x40"`, `"AEAD_YUBIKEY_OTP_DECODE"`
    Text(String),
    /// `flags = ["AEAD_GENERATE", "USER_NONCE", 64]`
    List(Vec<FlagSpec>),
}

fn default_firmware() -> String {
    "1.0.4".into()
}

fn all_flags() -> FlagSpec {
    FlagSpec::Number(0xffff_ffff)
}

impl FlagSpec {
    /// The flag word.
    pub fn resolve(&self) -> Result<Flags> {
        match self {
            FlagSpec::Number(n) => Ok(Flags(*n)),
            FlagSpec::Text(t) if t.eq_ignore_ascii_case("all") => Ok(Flags::ALL),
            FlagSpec::Text(t) => Flags::parse_one(t),
            FlagSpec::List(l) => l.iter().try_fold(Flags(0), |acc, f| Ok(acc | f.resolve()?)),
        }
    }
}

impl HandleSpec {
    /// The handle.
    pub fn resolve(&self) -> Result<KeyHandle> {
        match self {
            HandleSpec::Number(n) => Ok(KeyHandle(*n)),
            HandleSpec::Text(t) => KeyHandle::parse(t),
        }
    }
}

/// A configuration resolved into typed values, ready to build an engine from.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// `(major, minor, build)`.
    pub firmware: (u8, u8, u8),
    /// System uid.
    pub system_uid: [u8; 12],
    /// System flags.
    pub system_flags: Flags,
    /// Master key, zero-padded to 32 bytes.
    pub master_key: Option<AesKey>,
    /// Admin YubiKeys.
    pub admin_yubikeys: Vec<PublicId>,
    /// Keys: handle → (key, flags, disabled).
    pub keys: BTreeMap<KeyHandle, (AesKey, Flags, bool)>,
    /// Internal database: public id → (secret, use counter, session counter).
    pub yubikeys: Vec<(PublicId, YubiKeySecret, u16, u8)>,
    /// Start-up faults.
    pub faults: FaultConfig,
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl EmulatorConfig {
    /// Parses TOML text, or pyhsm's soft-HSM JSON (`{"32": "<hex key>"}`: every flag, no
    /// master key) when the text is a JSON object.
    pub fn parse(text: &str) -> Result<EmulatorConfig> {
        if text.trim_start().starts_with('{') {
            return Self::parse_pyhsm_json(text);
        }
        toml::from_str(text).map_err(|e| cfg_err(e.to_string()))
    }

    fn parse_pyhsm_json(text: &str) -> Result<EmulatorConfig> {
        let map: BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|e| cfg_err(format!("soft-HSM JSON key file: {e}")))?;
        if map.is_empty() {
            return Err(cfg_err("soft-HSM JSON key file contains no key handles"));
        }
        let mut keys = Vec::new();
        for (name, key) in map {
            let n: u32 = name.trim().parse().map_err(|_| {
                cfg_err(format!(
                    "soft-HSM JSON key handle {name:?} is not a decimal number"
                ))
            })?;
            keys.push(KeyConfig {
                handle: HandleSpec::Number(n),
                key,
                flags: all_flags(),
                disabled: false,
            });
        }
        Ok(EmulatorConfig {
            firmware: default_firmware(),
            system_uid: None,
            system_flags: None,
            master_key: None,
            admin_yubikeys: Vec::new(),
            keys,
            yubikeys: Vec::new(),
            faults: FaultConfig::default(),
        })
    }

    /// Reads a key file. Refuses a file other users can read: it holds key-handle keys in
    /// clear.
    pub fn load(path: &Path) -> Result<EmulatorConfig> {
        let meta =
            std::fs::metadata(path).map_err(|e| cfg_err(format!("{}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(cfg_err(format!(
                "{} is world-readable and holds keys in clear; run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| cfg_err(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => cfg_err(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks every value and converts it.
    pub fn resolve(&self) -> Result<ResolvedConfig> {
        let v: Vec<u8> = self
            .firmware
            .split('.')
            .map(|p| p.parse::<u8>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                cfg_err(format!(
                    "firmware {:?} is not major.minor.build",
                    self.firmware
                ))
            })?;
        let firmware = match v[..] {
            [a, b, c] => (a, b, c),
            _ => {
                return Err(cfg_err(format!(
                    "firmware {:?} is not major.minor.build",
                    self.firmware
                )))
            }
        };
        let mut system_uid = [0x55u8; 12];
        if let Some(u) = &self.system_uid {
            let b = hex::decode(u).map_err(|_| cfg_err("system_uid is not hex"))?;
            if b.len() != 12 {
                return Err(cfg_err("system_uid must be 12 bytes (24 hex digits)"));
            }
            system_uid.copy_from_slice(&b);
        }
        let system_flags = match &self.system_flags {
            Some(f) => f.resolve()?,
            None => Flags(0x7fff_ffff),
        };
        let master_key = match &self.master_key {
            Some(m) => {
                let b = zeroize::Zeroizing::new(
                    hex::decode(m.trim()).map_err(|_| cfg_err("master_key is not hex"))?,
                );
                if b.len() > 32 || b.is_empty() {
                    return Err(cfg_err(
                        "master_key must be 1 to 32 bytes (at most 64 hex digits)",
                    ));
                }
                let mut k = zeroize::Zeroizing::new([0u8; 32]);
                k[..b.len()].copy_from_slice(&b);
                Some(AesKey::new(&*k)?)
            }
            None => None,
        };
        let mut keys = BTreeMap::new();
        for k in &self.keys {
            let kh = k.handle.resolve()?;
            let key = AesKey::from_hex(&k.key).map_err(|e| cfg_err(format!("key {kh}: {e}")))?;
            if keys
                .insert(kh, (key, k.flags.resolve()?, k.disabled))
                .is_some()
            {
                return Err(cfg_err(format!("key handle {kh} is configured twice")));
            }
        }
        let mut yubikeys = Vec::new();
        for y in &self.yubikeys {
            let id = PublicId::new(&y.public_id)?;
            let key = hex::decode(&y.aes_key)
                .map_err(|_| cfg_err(format!("yubikey {id}: aes_key is not hex")))?;
            let uid = hex::decode(&y.uid)
                .map_err(|_| cfg_err(format!("yubikey {id}: uid is not hex")))?;
            if key.len() != 16 || uid.len() != 6 {
                return Err(cfg_err(format!(
                    "yubikey {id}: aes_key must be 16 bytes and uid 6 bytes"
                )));
            }
            let mut bytes = key;
            bytes.extend_from_slice(&uid);
            yubikeys.push((
                id,
                YubiKeySecret::from_bytes(&bytes)?,
                y.use_ctr,
                y.session_ctr,
            ));
        }
        let mut admin_yubikeys = Vec::new();
        for a in &self.admin_yubikeys {
            let id = PublicId::new(a)?;
            if !yubikeys.iter().any(|(y, ..)| *y == id) {
                return Err(cfg_err(format!(
                    "admin YubiKey {id} is not in the [[yubikey]] database"
                )));
            }
            admin_yubikeys.push(id);
        }
        Ok(ResolvedConfig {
            firmware,
            system_uid,
            system_flags,
            master_key,
            admin_yubikeys,
            keys,
            yubikeys,
            faults: self.faults.clone(),
        })
    }
}
