//! `ksm provision`: load a spare YubiHSM 1 with the keys of a device description (the
//! emulator's TOML) by typing at its configuration console, then prove in HSM mode that it
//! holds them.
//!
//! An operator whose YubiHSM 1 broke must set up a spare with the same key-handle keys, and
//! the only way into a YubiHSM 1 is its text console. The same TOML that describes a device
//! to `ksm emulate` describes it here. Without `--yes` the dialogue is printed (keys masked)
//! and nothing is typed but a carriage return and `sysinfo`; with it the dialogue runs.
//!
//! Keys are read from the private TOML only (never argv), typed at the device, and never
//! shown: the console echoes what is typed, and [`hsm_proto::console_session`] cuts that
//! echo out of everything printed or logged.
//!
//! Verification, per key handle: `keylist` shows exactly the TOML's handles, flags and
//! disabled state; then, in HSM mode, each key is made to prove its bytes with the commands
//! its flags allow that change no persistent state (an OTP decode against an AEAD sealed
//! here, a decrypt-compare, an AEAD generate with the device's own nonce, an AES block, an
//! HMAC); a disabled key must answer FUNCTION_DISABLED. The result is keyed by what the
//! device does, not by what it printed, so a mistyped key fails.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aes::cipher::{BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use hsm_proto::cmd::{self, HmacFlags};
use hsm_proto::console::{
    self, DbListEntry, DbLoadLine, KeyListEntry, KeyLoadLine, Prompt, SysInfoLine,
};
use hsm_proto::console_session::{ConsoleSession, Expect, Typed};
use hsm_proto::emulator::{EmulatorConfig, ResolvedConfig};
use hsm_proto::otp::{self, OtpCounters, Token};
use hsm_proto::{
    aead, AesKey, Error as HsmError, Flags, Hsm, KeyHandle, Nonce, PublicId, SecretBytes, Status,
    Timeouts, YubiKeyAead, YubiKeySecret,
};
use sha1::Sha1;
use tracing::info;
use zeroize::Zeroizing;

use crate::device::DEFAULT_DEVICE;
use crate::Error;

/// How long the steps that erase flash (`zap`'s and `hsm`'s confirmation) may take at least.
pub const ERASE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a carriage return may go unanswered before the device is taken to be in HSM
/// mode (at most; `--timeout` may make it shorter).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `ksm provision`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    /// The device to set up: the emulator's TOML (keys, flags, disabled keys, system flags,
    /// master key, admin YubiKeys, internal database). Holds keys, so it must be private
    /// (chmod 600).
    #[arg(long)]
    pub config: PathBuf,
    /// The YubiHSM's serial device, at its configuration console (hold the button while
    /// plugging it in).
    #[arg(short = 'D', long = "device", default_value = DEFAULT_DEVICE)]
    pub device: PathBuf,
    /// Type the dialogue. Without it the dialogue is printed and nothing is changed.
    #[arg(long)]
    pub yes: bool,
    /// Erase the device with `zap` first (needed when a master key is set and the key store
    /// was not decrypted since power-on).
    #[arg(long)]
    pub zap: bool,
    /// Seconds to wait for each answer of the console (erasing steps wait at least 30).
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

/// `ksm provision`: the dialogue, its transcript and the verification on standard output.
pub fn run(args: ProvisionArgs) -> Result<(), Error> {
    if !(0.1..=600.0).contains(&args.timeout) {
        return Err(Error::Usage(
            "--timeout must be between 0.1 and 600 seconds".into(),
        ));
    }
    if crate::device::is_key_file(&args.device) {
        return Err(Error::Usage(format!(
            "{} is a regular file: ksm provision types at a YubiHSM's serial console (-D /dev/ttyACM0)",
            args.device.display()
        )));
    }
    let cfg = EmulatorConfig::load(&args.config)?.resolve()?;
    let source = args
        .config
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "the configuration".into());
    let opts = Options {
        device: args.device.clone(),
        config: args.config.clone(),
        source,
        yes: args.yes,
        zap: args.zap,
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let mut out = std::io::stdout();
    provision(&cfg, &opts, &mut out)
}

/// What `ksm provision` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The serial device.
    pub device: PathBuf,
    /// The configuration file (for errors about it).
    pub config: PathBuf,
    /// How masks name the file the keys come from (`<key of 0x20 from DEVICE.toml>`).
    pub source: String,
    /// Type the dialogue (else print it).
    pub yes: bool,
    /// `zap` first.
    pub zap: bool,
    /// Per-answer timeout.
    pub timeout: Duration,
}

