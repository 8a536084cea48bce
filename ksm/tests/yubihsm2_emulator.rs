//! `ksm emulate --hsm2` as a process: Yubico's python-yubihsm drives it unmodified over
//! HTTP (`tests/python/test_yubihsm2.py`), and its flags, configuration checks and control
//! socket behave.
//!
//! The Python suite needs `yubihsm[http]` (PyPI) and `ykgenerate` (Debian libyubikey-dev).
//! `.ci/run` installs both, points `KSM_PYTHON` at its virtualenv's interpreter and sets
//! `KSM_REQUIRE_PYTHON=1`, so there a missing package fails the test; elsewhere the test
//! says loudly that it skipped.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// A `ksm emulate --hsm2` process, killed on drop.
struct Emulator(e2e_tests::Hsm2EmulateProcess);

impl std::ops::Deref for Emulator {
    type Target = e2e_tests::Hsm2EmulateProcess;
    fn deref(&self) -> &e2e_tests::Hsm2EmulateProcess {
        &self.0
    }
}

impl Emulator {
    fn start(dir: &Path, config: Option<&Path>) -> Emulator {
        Emulator(e2e_tests::Hsm2EmulateProcess::start(
            Path::new(KSM),
            config,
            dir.join("ctl"),
        ))
    }
}

/// Runs `cmd` to its end, killing it after `limit`.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn private_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The interpreter with python-yubihsm, or `None` (and a loud note) where it is not
/// installed and not required.
fn python() -> Option<String> {
    let python = std::env::var("KSM_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut check = Command::new(&python);
    check.args(["-c", "import yubihsm, requests, cryptography"]);
    let ok = run_with_timeout(check, Duration::from_secs(60))
        .status
        .success();
    if ok {
        return Some(python);
    }
    let hint = "python-yubihsm is not installed for this interpreter: \
        `python3 -m venv VENV && VENV/bin/pip install 'yubihsm[http]'`, then KSM_PYTHON=VENV/bin/python \
        (.ci/run does this)";
    if std::env::var("KSM_REQUIRE_PYTHON").as_deref() == Ok("1") {
        panic!("{hint}");
    }
    // Written to the process's stderr directly: the harness captures eprintln!.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED the python-yubihsm suite: {hint}"
    );
    None
}

#[test]
fn python_yubihsm_drives_the_emulator() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    private_file(&cfg, "session-timeout = 3\n");
    let emu = Emulator::start(dir.path(), Some(&cfg));
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/test_yubihsm2.py");
    let mut cmd = Command::new(python);
    cmd.arg(&suite)
        .env("YUBIHSM2_URL", &emu.url)
        .env("YUBIHSM2_SESSION_TIMEOUT", "3");
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the python-yubihsm suite failed");
    assert!(text.contains("\nOK"), "unittest did not report OK");
    let ran: usize = text
        .split("Ran ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 15, "only {ran} python tests ran");
    // Sessions the suite left (a wrong password leaves one half-open) go with a reset.
    assert_eq!(emu.control("reset"), "ok");
    assert_eq!(emu.control("status"), "sessions=0 stall=false refuse=false");
}

/// The status page and the control socket of the process, over plain HTTP.
#[test]
fn control_socket_and_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path(), None);
    let addr = emu.url.trim_start_matches("http://").parse().unwrap();
    let page = e2e_tests::get(addr, "/connector/status");
    assert!(
        page.body.starts_with("status=OK\nserial=*\n"),
        "{:?}",
        page.body
    );
    assert!(page.body.contains(&format!("port={}\n", addr.port())));
    let mode = std::fs::metadata(&emu.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(emu.control("stall on"), "ok");
    assert_eq!(emu.control("status"), "sessions=0 stall=true refuse=false");
    assert_eq!(emu.control("stall off"), "ok");
    assert_eq!(emu.control("refuse on"), "ok");
    assert!(std::net::TcpStream::connect(addr).is_err());
    assert_eq!(emu.control("refuse off"), "ok");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the port did not open again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(emu
        .control("power-cycle")
        .starts_with("error: unknown command"));
    assert_eq!(emu.control("reset"), "ok");
}

#[test]
fn flags_and_configuration_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(KSM);
        // A --pty that is wrongly accepted would make its link here, not in the tree.
        cmd.arg("emulate").args(args).current_dir(dir.path());
        run_with_timeout(cmd, Duration::from_secs(30))
    };
    let key = "00112233445566778899aabbccddeeff";
    let cfg = dir.path().join("device.toml");
    std::fs::write(
        &cfg,
        format!("[[otp-aead-key]]\nid = 1\nkey = \"{key}\"\nnonce-id = \"00000000\"\ncapabilities = \"all\"\ndomains = \"1\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let out = run(&["--hsm2", "--listen", "127.0.0.1:0", "--config", cfg_s]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mode 0644"), "{err}");
    assert!(!err.contains(key));
    // A key that is not hex: the error names the field, never the text.
    private_file(&cfg, &format!("[[otp-aead-key]]\nid = 1\nkey = \"{key}zz\"\nnonce-id = \"00000000\"\ncapabilities = \"all\"\ndomains = \"1\"\n"));
    let out = run(&["--hsm2", "--listen", "127.0.0.1:0", "--config", cfg_s]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("otp-aead-key"), "{err}");
    assert!(!err.contains(key), "{err}");
    // Loopback only; no --pty or --preset with --hsm2; --pty still required without it.
    assert_eq!(
        run(&["--hsm2", "--listen", "0.0.0.0:0"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&["--hsm2", "--pty", "x"]).status.code(), Some(2));
    assert_eq!(run(&["--hsm2", "--preset", "demo"]).status.code(), Some(2));
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(
        run(&["--pty", "x", "--listen", "127.0.0.1:1"])
            .status
            .code(),
        Some(2)
    );
}
