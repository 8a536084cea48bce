//! `ksm serve` on YubiHSM 2 devices, as an operator runs it: every piece a process of its
//! own (`ksm emulate --hsm2` behind real connector HTTP, `ksm emulate --pty` for the
//! YubiHSM 1, `ksm serve`, `ksm keystore-unlock`, `ksm migrate-aeads`), OTPs from Yubico's
//! `ykgenerate`, and every answer line compared with the line the YubiHSM 1 path gives for
//! the same OTP: the validator's view must not change.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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
struct Hsm2(e2e_tests::Hsm2EmulateProcess);

impl std::ops::Deref for Hsm2 {
    type Target = e2e_tests::Hsm2EmulateProcess;
    fn deref(&self) -> &e2e_tests::Hsm2EmulateProcess {
        &self.0
    }
}

impl Hsm2 {
    fn start(dir: &Path) -> Hsm2 {
        Hsm2::start_with(dir, "hsm2", "", "")
    }

    /// The same device named `name` in `dir`, its configuration `head` + the fixture +
    /// `tail` (settings go in `head`, more objects in `tail`).
    fn start_with(dir: &Path, name: &str, head: &str, tail: &str) -> Hsm2 {
        let config = dir.join(format!("{name}.toml"));
        let fixture =
            std::fs::read_to_string(e2e_tests::fixtures().join("emulator/yubihsm2-migrated.toml"))
                .unwrap();
        private_file(&config, &format!("{head}\n{fixture}\n{tail}"));
        Hsm2(e2e_tests::Hsm2EmulateProcess::start(
            Path::new(KSM),
            Some(&config),
            dir.join(format!("{name}.ctl")),
        ))
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
    /// Everything it logged (`--debug`, standard error), read as it comes so the pipe never
    /// fills: tests check that no password ever reaches the log.
    log: Arc<Mutex<String>>,
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
            .args(["--port", "0", "--reqtimeout", "3", "--debug"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ksm serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
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
            log,
        }
    }

    /// What it has logged so far.
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
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
        self.unlock_with(input, &[])
    }