/// Provisions `cfg` onto `opts.device` (or prints the dialogue), writing to `out`.
pub fn provision(cfg: &ResolvedConfig, opts: &Options, out: &mut dyn Write) -> Result<(), Error> {
    let w = |e| Error::io("write standard output", e);
    let probed = probe(&opts.device, opts.timeout);
    let (mut session, prompt, fw) = match probed {
        Ok(p) => p,
        Err(e) if !opts.yes => {
            // Show what would be typed anyway, then say what stops it.
            let fw = Firmware::known(cfg.firmware).unwrap_or(Firmware((1, 0, 4)));
            let steps = plan(cfg, fw, opts)?;
            print_plan(out, &opts.device, None, fw, &steps).map_err(w)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    if fw.0 != cfg.firmware {
        let (a, b, c) = cfg.firmware;
        writeln!(
            out,
            "note: {} says firmware {a}.{b}.{c}; the device has {fw}: the dialogue follows the device",
            opts.source
        )
        .map_err(w)?;
    }
    if prompt == Prompt::KeysNotDecrypted && !opts.zap {
        return Err(Error::DeviceAnswer(format!(
            "{}: the device has a master key and its key store was not decrypted since power-on, so its console refuses `hsm`: run again with --zap to erase it first (its keys are lost; they are what {} restores)",
            opts.device.display(),
            opts.source
        )));
    }
    let steps = plan(cfg, fw, opts)?;
    if !opts.yes {
        print_plan(out, &opts.device, Some(prompt), fw, &steps).map_err(w)?;
        return Ok(());
    }
    writeln!(
        out,
        "provisioning {} (firmware {fw}, at {:?}) from {}; the console's transcript, keys masked:",
        opts.device.display(),
        prompt.text(),
        opts.source
    )
    .map_err(w)?;
    let listings = run_steps(&mut session, &steps, opts, out)?;
    drop(session);
    writeln!(out, "\nverification of {}:", opts.device.display()).map_err(w)?;
    let mut hsm = Hsm::open_path(&opts.device, Timeouts::default())?;
    let report = verify(cfg, &listings, &mut hsm)?;
    out.write_all(report.text.as_bytes()).map_err(w)?;
    out.flush().map_err(w)?;
    if report.failed > 0 {
        return Err(Error::ProvisionUnverified(report.failed));
    }
    info!(device = %opts.device.display(), "provisioned and verified");
    Ok(())
}

/// A firmware version `ksm provision` knows the console of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware(pub (u8, u8, u8));

impl Firmware {
    /// 0.9.x and 1.0.x, as the engine models them; `None` for anything else.
    pub fn known(v: (u8, u8, u8)) -> Option<Firmware> {
        matches!(v, (0, 9, _) | (1, 0, _)).then_some(Firmware(v))
    }

    /// 1.x: admin YubiKeys, a master key (`KEY_STORE_DECRYPT`), `keycommit`.
    fn v1(self) -> bool {
        self.0 >= (1, 0, 0)
    }

    /// `keydis` (pyhsm's `have_keydisable`).
    fn has_keydis(self) -> bool {
        self.0 >= (1, 0, 1)
    }

    /// `dbload` lines end in a comma.
    fn dbload_comma(self) -> bool {
        self.0 >= (1, 0, 3)
    }
}

impl std::fmt::Display for Firmware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b, c) = self.0;
        write!(f, "{a}.{b}.{c}")
    }
}

/// Opens the console, checks it answers with a prompt, and reads the firmware.
fn probe(device: &Path, timeout: Duration) -> Result<(ConsoleSession, Prompt, Firmware), Error> {
    let mut session = ConsoleSession::open(device)?;
    // A console answers a carriage return at once; HSM mode never does.
    let prompt = session.probe(timeout.min(PROBE_TIMEOUT))?;
    let reply = session.send(&Typed::line("sysinfo"), &Expect::Prompt, timeout)?;
    let info = reply
        .parse_lines(SysInfoLine::find)
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::DeviceAnswer(format!(
                "{}: `sysinfo` printed no version line: {:?}",
                device.display(),
                reply.text()
            ))
        })?;
    let fw = Firmware::known(info.firmware).ok_or_else(|| {
        let (a, b, c) = info.firmware;
        Error::DeviceAnswer(format!(
            "{}: firmware {a}.{b}.{c} is not one ksm provision knows the console of (0.9.x, 1.0.x)",
            device.display()
        ))
    })?;
    Ok((session, prompt, fw))
}

/// What a step's answer must show.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Check {
    /// Nothing beyond its [`Expect`].
    None,
    /// One of its lines is this.
    Line(String),
    /// It contains this.
    Contains(&'static str),
    /// Its `keylist` lines are kept for the verification.
    KeyList,
    /// Its `dblist` lines are kept.
    DbList,
    /// Its `sysinfo` line is kept.
    SysInfo,
}

/// One input of the dialogue.
#[derive(Debug)]
pub struct Step {
    input: Typed,
    expect: Expect,
    check: Check,
    /// Erases flash: waits at least [`ERASE_TIMEOUT`].
    slow: bool,
    /// Why it is typed, for the dry run.
    note: String,
}

impl Step {
    fn new(input: Typed, expect: Expect, check: Check, note: impl Into<String>) -> Step {
        Step {
            input,
            expect,
            check,
            slow: false,
            note: note.into(),
        }
    }

    fn prompt(input: Typed, note: impl Into<String>) -> Step {
        Step::new(input, Expect::Prompt, Check::None, note)
    }

    fn ask(input: Typed, question: impl Into<String>, note: impl Into<String>) -> Step {
        Step::new(input, Expect::Ask(question.into()), Check::None, note)
    }

    fn slow(mut self) -> Step {
        self.slow = true;
        self
    }
}

fn config_error(opts: &Options, reason: String) -> Error {
    Error::Config {
        path: opts.config.clone(),
        reason,
    }
}

