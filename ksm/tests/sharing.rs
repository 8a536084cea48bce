//! The daemon's sharing socket as operators use it: `ksm serve` owning emulated YubiHSMs on
//! real ptys, and the tools (`import-keys`, `generate-keys`, `keystore-unlock`, `info`) as
//! separate processes talking to it, several at once.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::{emulator_config, get, output_text as text, Device};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// The key of handle 0x20 in `fixtures/emulator/demo.toml` (a public test key).
const KEY_0X20: &str = "fd919884f2db9928396eb20fd8f82b80b5cbc112c4d0af880e3280f08101ca70";
/// The key of handle 0x21 there.
const KEY_0X21: &str = "3337a750a9be3518f85668a34d82828d844d3efc583cf130ecb2bddb5b8ed307";

struct Serve {
    child: Child,
    addr: std::net::SocketAddr,
    sock: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ksm serve` over `devices` with a sharing socket in a fresh directory.
fn serve(devices: &[PathBuf], extra: &[&str]) -> Serve {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("ksm.sock");
    let aeads = e2e_tests::fixtures().join("aead-files/store");
    let mut cmd = Command::new(KSM);
    cmd.arg("serve");
    for d in devices {
        cmd.arg("-D").arg(d);
    }
    let mut child = cmd
        .args([
            "-B",
            aeads.to_str().unwrap(),
            "--key-handles",
            "0x20",
            "0x21",
        ])
        .args(["--socket", sock.to_str().unwrap(), "--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ksm serve");
    let addr = e2e_tests::listening_addr(&mut child);
    Serve {
        child,
        addr,
        sock,
        _tmp: tmp,
    }
}

fn key_file(dir: &Path, name: &str, hex: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, hex).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A `# ykksm 1` export of `n` YubiKeys whose secrets differ from run to run and line to
/// line, with public ids `first..first+n`.
fn export(run: u64, first: u64, n: u64) -> String {
    let mut s = String::from("# ykksm 1\n");
    for i in 0..n {
        // Any distinct bytes will do; a multiplicative hash spreads them.
        let x = (run << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let id = hsm_proto::PublicId::from_number(first + i, 12).unwrap();
        let uid = format!("{:012x}", x >> 16);
        let key = format!("{x:016x}{:016x}", x.rotate_left(17) ^ run);
        s.push_str(&format!("{i},{id},{uid},{key},000000000000,,,,,,\n"));
    }
    s
}

/// `(public id, uid, aes key)` of each data line of a `# ykksm 1` text.
fn secrets(csv: &str) -> BTreeMap<String, (String, String)> {
    csv.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].to_string(), (f[2].to_string(), f[3].to_string()))
        })
        .collect()
}

