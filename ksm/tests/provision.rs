//! `ksm provision` end to end, as an operator runs it: the real `ksm` binary types at a
//! `ksm emulate --preset blank` device (a zapped YubiHSM 1 at its configuration console)
//! over a real pty, then `ksm serve` decodes Yubico `ykgenerate` OTPs through what it set up.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use e2e_tests::{fixtures, get, listening_addr, output_text, vector_otp, EmulateProcess};
use hsm_proto::console::{KeyListEntry, Prompt};
use hsm_proto::console_session::{ConsoleSession, Expect, Typed};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// The demo device's keys (fixtures/emulator/demo.toml), and pieces of them: none may
/// appear in anything `ksm provision` prints or logs.
fn key_fragments() -> Vec<String> {
    let v = e2e_tests::otp_vectors();
    let mut out = Vec::new();
    for kh in ["0x20", "0x21"] {
        let k = v["key_handles"][kh].as_str().unwrap().to_string();
        for (a, b) in [(0, 64), (0, 16), (16, 32), (32, 48), (48, 64)] {
            out.push(k[a..b].to_string());
        }
    }
    out
}

fn assert_no_key(o: &Output) {
    let text = output_text(o);
    for f in key_fragments() {
        assert!(!text.contains(&f), "shows key material {f}:\n{text}");
    }
}

/// The demo device as a private (0600) TOML, as an operator keeps a device's keys.
fn device_toml(dir: &Path, extra: &str) -> PathBuf {
    let p = dir.join("spare.toml");
    let demo = std::fs::read_to_string(fixtures().join("emulator/demo.toml")).unwrap();
    std::fs::write(&p, demo.replace("firmware = \"1.0.4\"\n", extra) + "\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn provision(toml: &Path, link: &Path, flags: &[&str]) -> Output {
    Command::new(KSM)
        .args(["--debug", "provision", "--config"])
        .arg(toml)
        .arg("-D")
        .arg(link)
        .args(flags)
        .output()
        .unwrap()
}

/// The blank device, looked at through its console: the prompt and the key handles listed.
fn console_state(link: &Path) -> (Prompt, Vec<KeyListEntry>) {
    let mut s = ConsoleSession::open(link).unwrap();
    let prompt = s.probe(Duration::from_secs(5)).unwrap();
    let keys = s
        .send(
            &Typed::line("keylist"),
            &Expect::Prompt,
            Duration::from_secs(5),
        )
        .unwrap()
        .parse_lines(KeyListEntry::parse);
    (prompt, keys)
}

fn line_of<'a>(stdout: &'a str, handle: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.starts_with(&format!("{handle} ")))
        .unwrap_or_else(|| panic!("no line for {handle}:\n{stdout}"))
}

