//! The configuration console: a line editor, the commands, and the dialogues of `zap`,
//! `hsm`, `keyload` and `dbload`.
//!
//! The texts are those of [`crate::console`], shared with the tools that type at a real
//! device. The state the commands change is the engine's own, so what the console sets up is
//! exactly what the wire commands then see.

use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use super::{DbEntry, Engine, KeySlot, Mode, DB_CAPACITY};
use crate::console::{
    self, DbListEntry, DbLoadLine, KeyListEntry, KeyLoadLine, Prompt, SysInfoLine, ESC,
};
use crate::{AesKey, Flags, KeyHandle, Nonce, PublicId};

/// The longest line the console keeps; further characters are neither kept nor echoed.
const MAX_LINE: usize = 256;

/// Most key handles the emulated key store holds (the device's limit is undocumented; this
/// bounds what typing at the console can make the emulator allocate).
pub(super) const KEY_CAPACITY: usize = 1024;

const HELP: &[&str] = &[
    "Commands:",
    "  sysinfo          firmware version and system id",
    "  hsm <flags>      erase everything; configure as an HSM with these system flags",
    "  zap              erase the configuration, the keys and the database",
    "  flags <flags>    flags for the keys loaded next",
    "  keyload          load keys, KKKKKKKK,<64 hex digits> a line, ESC ends",
    "  keylist          list key handles and their flags",
    "  keydis <handle>  disable a key handle",
    "  keycommit        write the key table to flash",
    "  dbload           load YubiKeys, NNNNN,<public id>,<uid>,<aes key>, a line, ESC ends",
    "  dblist           list YubiKeys and their counters",
    "  exit             back to HSM mode",
];

/// The console's state between bytes.
#[derive(Default)]
pub(in crate::emulator) struct Console {
    /// The line being typed (it may be a key, so it is wiped).
    line: Zeroizing<Vec<u8>>,
    /// The last byte was a carriage return (a line feed right after it is not a second line).
    after_cr: bool,
    step: Step,
}

/// What the next line typed is.
#[derive(Default)]
enum Step {
    /// A command.
    #[default]
    Command,
    /// The answer to `zap`'s "type yes".
    ConfirmZap,
    /// One of `hsm`'s questions.
    Hsm(Box<HsmSetup>),
    /// A `keyload` line (ESC ends).
    KeyLoad,
    /// A `dbload` line (ESC ends).
    DbLoad,
}

/// The answers to `hsm <flags>` gathered so far.
struct HsmSetup {
    flags: Flags,
    question: Question,
    cfg_password: Zeroizing<Vec<u8>>,
    admin_ids: Vec<Nonce>,
    master_key: Option<AesKey>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Question {
    CfgPassword,
    /// Admin YubiKey number n (1-based).
    AdminId(usize),
    MasterKey,
    /// Firmware 0.x: the HSM password in place of admin YubiKeys and the master key.
    HsmPassword,
    Confirm,
}

/// The answer to a command the console does not know.
const UNKNOWN_COMMAND: &str = "Unknown command";

fn line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Up to `max_bytes` of hex (an even number of digits), zero-padded to 32 bytes.
fn padded_key(text: &str, max_bytes: usize) -> Option<AesKey> {
    let b = Zeroizing::new(hex::decode(text).ok()?);
    if b.is_empty() || b.len() > max_bytes {
        return None;
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k[..b.len()].copy_from_slice(&b);
    AesKey::new(&*k).ok()
}

fn parse_hex_u32(text: Option<&str>) -> Option<u32> {
    let t = text?;
    if t.is_empty() || t.len() > 8 {
        return None;
    }
    u32::from_str_radix(t, 16).ok()
}

impl Engine {
    /// The prompt for the device's state.
    pub(super) fn prompt(&self) -> Prompt {
        if !self.configured {
            Prompt::NoConfig
        } else if self.store_locked {
            Prompt::KeysNotDecrypted
        } else if self.keys_changed {
            Prompt::KeysChanged
        } else {
            Prompt::Hsm
        }
    }

    fn has_keycommit(&self) -> bool {
        self.firmware >= (1, 0, 0)
    }

    /// One byte typed at the console: echo, line editing, and the line's effect on CR.
    pub(super) fn console_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        let Mode::Console(con) = &mut self.mode else {
            return;
        };
        let after_cr = std::mem::replace(&mut con.after_cr, b == b'\r');
        match b {
            b'\n' if after_cr => {}
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                let typed = std::mem::take(&mut con.line);
                self.console_line(&typed, out);
            }
            ESC => {
                con.line.zeroize();
                if matches!(con.step, Step::KeyLoad | Step::DbLoad) {
                    con.step = Step::Command;
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(self.prompt().text().as_bytes());
                }
            }
            0x08 | 0x7f if con.line.pop().is_some() => out.extend_from_slice(b"\x08 \x08"),
            0x20..=0x7e if con.line.len() < MAX_LINE => {
                con.line.push(b);
                out.push(b);
            }
            // Other control bytes, and characters past the longest line, are dropped.
            _ => {}
        }
    }