fn decrypt(dir: &Path, key_file: &str) -> String {
    let o = Command::new(KSM)
        .args(["decrypt-aead", "--aes-key-file", key_file])
        .args(["--format", "yubikey-csv"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Runs `args` as `n` concurrent tool processes (`{i}` in an argument is replaced by the
/// run's number) and returns their outputs.
fn concurrently(n: usize, args: &[&str]) -> Vec<Output> {
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let args: Vec<String> = args
                .iter()
                .map(|a| a.replace("{i}", &i.to_string()))
                .collect();
            Command::new(KSM)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

fn concurrent_imports_seal_only_their_own_secrets(runs: usize) {
    let dev = Device::start(&emulator_config("demo.toml"));
    let d = serve(&[dev.path()], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let k20 = key_file(tmp.path(), "k20", KEY_0X20);
    let mut inputs = Vec::new();
    for r in 0..runs {
        let input = export(r as u64, 1000 * (r as u64 + 1), 200);
        std::fs::write(tmp.path().join(format!("in{r}")), &input).unwrap();
        std::fs::create_dir(tmp.path().join(format!("out{r}"))).unwrap();
        inputs.push(input);
    }
    let base = tmp.path().display().to_string();
    // A validator's decodes go on meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let decoder = {
        let (stop, addr) = (stop.clone(), d.addr);
        let otp = e2e_tests::otp_vectors()["otps"][0]["otp"]
            .as_str()
            .unwrap()
            .to_string();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push(get(addr, &format!("/wsapi/decrypt?otp={otp}")).body);
            }
            answers
        })
    };
    let outs = concurrently(
        runs,
        &[
            "import-keys",
            "--socket",
            d.sock.to_str().unwrap(),
            "--key-handles",
            "0x20",
            "-O",
            &format!("{base}/out{{i}}"),
            "--input",
            &format!("{base}/in{{i}}"),
        ],
    );
    for o in &outs {
        assert!(
            o.status.success() && text(o).contains("Done: 200 imported"),
            "{}",
            text(o)
        );
    }
    let mut mismatches = 0;
    for (r, input) in inputs.iter().enumerate() {
        let want = secrets(input);
        let got = secrets(&decrypt(&tmp.path().join(format!("out{r}")), &k20));
        assert_eq!(got.len(), 200, "run {r}: every AEAD is there");
        mismatches += want
            .iter()
            .filter(|(id, s)| got.get(*id) != Some(s))
            .count();
    }
    assert_eq!(mismatches, 0, "AEADs holding another run's secret");
    stop.store(true, Ordering::SeqCst);
    let answers = decoder.join().unwrap();
    assert!(!answers.is_empty());
    for a in &answers {
        assert_eq!(a, "OK counter=0001 low=1234 high=56 use=00\n");
    }
}

#[test]
fn two_concurrent_imports_through_one_daemon_never_cross_seal() {
    concurrent_imports_seal_only_their_own_secrets(2);
}

#[test]
fn four_concurrent_imports_through_one_daemon_never_cross_seal() {
    concurrent_imports_seal_only_their_own_secrets(4);
}

fn concurrent_generations_seal_one_secret_per_id(runs: usize) {
    let dev = Device::start(&emulator_config("demo.toml"));
    let d = serve(&[dev.path()], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let k20 = key_file(tmp.path(), "k20", KEY_0X20);
    let k21 = key_file(tmp.path(), "k21", KEY_0X21);
    for r in 0..runs {
        std::fs::create_dir(tmp.path().join(format!("out{r}"))).unwrap();
    }
    let base = tmp.path().display().to_string();
    let outs = concurrently(
        runs,
        &[
            "generate-keys",
            "--socket",
            d.sock.to_str().unwrap(),
            "--key-handles",
            "0x20,0x21",
            "--start-public-id",
            "1{i}000",
            "-c",
            "100",
            "-O",
            &format!("{base}/out{{i}}"),
        ],
    );
    for o in &outs {
        assert!(
            o.status.success() && text(o).contains("Done: 100 generated"),
            "{}",
            text(o)
        );
    }
    let mut all = BTreeSet::new();
    let mut mismatches = 0;
    for r in 0..runs {
        let dir = tmp.path().join(format!("out{r}"));
        let a = secrets(&decrypt(&dir.join("0x20"), &k20));
        let b = secrets(&decrypt(&dir.join("0x21"), &k21));
        assert_eq!((a.len(), b.len()), (100, 100), "run {r}");
        // One id, one secret: the same under both key handles.
        mismatches += a.iter().filter(|(id, s)| b.get(*id) != Some(s)).count();
        all.extend(a.into_values());
    }
    assert_eq!(mismatches, 0, "ids sealed with two different secrets");
    assert_eq!(all.len(), 100 * runs, "every id has a secret of its own");
}

#[test]
fn two_concurrent_generations_through_one_daemon_never_cross_seal() {
    concurrent_generations_seal_one_secret_per_id(2);
}

#[test]
fn four_concurrent_generations_through_one_daemon_never_cross_seal() {
    concurrent_generations_seal_one_secret_per_id(4);
}

/// One raw request on the sharing socket: `02 device len frame`; returns `(code, body)`.
fn raw_frame(sock: &Path, frame: &[u8]) -> (u8, Vec<u8>) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut msg = vec![2, 0, frame.len() as u8];
    msg.extend_from_slice(frame);
    s.write_all(&msg).unwrap();
    let mut head = [0u8; 3];
    s.read_exact(&mut head).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes([head[1], head[2]]))];
    s.read_exact(&mut body).unwrap();
    (head[0], body)
}

fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/health").body).unwrap()
}

#[test]
fn malformed_or_forbidden_tool_frames_are_refused_at_the_socket_not_counted_against_the_device() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let soft = e2e_tests::fixtures().join("emulator/demo.toml");
    let tmp = tempfile::tempdir().unwrap();
    // A soft HSM key file must not be readable by others.
    let soft_copy = tmp.path().join("soft.toml");
    std::fs::copy(&soft, &soft_copy).unwrap();
    std::fs::set_permissions(&soft_copy, std::fs::Permissions::from_mode(0o600)).unwrap();
    for device in [dev.path(), soft_copy] {
        let d = serve(std::slice::from_ref(&device), &[]);
        let wait_up = || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while health(d.addr)["devices"][0]["state"] != "up" {
                assert!(Instant::now() < deadline, "{}", health(d.addr));
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_up();
        let opens = health(d.addr)["devices"][0]["opens"].clone();
        // A length byte that does not match, an unknown command, NULL, MONITOR_EXIT, and
        // raw AES-ECB decrypt with a real key handle (not in the tools' policy).
        let bad: [&[u8]; 5] = [
            &[5, 0x26],
            &[1, 0x55],
            &[1, 0x00],
            &[1, 0x7f],
            &[
                21, 0x0e, 0x20, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
        ];
        for frame in bad {
            let (code, body) = raw_frame(&d.sock, frame);
            assert_eq!(code, 1, "{device:?} {frame:02x?}: refused");
            let why = String::from_utf8_lossy(&body);
            assert!(why.contains("refused"), "{why}");
        }
        let h = health(d.addr);
        assert_eq!(h["devices"][0]["state"], "up", "{h}");
        assert_eq!(h["status"], "ok", "{h}");
        assert_eq!(h["devices"][0]["opens"], opens, "not reopened: {h}");
        let garbage = &h["devices"][0]["line_errors"]["garbage"];
        assert_eq!(garbage, 0, "{h}");
        // An allowed frame still works: SYSTEM_INFO_QUERY.
        let (code, body) = raw_frame(&d.sock, &[1, 0x26]);
        assert_eq!((code, body[1]), (0, 0x26 | 0x80));
    }
}

#[test]
fn a_locked_device_shows_locked_at_start_up_and_a_wrong_key_leaves_it_locked() {
    let cfg_text =
        std::fs::read_to_string(e2e_tests::fixtures().join("emulator/demo.toml")).unwrap();
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "master_key = \"{}\"\n{cfg_text}",
        "5a".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let dev = Device::start(&cfg);
    let d = serve(&[dev.path()], &[]);
    // No OTP has been decoded: the state comes from the probe at open.
    let deadline = Instant::now() + Duration::from_secs(2);
    while health(d.addr)["devices"][0]["state"] != "locked" {
        assert!(Instant::now() < deadline, "{}", health(d.addr));
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = get(d.addr, "/health");
    assert_eq!(h.status, 503);
    let metrics = get(d.addr, "/metrics").body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ksm_hsm_state{") && l.contains("state=\"locked\"} 1")),
        "{metrics}"
    );
    let unlock = |key: &str| {
        let mut c = Command::new(KSM)
            .args(["keystore-unlock", "--stdin", "--no-otp", "--socket"])
            .arg(&d.sock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{key}\n").as_bytes())
            .unwrap();
        c.wait_with_output().unwrap()
    };
    let o = unlock(&"00".repeat(32));
    assert!(text(&o).contains("wrong key"), "{}", text(&o));
    assert_eq!(health(d.addr)["devices"][0]["state"], "locked");
    let o = unlock(&"5a".repeat(32));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(health(d.addr)["devices"][0]["state"], "up");
    assert_eq!(get(d.addr, "/health").status, 200);
}
