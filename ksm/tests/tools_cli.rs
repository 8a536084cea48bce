//! The operator tools and the daemon as separate processes, run the way an operator runs
//! them, against emulated YubiHSMs on real ptys.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::{emulator_config, get, otp_vectors, output_text as text, ykgenerate, Device};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

fn ksm(args: &[&str]) -> Output {
    Command::new(KSM).args(args).output().expect("run ksm")
}

fn ksm_stdin(args: &[&str], input: &str) -> Output {
    let mut c = Command::new(KSM)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ksm");
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    c.wait_with_output().unwrap()
}

fn key_file(dir: &Path, name: &str, hex: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, hex).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

struct Serve(Child, std::net::SocketAddr);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str]) -> Serve {
    let mut child = Command::new(KSM)
        .arg("serve")
        .args(args)
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ksm serve");
    let addr = e2e_tests::listening_addr(&mut child);
    Serve(child, addr)
}

#[test]
fn generate_decrypt_import_round_trip_over_a_pty() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let link = dev.path().display().to_string();
    let v = otp_vectors();
    let tmp = tempfile::tempdir().unwrap();
    let (gen_dir, imp_dir) = (tmp.path().join("generated"), tmp.path().join("imported"));
    std::fs::create_dir_all(&gen_dir).unwrap();
    std::fs::create_dir_all(&imp_dir).unwrap();
    let k20 = key_file(
        tmp.path(),
        "k20",
        v["key_handles"]["0x20"].as_str().unwrap(),
    );
    let k21 = key_file(
        tmp.path(),
        "k21",
        v["key_handles"]["0x21"].as_str().unwrap(),
    );

    let o = ksm(&[
        "generate-keys",
        "-D",
        &link,
        "--key-handles",
        "0x20,0x21",
        "--start-public-id",
        "1000",
        "-c",
        "5",
        "-O",
        gen_dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Done: 5 generated"), "{}", text(&o));
    // Resumable: a second run skips what exists.
    let o = ksm(&[
        "generate-keys",
        "-D",
        &link,
        "--key-handles",
        "0x20",
        "0x21",
        "--start-public-id",
        "1000",
        "-c",
        "6",
        "-O",
        gen_dir.to_str().unwrap(),
    ]);
    assert!(
        text(&o).contains("Done: 1 generated, 5 already present"),
        "{}",
        text(&o)
    );

    // Offline decryption under each key handle gives the same secrets.
    let csv20 = ksm(&[
        "decrypt-aead",
        "--aes-key-file",
        &k20,
        "--format",
        "yubikey-csv",
        gen_dir.join("0x20").to_str().unwrap(),
    ]);
    let csv21 = ksm(&[
        "decrypt-aead",
        "--aes-key-file",
        &k21,
        "--format",
        "yubikey-csv",
        gen_dir.join("0x21").to_str().unwrap(),
    ]);
    assert!(csv20.status.success(), "{}", text(&csv20));
    assert_eq!(csv20.stdout, csv21.stdout);
    let lines = String::from_utf8(csv20.stdout).unwrap();
    assert_eq!(lines.lines().count(), 7, "{lines}");
    assert!(lines.starts_with("# ykksm 1\n1,ccccccccceuj,"), "{lines}");

    // The secrets never came out of the HSM in clear except through decrypt-aead: import
    // them elsewhere, with a bad line in the middle, then decrypt again.
    let mut input = String::from("# ykksm 1\n");
    for (i, l) in lines.lines().skip(1).enumerate() {
        input.push_str(l);
        input.push('\n');
        if i == 1 {
            input.push_str("99,notmodhex!,0102030405,zz,000000000000,,,,,,\n");
        }
    }
    let in_file = tmp.path().join("keys.csv");
    std::fs::write(&in_file, &input).unwrap();
    let o = ksm(&[
        "import-keys",
        "-D",
        &link,
        "--key-handles",
        "0x21",
        "-O",
        imp_dir.to_str().unwrap(),
        "--input",
        in_file.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "a rejected line makes the exit status 1"
    );
    assert!(
        text(&o).contains("line 4:")
            && text(&o).contains("Done: 6 imported, 0 already present, 1 rejected"),
        "{}",
        text(&o)
    );
    let back = ksm(&[
        "decrypt-aead",
        "--aes-key-file",
        &k21,
        "--format",
        "yubikey-csv",
        imp_dir.to_str().unwrap(),
    ]);
    assert_eq!(String::from_utf8(back.stdout).unwrap(), lines);

    // From stdin, again: everything is already there.
    let o = ksm_stdin(
        &[
            "import-keys",
            "-D",
            &link,
            "--key-handles",
            "0x21",
            "-O",
            imp_dir.to_str().unwrap(),
        ],
        &lines,
    );
    assert!(
        o.status.success() && text(&o).contains("Done: 0 imported, 6 already present, 0 rejected"),
        "{}",
        text(&o)
    );

    // The generated keys work: an OTP made by ykgenerate with a decrypted secret decodes.
    let first: Vec<&str> = lines.lines().nth(1).unwrap().split(',').collect();
    let d = serve(&[
        "-D",
        &link,
        "-B",
        gen_dir.to_str().unwrap(),
        "--key-handles",
        "0x21",
        "--socket",
        "none",
    ]);
    let otp = ykgenerate(first[1], first[3], first[2], 0x10, 0x20, 0x30, 0x40);
    assert_eq!(
        get(d.1, &format!("/wsapi/decrypt?otp={otp}")).body,
        "OK counter=0010 low=0020 high=30 use=40\n"
    );
    // While the daemon owns the device, nobody else can open it.
    let o = ksm(&["info", "-D", &link]);
    assert!(
        !o.status.success() && text(&o).contains("sharing socket"),
        "{}",
        text(&o)
    );
    drop(d);

    // Keys are never taken from argv; world-readable key files are refused.
    assert!(
        !ksm(&["decrypt-aead", "--aes-key", "00", gen_dir.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::set_permissions(&k20, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = ksm(&[
        "decrypt-aead",
        "--aes-key-file",
        &k20,
        gen_dir.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("chmod 600"),
        "{}",
        text(&o)
    );

    // store stats / verify over the generated tree.
    let o = ksm(&["store", "stats", "-B", gen_dir.to_str().unwrap()]);
    assert!(
        text(&o).contains("0x20") && text(&o).contains("    6"),
        "{}",
        text(&o)
    );
    let o = ksm(&[
        "store",
        "verify",
        "-B",
        gen_dir.to_str().unwrap(),
        "-D",
        &link,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("12 good, 0 bad, 0 misplaced, 0 rejected"),
        "{}",
        text(&o)
    );
    std::fs::write(gen_dir.join("0x20/cc/cc/cc/cc/ce/uj/ccccccccceuj"), b"junk").unwrap();
    let o = ksm(&["store", "verify", "-B", gen_dir.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("BAD ")
            && text(&o).contains("ccccccccceuj")
            && text(&o).contains("11 good, 1 bad"),
        "{}",
        text(&o)
    );
}

#[test]
fn keystore_unlock_through_the_daemon_socket() {
    let text_cfg =
        std::fs::read_to_string(e2e_tests::fixtures().join("emulator/demo.toml")).unwrap();
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "master_key = \"{}\"\n{text_cfg}",
        "5a".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let (a, b) = (Device::start(&cfg), Device::start(&cfg));
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("ksm.sock");
    let aeads = e2e_tests::fixtures().join("aead-files/store");
    let d = serve(&[
        "-D",
        a.path().to_str().unwrap(),
        "-D",
        b.path().to_str().unwrap(),
        "-B",
        aeads.to_str().unwrap(),
        "--key-handles",
        "0x20",
        "0x21",
        "--socket",
        sock.to_str().unwrap(),
        "--reqtimeout",
        "2",
    ]);
    let otp = otp_vectors()["otps"][0]["otp"]
        .as_str()
        .unwrap()
        .to_string();
    let decode = || get(d.1, &format!("/wsapi/decrypt?otp={otp}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while decode().body != "ERR HSM locked\n" {
        assert!(
            Instant::now() < deadline,
            "never reported locked: {:?}",
            decode()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let o = ksm_stdin(
        &[
            "keystore-unlock",
            "--stdin",
            "--socket",
            sock.to_str().unwrap(),
        ],
        &format!("{}\n", "00".repeat(32)),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("wrong key"), "{}", text(&o));

    let o = ksm_stdin(
        &[
            "keystore-unlock",
            "--stdin",
            "--no-otp",
            "--socket",
            sock.to_str().unwrap(),
        ],
        &format!("{}\n", "5a".repeat(32)),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o).matches(": unlocked").count(),
        2,
        "both devices: {}",
        text(&o)
    );
    assert_eq!(decode().body, "OK counter=0001 low=1234 high=56 use=00\n");
    let o = ksm_stdin(
        &[
            "keystore-unlock",
            "--stdin",
            "--socket",
            sock.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        o.status.success() && text(&o).contains("already unlocked"),
        "{}",
        text(&o)
    );

    drop(d);
    let o = ksm_stdin(
        &[
            "keystore-unlock",
            "--stdin",
            "--socket",
            sock.to_str().unwrap(),
        ],
        "",
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("daemon not running") || text(&o).contains("device not found"),
        "{}",
        text(&o)
    );
}

#[test]
fn keystore_unlock_with_admin_otp_straight_on_a_device() {
    let dev = Device::start(&emulator_config("lock-test.toml"));
    let link = dev.path().display().to_string();
    let admin = ykgenerate(
        "ccccccccccdb",
        "00112233445566778899aabbccddeeff",
        "0a0b0c0d0e0f",
        5,
        1,
        1,
        1,
    );
    let o = ksm_stdin(
        &["keystore-unlock", "-D", &link, "--stdin"],
        &format!("{}\n{admin}\n", "4d".repeat(32)),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(": unlocked"), "{}", text(&o));
    // The same OTP again would be a replay; the store is open anyway.
    let o = ksm_stdin(
        &["keystore-unlock", "-D", &link, "--stdin"],
        &format!("{}\n{admin}\n", "4d".repeat(32)),
    );
    assert!(text(&o).contains("already unlocked"), "{}", text(&o));
    dev.emu.power_cycle();
    let o = ksm_stdin(
        &["keystore-unlock", "-D", &link, "--stdin"],
        &format!("{}\n{admin}\n", "4d".repeat(32)),
    );
    assert!(
        !o.status.success() && text(&o).contains("OTP refused: YSM_OTP_REPLAY"),
        "{}",
        text(&o)
    );
}

/// Issue 9: a version-1 AEAD records its own nonce, which the HSM authenticates, so a file
/// copied to another public id's path would decode that id's OTPs made with the first
/// YubiKey's token part. By default the nonce must be the public id; stores made with
/// `--random-nonce` need `--random-nonce-aeads`.
#[test]
fn a_v1_aead_under_another_ids_path_is_refused_and_random_nonces_need_the_option() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let link = dev.path().display().to_string();
    let v = otp_vectors();
    let yk = &v["yubikeys"][0];
    let (key, uid) = (yk["aes_key"].as_str().unwrap(), yk["uid"].as_str().unwrap());
    let store = e2e_tests::aead_dir();
    let b = store.path().display().to_string();
    let theirs = "ccccccccccce";
    let copy = store.path().join("0x20/cc/cc/cc/cc/cc/ce/ccccccccccce");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(
        store.path().join("0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj"),
        &copy,
    )
    .unwrap();
    let serve_args = [
        "-D",
        &link,
        "-B",
        &b,
        "--key-handles",
        "0x20",
        "--socket",
        "none",
    ];
    let d = serve(&serve_args);
    let decode = |d: &Serve, otp: &str| get(d.1, &format!("/wsapi/decrypt?otp={otp}")).body;
    let forged = ykgenerate(theirs, key, uid, 1, 2, 3, 4);
    assert_eq!(decode(&d, &forged), "ERR Corrupt AEAD\n");
    let own = ykgenerate(yk["public_id"].as_str().unwrap(), key, uid, 1, 2, 3, 4);
    assert_eq!(
        decode(&d, &own),
        "OK counter=0001 low=0002 high=03 use=04\n"
    );
    drop(d);
    // verify names the file on a line of its own, and fails.
    let o = ksm(&["store", "verify", "-B", &b]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("NONCE {}", copy.display()))
            && text(&o).contains("nonce differs from public id")
            && text(&o).contains("1 nonce differs from public id"),
        "{}",
        text(&o)
    );

    // A store made with random nonces.
    let tmp = tempfile::tempdir().unwrap();
    let rnd = tmp.path().join("random");
    std::fs::create_dir(&rnd).unwrap();
    let r = rnd.display().to_string();
    let o = ksm(&[
        "generate-keys",
        "-D",
        &link,
        "--key-handles",
        "0x20",
        "--start-public-id",
        "2000",
        "-c",
        "2",
        "-O",
        &r,
        "--random-nonce",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let k20 = key_file(
        tmp.path(),
        "k20",
        v["key_handles"]["0x20"].as_str().unwrap(),
    );
    let csv = ksm(&[
        "decrypt-aead",
        "--aes-key-file",
        &k20,
        "--format",
        "yubikey-csv",
        &r,
    ]);
    assert!(csv.status.success(), "{}", text(&csv));
    let csv = String::from_utf8(csv.stdout).unwrap();
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let otp = ykgenerate(first[1], first[3], first[2], 5, 6, 7, 8);
    let strict = serve(&[
        "-D",
        &link,
        "-B",
        &r,
        "--key-handles",
        "0x20",
        "--socket",
        "none",
    ]);
    assert_eq!(decode(&strict, &otp), "ERR Corrupt AEAD\n");
    drop(strict);
    let relaxed = serve(&[
        "-D",
        &link,
        "-B",
        &r,
        "--key-handles",
        "0x20",
        "--socket",
        "none",
        "--random-nonce-aeads",
    ]);
    assert_eq!(
        decode(&relaxed, &otp),
        "OK counter=0005 low=0006 high=07 use=08\n"
    );
    drop(relaxed);
    // The same from ksm.toml.
    let conf = tmp.path().join("ksm.toml");
    std::fs::write(&conf, "random-nonce-aeads = true\n").unwrap();
    let relaxed = serve(&[
        "--config",
        conf.to_str().unwrap(),
        "-D",
        &link,
        "-B",
        &r,
        "--key-handles",
        "0x20",
        "--socket",
        "none",
    ]);
    assert_eq!(
        decode(
            &relaxed,
            &ykgenerate(first[1], first[3], first[2], 5, 7, 7, 8)
        ),
        "OK counter=0005 low=0007 high=07 use=08\n"
    );
    drop(relaxed);
    // verify reports them either way; only without the option do they fail it.
    let o = ksm(&["store", "verify", "-B", &r]);
    assert!(
        !o.status.success() && text(&o).contains("2 nonce differs"),
        "{}",
        text(&o)
    );
    let o = ksm(&["store", "verify", "-B", &r, "--random-nonce-aeads"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("NONCE ")
            && text(&o).contains(
                "2 good, 0 bad, 0 misplaced, 0 rejected by the HSM, 2 nonce differs from public id"
            ),
        "{}",
        text(&o)
    );
}

/// `vvvvvvvv` pads to the nonce of `vvvvvvvvcccc`: the long id's AEAD copied to the shorter
/// names does not decode the long id's OTPs relabelled with the short id (`ERR Corrupt
/// AEAD`: a file is there, and it is not this id's), while the long id keeps decoding.
#[test]
fn an_aead_copied_to_a_shorter_zero_padded_id_does_not_decode() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let link = dev.path().display().to_string();
    let v = otp_vectors();
    let yk = &v["yubikeys"][0];
    let (key, uid) = (yk["aes_key"].as_str().unwrap(), yk["uid"].as_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().display().to_string();
    let o = ksm_stdin(
        &[
            "import-keys",
            "-D",
            &link,
            "--key-handles",
            "0x20",
            "-O",
            &b,
        ],
        &format!("# ykksm 1\n1,vvvvvvvvcccc,{uid},{key},000000000000,,,,,,\n"),
    );
    assert!(o.status.success(), "{}", text(&o));
    let long = tmp.path().join("0x20/vv/vv/vv/vv/cc/cc/vvvvvvvvcccc");
    for (short, copy) in [
        ("vvvvvvvv", "0x20/vv/vv/vv/vv/vvvvvvvv"),
        ("vvvvvvvvcc", "0x20/vv/vv/vv/vv/cc/vvvvvvvvcc"),
    ] {
        std::fs::copy(&long, tmp.path().join(copy)).unwrap();
        let d = serve(&[
            "-D",
            &link,
            "-B",
            &b,
            "--key-handles",
            "0x20",
            "--socket",
            "none",
        ]);
        let decode = |otp: &str| get(d.1, &format!("/wsapi/decrypt?otp={otp}")).body;
        assert_eq!(
            decode(&ykgenerate(short, key, uid, 1, 2, 3, 4)),
            "ERR Corrupt AEAD\n",
            "{short}"
        );
        assert_eq!(
            decode(&ykgenerate("vvvvvvvvcccc", key, uid, 1, 2, 3, 4)),
            "OK counter=0001 low=0002 high=03 use=04\n"
        );
    }
    // verify lists both copies on NONCE lines, saying why.
    let o = ksm(&["store", "verify", "-B", &b]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("public id shorter than 6 bytes")
            && text(&o).contains("2 nonce differs from public id"),
        "{}",
        text(&o)
    );
}

/// A file name with a newline, an escape sequence and a byte that is not UTF-8 cannot forge
/// or hide a line of `store verify`: it is shown escaped, on the one line that reports it.
#[test]
fn store_verify_escapes_names_it_did_not_make() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("0x20/cc");
    std::fs::create_dir_all(&dir).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"cc\nBAD forged\x1b[2J\xff");
    std::fs::write(dir.join(name), [1u8; 30]).unwrap();
    let o = ksm(&["store", "verify", "-B", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout.clone()).expect("printable output");
    let want = format!(
        "BAD {}: malformed AEAD file (file name is not a modhex public id)",
        dir.join("cc\\nBAD forged\\u{1b}[2J\\xff").display()
    );
    assert!(out.lines().any(|l| l == want), "{out}");
    assert!(!out.contains('\u{1b}'), "{out}");
    assert!(
        out.lines().all(|l| !l.starts_with("BAD forged")),
        "a forged line: {out}"
    );
}

/// A soft-HSM key file (the demo device, `extra` first) with `mode`.
fn soft_hsm(dir: &Path, name: &str, extra: &str, mode: u32) -> String {
    let demo = std::fs::read_to_string(e2e_tests::fixtures().join("emulator/demo.toml")).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("{extra}{demo}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// Runs ksm, killed if it has not finished within 30 s (a hang is a failure, not a stuck
/// test run).
fn ksm_within(args: &[&str]) -> Output {
    let mut c = Command::new(KSM)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ksm");
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            let o = c.wait_with_output().unwrap();
            panic!("ksm {args:?} hung; it said: {}", text(&o));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

/// Issue 9: one rule for files holding keys in clear, at every entry point: refused if the
/// group or others may read them.
#[test]
fn key_files_the_group_may_read_are_refused_at_every_entry_point() {
    let tmp = tempfile::tempdir().unwrap();
    let v = otp_vectors();
    let hex20 = v["key_handles"]["0x20"].as_str().unwrap();
    let shared = soft_hsm(tmp.path(), "shared.toml", "", 0o640);
    let refused = |o: &Output| {
        assert!(!o.status.success(), "{}", text(o));
        assert!(
            text(o).contains("mode 0640") && text(o).contains("chmod 600"),
            "{}",
            text(o)
        );
    };
    // -D key file (soft HSM), for tools and the daemon alike.
    refused(&ksm_within(&["info", "-D", &shared]));
    refused(&ksm_within(&[
        "serve",
        "-D",
        &shared,
        "--port",
        "0",
        "--socket",
        "none",
        "-B",
        tmp.path().to_str().unwrap(),
        "--key-handles",
        "0x20",
    ]));
    // The emulator's configuration.
    let pty = tmp.path().join("pty");
    refused(&ksm_within(&[
        "emulate",
        "--config",
        &shared,
        "--pty",
        pty.to_str().unwrap(),
    ]));
    // JSON key files the same.
    let json = tmp.path().join("keys.json");
    std::fs::write(&json, format!("{{\"32\": \"{hex20}\"}}")).unwrap();
    std::fs::set_permissions(&json, std::fs::Permissions::from_mode(0o640)).unwrap();
    refused(&ksm_within(&["info", "-D", json.to_str().unwrap()]));
    // decrypt-aead's key files.
    let store = e2e_tests::aead_dir();
    let aeads = store.path().join("0x20").display().to_string();
    let k = key_file(tmp.path(), "k20", hex20);
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).unwrap();
    refused(&ksm_within(&["decrypt-aead", "--aes-key-file", &k, &aeads]));
    let good = key_file(tmp.path(), "k20-ok", hex20);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    refused(&ksm_within(&[
        "decrypt-aead",
        "--aes-key-file",
        &good,
        "--format",
        "aead",
        "--output-dir",
        out.to_str().unwrap(),
        "--key-handle-out",
        "0x30",
        "--aes-key-out-file",
        &k,
        &aeads,
    ]));
    // Private, they work.
    let ok = soft_hsm(tmp.path(), "ok.toml", "", 0o600);
    assert!(ksm_within(&["info", "-D", &ok]).status.success());
}

/// Issue 9: error texts name the file, the line and the field, never key material, however
/// the key file or input is broken.
#[test]
fn errors_about_key_files_and_key_input_never_show_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let v = otp_vectors();
    let hex20 = v["key_handles"]["0x20"].as_str().unwrap();
    let (yk_key, uid) = ("00112233445566778899aabbccddeeff", "0a0b0c0d0e0f");
    let master = "5a".repeat(32);
    let secrets = [
        hex20,
        &hex20[..16],
        &hex20[48..],
        yk_key,
        &yk_key[..12],
        uid,
        &master[..16],
    ];
    let clean = |o: &Output, says: &[&str]| {
        assert!(!o.status.success(), "{}", text(o));
        for s in secrets {
            assert!(!text(o).contains(s), "shows {s}: {}", text(o));
        }
        for s in says {
            assert!(text(o).contains(s), "does not say {s:?}: {}", text(o));
        }
    };
    // A syntax error on the key's line of a soft-HSM key file.
    let broken = tmp.path().join("broken.toml");
    std::fs::write(
        &broken,
        format!(
            "firmware = \"1.0.4\"\n[[key]]\nhandle = \"0x20\"\nkey = \"{hex20}\nflags = \"ALL\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o600)).unwrap();
    let b = broken.display().to_string();
    clean(&ksm_within(&["info", "-D", &b]), &[&b, "line 4"]);
    let pty = tmp.path().join("pty");
    clean(
        &ksm_within(&["emulate", "--config", &b, "--pty", pty.to_str().unwrap()]),
        &[&b, "line 4"],
    );
    // A JSON key file with a trailing comma.
    let json = tmp.path().join("keys.json");
    std::fs::write(&json, format!("{{\"32\": \"{hex20}\",\n}}")).unwrap();
    std::fs::set_permissions(&json, std::fs::Permissions::from_mode(0o600)).unwrap();
    clean(
        &ksm_within(&["info", "-D", json.to_str().unwrap()]),
        &["line 2"],
    );

    // keystore-unlock: a master key that is not hex, or too long.
    let locked = soft_hsm(
        tmp.path(),
        "locked.toml",
        &format!("master_key = \"{master}\"\n"),
        0o600,
    );
    for bad in [
        format!("{}zz", &master[..62]),
        format!("{master}{master}00"),
        format!("{master} {master}"),
    ] {
        let o = ksm_stdin(
            &["keystore-unlock", "-D", &locked, "--stdin", "--no-otp"],
            &format!("{bad}\n"),
        );
        clean(&o, &["master key"]);
    }

    // decrypt-aead: a key file that is not hex, or the wrong length.
    let aeads = e2e_tests::aead_dir();
    for (name, content) in [
        ("nothex", format!("{}zz\n", &hex20[..62])),
        ("short", format!("{}\n", &hex20[..40])),
    ] {
        let k = key_file(tmp.path(), name, &content);
        let o = ksm_within(&[
            "decrypt-aead",
            "--aes-key-file",
            &k,
            aeads.path().to_str().unwrap(),
        ]);
        clean(&o, &[&k]);
    }

    // import-keys: columns shifted so that a secret lands where the public id belongs.
    let soft = soft_hsm(tmp.path(), "soft.toml", "", 0o600);
    let out = tmp.path().join("imported");
    std::fs::create_dir(&out).unwrap();
    let input = tmp.path().join("keys.csv");
    std::fs::write(
        &input,
        format!(
            "# ykksm 1\n\
             ccccccccccdb,{uid},{yk_key},000000000000,,,\n\
             1,{yk_key},ccccccccccdb,{uid},000000000000,,,\n\
             2,ccccccccccdb,{yk_key},{uid},000000000000,,,\n\
             3,ccccccccccdb,{uid},{yk_key}zz,000000000000,,,\n\
             4,{yk_key}{uid}\n"
        ),
    )
    .unwrap();
    let o = ksm_within(&[
        "import-keys",
        "-D",
        &soft,
        "--key-handles",
        "0x20",
        "-O",
        out.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    clean(
        &o,
        &[
            "line 2:",
            "line 3:",
            "line 4:",
            "line 5:",
            "line 6:",
            "5 rejected",
        ],
    );
}

/// Issue 9: decrypt-aead over a tree with a FIFO, a 100 MB sparse file and symlink loops:
/// each is an error naming it, every good AEAD is still decrypted, nothing hangs.
#[test]
fn decrypt_aead_survives_fifos_huge_files_and_symlink_loops() {
    let tmp = tempfile::tempdir().unwrap();
    let v = otp_vectors();
    let k20 = key_file(
        tmp.path(),
        "k20",
        v["key_handles"]["0x20"].as_str().unwrap(),
    );
    let store = e2e_tests::aead_dir();
    let root = store.path().join("0x20");
    let dir = root.join("cc/cc");
    let fifo = dir.join("ccccccccccfi");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let huge = dir.join("cccccccccchu");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let up = dir.join("up");
    std::os::unix::fs::symlink("..", &up).unwrap();
    let self_loop = dir.join("ccccccccccll");
    std::os::unix::fs::symlink("ccccccccccll", &self_loop).unwrap();
    let o = ksm_within(&[
        "decrypt-aead",
        "--aes-key-file",
        &k20,
        "--format",
        "yubikey-csv",
        root.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for p in [&fifo, &huge, &up, &self_loop] {
        assert!(
            err.contains(&p.display().to_string()),
            "{} not reported: {err}",
            p.display()
        );
    }
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains(",ccccdeulfbvj,4f27a712b157,708dabb7fcdab9536fe4fb6f0df4a8ae,"),
        "{out}"
    );
    assert_eq!(
        out.lines().count(),
        1 + 1,
        "header and the one good AEAD: {out}"
    );
    assert!(err.contains("error: 4/5 AEADs failed"), "{err}");
}

/// The exit codes docs/operator-tools.md documents: 1 a batch job's partial failure, 2 usage or
/// configuration, 3 the HSM, 4 the AEAD store.
#[test]
fn exit_codes_say_what_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let exits = |o: Output, code: i32| assert_eq!(o.status.code(), Some(code), "{}", text(&o));
    let dev = Device::start(&emulator_config("demo.toml"));
    let link = dev.path().display().to_string();
    let import = |input: &str| {
        let args = [
            "import-keys",
            "-D",
            &link,
            "--key-handles",
            "0x20",
            "-O",
            dir,
        ];
        ksm_stdin(&args, input)
    };
    exits(import("# ykksm 1\n1,not-modhex,,,\n"), 1);
    exits(import("1,cccccccccccb,,,\n"), 2);
    let toml = tmp.path().join("ksm.toml");
    std::fs::write(&toml, "no-such-key = 1\n").unwrap();
    exits(ksm(&["serve", "--config", toml.to_str().unwrap()]), 2);
    exits(ksm(&["info", "-D", &link, "--timeout", "0"]), 2);
    exits(ksm(&["info", "-D", "/nonexistent/tty"]), 3);
    exits(ksm(&["store", "stats", "-B", "/nonexistent/aeads"]), 4);
}