    fn console_line(&mut self, typed: &[u8], out: &mut Vec<u8>) {
        let text = Zeroizing::new(String::from_utf8_lossy(typed).trim().to_string());
        let Mode::Console(con) = &mut self.mode else {
            return;
        };
        match std::mem::take(&mut con.step) {
            Step::Command => {
                if !self.command(&text, out) {
                    return;
                }
            }
            Step::ConfirmZap => {
                if *text == "yes" {
                    self.erase();
                    self.configured = false;
                    self.system_flags = Flags(0);
                    line(out, console::ERASE_DONE);
                } else {
                    line(out, "aborted");
                }
            }
            Step::Hsm(setup) => {
                if let Some(question) = self.hsm_answer(setup, &text, out) {
                    out.extend_from_slice(question.as_bytes());
                    return;
                }
            }
            Step::KeyLoad => {
                self.keyload_line(&text, out);
                self.set_step(Step::KeyLoad);
                return;
            }
            Step::DbLoad => {
                self.dbload_line(&text, out);
                self.set_step(Step::DbLoad);
                return;
            }
        }
        out.extend_from_slice(self.prompt().text().as_bytes());
    }

    fn set_step(&mut self, step: Step) {
        if let Mode::Console(con) = &mut self.mode {
            con.step = step;
        }
    }

    /// Runs a command line; false when it printed its own ending (a question, a dialogue,
    /// or `exit`), true when the prompt follows.
    fn command(&mut self, text: &str, out: &mut Vec<u8>) -> bool {
        let mut words = text.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let arg = words.next();
        let needs_config = matches!(
            cmd,
            "keyload" | "keylist" | "keydis" | "keycommit" | "dbload" | "dblist"
        );
        if needs_config && !self.configured {
            line(out, "No configuration: configure with hsm <flags> first");
            return true;
        }
        if (needs_config || cmd == "hsm") && self.store_locked {
            line(
                out,
                "Key store not decrypted: zap erases it, or decrypt it in HSM mode first",
            );
            return true;
        }
        match cmd {
            "" => {}
            "help" => HELP.iter().for_each(|l| line(out, l)),
            "sysinfo" => {
                let info = SysInfoLine {
                    firmware: self.firmware,
                    protocol: 1,
                    system_uid: self.system_uid,
                };
                line(out, &info.to_string());
            }
            "exit" => {
                self.mode = Mode::Hsm {
                    frames: crate::codec::Assembler::new(),
                };
                return false;
            }
            "zap" => {
                out.extend_from_slice(console::CONFIRM_ERASE.as_bytes());
                self.set_step(Step::ConfirmZap);
                return false;
            }
            "hsm" => match parse_hex_u32(arg) {
                Some(f) => {
                    line(out, &console::enabled_flags_line(Flags(f)));
                    out.extend_from_slice(console::ASK_CFG_PASSWORD.as_bytes());
                    self.set_step(Step::Hsm(Box::new(HsmSetup {
                        flags: Flags(f),
                        question: Question::CfgPassword,
                        cfg_password: Zeroizing::default(),
                        admin_ids: Vec::new(),
                        master_key: None,
                    })));
                    return false;
                }
                None => line(
                    out,
                    "hsm needs the system flags in hex (the interactive toggle menu is not modelled)",
                ),
            },
            "flags" => match parse_hex_u32(arg) {
                Some(f) => self.load_flags = Flags(f),
                None => line(out, "flags needs up to 8 hex digits"),
            },
            "keyload" => {
                line(out, &console::keyload_banner(self.load_flags));
                self.set_step(Step::KeyLoad);
                return false;
            }
            "keylist" => {
                for (kh, slot) in &self.keys {
                    let e = KeyListEntry {
                        handle: *kh,
                        flags: slot.flags,
                        disabled: slot.disabled,
                    };
                    line(out, &e.to_string());
                }
            }
            "keydis" if self.firmware >= (1, 0, 1) => match parse_hex_u32(arg).map(KeyHandle) {
                Some(kh) => match self.keys.get_mut(&kh) {
                    Some(slot) => {
                        slot.disabled = true;
                        self.write_through();
                        line(out, &format!("{:08x} - disabled", kh.0));
                    }
                    None => line(out, &format!("{:08x} - not found", kh.0)),
                },
                None => line(out, "keydis needs a key handle in hex"),
            },
            "keycommit" if self.has_keycommit() => {
                self.committed_keys = self.keys.clone();
                self.keys_changed = false;
                line(out, console::COMMIT_DONE);
            }
            "dbload" => {
                line(out, console::DBLOAD_BANNER);
                self.set_step(Step::DbLoad);
                return false;
            }
            "dblist" => {
                for (id, e) in &self.db {
                    if let Ok(public_id) = PublicId::from_bytes(id) {
                        let entry = DbListEntry {
                            public_id,
                            use_ctr: e.use_ctr,
                            session_ctr: e.session_ctr,
                        };
                        line(out, &entry.to_string());
                    }
                }
            }
            // The word typed is not repeated: a line typed out of turn may be a key. The answer
            // is short so that the prompt after it falls within the 50 bytes pyhsm reads to
            // recognise a console (see `a_driver_probing_the_console_sees_a_prompt`).
            _ => line(out, UNKNOWN_COMMAND),
        }
        true
    }

