//! The configuration console's text: its prompts, the questions `hsm` asks, and the line
//! formats of `keyload`, `keylist`, `dbload`, `dblist` and `sysinfo`.
//!
//! One home for what the emulator prints and what a tool that types at a real YubiHSM 1
//! (`ksm provision`) reads back. Where Yubico's sources show a text (pyhsm's
//! `test/configure_hsm.py` and `test/README.adoc`, quoted in the protocol notes §1.7) it is
//! that text; where they are silent the plainest form is chosen and marked "ours" below.
//! Nothing here ever formats a key into a message other than the line that loads it.

use std::fmt;

use zeroize::Zeroizing;

use crate::{AesKey, Flags, KeyHandle, PublicId, YubiKeySecret};

/// ESC ends `keyload` and `dbload`.
pub const ESC: u8 = 0x1b;

/// The prompt prefixes pyhsm's configuration-mode check knows (`^(NO_CFG|WSAPI|HSM).*> `).
pub const PROMPT_PREFIXES: [&str; 3] = ["NO_CFG", "WSAPI", "HSM"];

/// The console's prompt, which tells the device's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Erased (`zap`): no configuration.
    NoConfig,
    /// Configured, key store decrypted, nothing uncommitted.
    Hsm,
    /// The key table was edited and not yet written with `keycommit`.
    KeysChanged,
    /// A master key is set and the key store has not been decrypted since power-on.
    KeysNotDecrypted,
}

impl Prompt {
    /// Every prompt, for lookups.
    pub const ALL: [Prompt; 4] = [
        Prompt::NoConfig,
        Prompt::Hsm,
        Prompt::KeysChanged,
        Prompt::KeysNotDecrypted,
    ];

    /// The prompt as printed, trailing space included.
    pub fn text(self) -> &'static str {
        match self {
            Prompt::NoConfig => "NO_CFG> ",
            Prompt::Hsm => "HSM> ",
            Prompt::KeysChanged => "HSM (keys changed)> ",
            Prompt::KeysNotDecrypted => "HSM (keys not decrypted)> ",
        }
    }

    /// The prompt `text` ends with, if its last line is exactly one (what a client waits for
    /// after each command; echoed input after a prompt does not count).
    pub fn at_end(text: &str) -> Option<Prompt> {
        let last = text.rsplit(['\n', '\r']).next()?;
        Prompt::ALL.into_iter().find(|p| last == p.text())
    }
}

/// A console prompt anywhere in `text`, as pyhsm recognises one: a line starting `NO_CFG`,
/// `WSAPI` or `HSM` and ending in `>` (or with `> ` before echoed input). Returns the line.
pub fn find_prompt(text: &str) -> Option<String> {
    text.split(['\r', '\n'])
        .map(|l| l.trim_matches(|c: char| c.is_control() || c == ' '))
        .find(|l| {
            PROMPT_PREFIXES.iter().any(|p| l.starts_with(p))
                && (l.ends_with('>') || l.contains("> "))
        })
        .map(str::to_string)
}

/// `zap` and `hsm` ask this before erasing; the answer `yes` goes on.
pub const CONFIRM_ERASE: &str = "Confirm current config being erased (type yes) ";
/// Printed when the erase (and, for `hsm`, the new configuration) is done.
pub const ERASE_DONE: &str = "- wait - done";
/// `hsm` asks for the configuration password (`g` generates one).
pub const ASK_CFG_PASSWORD: &str = "Enter cfg password (g to generate) ";
/// `hsm` on firmware 1.x asks for the master key (`g` generates one; empty: none).
pub const ASK_MASTER_KEY: &str = "Enter master key (g to generate) ";
/// `hsm` on firmware 0.9.x asks for the HSM password instead (ours: the sources show only
/// that a second password line follows).
pub const ASK_HSM_PASSWORD: &str = "Enter HSM password (g to generate) ";
/// The most admin YubiKeys `hsm` takes.
pub const MAX_ADMIN_YUBIKEYS: usize = 8;
/// `keycommit`'s answer.
pub const COMMIT_DONE: &str = "- Done";
/// The widest `Enabled flags …` line: the device cuts the name list there (pyhsm's
/// README shows a 120-character line ending in a cut name).
pub const FLAGS_LINE_WIDTH: usize = 120;