/// The dialogue that sets up `cfg` on a device with firmware `fw`.
pub fn plan(cfg: &ResolvedConfig, fw: Firmware, opts: &Options) -> Result<Vec<Step>, Error> {
    let src = &opts.source;
    let mut s = Vec::new();
    if opts.zap {
        s.push(Step::ask(
            Typed::line("zap"),
            console::CONFIRM_ERASE,
            "erase the configuration, keys and database",
        ));
        s.push(
            Step::new(
                Typed::line("yes"),
                Expect::Prompt,
                Check::Contains(console::ERASE_DONE),
                "",
            )
            .slow(),
        );
    }
    s.push(Step::ask(
        Typed::line(format!("hsm {:08x}", cfg.system_flags.0)),
        console::ASK_CFG_PASSWORD,
        "system flags; the device's configuration, keys and database are replaced",
    ));
    if fw.v1() {
        s.push(Step::ask(
            Typed::line(""),
            console::ask_admin_id(1),
            "no cfg password",
        ));
        if cfg.admin_yubikeys.len() > console::MAX_ADMIN_YUBIKEYS {
            return Err(config_error(
                opts,
                format!(
                    "the device takes at most {} admin YubiKeys",
                    console::MAX_ADMIN_YUBIKEYS
                ),
            ));
        }
        for (i, id) in cfg.admin_yubikeys.iter().enumerate() {
            if id.as_str().len() != 12 {
                return Err(config_error(
                    opts,
                    format!("admin YubiKey {id}: the console takes 12-character public ids"),
                ));
            }
            let n = i + 2;
            let next = if n > console::MAX_ADMIN_YUBIKEYS {
                console::ASK_MASTER_KEY.to_string()
            } else {
                console::ask_admin_id(n)
            };
            s.push(Step::ask(Typed::line(id.as_str()), next, "admin YubiKey"));
        }
        if cfg.admin_yubikeys.len() < console::MAX_ADMIN_YUBIKEYS {
            s.push(Step::ask(
                Typed::line(""),
                console::ASK_MASTER_KEY,
                "no more admin YubiKeys",
            ));
        }
        let (input, note) = match &cfg.master_key {
            Some(k) => (
                Typed::secret(
                    Zeroizing::new(hex::encode(k.expose())),
                    0,
                    &format!("<master key from {src}>"),
                ),
                "the key store is encrypted under it from the next power-on",
            ),
            None => (Typed::line(""), "no master key"),
        };
        s.push(Step::ask(input, console::CONFIRM_ERASE, note));
    } else {
        if !cfg.admin_yubikeys.is_empty() {
            return Err(config_error(
                opts,
                format!("admin YubiKeys need firmware 1.x; the device has {fw}"),
            ));
        }
        s.push(Step::ask(
            Typed::line(""),
            console::ASK_HSM_PASSWORD,
            "no cfg password",
        ));
        let (input, note) = match &cfg.master_key {
            Some(k) => {
                let (head, rest) = k.expose().split_at(16);
                if rest.iter().any(|b| *b != 0) {
                    return Err(config_error(
                        opts,
                        format!("firmware {fw} takes an HSM password of at most 16 bytes (32 hex digits) as master_key"),
                    ));
                }
                (
                    Typed::secret(
                        Zeroizing::new(hex::encode(head)),
                        0,
                        &format!("<HSM password (master_key) from {src}>"),
                    ),
                    "KEY_STORAGE_UNLOCK takes it after each power-on",
                )
            }
            None => (Typed::line(""), "no HSM password"),
        };
        s.push(Step::ask(input, console::CONFIRM_ERASE, note));
    }
    s.push(
        Step::new(
            Typed::line("yes"),
            Expect::Prompt,
            Check::Contains(console::ERASE_DONE),
            "",
        )
        .slow(),
    );
    for (kh, (key, flags, _)) in &cfg.keys {
        s.push(Step::prompt(
            Typed::line(format!("flags {:08x}", flags.0)),
            format!("flags of {kh}"),
        ));
        s.push(Step::new(
            Typed::line("keyload"),
            Expect::Answer,
            Check::Line(console::keyload_banner(*flags)),
            "",
        ));
        let line = KeyLoadLine {
            handle: *kh,
            key: key.clone(),
        };
        // The console stores 32 bytes: a shorter key acts zero-padded from now on.
        let note = match key.expose().len() {
            32 => String::new(),
            n => format!("{n}-byte key, typed zero-padded to 32 bytes"),
        };
        s.push(Step::new(
            Typed::secret(line.to_line(), 1, &format!("<key of {kh} from {src}>")),
            Expect::Answer,
            Check::Line(console::stored_ok(*kh)),
            note,
        ));
        s.push(Step::prompt(Typed::esc(), "ends keyload"));
    }
    for (kh, _) in cfg.keys.iter().filter(|(_, (_, _, disabled))| *disabled) {
        if !fw.has_keydis() {
            return Err(config_error(
                opts,
                format!("key {kh} is disabled, and firmware {fw} has no keydis (1.0.1 and later)"),
            ));
        }
        s.push(Step::prompt(
            Typed::line(format!("keydis {:08x}", kh.0)),
            "answers FUNCTION_DISABLED from now on",
        ));
    }
    if fw.v1() {
        s.push(Step::new(
            Typed::line("keycommit"),
            Expect::Prompt,
            Check::Contains(console::COMMIT_DONE),
            "writes the key table to flash",
        ));
    }
    if !cfg.yubikeys.is_empty() {
        s.push(Step::new(
            Typed::line("dbload"),
            Expect::Answer,
            Check::Line(console::DBLOAD_BANNER.into()),
            "",
        ));
        for (i, (id, secret, _, _)) in cfg.yubikeys.iter().enumerate() {
            if id.as_str().len() != 12 {
                return Err(config_error(
                    opts,
                    format!("yubikey {id}: the console's dbload takes 12-character public ids"),
                ));
            }
            let index = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let line = DbLoadLine {
                index,
                public_id: id.clone(),
                secret: secret.clone(),
            };
            let mut text = line.to_line();
            if !fw.dbload_comma() {
                // Only 1.0.3 and later want the trailing comma.
                text.pop();
            }
            s.push(Step::new(
                Typed::secret(text, 2, &format!("<uid and AES key of {id} from {src}>")),
                Expect::Answer,
                Check::Line(console::inserted_ok(index)),
                "",
            ));
        }
        s.push(Step::prompt(
            Typed::esc(),
            "ends dbload (counters start at 0)",
        ));
    }
    // The read-back, then out of configuration mode.
    for (line, expect, check, note) in [
        (
            "keylist",
            Expect::Prompt,
            Check::KeyList,
            "checked: the TOML's handles, flags and disabled keys",
        ),
        (
            "dblist",
            Expect::Prompt,
            Check::DbList,
            "checked: the TOML's YubiKeys",
        ),
        ("sysinfo", Expect::Prompt, Check::SysInfo, ""),
        (
            "exit",
            Expect::Nothing,
            Check::None,
            "back to HSM mode, where each key proves itself",
        ),
    ] {
        s.push(Step::new(Typed::line(line), expect, check, note));
    }
    Ok(s)
}

