//! `ksm emulate` and `ksm info` run as an operator runs them: separate processes, a real
//! pty, the control socket, SIGTERM.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{control, wait_for_path};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn info(link: &Path, timeout: &str) -> std::process::Output {
    Command::new(KSM)
        .args(["info", "-D"])
        .arg(link)
        .args(["--timeout", timeout])
        .output()
        .expect("ksm info")
}

#[test]
fn emulate_info_faults_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyYHSM");
    let sock = dir.path().join("ctl");
    let child = Command::new(KSM)
        .arg("emulate")
        .arg("--pty")
        .arg(&link)
        .arg("--control")
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ksm emulate");
    let mut emu = Emulator(child);
    wait_for_path(&sock);
    let target = std::fs::read_link(&link).unwrap();
    assert!(target.starts_with("/dev/pts/"), "{}", target.display());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let out = info(&link, "1");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("firmware: 1.0.4")
            && text.contains("protocol: 1")
            && text.contains("echo: ok"),
        "{text}"
    );

    assert_eq!(control(&sock, "stall on"), "ok");
    let start = Instant::now();
    let out = info(&link, "0.3");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did not respond"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(control(&sock, "stall off"), "ok");
    assert!(info(&link, "1").status.success());

    assert_eq!(control(&sock, "config-mode"), "ok");
    let out = info(&link, "0.5");
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration mode"));
    assert!(control(&sock, "status").contains("console=true"));
    assert!(control(&sock, "bogus").starts_with("error:"));

    let pid = nix::unistd::Pid::from_raw(emu.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = emu.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "link removed on SIGTERM"
    );
    let mut first = String::new();
    BufReader::new(emu.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("emulated YubiHSM at "), "{first}");
}

/// Issue 11: pyhsm's test device runs from a clean clone, where the fixture file is mode
/// 0644, as `--preset pyhsm-tests`; driven over its pty, it unlocks with pyhsm's passphrase
/// and admin YubiKey and answers AEAD_GENERATE as pyhsm's `test/test_aead.py` expects.
#[test]
fn preset_pyhsm_tests_is_pyhsms_test_device() {
    use hsm_proto::{Error, Hsm, KeyHandle, Nonce, Opcode, Status, Timeouts};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyYHSM");
    let child = Command::new(KSM)
        .args(["emulate", "--preset", "pyhsm-tests", "--pty"])
        .arg(&link)
        .stdout(Stdio::null())
        .spawn()
        .expect("ksm emulate");
    let _emu = Emulator(child);
    wait_for_path(&link);
    let mut hsm = Hsm::open_path(&link, Timeouts::default()).unwrap();
    let refused = |cmd, status| Error::Device { cmd, status };
    // test_aead.py's nonce and a YubiKey secret's length.
    let nonce = Nonce([0x4d; 6]);
    let secret = [0x41; 22];
    let user_nonce = KeyHandle(0x2000_0002);

    // Locked at power-on (the device has a master key).
    assert_eq!(
        hsm.aead_generate(user_nonce, nonce, &secret).unwrap_err(),
        refused(Opcode::AeadGenerate, Status::KeyStorageLocked)
    );
    // test_common.py: HsmPassphrase "bada" * 2, zero-padded to 32 bytes by
    // KEY_STORE_DECRYPT, then an OTP of the admin YubiKey with counters 1/0.
    let mut master = [0u8; 32];
    master[..4].copy_from_slice(&[0xba, 0xda, 0xba, 0xda]);
    hsm.key_store_decrypt(&master).unwrap();
    let otp = e2e_tests::ykgenerate("ftftftfteeee", &"4d".repeat(16), "f0f1f2f3f4f5", 1, 0, 0, 0);
    hsm.hsm_unlock(&hsm_proto::otp::Otp::parse(&otp).unwrap())
        .unwrap();

    // test_generate_aead_simple_with_nonce: 0x20000002 takes the caller's nonce.
    let (used, _) = hsm.aead_generate(user_nonce, nonce, &secret).unwrap();
    assert_eq!(used, nonce);
    // test_generate_aead_simple_nonce_blocked and test_who_can_generate_simple: every
    // other handle refuses, key handle 2 (AEAD_GENERATE without USER_NONCE) included.
    for kh in (1..32).chain([0x1002]) {
        assert_eq!(
            hsm.aead_generate(KeyHandle(kh), nonce, &secret)
                .unwrap_err(),
            refused(Opcode::AeadGenerate, Status::FunctionDisabled),
            "key handle {kh:#x}"
        );
    }

    // A preset or a file, not both.
    let out = Command::new(KSM)
        .args(["emulate", "--preset", "demo", "--config", "x.toml", "--pty"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn world_readable_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("keys.json");
    std::fs::write(
        &cfg,
        r#"{"32": "0101010101010101010101010101010101010101010101010101010101010101"}"#,
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new(KSM)
        .args(["info", "-D"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other users may read it"));
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(KSM)
        .args(["info", "-D"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SOFT HSM"),
        "loud warning expected"
    );
}