/// `hsm` asks for admin YubiKey `n` (1-based) of [`MAX_ADMIN_YUBIKEYS`]; an empty line ends
/// the list.
pub fn ask_admin_id(n: usize) -> String {
    format!("Enter admin Yubikey public id {n:03}/{MAX_ADMIN_YUBIKEYS:03} (enter when done) ")
}

/// `hsm <flags>`'s first line: the flags and their names, cut at [`FLAGS_LINE_WIDTH`].
pub fn enabled_flags_line(flags: Flags) -> String {
    let names: Vec<&str> = crate::flags::FLAG_NAMES
        .iter()
        .filter(|(bit, _)| flags.0 & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    let mut line = format!("Enabled flags {:08x} = {}", flags.0, names.join(","));
    line.truncate(FLAGS_LINE_WIDTH);
    line
}

/// `keyload`'s banner: which flags the keys typed next get (set with `flags <hex>`).
pub fn keyload_banner(flags: Flags) -> String {
    format!(
        "keyload - Load key data now using flags {:08x}. Press ESC to quit",
        flags.0
    )
}

/// `dbload`'s banner.
pub const DBLOAD_BANNER: &str = "dbload - Load id data now. Press ESC to quit";

/// What `keyload` answers a stored key line with.
pub fn stored_ok(kh: KeyHandle) -> String {
    format!("{:08x} - stored ok", kh.0)
}

/// What `dbload` answers a stored entry line with.
pub fn inserted_ok(index: u32) -> String {
    format!("{index:05} - inserted ok")
}

/// A line for `keyload`: `KKKKKKKK,<64 hex digits>`. Holds the key, so the text it formats
/// is wiped when dropped and `Debug` shows only the handle.
pub struct KeyLoadLine {
    /// The slot.
    pub handle: KeyHandle,
    /// The key (32 bytes on the device; shorter keys are zero-padded, as pyhsm's test suite
    /// pads its 20-byte HMAC key).
    pub key: AesKey,
}

impl KeyLoadLine {
    /// The line as typed, without its carriage return.
    pub fn to_line(&self) -> Zeroizing<String> {
        let mut k = Zeroizing::new([0u8; 32]);
        k[..self.key.expose().len()].copy_from_slice(self.key.expose());
        Zeroizing::new(format!("{:08x},{}", self.handle.0, hex::encode(*k)))
    }

    /// Parses a typed line; `None` when it is not 8 hex digits, a comma and 64 hex digits.
    pub fn parse(line: &str) -> Option<KeyLoadLine> {
        let (kh, key) = line.trim().split_once(',')?;
        if kh.len() != 8 || key.len() != 64 {
            return None;
        }
        let handle = KeyHandle(u32::from_str_radix(kh, 16).ok()?);
        let key = AesKey::from_hex(key).ok()?;
        Some(KeyLoadLine { handle, key })
    }
}

impl fmt::Debug for KeyLoadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyLoadLine({:08x}, key redacted)", self.handle.0)
    }
}

/// One `keylist` line (ours: the sources do not show it): `KKKKKKKK,FFFFFFFF`, then
/// `,disabled` for a key `keydis` turned off. Keys are never listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyListEntry {
    /// The slot.
    pub handle: KeyHandle,
    /// Its permission flags.
    pub flags: Flags,
    /// Turned off with `keydis`.
    pub disabled: bool,
}

impl fmt::Display for KeyListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x},{:08x}", self.handle.0, self.flags.0)?;
        if self.disabled {
            f.write_str(",disabled")?;
        }
        Ok(())
    }
}

impl KeyListEntry {
    /// Parses one line of `keylist` output; `None` for any other line.
    pub fn parse(line: &str) -> Option<KeyListEntry> {
        let mut parts = line.trim().split(',');
        let kh = parts.next()?;
        let flags = parts.next()?;
        let disabled = match parts.next() {
            None => false,
            Some("disabled") => true,
            Some(_) => return None,
        };
        if parts.next().is_some() || kh.len() != 8 || flags.len() != 8 {
            return None;
        }
        Some(KeyListEntry {
            handle: KeyHandle(u32::from_str_radix(kh, 16).ok()?),
            flags: Flags(u32::from_str_radix(flags, 16).ok()?),
            disabled,
        })
    }
}