fn print_plan(
    out: &mut dyn Write,
    device: &Path,
    prompt: Option<Prompt>,
    fw: Firmware,
    steps: &[Step],
) -> std::io::Result<()> {
    match prompt {
        Some(p) => writeln!(
            out,
            "{}: firmware {fw}, at the configuration console ({:?})",
            device.display(),
            p.text()
        )?,
        None => writeln!(
            out,
            "{}: not reachable at its console (see below); the dialogue for firmware {fw}:",
            device.display()
        )?,
    }
    writeln!(
        out,
        "dry run: nothing was typed but a carriage return and `sysinfo`. With --yes this is typed (each line ends with a carriage return):"
    )?;
    for step in steps {
        let shown = match step.input.shown() {
            "" => "(empty line)",
            s => s,
        };
        if step.note.is_empty() {
            writeln!(out, "  {shown}")?;
        } else {
            writeln!(out, "  {shown:<46} # {}", step.note)?;
        }
    }
    writeln!(
        out,
        "then HSM mode: each key handle proves its key and flags with read-only commands."
    )?;
    out.flush()
}

/// What the dialogue's listing commands showed.
#[derive(Debug, Default)]
pub struct Listings {
    /// `keylist`.
    pub keys: Vec<KeyListEntry>,
    /// `dblist`.
    pub yubikeys: Vec<DbListEntry>,
    /// `sysinfo`.
    pub sysinfo: Option<SysInfoLine>,
}

/// Types each step, prints the console's redacted answers, and stops at the first answer
/// that is not the one expected.
fn run_steps(
    session: &mut ConsoleSession,
    steps: &[Step],
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Listings, Error> {
    let w = |e| Error::io("write standard output", e);
    // The prompt the probe ended at opens the transcript.
    if let Some(p) = session.prompt() {
        write!(out, "{}", p.text()).map_err(w)?;
    }
    let mut listings = Listings::default();
    for (i, step) in steps.iter().enumerate() {
        let timeout = if step.slow {
            opts.timeout.max(ERASE_TIMEOUT)
        } else {
            opts.timeout
        };
        let stopped = |why: String| {
            Error::DeviceAnswer(format!(
                "stopped at step {} ({:?}): {why}; the device is partly set up: run again with --zap",
                i + 1,
                step.input.shown()
            ))
        };
        let reply = match session.send(&step.input, &step.expect, timeout) {
            Ok(r) => r,
            Err(e) => return Err(stopped(e.to_string())),
        };
        if step.input.shown() == "<ESC>" {
            write!(out, "<ESC>").map_err(w)?;
        }
        write!(out, "{}", printable(reply.text())).map_err(w)?;
        out.flush().map_err(w)?;
        let last = last_line(reply.text());
        if let Expect::Ask(q) = &step.expect {
            if !reply.asked(q) {
                return Err(stopped(format!(
                    "the console answered {last:?} instead of asking {:?}",
                    q.trim_end()
                )));
            }
        }
        match &step.check {
            Check::None => {}
            Check::Line(l) if reply.has_line(l) => {}
            Check::Line(l) => {
                return Err(stopped(format!("the console answered {last:?}, not {l:?}")))
            }
            Check::Contains(t) if reply.contains(t) => {}
            Check::Contains(t) => {
                return Err(stopped(format!(
                    "the console answered {last:?} without {t:?}"
                )))
            }
            Check::KeyList => listings.keys = reply.parse_lines(KeyListEntry::parse),
            Check::DbList => listings.yubikeys = reply.parse_lines(DbListEntry::parse),
            Check::SysInfo => {
                listings.sysinfo = reply.parse_lines(SysInfoLine::find).into_iter().next()
            }
        }
    }
    Ok(listings)
}

/// Console text for a terminal: CR LF as LF, the backspace dance dropped.
fn printable(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "")
        .replace("\u{8} \u{8}", "")
}