    /// The same with `args` added.
    fn unlock_with(&self, input: &str, args: &[&str]) -> Output {
        let mut c = Command::new(KSM)
            .args(["keystore-unlock", "--stdin", "--no-otp", "--socket"])
            .arg(&self.socket)
            .args(args)
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
    // The daemon logged in detail, and neither password is in it.
    let log = d.log();
    assert!(log.contains("YubiHSM 2 unlocked"), "{log}");
    assert!(!log.contains("not the password"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
}

/// At boot the connector may not be up yet: `ksm keystore-unlock` still hands the password
/// over, says it could not be checked, and exits 6; the daemon checks it when the device
/// answers, and serves then. A wrong one given that way is forgotten when refused.
#[test]
fn a_password_given_while_the_connector_is_down_is_checked_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let hsm2 = Hsm2::start(dir.path());
    let aeads = store_copy(dir.path(), "aeads");
    migrate(&hsm2, dir.path(), &aeads, "0x20", "0x0120");
    assert_eq!(hsm2.control("refuse on"), "ok");
    let d = Serve::start(
        dir.path(),
        "ksm",
        &[
            "-D",
            &hsm2.url,
            "-B",
            aeads.to_str().unwrap(),
            "--key-handles",
            "otp-aead-key:0x0120",
            "--hsm2-auth-key",
            "2",
        ],
    );
    d.wait_for_state(0, "down");
    let o = d.unlock("not the password\n");
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    let pending = format!(
        "{}: not reachable now: password kept, checked when the device answers\n",
        hsm2.url
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), pending);
    assert_eq!(hsm2.control("refuse off"), "ok");
    d.wait_for_state(0, "locked");
    // Gone again, the right one this time (the daemon, idle and locked, learns that the
    // connector is gone only from this attempt).
    assert_eq!(hsm2.control("refuse on"), "ok");
    let o = d.unlock(&format!("{PASSWORD}\n"));
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), pending);
    assert_eq!(hsm2.control("refuse off"), "ok");
    d.wait_for_state(0, "up");
    let a = d.decode(&vector_otp(0, 3, 3));
    assert!(a.body.starts_with("OK counter=0003"), "{}", a.body);
    let log = d.log();
    assert!(!log.contains("not the password"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
}

/// `ksm migrate-aeads` of key handle `kh` to otp-aead-key `id` in `aeads` (beside pyhsm's
/// files), checked on the YubiHSM 2 with its factory key 1.
fn migrate(hsm2: &Hsm2, dir: &Path, aeads: &Path, kh: &str, id: &str) {
    let pw = dir.join("factory-password");
    private_file(&pw, "password\n");
    let o = Command::new(KSM)
        .args(["migrate-aeads", "-B"])
        .arg(aeads)
        .args(["--key-handle", kh, "--to-key-id", id, "-D", &hsm2.url])
        .args(["--auth-key-id", "1", "--password-file"])
        .arg(&pw)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// The answers of a daemon on the YubiHSM 1 at `link` with the fixture AEADs in `aeads`: the
/// golden lines a YubiHSM 2 daemon must give for the same OTPs.
fn yubihsm1_answers(dir: &Path, link: &str, aeads: &str, otps: &[String]) -> Vec<String> {
    let d1 = Serve::start(
        dir,
        "hsm1",
        &["-D", link, "-B", aeads, "--key-handles", "0x20,0x21"],
    );
    answers(&d1, otps)
}

/// A private copy of the fixture AEADs (pyhsm's files of key handles 0x20 and 0x21).
fn store_copy(dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    e2e_tests::copy_tree(&e2e_tests::fixtures().join("aead-files/store"), &to);
    to
}

/// The migration as an operator runs it: the YubiHSM 1 daemon's answers are the golden
/// lines; after `ksm migrate-aeads`, a daemon on the YubiHSM 2 alone gives the same lines for
/// the same OTPs, before and after the device drops its sessions (a reset), and again with
/// the AEADs as database rows (`ksm store db-import`, SQLite).
#[test]
fn migrated_aeads_answer_on_a_yubihsm2_as_they_did_on_the_yubihsm1() {
    let dir = tempfile::tempdir().unwrap();
    let hsm1 = e2e_tests::EmulateProcess::start(Path::new(KSM), &["--preset", "demo"], dir.path());
    let hsm2 = Hsm2::start(dir.path());
    let aeads = store_copy(dir.path(), "aeads");
    let link = hsm1.link.to_str().unwrap().to_string();
    let aeads_arg = aeads.to_str().unwrap().to_string();

    let otps = otps();
    let golden = yubihsm1_answers(dir.path(), &link, &aeads_arg, &otps);
    // The golden lines are the contract's: the vectors' published answers, every good OTP
    // decoded, the rest refused.
    let v = otp_vectors();
    for (o, line) in v["otps"].as_array().unwrap().iter().zip(&golden) {
        assert_eq!(*line, format!("200 {}\n", o["expect"].as_str().unwrap()));
    }
    assert_eq!(
        golden
            .iter()
            .filter(|l| l.starts_with("200 OK counter="))
            .count(),
        otps.len() - 8,
        "{golden:#?}"
    );
    assert!(
        golden.contains(&"200 ERR Corrupt OTP\n".to_string()),
        "{golden:#?}"
    );
    assert!(golden.contains(&"200 ERR Unknown public_id\n".to_string()));
    assert!(golden.contains(&"200 ERR No OTP provided\n".to_string()));

    migrate(&hsm2, dir.path(), &aeads, "0x20", "0x0120");
    migrate(&hsm2, dir.path(), &aeads, "0x21", "0x0121");
    let pw = dir.path().join("hsm2-password");
    private_file(&pw, &format!("{PASSWORD}\n"));
    // Only the YubiHSM 2 copies are listed: nothing can come from pyhsm's files.
    let d2 = Serve::start(
        dir.path(),
        "hsm2",
        &[
            "-D",
            &hsm2.url,
            "-B",
            &aeads_arg,
            "--key-handles",
            "otp-aead-key:0x0120,otp-aead-key:0x0121",
            "--hsm2-auth-key",
            "2",
            "--hsm2-password-file",
            pw.to_str().unwrap(),
        ],
    );
    d2.wait_for_state(0, "up");
    assert_eq!(answers(&d2, &otps), golden);
    let reauths = format!("ksm_hsm_reauthentications_total{{device=\"{}\"}}", hsm2.url);
    let before = d2.metric(&reauths).unwrap();
    // The device drops every session (a power cycle): the daemon authenticates again
    // inside the requests that find them gone, and nothing else changes.
    assert_eq!(hsm2.control("reset"), "ok");
    assert_eq!(answers(&d2, &otps), golden);
    assert!(d2.metric(&reauths).unwrap() > before);
    let h = d2.health();
    assert_eq!(h["status"], "ok", "{h}");
    assert!(
        h["devices"][0]["reauthentications"].as_u64().unwrap() > 0,
        "{h}"
    );
    drop(d2);

    // The same AEADs as rows (`ksm store db-import`, SQLite): the same lines again.
    let db = format!("sqlite:///{}", dir.path().join("aeads.db").display());
    for args in [vec!["db-init", &db], vec!["db-import", &aeads_arg, &db]] {
        let o = Command::new(KSM).arg("store").args(&args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    let d3 = Serve::start(
        dir.path(),
        "hsm2-db",
        &[
            "-D",
            &hsm2.url,
            "--db-url",
            &db,
            "--key-handles",
            "otp-aead-key:0x0120,otp-aead-key:0x0121",
            "--hsm2-auth-key",
            "2",
            "--hsm2-password-file",
            pw.to_str().unwrap(),
        ],
    );
    d3.wait_for_state(0, "up");
    assert_eq!(answers(&d3, &otps), golden);
}

/// During the move one daemon holds a YubiHSM 1 and a YubiHSM 2: key handle 0x20 is
/// migrated, 0x21 not yet. Each AEAD goes to the device that opens it, and a migrated
/// YubiKey that still has its YubiHSM 1 file fails over to the YubiHSM 1 while the YubiHSM 2
/// is locked (after a reboot) or gone: every answer is the golden one. Only a YubiKey whose
/// YubiHSM 1 file is gone (here vector YubiKey 0's) waits for the YubiHSM 2: `ERR HSM
/// locked` until `ksm keystore-unlock` has handed the password over, `ERR HSM unavailable`
/// while it is gone.
#[test]
fn a_mixed_daemon_serves_both_stores_during_the_move() {
    let dir = tempfile::tempdir().unwrap();
    let hsm1 = e2e_tests::EmulateProcess::start(Path::new(KSM), &["--preset", "demo"], dir.path());
    let hsm2 = Hsm2::start(dir.path());
    let aeads = store_copy(dir.path(), "aeads");
    let link = hsm1.link.to_str().unwrap().to_string();
    let aeads_arg = aeads.to_str().unwrap().to_string();
    let otps = otps();
    let golden = yubihsm1_answers(dir.path(), &link, &aeads_arg, &otps);
    migrate(&hsm2, dir.path(), &aeads, "0x20", "0x0120");
    // Vector YubiKey 0 exists only as a YubiHSM 2 AEAD from now on.
    let v = otp_vectors();
    let only_hsm2 = v["yubikeys"][0]["public_id"].as_str().unwrap().to_string();
    let hsm1_file = aeads.join("0x20/cc/cc/de/ul/fb/vj").join(&only_hsm2);
    std::fs::remove_file(&hsm1_file).unwrap();
    let d = Serve::start(
        dir.path(),
        "mixed",
        &[
            "-D",
            &link,
            "-D",
            &hsm2.url,
            "-B",
            &aeads_arg,
            "--key-handles",
            "otp-aead-key:0x0120,0x20,0x21",
            "--hsm2-auth-key",
            "2",
        ],
    );
    d.wait_for_state(0, "up");
    d.wait_for_state(1, "locked");
    let h = d.health();
    assert_eq!(h["devices"][0]["kind"], "yubihsm1", "{h}");
    assert_eq!(h["devices"][1]["kind"], "yubihsm2", "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    // Vector YubiKeys 0, 2, 4 are key handle 0x20's (now on the YubiHSM 2, and 2 and 4
    // still on the YubiHSM 1), 1, 3, 5 0x21's.
    let locked = answers(&d, &otps);
    let mut served_by_hsm1 = 0;
    for ((otp, line), want) in otps.iter().zip(&locked).zip(&golden) {
        if otp.starts_with(&only_hsm2) {
            assert_eq!(line, "503 ERR HSM locked\n", "{otp}");
        } else {
            assert_eq!(line, want, "{otp}");
            served_by_hsm1 += 1;
        }
    }
    assert!(served_by_hsm1 > 0 && locked.iter().any(|l| l == "503 ERR HSM locked\n"));
    // With a YubiHSM 1 in the daemon, standard input is the YubiHSM 1's (whether it is
    // locked or not): a line there never reaches the YubiHSM 2 as its password.
    let o = d.unlock(&format!("{PASSWORD}\n"));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("wrong password"), "{}", text(&o));
    assert_eq!(d.health()["devices"][1]["state"], "locked");
    // A password file readable by others is refused, as every key file.
    let pw = dir.path().join("hsm2-password");
    private_file(&pw, &format!("{PASSWORD}\n"));
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let o = d.unlock_with("", &["--hsm2-password-file", pw.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains(PASSWORD), "{}", text(&o));
    // Scripts give it in a private file.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = d.unlock_with("", &["--hsm2-password-file", pw.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        out,
        format!("{link}: already unlocked\n{}: unlocked\n", hsm2.url)
    );
    assert_eq!(answers(&d, &otps), golden);
    assert_eq!(d.health()["status"], "ok");

    // The YubiHSM 2's connector goes away: only its own YubiKeys are affected.
    assert_eq!(hsm2.control("refuse on"), "ok");
    let cut = answers(&d, &otps);
    for ((otp, line), want) in otps.iter().zip(&cut).zip(&golden) {
        if otp.starts_with(&only_hsm2) {
            assert_eq!(line, "503 ERR HSM unavailable\n", "{otp}");
        } else {
            assert_eq!(line, want, "{otp}");
        }
    }
    assert_eq!(hsm2.control("refuse off"), "ok");
    d.wait_for_state(1, "up");
    assert_eq!(answers(&d, &otps), golden);
}

/// A YubiHSM 2 without its authentication key, or with a password file others may read,
/// stops `ksm serve` at once with a usage error that says what to fix and never shows the
/// password.
#[test]
fn a_yubihsm2_misconfigured_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = e2e_tests::fixtures().join("aead-files/store");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(KSM);
        cmd.args(["serve", "-D", "http://127.0.0.1:1", "-B"])
            .arg(&store)
            .args(["--key-handles", "otp-aead-key:0x0120", "--socket", "none"])
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().unwrap();
        // Refused before it listens: it exits by itself.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("ksm serve did not exit")
            .unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("hsm2-auth-key"), "{}", text(&o));

    let pw = dir.path().join("hsm2-password");
    std::fs::write(&pw, "Hunter2pw\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = run(&[
        "--hsm2-auth-key",
        "2",
        "--hsm2-password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    assert!(!text(&o).contains("Hunter2pw"), "{}", text(&o));

    let o = run(&["-D", "http://127.0.0.1:1/path", "--hsm2-auth-key", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no path"), "{}", text(&o));
}

/// Anyone who can reach the connector may open sessions without a password. A local user
/// who takes every slot the daemon does not hold, in a loop, finds nothing more to take:
/// the daemon keeps its session alive past the device's idle timeout (2 s here) and, on
/// SIGHUP, opens its new session before it lets the old one go, so decodes keep answering
/// OK throughout.
#[test]
fn a_user_taking_every_free_session_slot_never_gets_the_daemons() {
    use hsm2_proto::codec::Frame;
    use hsm2_proto::transport::{Connector, HttpTimeouts, Transport};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("yubihsm2.toml");
    let text =
        std::fs::read_to_string(e2e_tests::fixtures().join("emulator/yubihsm2-migrated.toml"))
            .unwrap()
            .replace("session-timeout = 30", "session-timeout = 2");
    private_file(&config, &text);
    let hsm2 = Hsm2(e2e_tests::Hsm2EmulateProcess::start(
        Path::new(KSM),
        Some(&config),
        dir.path().join("hsm2.ctl"),
    ));
    let aeads = store_copy(dir.path(), "aeads");
    migrate(&hsm2, dir.path(), &aeads, "0x20", "0x0120");
    let pw = dir.path().join("hsm2-password");
    private_file(&pw, &format!("{PASSWORD}\n"));
    let d = Serve::start(
        dir.path(),
        "ksm",
        &[
            "-D",
            &hsm2.url,
            "-B",
            aeads.to_str().unwrap(),
            "--key-handles",
            "otp-aead-key:0x0120",
            "--hsm2-auth-key",
            "2",
            "--hsm2-password-file",
            pw.to_str().unwrap(),
            "--hsm2-sessions",
            "1",
            "--hsm2-keepalive",
            "0.5",
        ],
    );
    d.wait_for_state(0, "up");
    let mut ctr = 1u16;
    let mut decode_ok = |d: &Serve, when: &str| {
        let a = d.decode(&vector_otp(0, ctr, 1));
        assert_eq!(
            (a.status, a.body.as_str()),
            (
                200,
                format!("OK counter={ctr:04x} low=4242 high=17 use=01\n").as_str()
            ),
            "{when}: {}",
            d.health()
        );
        ctr += 1;
    };
    decode_ok(&d, "before");

    // The attacker: CreateSession (no password needed) in a loop, on its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let attacker = {
        let (stop, taken, url) = (stop.clone(), taken.clone(), hsm2.url.clone());
        std::thread::spawn(move || {
            let timeouts = HttpTimeouts {
                connect: Duration::from_secs(2),
                answer: Duration::from_secs(2),
            };
            let mut t = Connector::open(&url, timeouts).unwrap();
            let create = Frame::new(0x03, &[0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(answer) = t.exchange(&create) {
                    if answer.cmd() == 0x83 {
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    // Every slot is taken: the daemon's one, and fifteen of the attacker's.
    let until = Instant::now() + Duration::from_secs(20);
    while !hsm2.control("status").starts_with("sessions=16 ") {
        assert!(Instant::now() < until, "{}", hsm2.control("status"));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Idle past the device's timeout, several times over, while the attacker keeps
    // taking every slot that comes free.
    let idle_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < idle_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    decode_ok(&d, "after the idle timeout");
    // A reload: the new transport and session first, the old ones closed after.
    let opens = format!("ksm_hsm_opens_total{{device=\"{}\"}}", hsm2.url);
    let before = d.metric(&opens).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d._proc.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while d.metric(&opens).unwrap() == before {
        assert!(Instant::now() < until, "SIGHUP never reopened the device");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..3 {
        decode_ok(&d, "after SIGHUP");
    }
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(taken.load(Ordering::Relaxed) >= 15);
}

/// The audit settings of a hardened YubiHSM 2: a full log refuses what it would log.
const FORCED_AUDIT: &str = "force-audit = \"on\"";

/// An authentication key for a KSM that keeps the audit log: decodes, reads and frees the
/// log, reads the options.
const AUDITING_KEY: &str = "[[authentication-key]]\nid = 3\nlabel = \"ksm with audit log\"\npassword = \"audit pw\"\ncapabilities = \"decrypt-otp:get-log-entries:get-option\"\ndomains = \"1\"\n";

/// A YubiHSM 2 that logs every command and refuses them once its log is full
/// (force-audit), with authentication key 3 ([`AUDITING_KEY`]) and key handles 0x20 and
/// 0x21 migrated to otp-aead-keys 0x0120 and 0x0121; and the store of their AEADs.
fn forced_audit_device(dir: &Path) -> (Hsm2, PathBuf) {
    let hsm2 = Hsm2::start_with(
        dir,
        "hsm2",
        &format!("{FORCED_AUDIT}\ncommand-audit = \"all\""),
        AUDITING_KEY,
    );
    let aeads = store_copy(dir, "aeads");
    migrate(&hsm2, dir, &aeads, "0x20", "0x0120");
    migrate(&hsm2, dir, &aeads, "0x21", "0x0121");
    (hsm2, aeads)
}

/// A `ksm serve` on `devices` with authentication key 3 (its password in a private file)
/// and the migrated AEADs in `aeads`, plus `args`.
fn auditing_daemon(
    dir: &Path,
    name: &str,
    devices: &[&Hsm2],
    aeads: &Path,
    args: &[&str],
) -> Serve {
    let pw = dir.join("audit-password");
    private_file(&pw, "audit pw\n");
    let mut all: Vec<String> = devices
        .iter()
        .flat_map(|d| ["-D".to_string(), d.url.clone()])
        .collect();
    all.extend(
        [
            "-B",
            aeads.to_str().unwrap(),
            "--key-handles",
            "otp-aead-key:0x0120,otp-aead-key:0x0121",
            "--hsm2-auth-key",
            "3",
            "--hsm2-password-file",
            pw.to_str().unwrap(),
        ]
        .map(String::from),
    );
    all.extend(args.iter().map(|a| a.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let d = Serve::start(dir, name, &refs);
    for i in 0..devices.len() {
        d.wait_for_state(i, "up");
    }
    d
}

/// Issue 23 item 3: a YubiHSM 2 that logs every command and refuses them once its log is
/// full (force-audit). A daemon with --hsm2-audit-log drains the log into its file and
/// frees it, so 1,000 OTPs decode without one refusal, across a restart of the daemon; the
/// file then holds every entry the device wrote (the rest taken by `ksm hsm2-log`, which
/// checks the chain against the file's last line), numbered without a gap, chained
/// without a break, every decode among them.
#[test]
fn a_forced_audit_log_drained_by_the_daemon_never_stops_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm2, aeads) = forced_audit_device(dir.path());
    let file = dir.path().join("audit.jsonl");
    let file_arg = ["--hsm2-audit-log", file.to_str().unwrap()];
    let otps: Vec<String> = (0..1000)
        .map(|n| vector_otp(n % 6, 1 + (n / 6) as u16, (n % 200) as u8))
        .collect();
    let refusals = format!(
        "ksm_hsm2_log_full_refusals_total{{device=\"{}\"}}",
        hsm2.url
    );
    for (run, part) in otps.chunks(500).enumerate() {
        let d = auditing_daemon(
            dir.path(),
            &format!("ksm{run}"),
            &[&hsm2],
            &aeads,
            &file_arg,
        );
        for o in part {
            let a = d.decode(o);
            assert!(
                a.body.starts_with("OK counter="),
                "{o}: {} {}",
                a.status,
                a.body
            );
        }
        assert_eq!(d.metric(&refusals), Some(0), "the device never refused");
        let h = d.health();
        let log = &h["devices"][0]["log"];
        assert_eq!(log["chain_breaks"], 0, "{h}");
        assert_eq!(log["force_audit"], true, "{h}");
        assert!(log["drained"].as_u64().unwrap() > 0, "{h}");
        assert_eq!(h["warnings"], serde_json::json!([]), "{h}");
    }
    // What the device still holds, through the operator's tool (which appends it to the
    // file after checking it follows the file's last line).
    let pw = dir.path().join("factory-password");
    let o = Command::new(KSM)
        .args(["hsm2-log", "-D", &hsm2.url, "--password-file"])
        .arg(&pw)
        .arg("--audit-log")
        .arg(&file)
        .arg("--advance")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chain intact"), "{}", text(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["chain"], "start");
    assert_eq!(lines[0]["command"], "reset");
    assert!(lines[1..].iter().all(|l| l["chain"] == "ok"), "a break");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["number"], i + 1, "every entry, in order: {l}");
    }
    let decodes = lines
        .iter()
        .filter(|l| l["command"] == "decrypt-otp")
        .count();
    assert_eq!(decodes, 1000);
    assert!(lines
        .iter()
        .all(|l| l["result"] != 0x7f || l["command"] != "decrypt-otp"));
    // A file whose last line was altered: the device's next entries do not follow it, and
    // the tool says so (exit 1) after printing them.
    let text_of_file = std::fs::read_to_string(&file).unwrap();
    let last = text_of_file.lines().last().unwrap();
    let digest = serde_json::from_str::<serde_json::Value>(last).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    private_file(&file, &text_of_file.replace(&digest, &"0".repeat(32)));
    let o = Command::new(KSM)
        .args(["hsm2-log", "-D", &hsm2.url, "--password-file"])
        .arg(&pw)
        .arg("--audit-log")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("BROKEN"), "{}", text(&o));
    assert!(text(&o).contains("digest chain is broken"), "{}", text(&o));
}

/// The complete lines of an audit file, parsed (a line being written as it is read is
/// left out: only what a test waits for is read while the daemon runs).
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Decodes `n` OTPs from the `next`th on, each answered OK.
fn decode_all_ok(d: &Serve, next: &mut usize, n: usize) {
    for _ in 0..n {
        let o = vector_otp(*next % 6, 1 + (*next / 6) as u16, 1);
        let a = d.decode(&o);
        assert!(
            a.body.starts_with("OK counter="),
            "{o}: {} {}",
            a.status,
            a.body
        );
        *next += 1;
    }
}

/// Waits (at most 20 s) until the audit file at `path` holds a decode.
fn wait_for_a_drained_decode(d: &Serve, path: &Path, when: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while !audit_lines(path)
        .iter()
        .any(|l| l["command"] == "decrypt-otp")
    {
        assert!(
            Instant::now() < until,
            "{when}: no decode drained into {}: {}",
            path.display(),
            d.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// logrotate's way with `--hsm2-audit-log`: the file renamed away, then SIGHUP. The daemon
/// opens a new file at the path (private, as the first), drains what comes next into it,
/// and leaves the renamed one with what it held; the digest chain goes on across the two,
/// its anchor kept in memory: every entry the device wrote is in one file or the other,
/// once, numbered without a gap, the new file's first entry following the old one's last.
#[test]
fn a_rotated_audit_file_is_followed_by_a_new_one_on_sighup_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm2, aeads) = forced_audit_device(dir.path());
    let file = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let d = auditing_daemon(
        dir.path(),
        "ksm",
        &[&hsm2],
        &aeads,
        &["--hsm2-audit-log", file.to_str().unwrap()],
    );
    let mut next = 0;
    decode_all_ok(&d, &mut next, 40);
    wait_for_a_drained_decode(&d, &file, "before the rotation");

    std::fs::rename(&file, &rotated).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d._proc.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(
            Instant::now() < until,
            "SIGHUP opened no new audit file: {:?}",
            d.log()
                .lines()
                .filter(|l| l.contains("audit"))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the new file is private: {mode:o}");
    decode_all_ok(&d, &mut next, 40);
    wait_for_a_drained_decode(&d, &file, "after SIGHUP");
    let h = d.health();
    assert_eq!(h["devices"][0]["log"]["chain_breaks"], 0, "{h}");
    drop(d);

    // What the device still holds, through the operator's tool, which checks it follows
    // the new file's last line and appends it there.
    let o = Command::new(KSM)
        .args(["hsm2-log", "-D", &hsm2.url, "--password-file"])
        .arg(dir.path().join("factory-password"))
        .arg("--audit-log")
        .arg(&file)
        .arg("--advance")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chain intact"), "{}", text(&o));

    let old = audit_lines(&rotated);
    let new = audit_lines(&file);
    let decodes = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| l["command"] == "decrypt-otp")
            .count()
    };
    assert!(decodes(&old) > 0 && decodes(&new) > 0, "{old:?}\n{new:?}");
    assert_eq!(
        new[0]["chain"], "ok",
        "the new file's first entry follows the old file's last: {}",
        new[0]
    );
    let all: Vec<&serde_json::Value> = old.iter().chain(&new).collect();
    assert_eq!(all[0]["chain"], "start");
    assert_eq!(all[0]["command"], "reset");
    assert!(all[1..].iter().all(|l| l["chain"] == "ok"), "a break");
    for (i, l) in all.iter().enumerate() {
        assert_eq!(l["number"], i + 1, "every entry once, in order: {l}");
    }
    assert_eq!(decodes(&old) + decodes(&new), 80, "every decode, once");
}

/// The daemon's figures of device 0's audit log in /health.
fn log_figure(d: &Serve, name: &str) -> u64 {
    let h = d.health();
    h["devices"][0]["log"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name}: {h}"))
}

/// `ksm hsm2-log --advance` into `file`, with the factory key: an operator freeing the
/// device's log by hand.
fn operator_drain(hsm2: &Hsm2, dir: &Path, file: &Path) -> String {
    let mut c = Command::new(KSM);
    c.args(["hsm2-log", "-D", &hsm2.url, "--password-file"])
        .arg(dir.join("factory-password"))
        .arg("--audit-log")
        .arg(file)
        .arg("--advance");
    let (status, out, err) = test_support::run_bounded(c, "");
    assert!(status.success(), "{out}{err}");
    format!("{out}{err}")
}

/// Issue 23 item 3: "a break in it logged as an error". An operator frees the device's log
/// with `ksm hsm2-log --advance` into a file of their own while the daemon drains it into
/// its --hsm2-audit-log: the entries the operator took are gone from the device before the
/// daemon read them, so the next entry the daemon reads does not follow the last one its
/// file holds. The daemon says so as an error, counts it in /metrics and /health, marks
/// that entry `break` in its file, and goes on decoding and draining, the chain carrying on
/// from the entry after the gap: the gap is exactly what the operator's file holds.
#[test]
fn entries_another_reader_took_are_a_chain_break_the_daemon_logs_counts_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm2, aeads) = forced_audit_device(dir.path());
    let file = dir.path().join("audit.jsonl");
    let other = dir.path().join("operator.jsonl");
    let d = auditing_daemon(
        dir.path(),
        "ksm",
        &[&hsm2],
        &aeads,
        &["--hsm2-audit-log", file.to_str().unwrap()],
    );
    let breaks = format!(
        "ksm_hsm2_audit_chain_breaks_total{{device=\"{}\"}}",
        hsm2.url
    );
    let mut next = 0;
    decode_all_ok(&d, &mut next, 40);
    wait_for_a_drained_decode(&d, &file, "before the operator's drain");
    // Decode until the daemon drains again: the device then holds only the few entries
    // since, well below the 16 the daemon drains at, so the daemon does not read the log
    // while the operator's tool does, and what the operator takes it never sees.
    let drained = log_figure(&d, "drained");
    let mut n = 0;
    while log_figure(&d, "drained") == drained {
        n += 1;
        assert!(n < 100, "the daemon drained no more: {}", d.health());
        decode_all_ok(&d, &mut next, 1);
    }
    decode_all_ok(&d, &mut next, 3);
    let said = operator_drain(&hsm2, dir.path(), &other);
    assert!(said.contains("chain intact"), "{said}");
    let taken = audit_lines(&other);
    assert!(
        taken
            .iter()
            .filter(|l| l["command"] == "decrypt-otp")
            .count()
            >= 3,
        "the operator took the last decodes: {taken:?}"
    );
    assert_eq!(d.metric(&breaks), Some(0), "no break yet");

    // The daemon's next drain finds the gap.
    decode_all_ok(&d, &mut next, 40);
    let until = Instant::now() + Duration::from_secs(20);
    while !audit_lines(&file).iter().any(|l| l["chain"] == "break") {
        assert!(
            Instant::now() < until,
            "no break recorded in {}: {}",
            file.display(),
            d.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let lines = audit_lines(&file);
    let at = lines.iter().position(|l| l["chain"] == "break").unwrap();
    let number = &lines[at]["number"];
    assert_eq!(
        number.as_u64(),
        taken.last().unwrap()["number"].as_u64().map(|n| n + 1),
        "the break is the entry after the last one the operator took: {}",
        lines[at]
    );
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("digest chain is broken")
            && l.contains(&format!("number={number}"))),
        "no error naming the break: {log}"
    );
    assert!(
        !log.contains("could not be drained"),
        "the drain itself worked: {log}"
    );
    assert_eq!(d.metric(&breaks), Some(1));
    assert_eq!(log_figure(&d, "chain_breaks"), 1);

    // The daemon goes on: decodes answer, and the entries after the break are drained,
    // chained from it.
    decode_all_ok(&d, &mut next, 40);
    let until = Instant::now() + Duration::from_secs(20);
    while !audit_lines(&file)[at + 1..]
        .iter()
        .any(|l| l["command"] == "decrypt-otp")
    {
        assert!(
            Instant::now() < until,
            "nothing drained after the break: {}",
            d.health()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(d);
    let lines = audit_lines(&file);
    assert_eq!(lines[0]["chain"], "start");
    assert!(
        lines[1..]
            .iter()
            .enumerate()
            .all(|(i, l)| (l["chain"] == "break") == (i + 1 == at)),
        "one break, every other entry chained: {lines:?}"
    );
    // Every entry the device wrote is in one file or the other, once: the daemon's up to
    // the gap, the operator's, the daemon's from the break on.
    let all: Vec<&serde_json::Value> = lines[..at]
        .iter()
        .chain(&taken)
        .chain(&lines[at..])
        .collect();
    for (i, l) in all.iter().enumerate() {
        assert_eq!(l["number"], i + 1, "every entry once, in order: {l}");
    }
}

/// Issue 23 item 3, without --hsm2-audit-log: the daemon reads the log's use, /health
/// warns before the forced log is full, and when the device then refuses, decodes go to
/// the other YubiHSM 2 and every OTP is still answered.
#[test]
fn without_an_audit_log_health_warns_before_a_forced_log_refuses_and_decodes_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let forced = Hsm2::start_with(
        dir.path(),
        "forced",
        &format!("{FORCED_AUDIT}\ncommand-audit = \"decrypt-otp\""),
        AUDITING_KEY,
    );
    let other = Hsm2::start_with(dir.path(), "other", "", AUDITING_KEY);
    let aeads = store_copy(dir.path(), "aeads");
    // Both devices hold the same otp-aead-keys: AEADs made through one open on the other.
    migrate(&forced, dir.path(), &aeads, "0x20", "0x0120");
    migrate(&forced, dir.path(), &aeads, "0x21", "0x0121");
    let d = auditing_daemon(dir.path(), "ksm", &[&forced, &other], &aeads, &[]);
    let refusals = format!(
        "ksm_hsm2_log_full_refusals_total{{device=\"{}\"}}",
        forced.url
    );
    let mut warned = false;
    let mut n = 0u16;
    while d.metric(&refusals) == Some(0) {
        n += 1;
        assert!(n < 400, "the forced device never refused: {}", d.health());
        let a = d.decode(&vector_otp(usize::from(n) % 6, n, 1));
        assert!(a.body.starts_with("OK counter="), "{} {}", a.status, a.body);
        let h = d.health();
        if d.metric(&refusals) == Some(0) {
            warned |= h["devices"][0]["log"]["warning"].is_string();
        }
    }
    assert!(
        warned,
        "no warning before the device refused: {}",
        d.health()
    );
    let h = d.health();
    assert_eq!(h["devices"][0]["log"]["used"], 62, "{h}");
    let w = h["warnings"][0].as_str().unwrap();
    assert!(
        w.starts_with(&format!("{}: audit log 62 of 62", forced.url)),
        "{w}"
    );
    assert_eq!(
        h["devices"][1]["log"]["warning"],
        serde_json::Value::Null,
        "{h}"
    );
    // Every OTP is still answered, by the other device.
    for k in 0..20u16 {
        let a = d.decode(&vector_otp(usize::from(k) % 6, 500 + k, 1));
        assert!(a.body.starts_with("OK counter="), "{} {}", a.status, a.body);
    }
    assert!(d.metric(&refusals).unwrap() > 0);
}

/// Issue 23 item 2: a site rotates to a key its first YubiHSM 2 generated (`ksm rewrap`),
/// clones that key to its second YubiHSM 2 with `ksm clone-hsm2` under a wrap key both hold,
/// and both devices then give, through a `ksm serve` each, the YubiHSM 1's answer to every
/// OTP. The keys that may not leave the source are named and counted, and a second run
/// finds the key there and changes nothing.
#[test]
fn a_key_rewrapped_on_one_yubihsm2_and_cloned_to_another_decodes_on_both() {
    use hsm2_proto::cmd::{GenerateOtpAeadKey, NewObject};
    use hsm2_proto::transport::{Connector, HttpTimeouts};
    use hsm2_proto::{Algorithm, AuthKey, Capabilities, Client, Domains, Label, NonceId};
    use hsm2_proto::{ObjectId, SecretBytes};

    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let hsm1 = e2e_tests::EmulateProcess::start(Path::new(KSM), &["--preset", "demo"], dir.path());
    let a = Hsm2::start(&a_dir);
    let b = e2e_tests::Hsm2EmulateProcess::start(Path::new(KSM), None, b_dir.join("hsm2.ctl"));
    let aeads = store_copy(dir.path(), "aeads");
    let aeads_arg = aeads.to_str().unwrap().to_string();
    let otps = otps();
    let golden = yubihsm1_answers(dir.path(), hsm1.link.to_str().unwrap(), &aeads_arg, &otps);
    migrate(&a, dir.path(), &aeads, "0x20", "0x0120");
    migrate(&a, dir.path(), &aeads, "0x21", "0x0121");

    // As docs/yubihsm2.md has the operator do it: the source generates the new key (it may
    // leave under wrap), and the same wrap key goes on both devices.
    let session = |url: &str| {
        let t: Box<dyn hsm2_proto::transport::Transport> =
            Box::new(Connector::open(url, HttpTimeouts::default()).unwrap());
        let mut c = Client::new(t);
        let s = c
            .open_session(ObjectId(1), &AuthKey::from_password(b"password"))
            .unwrap();
        (c, s)
    };
    let caps = |names: &str| Capabilities::parse(names).unwrap();
    let head = |id: u16, algorithm, capabilities| NewObject {
        id: ObjectId(id),
        label: Label::new("ksm clone test").unwrap(),
        domains: Domains(1),
        capabilities,
        algorithm,
    };
    let delegated = caps(
        "decrypt-otp:create-otp-aead:randomize-otp-aead:rewrap-from-otp-aead-key:rewrap-to-otp-aead-key:exportable-under-wrap",
    );
    let mut wrap_key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut wrap_key);
    let (mut ca, mut sa) = session(&a.url);
    ca.send(
        &mut sa,
        &GenerateOtpAeadKey {
            object: head(
                0x0200,
                Algorithm::Aes256YubicoOtp,
                caps("decrypt-otp:create-otp-aead:rewrap-to-otp-aead-key:exportable-under-wrap"),
            ),
            nonce_id: NonceId([0, 2, 0, 0]),
        },
    )
    .unwrap();
    let (mut cb, mut sb) = session(&b.url);
    for (c, s, cap) in [
        (&mut ca, &mut sa, "export-wrapped"),
        (&mut cb, &mut sb, "import-wrapped"),
    ] {
        c.put_wrap_key(
            s,
            head(0x0300, Algorithm::Aes256CcmWrap, caps(cap)),
            delegated,
            SecretBytes::new(wrap_key.to_vec()),
        )
        .unwrap();
    }

    let pw = dir.path().join("factory-password");
    private_file(&pw, "password\n");
    for from in ["0x0120", "0x0121"] {
        let o = Command::new(KSM)
            .args(["rewrap", "--from-key", from, "--to-key", "0x0200", "-B"])
            .arg(&aeads)
            .args(["-D", &a.url, "--password-file"])
            .arg(&pw)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    }

    let clone = |extra: &[&str]| {
        Command::new(KSM)
            .args(["clone-hsm2", "--from", &a.url, "--to", &b.url])
            .args(["--wrap-key-id", "0x0300", "--from-password-file"])
            .arg(&pw)
            .arg("--to-password-file")
            .arg(&pw)
            .args(extra)
            .output()
            .unwrap()
    };
    // Every otp-aead-key the source has: the two it got from the YubiHSM 1 may not leave.
    let o = clone(&[]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("copied otp-aead-key 0x0200"), "{out}");
    assert!(
        out.contains("checked: an AEAD made on the source decodes an OTP on the target"),
        "{out}"
    );
    for id in ["0x0120", "0x0121"] {
        assert!(
            out.contains(&format!(
                "FAILED otp-aead-key {id}: it lacks exportable-under-wrap"
            )),
            "{out}"
        );
    }
    assert!(
        out.contains("1 copied (0 not checked), 0 already on the target, 2 failed"),
        "{out}"
    );
    // Again, for the one key: it is there, the same key, and nothing changes.
    let o = clone(&["--key-ids", "0x0200"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("0 copied (0 not checked), 1 already on the target, 0 failed"),
        "{out}"
    );

    // Both devices, each behind its own daemon, give the YubiHSM 1's answers.
    let pw_arg = pw.to_str().unwrap();
    for (name, url) in [("clone-a", &a.url), ("clone-b", &b.url)] {
        let d = Serve::start(
            dir.path(),
            name,
            &[
                "-D",
                url,
                "-B",
                &aeads_arg,
                "--key-handles",
                "otp-aead-key:0x0200",
                "--hsm2-auth-key",
                "1",
                "--hsm2-password-file",
                pw_arg,
            ],
        );
        d.wait_for_state(0, "up");
        assert_eq!(answers(&d, &otps), golden, "{name}");
    }
}
