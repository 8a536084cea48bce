//! `ksm serve` on YubiHSM 2 devices, as an operator runs it: every piece a process of its
//! own (`ksm emulate --hsm2` behind real connector HTTP, `ksm emulate --pty` for the
//! YubiHSM 1, `ksm serve`, `ksm keystore-unlock`, `ksm migrate-aeads`), OTPs from Yubico's
//! `ykgenerate`, and every answer line compared with the line the YubiHSM 1 path gives for
//! the same OTP: the validator's view must not change.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report
#![allow(dead_code)] // helpers for the migration tests that follow

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e_tests::{get, otp_vectors, vector_otp, ykgenerate, Answer};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// Authentication key 2's password in `fixtures/emulator/yubihsm2-migrated.toml`.
const PASSWORD: &str = "ksm test password";

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ksm emulate --hsm2` with the YubiHSM 2 that took over the demo YubiHSM 1.
struct Hsm2 {
    _proc: Proc,
    url: String,
    control: PathBuf,
}

impl Hsm2 {
    fn start(dir: &Path) -> Hsm2 {
        let config = dir.join("yubihsm2.toml");
        std::fs::write(
            &config,
            std::fs::read(e2e_tests::fixtures().join("emulator/yubihsm2-migrated.toml")).unwrap(),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let control = dir.join("hsm2.ctl");
        let mut child = Command::new(KSM)
            .args(["emulate", "--hsm2", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--control")
            .arg(&control)
            .stdout(Stdio::piped())
            .spawn()
            .expect("ksm emulate --hsm2");
        let line = first_line(&mut child);
        let url = line
            .strip_prefix("emulated YubiHSM 2 at ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        e2e_tests::wait_for_path(&control);
        Hsm2 {
            _proc: Proc(child),
            url,
            control,
        }
    }

    fn control(&self, line: &str) -> String {
        e2e_tests::control(&self.control, line)
    }
}

/// The first line a child prints, within 20 s; the rest of its output is drained.
fn first_line(child: &mut Child) -> String {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(out).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("nothing printed within 20 s")
        .expect("a first line")
        .unwrap()
}

/// A running `ksm serve` with its sharing socket.
struct Serve {
    _proc: Proc,
    addr: SocketAddr,
    socket: PathBuf,
}

impl Serve {
    /// `ksm serve ARGS` with a sharing socket in `dir`, on a free port.
    fn start(dir: &Path, name: &str, args: &[&str]) -> Serve {
        let socket = dir.join(format!("{name}.sock"));
        let mut child = Command::new(KSM)
            .arg("serve")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .args(["--port", "0", "--reqtimeout", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ksm serve");
        let line = first_line(&mut child);
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        Serve {
            _proc: Proc(child),
            addr,
            socket,
        }
    }

    fn decode(&self, otp: &str) -> Answer {
        get(self.addr, &format!("/wsapi/decrypt?otp={otp}"))
    }

    fn health(&self) -> serde_json::Value {
        serde_json::from_str(&get(self.addr, "/health").body).unwrap()
    }

    /// A metric's value (the first line starting with `prefix`).
    fn metric(&self, prefix: &str) -> Option<u64> {
        get(self.addr, "/metrics")
            .body
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Waits until device `i` is in `state`.
    fn wait_for_state(&self, i: usize, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.health()["devices"][i]["state"] != state {
            assert!(Instant::now() < deadline, "{}", self.health());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ksm keystore-unlock --stdin --no-otp` with `input` on its standard input.
    fn unlock(&self, input: &str) -> Output {
        let mut c = Command::new(KSM)
            .args(["keystore-unlock", "--stdin", "--no-otp", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }
}

fn text(o: &Output) -> String {
    e2e_tests::output_text(o)
}

/// A private file holding `content`.
fn private_file(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// OTPs to compare: for each vector YubiKey, fresh `ykgenerate` OTPs (good ones, one of
/// another YubiKey's key under this id), and the fixed vector OTPs.
fn otps() -> Vec<String> {
    let v = otp_vectors();
    let mut all: Vec<String> = v["otps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["otp"].as_str().unwrap().to_string())
        .collect();
    for i in 0..6 {
        all.push(vector_otp(i, 0x0123, 0x45));
        all.push(vector_otp(i, 0xfffe, 0xff));
        let y = &v["yubikeys"][i];
        let other = &v["yubikeys"][(i + 1) % 6];
        all.push(ykgenerate(
            y["public_id"].as_str().unwrap(),
            other["aes_key"].as_str().unwrap(),
            other["uid"].as_str().unwrap(),
            7,
            1,
            2,
            3,
        ));
    }
    // An unknown public id, and no OTP at all.
    all.push(ykgenerate(
        "cccccccccccb",
        "00112233445566778899aabbccddeeff",
        "010203040506",
        1,
        1,
        1,
        1,
    ));
    all.push(String::new());
    all
}

/// Every answer of `d` to `otps`, `status body` per OTP.
fn answers(d: &Serve, otps: &[String]) -> Vec<String> {
    otps.iter()
        .map(|o| {
            let a = d.decode(o);
            format!("{} {}", a.status, a.body)
        })
        .collect()
}

#[test]
fn a_locked_yubihsm2_is_unlocked_by_keystore_unlock_and_refuses_a_wrong_password() {
    let dir = tempfile::tempdir().unwrap();
    let hsm2 = Hsm2::start(dir.path());
    let store = e2e_tests::fixtures().join("aead-files/store");
    let d = Serve::start(
        dir.path(),
        "ksm",
        &[
            "-D",
            &hsm2.url,
            "-B",
            store.to_str().unwrap(),
            "--key-handles",
            "0x20",
            "--hsm2-auth-key",
            "2",
        ],
    );
    d.wait_for_state(0, "locked");
    let h = d.health();
    assert_eq!(h["devices"][0]["kind"], "yubihsm2", "{h}");
    assert_eq!(h["devices"][0]["name"], hsm2.url.as_str(), "{h}");
    assert_eq!(h["status"], "locked", "{h}");
    assert_eq!(get(d.addr, "/health").status, 503);
    assert_eq!(
        d.metric(&format!(
            "ksm_hsm_state{{device=\"{}\",state=\"locked\"}}",
            hsm2.url
        )),
        Some(1)
    );

    let o = d.unlock("not the password\n");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("wrong password"), "{}", text(&o));
    assert!(!text(&o).contains("not the password"), "{}", text(&o));
    assert_eq!(d.health()["devices"][0]["state"], "locked");

    let o = d.unlock(&format!("{PASSWORD}\n"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("{}: unlocked\n", hsm2.url)
    );
    let h = d.health();
    assert_eq!(h["devices"][0]["state"], "up", "{h}");
    assert_eq!(h["devices"][0]["sessions_open"], 1, "{h}");
    let sessions = format!("ksm_hsm_sessions_open{{device=\"{}\"}}", hsm2.url);
    assert_eq!(d.metric(&sessions), Some(1));
    // The device holds the daemon's session, and the one the wrong password created but
    // could not authenticate (the device drops it when it has sat idle for its timeout).
    assert!(
        hsm2.control("status").starts_with("sessions=2 "),
        "{}",
        hsm2.control("status")
    );
}