/// The last non-empty line of a (redacted) answer, for error messages.
fn last_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

// ---- verification ----

/// The result of one check of a key handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Proven (what).
    Ok(String),
    /// Disproven, or could not be run (what, why).
    Failed(String, String),
    /// Not provable; said so.
    Note(String),
}

impl std::fmt::Display for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Ok(what) => write!(f, "{what} ok"),
            Item::Failed(what, why) => write!(f, "{what} FAILED ({why})"),
            Item::Note(note) => f.write_str(note),
        }
    }
}

/// The verification's printed report and how many handles (or other checks) failed.
#[derive(Debug)]
pub struct Report {
    /// One line per key handle and YubiKey, and a summary.
    pub text: String,
    /// Failed lines.
    pub failed: usize,
}

/// The commands that prove a key without changing persistent state, in the order run.
const PROVABLE: [Flags; 5] = [
    Flags::AEAD_YUBIKEY_OTP_DECODE,
    Flags::AEAD_DECRYPT_CMP,
    Flags::AEAD_GENERATE,
    Flags::AES_ECB_BLOCK_ENCRYPT,
    Flags::HMAC_SHA1_GENERATE,
];

/// The device holds every key as 32 bytes (the console zero-pads shorter ones), so a key is
/// proven against its padded form.
fn padded(key: &AesKey) -> Result<AesKey, Error> {
    let mut k = Zeroizing::new([0u8; 32]);
    let n = key.expose().len().min(32);
    k[..n].copy_from_slice(&key.expose()[..n]);
    Ok(AesKey::new(&*k)?)
}

/// Checks the listings against `cfg`, then proves each key on `hsm` (in HSM mode).
pub fn verify(cfg: &ResolvedConfig, l: &Listings, hsm: &mut Hsm) -> Result<Report, Error> {
    let mut text = String::new();
    let mut failed = 0;
    text.push_str(&format!(
        "{:<12} {:<8} {:<8} {:<6} checks\n",
        "key handle", "flags", "state", "result"
    ));
    for (kh, (key, flags, disabled)) in &cfg.keys {
        let mut items = Vec::new();
        match l.keys.iter().find(|e| e.handle == *kh) {
            None => items.push(Item::Failed("keylist".into(), "not listed".into())),
            Some(e) if e.flags != *flags => items.push(Item::Failed(
                "keylist".into(),
                format!("shows flags {:08x}", e.flags.0),
            )),
            Some(e) if e.disabled != *disabled => items.push(Item::Failed(
                "keylist".into(),
                format!(
                    "shows it {}",
                    if e.disabled { "disabled" } else { "enabled" }
                ),
            )),
            Some(_) => items.push(Item::Ok("keylist".into())),
        }
        let key = padded(key)?;
        items.extend(prove_key(
            hsm,
            *kh,
            &key,
            *flags,
            *disabled,
            cfg.system_flags,
        )?);
        let verdict = if items.iter().any(|i| matches!(i, Item::Failed(..))) {
            failed += 1;
            "FAILED"
        } else {
            "ok"
        };
        let details: Vec<String> = items.iter().map(Item::to_string).collect();
        text.push_str(&format!(
            "{:<12} {:08x} {:<8} {verdict:<6} {}\n",
            kh.to_string(),
            flags.0,
            if *disabled { "disabled" } else { "enabled" },
            details.join("; ")
        ));
    }
    for extra in l.keys.iter().filter(|e| !cfg.keys.contains_key(&e.handle)) {
        failed += 1;
        text.push_str(&format!(
            "{:<12} {:08x} {:<8} FAILED on the device but not in the configuration\n",
            extra.handle.to_string(),
            extra.flags.0,
            if extra.disabled {
                "disabled"
            } else {
                "enabled"
            }
        ));
    }
    for (id, _, use_ctr, session_ctr) in &cfg.yubikeys {
        match l.yubikeys.iter().find(|e| e.public_id == *id) {
            Some(e) => {
                let mut line = format!(
                    "yubikey {id}: in dblist (counters {}/{})",
                    e.use_ctr, e.session_ctr
                );
                if (*use_ctr, *session_ctr) != (0, 0) {
                    line.push_str(&format!(
                        "; the configuration's counters {use_ctr}/{session_ctr} are not loaded by dbload: the replay check starts from 0"
                    ));
                }
                text.push_str(&line);
                text.push('\n');
            }
            None => {
                failed += 1;
                text.push_str(&format!("yubikey {id}: not in dblist: FAILED\n"));
            }
        }
    }
    for extra in l
        .yubikeys
        .iter()
        .filter(|e| !cfg.yubikeys.iter().any(|(id, ..)| *id == e.public_id))
    {
        failed += 1;
        text.push_str(&format!(
            "yubikey {}: in dblist but not in the configuration: FAILED\n",
            extra.public_id
        ));
    }
    let (a, b, c) = hsm.info().version();
    match &l.sysinfo {
        Some(s) if s.firmware == (a, b, c) && s.system_uid == hsm.info().system_uid => {
            text.push_str(&format!(
                "sysinfo: firmware {a}.{b}.{c}, system uid {}\n",
                hex::encode(s.system_uid)
            ));
        }
        Some(_) => {
            failed += 1;
            text.push_str("sysinfo: the console and HSM mode disagree on the firmware or system uid: FAILED\n");
        }
        None => {
            failed += 1;
            text.push_str("sysinfo: no version line at the console: FAILED\n");
        }
    }
    if cfg.master_key.is_some() {
        text.push_str("master key: typed; the key store is locked from the next power-on until `ksm keystore-unlock` (not provable without a power cycle)\n");
    }
    if !cfg.admin_yubikeys.is_empty() {
        text.push_str(&format!(
            "admin YubiKeys: {} typed (not provable without spending an OTP)\n",
            cfg.admin_yubikeys.len()
        ));
    }
    if failed == 0 {
        text.push_str("verified: the device holds the configuration's keys\n");
    } else {
        text.push_str(&format!(
            "NOT VERIFIED: {failed} line(s) failed: zap the device and provision it again\n"
        ));
    }
    Ok(Report { text, failed })
}