    /// A key edit: uncommitted until `keycommit`, or in flash at once on firmware without it.
    fn write_through(&mut self) {
        if self.has_keycommit() {
            self.keys_changed = true;
        } else {
            self.committed_keys = self.keys.clone();
        }
    }

    /// Erases the configuration, both key tables and the database.
    fn erase(&mut self) {
        self.keys.clear();
        self.committed_keys.clear();
        self.db.clear();
        self.master_key = None;
        self.admin_ids.clear();
        self.cfg_password.zeroize();
        self.store_locked = false;
        self.otp_unlocked = false;
        self.temp_key = None;
        self.hmac = None;
        self.keys_changed = false;
    }

    /// Takes one answer to `hsm`'s questions; returns the next question, or `None` when
    /// the dialogue is over (the prompt follows).
    fn hsm_answer(
        &mut self,
        mut setup: Box<HsmSetup>,
        text: &str,
        out: &mut Vec<u8>,
    ) -> Option<String> {
        let v1 = self.firmware >= (1, 0, 0);
        let next = match setup.question {
            Question::CfgPassword => {
                setup.cfg_password = if text == "g" {
                    let mut p = Zeroizing::new(vec![0u8; 16]);
                    self.rng.fill_bytes(&mut p);
                    line(out, &format!("Cfg password: {}", hex::encode(&*p)));
                    p
                } else {
                    Zeroizing::new(text.as_bytes().to_vec())
                };
                if v1 {
                    Question::AdminId(1)
                } else {
                    Question::HsmPassword
                }
            }
            Question::AdminId(_) if text.is_empty() => Question::MasterKey,
            Question::AdminId(n) => match PublicId::new(text)
                .ok()
                .filter(|p| p.as_str().len() == 12)
                .and_then(|p| p.to_nonce().ok())
            {
                Some(id) => {
                    setup.admin_ids.push(id);
                    if n >= console::MAX_ADMIN_YUBIKEYS {
                        Question::MasterKey
                    } else {
                        Question::AdminId(n + 1)
                    }
                }
                None => {
                    line(out, "Invalid public id (12 modhex characters)");
                    Question::AdminId(n)
                }
            },
            Question::MasterKey | Question::HsmPassword => {
                let max = if setup.question == Question::MasterKey {
                    32
                } else {
                    16
                };
                if text.is_empty() {
                    setup.master_key = None;
                    Question::Confirm
                } else if text == "g" {
                    let mut k = Zeroizing::new([0u8; 32]);
                    self.rng.fill_bytes(&mut k[..max]);
                    line(out, &format!("Key: {}", hex::encode(&k[..max])));
                    setup.master_key = AesKey::new(&*k).ok();
                    Question::Confirm
                } else {
                    match padded_key(text, max) {
                        Some(k) => {
                            setup.master_key = Some(k);
                            Question::Confirm
                        }
                        None => {
                            line(out, &format!("Invalid key (up to {} hex digits)", max * 2));
                            setup.question
                        }
                    }
                }
            }
            Question::Confirm => {
                if text == "yes" {
                    self.erase();
                    self.configured = true;
                    self.system_flags = setup.flags;
                    self.cfg_password = std::mem::take(&mut setup.cfg_password);
                    self.admin_ids = std::mem::take(&mut setup.admin_ids);
                    self.master_key = setup.master_key.take();
                    // Set up by hand at the console: open until the next power-on.
                    self.otp_unlocked = true;
                    self.keys_changed = self.has_keycommit();
                    line(out, console::ERASE_DONE);
                } else {
                    line(out, "aborted");
                }
                return None;
            }
        };
        let text = match next {
            Question::CfgPassword => console::ASK_CFG_PASSWORD.to_string(),
            Question::AdminId(n) => console::ask_admin_id(n),
            Question::MasterKey => console::ASK_MASTER_KEY.to_string(),
            Question::HsmPassword => console::ASK_HSM_PASSWORD.to_string(),
            Question::Confirm => console::CONFIRM_ERASE.to_string(),
        };
        setup.question = next;
        self.set_step(Step::Hsm(setup));
        Some(text)
    }

