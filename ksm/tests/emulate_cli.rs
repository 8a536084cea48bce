//! `ksm emulate` and `ksm info` run as an operator runs them: separate processes, a real
//! pty, the control socket, SIGTERM.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::symlink_metadata(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn control(sock: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(sock).expect("control socket");
    writeln!(s, "{line}").unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    reply.trim().to_string()
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
    wait_for(&sock);
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