/// The HSM-mode checks of one key: each provable flag it has (and the system flags allow)
/// proves its key; a disabled key must be refused.
fn prove_key(
    hsm: &mut Hsm,
    kh: KeyHandle,
    key: &AesKey,
    flags: Flags,
    disabled: bool,
    system: Flags,
) -> Result<Vec<Item>, Error> {
    let usable: Vec<Flags> = PROVABLE
        .into_iter()
        .filter(|f| flags.contains(*f) && system.contains(*f))
        .collect();
    if disabled {
        let flag = usable
            .first()
            .copied()
            .unwrap_or(Flags::AES_ECB_BLOCK_ENCRYPT);
        let what = "disabled (FUNCTION_DISABLED)".to_string();
        let item = match run_proof(hsm, kh, key, flag) {
            Err(Disproof::Device(HsmError::Device {
                status: Status::FunctionDisabled,
                ..
            })) => Item::Ok(what),
            Err(Disproof::Device(e)) if e.is_link_error() => return Err(e.into()),
            Err(e) => Item::Failed(what, format!("{} answered: {}", flag_name(flag), e)),
            Ok(()) => Item::Failed(what, format!("{} worked", flag_name(flag))),
        };
        return Ok(vec![item]);
    }
    let mut items = Vec::new();
    for f in PROVABLE
        .into_iter()
        .filter(|f| flags.contains(*f) && !system.contains(*f))
    {
        items.push(Item::Note(format!(
            "{} not provable: the system flags lack it",
            flag_name(f)
        )));
    }
    if usable.is_empty() {
        items.push(Item::Note(
            "flags listed; key not provable by a read-only command".into(),
        ));
    }
    for flag in usable {
        let name = flag_name(flag);
        items.push(match run_proof(hsm, kh, key, flag) {
            Ok(()) => Item::Ok(name.into()),
            Err(Disproof::Device(e)) if e.is_link_error() => return Err(e.into()),
            Err(e) => Item::Failed(name.into(), e.to_string()),
        });
    }
    Ok(items)
}

fn flag_name(f: Flags) -> &'static str {
    hsm_proto::flags::FLAG_NAMES
        .iter()
        .find(|(bit, _)| *bit == f.0)
        .map(|(_, n)| n.trim_start_matches("YSM_"))
        .unwrap_or("flag")
}

/// Why a proof failed.
#[derive(Debug)]
enum Disproof {
    /// The device refused, or the line failed.
    Device(HsmError),
    /// The device answered, but not what the configuration's key gives in software.
    Differs,
}

impl From<HsmError> for Disproof {
    fn from(e: HsmError) -> Disproof {
        Disproof::Device(e)
    }
}

impl From<otp_core::Error> for Disproof {
    fn from(e: otp_core::Error) -> Disproof {
        Disproof::Device(e.into())
    }
}

impl std::fmt::Display for Disproof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let differs = "the device's key differs from the configuration's";
        match self {
            Disproof::Differs => f.write_str(differs),
            Disproof::Device(e) => match e.status() {
                Some(Status::KeyStorageLocked) => {
                    f.write_str("the key store is locked (KEY_STORAGE_LOCKED): not proven")
                }
                Some(s @ (Status::AeadInvalid | Status::OtpInvalid | Status::Mismatch)) => {
                    write!(f, "{differs}: {s}")
                }
                Some(Status::KeyHandleInvalid) => f.write_str("no such key handle on the device"),
                Some(Status::FunctionDisabled) => {
                    f.write_str("refused with FUNCTION_DISABLED: the flags differ")
                }
                _ => write!(f, "{e}"),
            },
        }
    }
}

/// The test YubiKey the OTP decode proof seals and types: made up here, never stored.
const PROOF_NONCE: Nonce = Nonce([0x6b, 0x73, 0x6d, 0x70, 0x72, 0x76]);
const PROOF_COUNTERS: OtpCounters = OtpCounters {
    use_ctr: 0x0107,
    session_ctr: 0x03,
    ts_high: 0x56,
    ts_low: 0x1234,
};
const PROOF_DATA: &[u8] = b"ksm provision: a known plaintext";
const PROOF_BLOCK: [u8; 16] = *b"ksm provision ck";

