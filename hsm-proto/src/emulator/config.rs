//! The emulator's configuration: a TOML file (or pyhsm's soft-HSM JSON key file).
//!
//! Everything the real device's `hsm`, `keyload`, `keydis` and `dbload` console commands set
//! up can be written here, so a test can stand up the same device pyhsm's hardware test
//! suite configures.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use otp_core::keyfile;
use otp_core::redact::{json_error, scrub, toml_error};
use otp_core::SecretString;

use super::ConfigError;
use crate::{AesKey, Flags, KeyHandle, PublicId, Result, YubiKeySecret};

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
    pub master_key: Option<SecretString>,
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
    pub key: SecretString,
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
    pub aes_key: SecretString,
    /// Private uid, 12 hex digits.
    pub uid: SecretString,
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
            HandleSpec::Text(t) => Ok(KeyHandle::parse(t)?),
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

fn cfg_err(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl EmulatorConfig {
    /// Parses TOML text, or pyhsm's soft-HSM JSON (`{"32": "<hex key>"}`: every flag, no
    /// master key) when the text is a JSON object. Errors give line, column and field,
    /// never the text ([`super::redact`]).
    pub fn parse(text: &str) -> Result<EmulatorConfig, ConfigError> {
        if text.trim_start().starts_with('{') {
            return Self::parse_pyhsm_json(text);
        }
        toml::from_str(text).map_err(|e| cfg_err(toml_error(&e, text)))
    }

    fn parse_pyhsm_json(text: &str) -> Result<EmulatorConfig, ConfigError> {
        let map: BTreeMap<String, SecretString> = serde_json::from_str(text)
            .map_err(|e| cfg_err(format!("soft-HSM JSON key file: {}", json_error(&e))))?;
        if map.is_empty() {
            return Err(cfg_err("soft-HSM JSON key file contains no key handles"));
        }
        let mut keys = Vec::new();
        for (mut name, key) in map {
            let n: std::result::Result<u32, _> = name.trim().parse();
            // The name is not shown: in a file with its columns swapped it is the key.
            name.zeroize();
            let n = n.map_err(|_| {
                cfg_err("soft-HSM JSON: a key handle is not a decimal number (the file maps handle numbers to hex keys)")
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

    /// Reads a key file with [`keyfile::read_private`]: refused if other users may read it
    /// (it holds key-handle keys in clear); its text is wiped once parsed.
    pub fn load(path: &Path) -> Result<EmulatorConfig, ConfigError> {
        let text = keyfile::read_private(path)?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid(m) => cfg_err(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Checks every value and converts it.
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
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
                let b = Zeroizing::new(
                    hex::decode(m.expose().trim()).map_err(|_| cfg_err("master_key is not hex"))?,
                );
                if b.len() > 32 || b.is_empty() {
                    return Err(cfg_err(
                        "master_key must be 1 to 32 bytes (at most 64 hex digits)",
                    ));
                }
                let mut k = Zeroizing::new([0u8; 32]);
                k[..b.len()].copy_from_slice(&b);
                Some(AesKey::new(&*k)?)
            }
            None => None,
        };
        let mut keys = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            let no = i + 1;
            let kh = k.handle.resolve().map_err(|e| {
                cfg_err(format!("[[key]] #{no}: handle: {}", scrub(&e.to_string())))
            })?;
            let key =
                AesKey::from_hex(k.key.expose()).map_err(|e| cfg_err(format!("key {kh}: {e}")))?;
            let flags = k
                .flags
                .resolve()
                .map_err(|e| cfg_err(format!("key {kh}: flags: {}", scrub(&e.to_string()))))?;
            if keys.insert(kh, (key, flags, k.disabled)).is_some() {
                return Err(cfg_err(format!("key handle {kh} is configured twice")));
            }
        }
        let mut yubikeys = Vec::new();
        for (i, y) in self.yubikeys.iter().enumerate() {
            // Not shown: with the columns swapped it would be the AES key.
            let id = PublicId::new(&y.public_id).map_err(|_| {
                cfg_err(format!(
                    "[[yubikey]] #{}: public_id is not 2-16 modhex characters",
                    i + 1
                ))
            })?;
            let key = Zeroizing::new(
                hex::decode(y.aes_key.expose())
                    .map_err(|_| cfg_err(format!("yubikey {id}: aes_key is not hex")))?,
            );
            let uid = Zeroizing::new(
                hex::decode(y.uid.expose())
                    .map_err(|_| cfg_err(format!("yubikey {id}: uid is not hex")))?,
            );
            if key.len() != 16 || uid.len() != 6 {
                return Err(cfg_err(format!(
                    "yubikey {id}: aes_key must be 16 bytes and uid 6 bytes"
                )));
            }
            // Sized up front: growing it would leave an unwiped copy of the key.
            let mut bytes = Zeroizing::new(Vec::with_capacity(YubiKeySecret::LEN));
            bytes.extend_from_slice(&key);
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
            let id = PublicId::new(a)
                .map_err(|_| cfg_err("admin_yubikeys: an entry is not 2-16 modhex characters"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "fd919884f2db9928396eb20fd8f82b80b5cbc112c4d0af880e3280f08101ca70";
    const YK_KEY: &str = "00112233445566778899aabbccddeeff";
    const UID: &str = "0a0b0c0d0e0f";

    /// The error of parsing then resolving `text`.
    fn error_of(text: &str) -> String {
        match EmulatorConfig::parse(text).and_then(|c| c.resolve()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_no_secret(msg: &str, text: &str) {
        for secret in [KEY, &KEY[..16], &KEY[40..], YK_KEY, &YK_KEY[..12], UID] {
            assert!(
                !msg.contains(secret),
                "{msg:?} shows key material of\n{text}"
            );
        }
    }

    #[test]
    fn toml_and_json_errors_never_show_key_material() {
        for (text, expect) in [
            // Syntax errors on the key's line: toml's own text quotes the line.
            (format!("[[key]]\nhandle = 32\nkey = \"{KEY}\nflags = 1\n"), "line 3"),
            (format!("[[key]]\nhandle = 32\nkey = {KEY}\n"), "line 3"),
            (format!("[[key]]\nhandle = 32\nkey = \"{KEY}\" \"{KEY}\"\n"), "line 3"),
            (format!("master_key = \"{KEY}\n"), "line 1"),
            (format!("[[key]]\nhandle = 32\n{KEY} = 1\n"), "line 3"),
            // Wrong types and shifted values.
            (format!("[[key]]\nhandle = 32\nkey = [\"{KEY}\"]\n"), "line 3"),
            (format!("[[key]]\nhandle = \"{KEY}\"\nkey = \"{KEY}\"\n"), "handle"),
            (format!("[[key]]\nhandle = 32\nkey = \"{KEY}\"\nflags = \"{KEY}\"\n"), "flags"),
            (format!("master_key = [\"{KEY}\"]\n"), "line 1"),
            (format!("[[key]]\nhandle = 32\nkey = \"{KEY}\"\nflags = {{ x = \"{KEY}\" }}\n"), "line 4"),
            // Bad hex, wrong length.
            (format!("[[key]]\nhandle = 32\nkey = \"{}zz\"\n", &KEY[..62]), "key"),
            (format!("[[key]]\nhandle = 32\nkey = \"{}\"\n", &KEY[..40]), "key"),
            (format!("master_key = \"{}zz\"\n", &KEY[..62]), "master_key"),
            (format!("master_key = \"{KEY}{KEY}\"\n"), "master_key"),
            // The internal database: secrets in the wrong columns.
            (
                format!("[[yubikey]]\npublic_id = \"{YK_KEY}\"\naes_key = \"{UID}\"\nuid = \"{UID}\"\n"),
                "public_id",
            ),
            (
                format!("[[yubikey]]\npublic_id = \"cccccccccccb\"\naes_key = \"{YK_KEY}zz\"\nuid = \"{UID}\"\n"),
                "aes_key",
            ),
            (
                format!("[[yubikey]]\npublic_id = \"cccccccccccb\"\naes_key = \"{YK_KEY}\"\nuid = {UID}\n"),
                "line 4",
            ),
            (format!("admin_yubikeys = [\"{YK_KEY}\"]\n"), "admin_yubikeys"),
            // pyhsm's JSON.
            (format!("{{\"32\": \"{KEY}\",}}"), "line 1"),
            (format!("{{\"32\": \"{KEY}\"\n\"33\": \"{KEY}\"}}"), "line 2"),
            (format!("{{\"{KEY}\": \"32\"}}"), "key handle"),
            (format!("{{\"32\": [\"{KEY}\"]}}"), "line 1"),
            (format!("{{\"32\": \"{KEY}zz\"}}"), "key"),
        ] {
            let msg = error_of(&text);
            assert_no_secret(&msg, &text);
            assert!(msg.contains(expect), "{msg:?} does not say {expect:?}\n{text}");
        }
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys.toml");
        std::fs::write(&p, format!("[[key]]\nhandle = 32\nkey = \"{KEY}\"\n")).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = EmulatorConfig::load(&p).unwrap_err().to_string();
            assert!(e.contains("chmod 600"), "{mode:o}: {e}");
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(EmulatorConfig::load(&p).is_ok());
        // With the file named, the line, and no key.
        std::fs::write(&p, format!("[[key]]\nhandle = 32\nkey = \"{KEY}\n")).unwrap();
        let e = EmulatorConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("line 3"),
            "{e}"
        );
        assert_no_secret(&e, "");
    }
}
