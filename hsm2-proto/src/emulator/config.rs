//! The software YubiHSM 2's configuration: a TOML file that adds objects to a device in its
//! factory state.
//!
//! ```toml
//! serial = 7550001            # reported by Device Info (default 7550001)
//! session-timeout = 30        # seconds a session may sit idle (default 30)
//! factory-key = true          # keep authentication key 1, password "password" (default)
//! rewrap-renews-nonce = false # Rewrap OTP AEAD draws a new 6-byte nonce (default: keeps it;
//!                             # Yubico does not say which a real device does)
//! force-audit = "on"          # off (default), on or fixed: a full audit log refuses commands
//! command-audit = "all"       # commands logged: "all", or names ("decrypt-otp,set-log-index");
//!                             # default none, as a factory firmware 2.3.1
//!
//! [[authentication-key]]
//! id = 2
//! label = "ksm decrypt"
//! password = "a long passphrase"  # or key = 64 hex digits: K-ENC then K-MAC
//! capabilities = "decrypt-otp"    # yubihsm-shell's spelling, "0x…", or "all"
//! delegated = "none"              # default
//! domains = "1"                   # "1,2,16" or "all"
//!
//! [[otp-aead-key]]
//! id = 0x10
//! key = "…32, 48 or 64 hex digits…"   # AES-128/192/256
//! nonce-id = "00200000"               # the 4 bytes as on the wire (see NonceId)
//! capabilities = "decrypt-otp:randomize-otp-aead"
//! domains = "1"
//! ```
//!
//! The file holds keys in clear, so it is read by [`otp_core::keyfile::read_private`]
//! (refused if the group or others may access it, bounded, wiped), and no error quotes its
//! text: a parser's message goes through [`otp_core::redact`], and a value's
//! error names the table, its position and the field.

use std::path::Path;
use std::time::Duration;

use otp_core::redact::toml_error;
use otp_core::SecretString;
use serde::Deserialize;

use super::{EmulatorError, AUDITABLE_COMMANDS, MAX_OBJECTS};
use crate::cmd::AuditSetting;
use crate::{
    Algorithm, AuthKey, Capabilities, CommandCode, Domains, Label, NonceId, ObjectId,
    OtpAeadKeyBytes,
};

/// Serial number a device reports unless configured.
pub const DEFAULT_SERIAL: u32 = 7_550_001;
/// How long a session may sit idle (the figure yubihsm.rs works with; shared notes §3.5).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// The factory authentication key's id and password.
pub const FACTORY_KEY_ID: ObjectId = ObjectId(1);
/// The factory authentication key's password.
pub const FACTORY_PASSWORD: &str = "password";
/// The factory authentication key's label (what a new YubiHSM 2 calls it).
pub const FACTORY_LABEL: &str = "DEFAULT AUTHKEY CHANGE THIS ASAP";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    serial: Option<u32>,
    session_timeout: Option<u64>,
    rewrap_renews_nonce: Option<bool>,
    factory_key: Option<bool>,
    force_audit: Option<String>,
    command_audit: Option<String>,
    #[serde(default)]
    authentication_key: Vec<AuthKeyEntry>,
    #[serde(default)]
    otp_aead_key: Vec<OtpKeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct AuthKeyEntry {
    id: u16,
    #[serde(default)]
    label: String,
    password: Option<SecretString>,
    key: Option<SecretString>,
    capabilities: String,
    #[serde(default)]
    delegated: Option<String>,
    domains: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct OtpKeyEntry {
    id: u16,
    #[serde(default)]
    label: String,
    key: SecretString,
    nonce_id: String,
    capabilities: String,
    domains: String,
}

/// An authentication key to put on the device.
#[derive(Debug, Clone)]
pub struct AuthKeyConfig {
    /// Its id (1 to 0xfffe).
    pub id: ObjectId,
    /// Its label.
    pub label: Label,
    /// K-ENC and K-MAC.
    pub key: AuthKey,
    /// What its sessions may do.
    pub capabilities: Capabilities,
    /// What objects its sessions create may be given.
    pub delegated: Capabilities,
    /// Its domains.
    pub domains: Domains,
}

/// An otp-aead-key to put on the device.
#[derive(Debug, Clone)]
pub struct OtpAeadKeyConfig {
    /// Its id (1 to 0xfffe).
    pub id: ObjectId,
    /// Its label.
    pub label: Label,
    /// The AES key; its length chooses the algorithm.
    pub key: OtpAeadKeyBytes,
    /// The 4 bytes at the front of every CCM nonce it makes.
    pub nonce_id: NonceId,
    /// What it may be used for.
    pub capabilities: Capabilities,
    /// Its domains.
    pub domains: Domains,
}

impl OtpAeadKeyConfig {
    /// The algorithm its key length stands for.
    pub fn algorithm(&self) -> Algorithm {
        Algorithm::for_otp_key_len(self.key.expose().len()).unwrap_or(Algorithm::Aes128YubicoOtp)
    }
}

/// A device: settings and the objects it starts with.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Serial number.
    pub serial: u32,
    /// Idle time after which a session is gone.
    pub session_timeout: Duration,
    /// Rewrap OTP AEAD gives the AEAD a fresh nonce instead of keeping its own. Yubico does
    /// not say which a real device does (shared protocol notes §5.1), so the tools must cope
    /// with both; this lets their tests show that.
    pub rewrap_renews_nonce: bool,
    /// The `force-audit` option the device starts with (a factory device's is off).
    pub force_audit: AuditSetting,
    /// The `command-audit` settings it starts with, as Set Option takes them: pairs of
    /// command byte and setting (empty: every command off, as a factory device).
    pub command_audit: Vec<u8>,
    /// Authentication keys, the factory key first when kept.
    pub auth_keys: Vec<AuthKeyConfig>,
    /// OTP AEAD keys.
    pub otp_aead_keys: Vec<OtpAeadKeyConfig>,
}