#[test]
fn dry_run_prints_the_dialogue_masked_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EmulateProcess::start(Path::new(KSM), &["--preset", "blank"], dir.path());
    let toml = device_toml(dir.path(), "firmware = \"1.0.4\"\n");
    let o = provision(&toml, &emu.link, &[]);
    assert!(o.status.success(), "{}", output_text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(\"NO_CFG> \")"), "{out}");
    for typed in [
        "  hsm 7fffffff",
        "  flags 6000007e",
        "  keyload",
        "  00000020,<key of 0x20 from spare.toml>",
        "  00000021,<key of 0x21 from spare.toml>",
        "  <ESC>",
        "  keycommit",
        "  exit",
    ] {
        assert!(out.contains(typed), "{typed:?} not in\n{out}");
    }
    assert!(!out.contains("zap"), "zap only with --zap:\n{out}");
    assert_no_key(&o);
    assert_eq!(console_state(&emu.link), (Prompt::NoConfig, Vec::new()));

    // A key file others may read is refused before the device is touched.
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = provision(&toml, &emu.link, &["--yes"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
    assert!(output_text(&o).contains("chmod 600"), "{}", output_text(&o));
    assert_no_key(&o);
    assert_eq!(console_state(&emu.link).0, Prompt::NoConfig);
}

#[test]
fn provisioned_spare_serves_the_old_devices_aeads() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EmulateProcess::start(Path::new(KSM), &["--preset", "blank"], dir.path());
    let toml = device_toml(dir.path(), "firmware = \"1.0.4\"\n");
    let o = provision(&toml, &emu.link, &["--yes"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert_no_key(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    // The transcript shows the console's echo, masked.
    assert!(
        out.contains("00000020,<key of 0x20 from spare.toml>\n00000020 - stored ok"),
        "{out}"
    );
    for kh in ["0x20", "0x21"] {
        let l = line_of(&out, kh);
        assert!(
            l.contains(" ok ") && l.contains("AEAD_YUBIKEY_OTP_DECODE ok"),
            "{l}"
        );
    }
    assert!(out.contains("verified: the device holds"), "{out}");

    // The daemon on the spare, with the AEADs the old device made.
    let mut serve = Command::new(KSM)
        .arg("serve")
        .arg("-D")
        .arg(&emu.link)
        .arg("-B")
        .arg(fixtures().join("aead-files/store"))
        .args([
            "--key-handles",
            "0x20,0x21",
            "--port",
            "0",
            "--socket",
            "none",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut serve);
    // YubiKeys 0 and 1 of the vectors: one AEAD under each key handle.
    for (i, counter, use_) in [(0, 7, 0), (1, 9, 2), (0, 8, 1)] {
        let otp = vector_otp(i, counter, use_);
        let a = get(addr, &format!("/wsapi/decrypt?otp={otp}"));
        assert_eq!(
            (a.status, a.body.as_str()),
            (
                200,
                format!("OK counter={counter:04x} low=4242 high=17 use={use_:02x}\n").as_str()
            ),
            "{otp}"
        );
    }
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn a_mistyped_key_fails_verification_naming_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let emu = EmulateProcess::start(Path::new(KSM), &["--preset", "blank"], dir.path());
    let toml = device_toml(dir.path(), "firmware = \"1.0.4\"\n");
    // The first key typed (0x20) is stored with one digit changed.
    assert_eq!(emu.control("mistype 1"), "ok");
    let o = provision(&toml, &emu.link, &["--yes"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert_no_key(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    let bad = line_of(&out, "0x20");
    assert!(
        bad.contains("FAILED") && bad.contains("differs from the configuration"),
        "{bad}"
    );
    assert!(line_of(&out, "0x21").contains(" ok "), "{out}");
    assert!(out.contains("NOT VERIFIED"), "{out}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("verification line(s) failed"),
        "{}",
        output_text(&o)
    );
}

#[test]
fn refuses_a_device_not_at_its_console_and_a_locked_one_without_zap() {
    let dir = tempfile::tempdir().unwrap();
    // The demo device is in HSM mode: nothing is typed, with or without --yes.
    let hsm_mode = EmulateProcess::start(Path::new(KSM), &["--preset", "demo"], dir.path());
    let toml = device_toml(
        dir.path(),
        "firmware = \"1.0.4\"\nmaster_key = \"5a5a5a5a5a5a5a5a\"\n",
    );
    for flags in [&[][..], &["--yes"]] {
        let o = provision(&toml, &hsm_mode.link, flags);
        assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
        assert!(
            output_text(&o).contains("not at the configuration console")
                && output_text(&o).contains("hold the button"),
            "{}",
            output_text(&o)
        );
    }
    drop(hsm_mode);

    // A spare with a master key, power-cycled: its console refuses `hsm` until zapped.
    let dir = tempfile::tempdir().unwrap();
    let emu = EmulateProcess::start(Path::new(KSM), &["--preset", "blank"], dir.path());
    let o = provision(&toml, &emu.link, &["--yes"]);
    assert!(o.status.success(), "{}", output_text(&o));
    assert!(!output_text(&o).contains("5a5a5a5a5a5a5a5a"));
    assert_eq!(emu.control("power-cycle"), "ok");
    assert_eq!(emu.control("config-mode"), "ok");
    let o = provision(&toml, &emu.link, &["--yes"]);
    assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
    assert!(output_text(&o).contains("--zap"), "{}", output_text(&o));
    let o = provision(&toml, &emu.link, &["--yes", "--zap"]);
    assert!(o.status.success(), "{}", output_text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("HSM (keys not decrypted)> zap"), "{out}");
    assert!(out.contains("<master key from spare.toml>"), "{out}");
    assert!(!output_text(&o).contains("5a5a5a5a5a5a5a5a"));
    assert_no_key(&o);
}