/// A line for `dbload`: `NNNNN,<modhex public id>,<12 hex uid>,<32 hex AES key>,` (the
/// trailing comma is required from firmware 1.0.3 on).
pub struct DbLoadLine {
    /// Running number, echoed in the answer.
    pub index: u32,
    /// The YubiKey's public id (12 modhex characters).
    pub public_id: PublicId,
    /// Its AES key and private uid.
    pub secret: YubiKeySecret,
}

impl DbLoadLine {
    /// The line as typed, without its carriage return.
    pub fn to_line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{:05},{},{},{},",
            self.index,
            self.public_id.as_str(),
            hex::encode(self.secret.uid),
            hex::encode(self.secret.key)
        ))
    }

    /// Parses a typed line; `trailing_comma` says whether the firmware requires the final
    /// comma. `None` when any field is malformed.
    pub fn parse(line: &str, trailing_comma: bool) -> Option<DbLoadLine> {
        let line = line.trim();
        let body = match line.strip_suffix(',') {
            Some(b) => b,
            None if !trailing_comma => line,
            None => return None,
        };
        let mut parts = body.split(',');
        let (index, id, uid, key) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || index.is_empty() || index.len() > 5 {
            return None;
        }
        let index = index.parse().ok()?;
        let public_id = PublicId::new(id).ok().filter(|p| p.as_str().len() == 12)?;
        let uid = Zeroizing::new(hex::decode(uid).ok()?);
        let key = Zeroizing::new(hex::decode(key).ok()?);
        if uid.len() != 6 || key.len() != 16 {
            return None;
        }
        let mut secret = YubiKeySecret {
            key: [0; 16],
            uid: [0; 6],
        };
        secret.key.copy_from_slice(&key);
        secret.uid.copy_from_slice(&uid);
        Some(DbLoadLine {
            index,
            public_id,
            secret,
        })
    }
}

impl fmt::Debug for DbLoadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DbLoadLine({:05}, {}, secrets redacted)",
            self.index,
            self.public_id.as_str()
        )
    }
}

/// One `dblist` line (ours): `<modhex public id>,<use counter>,<session counter>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbListEntry {
    /// The YubiKey.
    pub public_id: PublicId,
    /// Highest usage counter seen.
    pub use_ctr: u16,
    /// Session counter at that usage.
    pub session_ctr: u8,
}

impl fmt::Display for DbListEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{},{},{}",
            self.public_id.as_str(),
            self.use_ctr,
            self.session_ctr
        )
    }
}

impl DbListEntry {
    /// Parses one line of `dblist` output; `None` for any other line.
    pub fn parse(line: &str) -> Option<DbListEntry> {
        let mut parts = line.trim().split(',');
        let entry = DbListEntry {
            public_id: PublicId::new(parts.next()?).ok()?,
            use_ctr: parts.next()?.parse().ok()?,
            session_ctr: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(entry)
    }
}

/// `sysinfo`'s first line (ours): `Version A.B.C  Protocol=1  SysId: <24 hex>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysInfoLine {
    /// Firmware `(major, minor, build)`.
    pub firmware: (u8, u8, u8),
    /// Protocol version.
    pub protocol: u8,
    /// The 12-byte system uid.
    pub system_uid: [u8; 12],
}

impl fmt::Display for SysInfoLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.firmware;
        write!(
            f,
            "Version {a}.{b}.{c}  Protocol={}  SysId: {}",
            self.protocol,
            hex::encode(self.system_uid)
        )
    }
}