impl DeviceConfig {
    /// A device as it leaves the factory: authentication key 1, password `password`, every
    /// capability delegated and usable, all 16 domains.
    pub fn factory() -> DeviceConfig {
        DeviceConfig {
            serial: DEFAULT_SERIAL,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            rewrap_renews_nonce: false,
            force_audit: AuditSetting::Off,
            command_audit: Vec::new(),
            auth_keys: vec![factory_key()],
            otp_aead_keys: Vec::new(),
        }
    }

    /// Reads a private TOML file (see the module doc).
    pub fn load(path: &Path) -> Result<DeviceConfig, EmulatorError> {
        let text = otp_core::keyfile::read_private(path)?;
        DeviceConfig::parse(&text).map_err(|e| match e {
            EmulatorError::Config(what) => {
                EmulatorError::Config(format!("{}: {what}", path.display()))
            }
            other => other,
        })
    }

    /// Parses the TOML text; errors say where, never what was written.
    pub fn parse(text: &str) -> Result<DeviceConfig, EmulatorError> {
        let file: File =
            toml::from_str(text).map_err(|e| EmulatorError::Config(toml_error(&e, text)))?;
        let mut cfg = DeviceConfig {
            serial: file.serial.unwrap_or(DEFAULT_SERIAL),
            session_timeout: Duration::from_secs(
                file.session_timeout
                    .unwrap_or(DEFAULT_SESSION_TIMEOUT.as_secs()),
            ),
            rewrap_renews_nonce: file.rewrap_renews_nonce.unwrap_or(false),
            force_audit: match file.force_audit.as_deref() {
                None => AuditSetting::Off,
                Some(t) => audit_setting(t)
                    .ok_or_else(|| invalid("force-audit", 0, "must be off, on or fixed"))?,
            },
            command_audit: match file.command_audit.as_deref() {
                None => Vec::new(),
                Some(t) => command_audit(t).ok_or_else(|| {
                    invalid(
                        "command-audit",
                        0,
                        "must be \"all\" or command names the device logs",
                    )
                })?,
            },
            auth_keys: Vec::new(),
            otp_aead_keys: Vec::new(),
        };
        if cfg.session_timeout.is_zero() || cfg.session_timeout > Duration::from_secs(86_400) {
            return Err(invalid("session-timeout", 0, "must be 1 to 86400 seconds"));
        }
        if file.factory_key.unwrap_or(true) {
            cfg.auth_keys.push(factory_key());
        }
        for (i, e) in file.authentication_key.iter().enumerate() {
            let n = i + 1;
            let at =
                |field: &'static str, why: &str| invalid_entry("authentication-key", n, field, why);
            let key = match (&e.password, &e.key) {
                (Some(p), None) => AuthKey::from_password(p.expose().as_bytes()),
                (None, Some(k)) => {
                    let bytes =
                        hex_secret(k.expose(), 32).ok_or_else(|| at("key", "not 64 hex digits"))?;
                    let mut enc = [0u8; 16];
                    let mut mac = [0u8; 16];
                    enc.copy_from_slice(&bytes[..16]);
                    mac.copy_from_slice(&bytes[16..]);
                    AuthKey::new(enc, mac)
                }
                _ => return Err(at("password", "give exactly one of password and key")),
            };
            cfg.auth_keys.push(AuthKeyConfig {
                id: object_id(e.id).ok_or_else(|| at("id", "must be 1 to 0xfffe"))?,
                label: Label::new(&e.label).map_err(|_| at("label", "longer than 40 bytes"))?,
                key,
                capabilities: capabilities(&e.capabilities)
                    .ok_or_else(|| at("capabilities", "not a capability list"))?,
                delegated: capabilities(e.delegated.as_deref().unwrap_or("none"))
                    .ok_or_else(|| at("delegated", "not a capability list"))?,
                domains: domains(&e.domains)
                    .ok_or_else(|| at("domains", "not a domain list (1 to 16, or all)"))?,
            });
        }
        for (i, e) in file.otp_aead_key.iter().enumerate() {
            let n = i + 1;
            let at = |field: &'static str, why: &str| invalid_entry("otp-aead-key", n, field, why);
            let bytes = hex_secret(e.key.expose(), 0)
                .ok_or_else(|| at("key", "not 32, 48 or 64 hex digits"))?;
            let key = OtpAeadKeyBytes::new(&bytes)
                .map_err(|_| at("key", "not 32, 48 or 64 hex digits"))?;
            let nonce = hex::decode_to_array(&e.nonce_id)
                .ok_or_else(|| at("nonce-id", "not 8 hex digits (the 4 bytes as on the wire)"))?;
            cfg.otp_aead_keys.push(OtpAeadKeyConfig {
                id: object_id(e.id).ok_or_else(|| at("id", "must be 1 to 0xfffe"))?,
                label: Label::new(&e.label).map_err(|_| at("label", "longer than 40 bytes"))?,
                key,
                nonce_id: NonceId(nonce),
                capabilities: capabilities(&e.capabilities)
                    .ok_or_else(|| at("capabilities", "not a capability list"))?,
                domains: domains(&e.domains)
                    .ok_or_else(|| at("domains", "not a domain list (1 to 16, or all)"))?,
            });
        }
        for (kind, ids) in [
            (
                "authentication-key",
                cfg.auth_keys.iter().map(|k| k.id).collect::<Vec<_>>(),
            ),
            (
                "otp-aead-key",
                cfg.otp_aead_keys.iter().map(|k| k.id).collect(),
            ),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for id in ids {
                if !seen.insert(id) {
                    return Err(EmulatorError::Config(format!(
                        "two {kind} objects have id {id}"
                    )));
                }
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Refuses a configuration a YubiHSM 2 cannot hold: more than [`MAX_OBJECTS`] objects
    /// (the factory key counts).
    pub fn check(&self) -> Result<(), EmulatorError> {
        let n = self.auth_keys.len() + self.otp_aead_keys.len();
        if n > MAX_OBJECTS {
            return Err(EmulatorError::Config(format!(
                "{n} objects (the factory key counts unless factory-key = false), \
                 but a YubiHSM 2 holds at most {MAX_OBJECTS}"
            )));
        }
        Ok(())
    }
}

/// The authentication key a new (or reset) device holds.
pub(crate) fn factory_key() -> AuthKeyConfig {
    AuthKeyConfig {
        id: FACTORY_KEY_ID,
        label: Label::new(FACTORY_LABEL).unwrap_or_default(),
        key: AuthKey::from_password(FACTORY_PASSWORD.as_bytes()),
        capabilities: Capabilities::all_known(),
        delegated: Capabilities::all_known(),
        domains: Domains::ALL,
    }
}

fn invalid(field: &str, _n: usize, why: &str) -> EmulatorError {
    EmulatorError::Config(format!("{field}: {why}"))
}

fn invalid_entry(table: &str, n: usize, field: &str, why: &str) -> EmulatorError {
    EmulatorError::Config(format!("[[{table}]] number {n}: {field}: {why}"))
}

fn audit_setting(text: &str) -> Option<AuditSetting> {
    match AuditSetting::from_name(text.trim())? {
        AuditSetting::Unknown(_) => None,
        s => Some(s),
    }
}

/// `all` (every command the device logs) or names of such commands, separated by commas
/// or colons; each set to on.
fn command_audit(text: &str) -> Option<Vec<u8>> {
    let codes: Vec<u8> = if text.trim() == "all" {
        AUDITABLE_COMMANDS.to_vec()
    } else {
        text.split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|n| {
                let c = CommandCode::from_name(n)?.to_u8();
                AUDITABLE_COMMANDS.contains(&c).then_some(c)
            })
            .collect::<Option<_>>()?
    };
    (!codes.is_empty()).then(|| {
        codes
            .into_iter()
            .flat_map(|c| [c, AuditSetting::On.to_u8()])
            .collect()
    })
}

/// Ids 0 (the device chooses) and 0xffff are not ids an object can have.
fn object_id(id: u16) -> Option<ObjectId> {
    (1..=0xfffe).contains(&id).then_some(ObjectId(id))
}

/// `all`, `none`, or [`Capabilities::parse`]'s spelling.
pub(crate) fn capabilities(text: &str) -> Option<Capabilities> {
    match text.trim() {
        "all" => Some(Capabilities::all_known()),
        "none" | "" => Some(Capabilities::NONE),
        t => Capabilities::parse(t).ok(),
    }
}

/// `all`, or domain numbers separated by commas or colons; at least one.
pub(crate) fn domains(text: &str) -> Option<Domains> {
    if text.trim() == "all" {
        return Some(Domains::ALL);
    }
    let mut d = Domains(0);
    for part in text
        .split([',', ':'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        d = Domains(d.0 | Domains::domain(part.parse().ok()?)?.0);
    }
    (d.0 != 0).then_some(d)
}

/// Hex digits as secret bytes (`len` bytes, or any even number when `len` is 0).
fn hex_secret(text: &str, len: usize) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let bytes = zeroize::Zeroizing::new(hex::decode_vec(text.trim())?);
    (len == 0 || bytes.len() == len).then_some(bytes)
}

/// Hex decoding with no error text (a message could quote a key).
mod hex {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }

    pub(super) fn decode_vec(text: &str) -> Option<Vec<u8>> {
        let b = text.as_bytes();
        if b.len() % 2 != 0 {
            return None;
        }
        b.chunks(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect()
    }

    pub(super) fn decode_to_array<const N: usize>(text: &str) -> Option<[u8; N]> {
        decode_vec(text.trim())?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::ConnectorEmulator;

    #[test]
    fn a_file_adds_keys_to_the_factory_state() {
        let cfg = DeviceConfig::parse(
            r#"
            serial = 42
            session-timeout = 5
            [[authentication-key]]
            id = 2
            label = "ksm"
            password = "pw"
            capabilities = "decrypt-otp"
            domains = "1,2"
            [[otp-aead-key]]
            id = 0x10
            key = "808182838485868788898a8b8c8d8e8f"
            nonce-id = "78563412"
            capabilities = "decrypt-otp:randomize-otp-aead"
            domains = "all"
            "#,
        )
        .unwrap();
        assert_eq!(cfg.serial, 42);
        assert_eq!(cfg.session_timeout, Duration::from_secs(5));
        assert_eq!(cfg.auth_keys.len(), 2);
        assert_eq!(cfg.auth_keys[0].id, FACTORY_KEY_ID);
        assert_eq!(cfg.auth_keys[1].key, AuthKey::from_password(b"pw"));
        assert_eq!(cfg.auth_keys[1].domains, Domains(0b11));
        assert_eq!(cfg.auth_keys[1].delegated, Capabilities::NONE);
        let k = &cfg.otp_aead_keys[0];
        assert_eq!(k.nonce_id, NonceId([0x78, 0x56, 0x34, 0x12]));
        assert_eq!(k.algorithm(), Algorithm::Aes128YubicoOtp);
        assert!(k.capabilities.contains(crate::Capability::RandomizeOtpAead));
        assert!(!k.capabilities.contains(crate::Capability::CreateOtpAead));
    }

    #[test]
    fn errors_say_where_and_never_quote_a_key() {
        let key = "0123456789abcdef0123456789abcdef01";
        for text in [
            format!("[[otp-aead-key]]\nid = 1\nkey = \"{key}\"\nnonce-id = \"00000000\"\ncapabilities = \"all\"\ndomains = \"1\"\n"),
            format!("[[otp-aead-key]]\nid = 1\nkey = {key}\n"),
            format!("[[authentication-key]]\nid = 2\nkey = \"{key}\"\ncapabilities = \"all\"\ndomains = \"1\"\n"),
            format!("[[otp-aead-key]]\nid = 1\nkey = \"{}\"\nnonce-id = \"00000000\"\ncapabilities = \"all\"\ndomains = \"1\"\nsecret = \"{key}\"\n", &key[..32]),
        ] {
            let e = DeviceConfig::parse(&text).unwrap_err().to_string();
            assert!(!e.contains("0123456789"), "{e}");
        }
        let e = DeviceConfig::parse("[[authentication-key]]\nid = 0\npassword = \"x\"\ncapabilities = \"all\"\ndomains = \"1\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[authentication-key]] number 1: id"), "{e}");
        assert!(DeviceConfig::parse("factory-key = false\n")
            .unwrap()
            .auth_keys
            .is_empty());
        assert!(DeviceConfig::parse("session-timeout = 0\n").is_err());
        let two = "[[otp-aead-key]]\nid = 1\nkey = \"00000000000000000000000000000000\"\nnonce-id = \"00000000\"\ncapabilities = \"all\"\ndomains = \"1\"\n";
        assert!(DeviceConfig::parse(&two.repeat(2))
            .unwrap_err()
            .to_string()
            .contains("id 0x0001"));
    }

    #[test]
    fn audit_options_are_read_and_checked() {
        let cfg = DeviceConfig::parse(
            "force-audit = \"on\"\ncommand-audit = \"decrypt-otp,set-log-index\"\n",
        )
        .unwrap();
        assert_eq!(cfg.force_audit, AuditSetting::On);
        assert_eq!(cfg.command_audit, vec![0x60, 1, 0x67, 1]);
        let all = DeviceConfig::parse("command-audit = \"all\"\n").unwrap();
        assert_eq!(all.command_audit.len(), 2 * AUDITABLE_COMMANDS.len());
        let factory = DeviceConfig::parse("").unwrap();
        assert_eq!(factory.force_audit, AuditSetting::Off);
        assert!(factory.command_audit.is_empty());
        for bad in [
            "force-audit = \"yes\"\n",
            "command-audit = \"nonsense\"\n",
            "command-audit = \"error\"\n",
            "command-audit = \"\"\n",
        ] {
            let e = DeviceConfig::parse(bad).unwrap_err().to_string();
            assert!(e.contains("audit"), "{bad}: {e}");
        }
    }

    #[test]
    fn domain_and_capability_spellings() {
        assert_eq!(domains("all"), Some(Domains::ALL));
        assert_eq!(domains("1,16"), Some(Domains(0x8001)));
        assert_eq!(domains(""), None);
        assert_eq!(domains("17"), None);
        assert_eq!(capabilities("none"), Some(Capabilities::NONE));
        assert_eq!(capabilities("nonsense"), None);
    }

    fn otp_keys(n: usize) -> String {
        (1..=n)
            .map(|id| {
                format!(
                    "[[otp-aead-key]]\nid = {id}\nkey = \"{:032x}\"\nnonce-id = \"00000000\"\n\
                     capabilities = \"decrypt-otp\"\ndomains = \"1\"\n",
                    id
                )
            })
            .collect()
    }

    #[test]
    fn a_config_holds_at_most_max_objects() {
        // The factory key and 255 others: exactly full.
        let full = DeviceConfig::parse(&otp_keys(MAX_OBJECTS - 1)).unwrap();
        assert_eq!(full.auth_keys.len() + full.otp_aead_keys.len(), MAX_OBJECTS);
        let err = DeviceConfig::parse(&otp_keys(MAX_OBJECTS)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "YubiHSM 2 emulator configuration: 257 objects (the factory key counts unless \
             factory-key = false), but a YubiHSM 2 holds at most 256"
        );
        let without_factory = format!("factory-key = false\n{}", otp_keys(MAX_OBJECTS));
        assert!(DeviceConfig::parse(&without_factory).is_ok());
        // A configuration built in code is held to it too.
        let mut built = full.clone();
        built.otp_aead_keys.push(built.otp_aead_keys[0].clone());
        assert!(built.check().is_err());
        assert!(ConnectorEmulator::start("127.0.0.1:0".parse().unwrap(), &built).is_err());
    }
}