/// Runs the proof of `flag` for key `kh` (whose key is `key`): `Ok` when the device's
/// answer is what the configuration's key gives in software.
fn run_proof(hsm: &mut Hsm, kh: KeyHandle, key: &AesKey, flag: Flags) -> Result<(), Disproof> {
    match flag {
        Flags::AEAD_YUBIKEY_OTP_DECODE => {
            let secret = YubiKeySecret {
                key: *b"provision-check!",
                uid: *b"ksm-id",
            };
            let sealed = aead::seal(key, kh, &PROOF_NONCE, &*secret.to_bytes())?;
            let sealed = YubiKeyAead::try_from(&sealed)?;
            let public_id = PublicId::from_bytes(&PROOF_NONCE.0)?;
            let token = Token {
                uid: secret.uid,
                counters: PROOF_COUNTERS,
                rnd: 0x4242,
            };
            let otp = otp::encrypt(&secret, &public_id, &token);
            let decoded = hsm.decode_otp(&otp, kh, PROOF_NONCE, &sealed)?;
            if decoded.counters() != PROOF_COUNTERS {
                return Err(Disproof::Differs);
            }
        }
        Flags::AEAD_DECRYPT_CMP => {
            let sealed = aead::seal(key, kh, &PROOF_NONCE, PROOF_DATA)?;
            if !hsm.aead_decrypt_cmp(kh, PROOF_NONCE, PROOF_DATA, &sealed)? {
                return Err(Disproof::Differs);
            }
        }
        Flags::AEAD_GENERATE => {
            let (nonce, made) = hsm.aead_generate(kh, Nonce::ZERO, PROOF_DATA)?;
            if aead::seal(key, kh, &nonce, PROOF_DATA)? != made {
                return Err(Disproof::Differs);
            }
        }
        Flags::AES_ECB_BLOCK_ENCRYPT => {
            let r = hsm.send(&cmd::AesEcbBlockEncrypt {
                key_handle: kh,
                block: SecretBytes::new(PROOF_BLOCK),
            })?;
            let cipher = aes::Aes256::new_from_slice(key.expose())
                .map_err(|_| otp_core::Error::KeyLength(key.expose().len()))?;
            let mut block = aes::Block::from(PROOF_BLOCK);
            cipher.encrypt_block(&mut block);
            if r.block.expose() != block.as_slice() {
                return Err(Disproof::Differs);
            }
        }
        Flags::HMAC_SHA1_GENERATE => {
            let r = hsm.send(&cmd::HmacSha1Generate {
                key_handle: kh,
                flags: HmacFlags(HmacFlags::RESET | HmacFlags::FINAL),
                data: SecretBytes::new(PROOF_DATA),
            })?;
            let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key.expose())
                .map_err(|_| otp_core::Error::KeyLength(key.expose().len()))?;
            mac.update(PROOF_DATA);
            if mac.finalize().into_bytes().as_slice() != r.hash.as_slice() {
                return Err(Disproof::Differs);
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::emulator;

    const DEMO: &str = include_str!("../../../fixtures/emulator/demo.toml");
    const YUBIKEY: &str = "\n[[yubikey]]\npublic_id = \"ftftftfteeee\"\naes_key = \"4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d\"\nuid = \"f0f1f2f3f4f5\"\n";

    fn opts(zap: bool) -> Options {
        Options {
            device: PathBuf::from("/dev/null"),
            config: PathBuf::from("device.toml"),
            source: "device.toml".into(),
            yes: false,
            zap,
            timeout: Duration::from_secs(1),
        }
    }

    fn cfg(text: &str) -> ResolvedConfig {
        EmulatorConfig::parse(text).unwrap().resolve().unwrap()
    }

    fn shown(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.input.shown().to_string()).collect()
    }

    #[test]
    fn the_dialogue_for_firmware_1_masks_every_key() {
        let text = DEMO.replace(
            "firmware = \"1.0.4\"",
            "firmware = \"1.0.4\"\nmaster_key = \"badabada\"\nadmin_yubikeys = [\"ftftftfteeee\"]",
        ) + YUBIKEY;
        let c = cfg(&text);
        let steps = plan(&c, Firmware((1, 0, 4)), &opts(true)).unwrap();
        let s = shown(&steps);
        assert_eq!(
            s[..8],
            [
                "zap",
                "yes",
                "hsm 7fffffff",
                "",
                "ftftftfteeee",
                "",
                "<master key from device.toml>",
                "yes"
            ]
        );
        assert_eq!(
            s[8..12],
            [
                "flags 6000007e",
                "keyload",
                "00000020,<key of 0x20 from device.toml>",
                "<ESC>"
            ]
        );
        assert!(s.contains(&"keycommit".to_string()));
        assert!(s.contains(
            &"00001,ftftftfteeee,<uid and AES key of ftftftfteeee from device.toml>,".to_string()
        ));
        assert_eq!(s[s.len() - 4..], ["keylist", "dblist", "sysinfo", "exit"]);
        let all = s.join("\n");
        for secret in [
            "fd919884",
            "3337a750",
            "badabada",
            "f0f1f2f3f4f5",
            "4d4d4d4d",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        let mut out = Vec::new();
        print_plan(
            &mut out,
            Path::new("/dev/x"),
            Some(Prompt::NoConfig),
            Firmware((1, 0, 4)),
            &steps,
        )
        .unwrap();
        let printed = String::from_utf8(out).unwrap();
        assert!(
            printed.contains("(empty line)") && !printed.contains("fd919884"),
            "{printed}"
        );
    }

    #[test]
    fn firmware_0_9_has_no_admin_keys_keycommit_or_keydis() {
        let c = cfg(&DEMO.replace("1.0.4", "0.9.8"));
        let s = shown(&plan(&c, Firmware((0, 9, 8)), &opts(false)).unwrap());
        assert_eq!(s[..4], ["hsm 7fffffff", "", "", "yes"]);
        assert!(!s.contains(&"keycommit".to_string()));
        let admin = cfg(&format!("admin_yubikeys = [\"ftftftfteeee\"]\n{YUBIKEY}"));
        assert_eq!(
            plan(&admin, Firmware((0, 9, 8)), &opts(false))
                .unwrap_err()
                .exit_code(),
            2
        );
        let dis = cfg(&format!("{DEMO}disabled = true\n"));
        assert!(plan(&dis, Firmware((1, 0, 0)), &opts(false)).is_err());
        assert!(plan(&dis, Firmware((1, 0, 1)), &opts(false)).is_ok());
        assert_eq!(Firmware::known((1, 1, 0)), None);
        assert_eq!(Firmware::known((2, 0, 0)), None);
        assert!(Firmware::known((0, 9, 9)).is_some());
    }

    #[test]
    fn dbload_lines_lose_the_comma_before_1_0_3() {
        let c = cfg(YUBIKEY);
        let old = shown(&plan(&c, Firmware((1, 0, 2)), &opts(false)).unwrap());
        assert!(old
            .iter()
            .any(|l| l.starts_with("00001,ftftftfteeee,<") && !l.ends_with(',')));
        let new = shown(&plan(&c, Firmware((1, 0, 3)), &opts(false)).unwrap());
        assert!(new
            .iter()
            .any(|l| l.starts_with("00001,ftftftfteeee,<") && l.ends_with(',')));
    }

    /// The proofs against the soft HSM: the configuration's keys pass, others fail, and a
    /// disabled key passes only by being refused.
    #[test]
    fn proofs_tell_the_right_key_from_a_wrong_one() {
        let text = "system_flags = 0xffffffff\n[[key]]\nhandle = 1\nkey = \"0101010101010101010101010101010101010101010101010101010101010101\"\nflags = \"ALL\"\n[[key]]\nhandle = 2\nkey = \"0202020202020202020202020202020202020202020202020202020202020202\"\nflags = \"ALL\"\ndisabled = true\n[[key]]\nhandle = 3\nkey = \"03030303030303030303030303030303\"\nflags = [\"HMAC_SHA1_GENERATE\"]\n[[key]]\nhandle = 4\nkey = \"0404040404040404040404040404040404040404040404040404040404040404\"\nflags = [\"BUFFER_LOAD\"]\n";
        // The device: key 3 zero-padded to 32 bytes, as the console stores a short key.
        let device = cfg(&text.replace(
            "03030303030303030303030303030303\"",
            "0303030303030303030303030303030300000000000000000000000000000000\"",
        ));
        let (mut hsm, _engine) = emulator::soft_hsm(&device).unwrap();
        let want = cfg(text);
        let listings = Listings {
            keys: want
                .keys
                .iter()
                .map(|(kh, (_, f, d))| KeyListEntry {
                    handle: *kh,
                    flags: *f,
                    disabled: *d,
                })
                .collect(),
            yubikeys: Vec::new(),
            sysinfo: Some(SysInfoLine {
                firmware: (1, 0, 4),
                protocol: 1,
                system_uid: [0x55; 12],
            }),
        };
        let r = verify(&want, &listings, &mut hsm).unwrap();
        assert_eq!(r.failed, 0, "{}", r.text);
        assert!(r.text.contains("AEAD_YUBIKEY_OTP_DECODE ok"), "{}", r.text);
        assert!(
            r.text.contains("disabled (FUNCTION_DISABLED) ok"),
            "{}",
            r.text
        );
        assert!(
            r.text.contains("not provable by a read-only command"),
            "{}",
            r.text
        );

        // Another key in slot 1 (a typo): every proof of it fails, the others still pass.
        let typo = cfg(&device_text_with_key1(
            text,
            "0101010101010101010101010101010101010101010101010101010101010100",
        ));
        let (mut hsm, _engine) = emulator::soft_hsm(&typo).unwrap();
        let r = verify(&want, &listings, &mut hsm).unwrap();
        assert_eq!(r.failed, 1, "{}", r.text);
        let line = r.text.lines().find(|l| l.starts_with("0x1 ")).unwrap();
        assert!(line.contains("FAILED (the device's key differs"), "{line}");
        for kh in ["0x2 ", "0x3 ", "0x4 "] {
            let l = r.text.lines().find(|l| l.starts_with(kh)).unwrap();
            assert!(l.contains(" ok "), "{l}");
        }
        // A keylist that does not match fails too.
        let mut wrong = listings;
        wrong.keys[0].flags = Flags(1);
        wrong.keys.pop();
        let (mut hsm, _engine) = emulator::soft_hsm(&device).unwrap();
        let r = verify(&want, &wrong, &mut hsm).unwrap();
        assert_eq!(r.failed, 2, "{}", r.text);
        assert!(
            r.text.contains("keylist FAILED (shows flags 00000001)"),
            "{}",
            r.text
        );
        assert!(r.text.contains("keylist FAILED (not listed)"), "{}", r.text);
    }

    fn device_text_with_key1(text: &str, key: &str) -> String {
        text.replacen(
            "0101010101010101010101010101010101010101010101010101010101010101",
            key,
            1,
        )
    }
}