impl SysInfoLine {
    /// Finds and parses the line in `sysinfo`'s output.
    pub fn find(text: &str) -> Option<SysInfoLine> {
        text.lines().find_map(|l| {
            let rest = l.trim().strip_prefix("Version ")?;
            let mut words = rest.split_whitespace();
            let mut v = words.next()?.split('.').map(|n| n.parse::<u8>());
            let firmware = (v.next()?.ok()?, v.next()?.ok()?, v.next()?.ok()?);
            let protocol = words.next()?.strip_prefix("Protocol=")?.parse().ok()?;
            if words.next()? != "SysId:" {
                return None;
            }
            let uid = hex::decode(words.next()?).ok()?;
            Some(SysInfoLine {
                firmware,
                protocol,
                system_uid: uid.try_into().ok()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_recognised_at_the_end_only_when_alone_on_their_line() {
        assert_eq!(Prompt::at_end("x\r\nHSM> "), Some(Prompt::Hsm));
        assert_eq!(
            Prompt::at_end("- Done\r\nHSM (keys changed)> "),
            Some(Prompt::KeysChanged)
        );
        assert_eq!(Prompt::at_end("\r\nNO_CFG> "), Some(Prompt::NoConfig));
        assert_eq!(Prompt::at_end("HSM> keyl"), None);
        assert_eq!(Prompt::at_end(ASK_MASTER_KEY), None);
        assert_eq!(find_prompt("\r\nNO_CFG> ").as_deref(), Some("NO_CFG>"));
        assert_eq!(find_prompt("HSM> sysinfo").as_deref(), Some("HSM> sysinfo"));
        assert_eq!(find_prompt("junk\r\nHSM> ").as_deref(), Some("HSM>"));
        assert_eq!(
            find_prompt("HSM (keys not decrypted)> exit").as_deref(),
            Some("HSM (keys not decrypted)> exit")
        );
        assert_eq!(find_prompt("Enabled flags"), None);
        assert_eq!(find_prompt("HSMX garbage"), None);
        assert_eq!(find_prompt("\x01\x02"), None);
    }

    #[test]
    fn enabled_flags_line_is_cut_as_pyhsm_shows_it() {
        let l = enabled_flags_line(Flags::ALL);
        assert_eq!(l.len(), FLAGS_LINE_WIDTH);
        assert!(l.starts_with(
            "Enabled flags ffffffff = YSM_AEAD_GENERATE,YSM_BUFFER_AEAD_GENERATE,YSM_RANDOM_AEAD_GENERATE,YSM_AEAD_DECRYPT_CMP,YSM_D"
        ));
        assert_eq!(
            enabled_flags_line(Flags(0x10000)),
            "Enabled flags 00010000 = YSM_HMAC_SHA1_GENERATE"
        );
    }

    #[test]
    fn key_lines_round_trip_and_pad_short_keys() {
        let l = KeyLoadLine {
            handle: KeyHandle(0x3031),
            key: AesKey::new(&[0x30; 16]).unwrap(),
        };
        let text = l.to_line();
        assert_eq!(&text[..9], "00003031,");
        assert_eq!(text.len(), 9 + 64);
        assert!(text.ends_with(&"0".repeat(32)));
        let back = KeyLoadLine::parse(&text).unwrap();
        assert_eq!(back.handle, KeyHandle(0x3031));
        assert!(format!("{back:?}").contains("redacted"));
        assert!(KeyLoadLine::parse("0001,00").is_none());
        assert!(KeyLoadLine::parse(&format!("00000001,{}", "zz".repeat(32))).is_none());
    }

    #[test]
    fn keylist_and_dblist_lines_round_trip() {
        let e = KeyListEntry {
            handle: KeyHandle(0x2001),
            flags: Flags::ALL,
            disabled: true,
        };
        assert_eq!(e.to_string(), "00002001,ffffffff,disabled");
        assert_eq!(KeyListEntry::parse(&e.to_string()), Some(e));
        assert_eq!(KeyListEntry::parse("HSM> "), None);
        let d = DbListEntry {
            public_id: PublicId::new("ftftftfteeee").unwrap(),
            use_ctr: 2,
            session_ctr: 1,
        };
        assert_eq!(DbListEntry::parse(&d.to_string()), Some(d));
    }

    #[test]
    fn dbload_lines_need_the_trailing_comma_only_where_the_firmware_does() {
        let line = "00001,ftftftfteeee,f0f1f2f3f4f5,4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d,";
        let d = DbLoadLine::parse(line, true).unwrap();
        assert_eq!(d.index, 1);
        assert_eq!(d.secret.uid, [0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5]);
        assert_eq!(&*d.to_line(), line);
        let bare = line.trim_end_matches(',');
        assert!(DbLoadLine::parse(bare, true).is_none());
        assert!(DbLoadLine::parse(bare, false).is_some());
        assert!(!format!("{d:?}").contains("4d4d"));
    }

    #[test]
    fn sysinfo_line_round_trips() {
        let s = SysInfoLine {
            firmware: (1, 0, 4),
            protocol: 1,
            system_uid: [0x55; 12],
        };
        assert_eq!(SysInfoLine::find(&format!("\r\n{s}\r\nHSM> ")), Some(s));
        assert_eq!(SysInfoLine::find("Version x"), None);
    }
}