    fn keyload_line(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let Some(mut l) = KeyLoadLine::parse(text) else {
            line(out, "Invalid key line (KKKKKKKK,<64 hex digits>)");
            return;
        };
        if !self.keys.contains_key(&l.handle) && self.keys.len() >= KEY_CAPACITY {
            line(out, "Key store full");
            return;
        }
        if self.mistype > 0 {
            self.mistype -= 1;
            let mut k = Zeroizing::new(l.key.expose().to_vec());
            if let Some(last) = k.last_mut() {
                *last ^= 0x01;
            }
            if let Ok(key) = AesKey::new(&k) {
                l.key = key;
            }
        }
        self.keys.insert(
            l.handle,
            KeySlot {
                key: l.key.clone(),
                flags: self.load_flags,
                disabled: false,
            },
        );
        self.write_through();
        line(out, &console::stored_ok(l.handle));
    }

    fn dbload_line(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        let Some(l) = DbLoadLine::parse(text, self.firmware >= (1, 0, 3)) else {
            line(
                out,
                "Invalid id line (NNNNN,<public id>,<uid>,<aes key>, in hex and modhex)",
            );
            return;
        };
        let Ok(id) = l.public_id.to_nonce() else {
            return;
        };
        if !self.db.contains_key(&id.0) && self.db.len() >= DB_CAPACITY {
            line(out, "Database full");
            return;
        }
        self.db.insert(
            id.0,
            DbEntry {
                secret: l.secret,
                use_ctr: 0,
                session_ctr: 0,
            },
        );
        line(out, &console::inserted_ok(l.index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::EmulatorConfig;

    fn device(toml: &str) -> Engine {
        let mut e = Engine::new(&EmulatorConfig::parse(toml).unwrap().resolve().unwrap());
        let _ = e.enter_console();
        e
    }

    fn blank() -> Engine {
        device("")
    }

    fn type_(e: &mut Engine, input: &str) -> String {
        String::from_utf8(e.feed(input.as_bytes())).unwrap()
    }

    /// pyhsm's `hsm ffffffff` dialogue for firmware 1.x, sent in one write as
    /// `configure_hsm.py` sends it.
    const PYHSM_HSM: &str = "hsm ffffffff\r\rftftftfteeee\r\rbadabada\ryes\r";

    #[test]
    fn a_line_ends_at_cr_once_and_editing_is_echoed() {
        let mut e = blank();
        let out = type_(&mut e, "sysinfx\x7fo\r\n");
        assert!(
            out.starts_with("sysinfx\x08 \x08o\r\nVersion 1.0.4  Protocol=1"),
            "{out:?}"
        );
        assert!(out.ends_with("\r\nNO_CFG> "), "{out:?}");
        assert_eq!(out.matches("NO_CFG> ").count(), 1, "CR LF is one line");
        // A bare LF ends a line too; ESC outside a dialogue does nothing.
        assert_eq!(type_(&mut e, "\x1b\n"), "\r\nNO_CFG> ");
        let long = "a".repeat(MAX_LINE + 50);
        let out = type_(&mut e, &long);
        assert_eq!(
            out.len(),
            MAX_LINE,
            "characters past the longest line are not echoed"
        );
    }

    #[test]
    fn hsm_dialogue_asks_pyhsms_questions_in_order() {
        let mut e = blank();
        let out = type_(&mut e, PYHSM_HSM);
        let order = [
            "Enabled flags ffffffff = YSM_AEAD_GENERATE,",
            console::ASK_CFG_PASSWORD,
            &console::ask_admin_id(1),
            &console::ask_admin_id(2),
            console::ASK_MASTER_KEY,
            console::CONFIRM_ERASE,
            console::ERASE_DONE,
            "HSM (keys changed)> ",
        ];
        let mut at = 0;
        for want in order {
            let found = out[at..]
                .find(want)
                .unwrap_or_else(|| panic!("{want:?} in {out:?}"));
            at += found + want.len();
        }
        assert!(out.ends_with("HSM (keys changed)> "));
        assert_eq!(e.system_flags, Flags::ALL);
        assert_eq!(e.admin_ids.len(), 1);
        let mut padded = [0u8; 32];
        padded[..4].copy_from_slice(&[0xba, 0xda, 0xba, 0xda]);
        assert_eq!(e.master_key.as_ref().unwrap().expose(), padded);
        assert_eq!(type_(&mut e, "keycommit\r"), "keycommit\r\n- Done\r\nHSM> ");
    }

    #[test]
    fn bad_answers_are_asked_again_and_no_aborts() {
        let mut e = blank();
        let out = type_(&mut e, "hsm 7fffffff\r\rnot-modhex\r");
        assert!(out.ends_with(&format!(
            "Invalid public id (12 modhex characters)\r\n{}",
            console::ask_admin_id(1)
        )));
        let out = type_(&mut e, "\r1234xyz\r");
        assert!(out.ends_with(console::ASK_MASTER_KEY), "{out:?}");
        let out = type_(&mut e, "\rno\r");
        assert!(out.ends_with("aborted\r\nNO_CFG> "), "{out:?}");
        assert!(!e.configured, "nothing changes without yes");
        assert_eq!(
            type_(&mut e, "hsm\r").lines().nth(1),
            Some("hsm needs the system flags in hex (the interactive toggle menu is not modelled)")
        );
    }

    #[test]
    fn keys_need_keycommit_to_survive_a_power_cycle() {
        let mut e = blank();
        type_(&mut e, "hsm ffffffff\r\r\r\ryes\r");
        let key = |b: &str| b.repeat(32);
        let out = type_(
            &mut e,
            &format!("flags 20000002\rkeyload\r00000001,{}\r\x1b", key("01")),
        );
        assert!(
            out.contains("keyload - Load key data now using flags 20000002. Press ESC to quit\r\n")
        );
        assert!(out.contains("00000001 - stored ok\r\n"));
        assert!(out.ends_with("\r\nHSM (keys changed)> "));
        type_(&mut e, "keycommit\r");
        type_(
            &mut e,
            &format!("keyload\r00000002,{}\r\x1bkeydis 1\r", key("02")),
        );
        let listed = type_(&mut e, "keylist\r");
        assert!(
            listed.contains("\r\n00000001,20000002,disabled\r\n00000002,20000002\r\n"),
            "{listed:?}"
        );
        e.power_cycle();
        let _ = e.enter_console();
        let listed = type_(&mut e, "keylist\r");
        assert_eq!(
            listed, "keylist\r\n00000001,20000002\r\nHSM> ",
            "only the committed table is left"
        );
    }

    #[test]
    fn firmware_0_9_asks_for_an_hsm_password_and_writes_keys_at_once() {
        let mut e = device("firmware = \"0.9.8\"\n[faults]\nconfig_mode = true\n");
        let out = type_(&mut e, "hsm ffffffff\r\r00112233\ryes\r");
        assert!(out.contains(console::ASK_HSM_PASSWORD));
        assert!(!out.contains("admin"));
        assert!(out.ends_with("HSM> "), "{out:?}");
        type_(
            &mut e,
            &format!("keyload\r00000001,{}\r\x1b", "01".repeat(32)),
        );
        assert!(type_(&mut e, "keycommit\r").contains("Unknown command"));
        e.power_cycle();
        assert!(e.keys.contains_key(&KeyHandle(1)));
    }

    #[test]
    fn a_locked_store_takes_only_zap_and_a_blank_device_only_hsm() {
        let mut e = blank();
        assert!(type_(&mut e, "keylist\r").contains("No configuration"));
        type_(&mut e, "hsm ffffffff\r\r\rbadabada\ryes\rkeycommit\r");
        e.power_cycle();
        let out = String::from_utf8(e.enter_console()).unwrap();
        assert!(out.ends_with("HSM (keys not decrypted)> "));
        for cmd in ["keyload", "keylist", "dbload", "hsm ffffffff"] {
            let out = type_(&mut e, &format!("{cmd}\r"));
            assert!(out.contains("Key store not decrypted"), "{cmd}: {out:?}");
        }
        assert!(type_(&mut e, "zap\rno\r").contains("aborted"));
        assert!(e.configured);
        let out = type_(&mut e, "zap\ryes\r");
        assert!(out.ends_with("- wait - done\r\nNO_CFG> "), "{out:?}");
        assert!(e.master_key.is_none() && e.keys.is_empty() && e.db.is_empty());
    }

    #[test]
    fn dbload_inserts_with_counters_reset_and_dblist_shows_no_secrets() {
        let mut e = blank();
        type_(&mut e, "hsm ffffffff\r\r\r\ryes\r");
        let line = "00001,ftftftfteeee,f0f1f2f3f4f5,4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d,";
        let out = type_(&mut e, &format!("dbload\r{line}\rbad\r\x1b"));
        assert!(out.starts_with("dbload\r\ndbload - Load id data now. Press ESC to quit\r\n"));
        assert!(out.contains("00001 - inserted ok\r\n"));
        assert!(out.contains("Invalid id line"));
        // Firmware 1.0.4 needs the trailing comma.
        let out = type_(
            &mut e,
            &format!("dbload\r{}\r\x1b", line.trim_end_matches(',')),
        );
        assert!(out.contains("Invalid id line"));
        let listed = type_(&mut e, "dblist\r");
        assert_eq!(listed, "dblist\r\nftftftfteeee,0,0\r\nHSM (keys changed)> ");
    }

    #[test]
    fn unknown_commands_are_not_repeated_and_mistype_changes_one_key() {
        let mut e = blank();
        let secretish = "00000001,".to_string() + &"ab".repeat(32);
        let out = type_(&mut e, &format!("{secretish}\r"));
        assert_eq!(
            out.matches(&secretish).count(),
            1,
            "only the echo shows it: {out:?}"
        );
        assert!(out.contains("Unknown command"));
        type_(&mut e, "hsm ffffffff\r\r\r\ryes\r");
        e.mistype_next_keys(1);
        type_(
            &mut e,
            &format!("keyload\r{secretish}\r00000002,{}\r\x1b", "ab".repeat(32)),
        );
        let k1 = e.keys[&KeyHandle(1)].key.expose().to_vec();
        let k2 = e.keys[&KeyHandle(2)].key.expose().to_vec();
        assert_ne!(k1, k2, "the first key was mistyped");
        assert_eq!(k2, [0xab; 32]);
    }

    /// pyhsm's config-mode probe (yubihsm1-protocol.md 1.6): a command frame sent to a
    /// device that sits in its console is echoed; pyhsm reads one byte of it as half a
    /// response header, writes `\r\r\r`, reads 50 bytes and looks for a line matching
    /// `^(NO_CFG|WSAPI|HSM).*> .*`. Every prompt must show within those 50 bytes.
    #[test]
    fn a_driver_probing_the_console_sees_a_prompt() {
        let looks_like_a_console = |line: &str| {
            ["NO_CFG", "WSAPI", "HSM"]
                .iter()
                .any(|p| line.starts_with(p) && line.contains("> "))
        };
        let locked = || {
            let mut e = blank();
            type_(&mut e, "hsm ffffffff\r\r\rbadabada\ryes\rkeycommit\r");
            e.power_cycle();
            let _ = e.enter_console();
            e
        };
        let changed = || {
            let mut e = blank();
            type_(&mut e, "hsm ffffffff\r\r\r\ryes\r");
            type_(
                &mut e,
                &format!("keyload\r00000001,{}\r\x1b", "01".repeat(32)),
            );
            e
        };
        let states: [(&str, Engine); 3] = [
            ("blank", blank()),
            ("locked", locked()),
            ("keys changed", changed()),
        ];
        for (state, mut e) in states {
            // SYSTEM_INFO_QUERY (length 1, command 0x26), then the probe.
            let mut seen = e.feed(b"\x01\x26");
            seen.extend(e.feed(b"\r\r\r"));
            let read = &seen[1..51.min(seen.len())];
            let text = String::from_utf8_lossy(read);
            assert!(
                text.split('\n').any(looks_like_a_console),
                "{state}: pyhsm's 50 bytes {text:?}"
            );
        }
    }

    #[test]
    fn exit_returns_to_hsm_mode_without_a_prompt() {
        let mut e = blank();
        assert_eq!(type_(&mut e, "exit\r"), "exit\r\n");
        assert!(!e.in_console());
    }
}
