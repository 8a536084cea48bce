//! The YubiHSM 2 tools as an operator runs them: the real `ksm` binary against
//! `ksm emulate --hsm2` over real HTTP on 127.0.0.1, YubiHSM 1 stores made by `ksm
//! import-keys` on a soft YubiHSM 1, and OTPs from Yubico's `ykgenerate` decoded by the
//! emulated YubiHSM 2 through our own driver.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aead_store::{AeadKey, FsStore, NoncePolicy, Sealed};
use hsm2_proto::transport::{Connector, HttpTimeouts, Transport};
use hsm2_proto::{AuthKey, Client, ObjectId, OtpAead};
use hsm_proto::otp::Otp;
use hsm_proto::{AesKey, KeyHandle, Nonce, PublicId};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");
const CAPS: &str = "decrypt-otp:create-otp-aead:randomize-otp-aead:rewrap-from-otp-aead-key:rewrap-to-otp-aead-key";

/// A `ksm emulate --hsm2` process, killed on drop.
struct Emulator {
    _proc: e2e_tests::Hsm2EmulateProcess,
    url: String,
}

impl Emulator {
    fn start(dir: &Path, config: Option<&str>) -> Emulator {
        let path = config.map(|text| {
            let path = dir.join("hsm2.toml");
            private(&path, text);
            path
        });
        let p =
            e2e_tests::Hsm2EmulateProcess::start(Path::new(KSM), path.as_deref(), dir.join("ctl"));
        Emulator {
            url: p.url.clone(),
            _proc: p,
        }
    }

    /// Our driver on it, in a session of the factory key.
    fn client(&self) -> (Client<Box<dyn Transport>>, hsm2_proto::session::HostSession) {
        let t: Box<dyn Transport> =
            Box::new(Connector::open(&self.url, HttpTimeouts::default()).unwrap());
        let mut c = Client::new(t);
        let s = c
            .open_session(ObjectId(1), &AuthKey::from_password(b"password"))
            .unwrap();
        (c, s)
    }
}

fn private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Runs `ksm ARGS` with `stdin`, killed if it is still running after a minute (a hang is a
/// failure, not a wait).
fn ksm(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(KSM)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ksm");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let e = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stderr.read_to_end(&mut b);
        b
    });
    let limit = Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ksm {args:?} still running after {limit:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One YubiKey of `fixtures/otp-vectors.json`.
struct Key {
    id: String,
    aes: String,
    uid: String,
}

fn vectors_of(kh: u64) -> Vec<Key> {
    let v = e2e_tests::otp_vectors();
    v["yubikeys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|y| y["key_handle"].as_u64() == Some(kh))
        .map(|y| Key {
            id: y["public_id"].as_str().unwrap().into(),
            aes: y["aes_key"].as_str().unwrap().into(),
            uid: y["uid"].as_str().unwrap().into(),
        })
        .collect()
}

fn kh_key_hex(kh: &str) -> String {
    e2e_tests::otp_vectors()["key_handles"][kh]
        .as_str()
        .unwrap()
        .to_string()
}

/// `ykksm 1` lines for `keys`.
fn ykksm(keys: &[Key]) -> String {
    let mut s = String::from("# ykksm 1\n");
    for (i, k) in keys.iter().enumerate() {
        s.push_str(&format!(
            "{},{},{},{},000000000000,2026-01-01T00:00:00,\n",
            i + 1,
            k.id,
            k.uid,
            k.aes
        ));
    }
    s
}

/// Decodes a fresh `ykgenerate` OTP of `k` with `aead` under otp-aead-key `key_id` on the
/// emulator: the counters it returns, or the device's refusal.
fn decode(
    emu: &Emulator,
    key_id: u16,
    aead: OtpAead,
    k: &Key,
    counter: u16,
) -> Result<u16, String> {
    let otp = e2e_tests::ykgenerate(&k.id, &k.aes, &k.uid, counter, 0x1234, 0x56, 1);
    let otp = Otp::parse(&otp).unwrap();
    let (mut c, mut s) = emu.client();
    c.decrypt_otp(&mut s, ObjectId(key_id), aead, otp.ciphertext)
        .map(|counters| counters.use_ctr)
        .map_err(|e| e.to_string())
}

/// The YubiHSM 2 AEAD of `id` in `dir` under `key_id`, read as the daemon reads it.
fn stored(dir: &Path, key_id: u16, id: &str) -> OtpAead {
    let s = FsStore::open_keys(dir, vec![AeadKey::OtpKey(ObjectId(key_id))])
        .unwrap()
        .with_nonce_policy(NoncePolicy::Any);
    match s
        .lookup(&PublicId::new(id).unwrap())
        .unwrap()
        .unwrap()
        .sealed
    {
        Sealed::Hsm2 { aead, .. } => aead,
        other => panic!("not a YubiHSM 2 AEAD: {other:?}"),
    }
}

fn otp_key(id: u16, key: &str, nonce_id: &str) -> String {
    format!(
        "[[otp-aead-key]]\nid = {id}\nkey = \"{key}\"\nnonce-id = \"{nonce_id}\"\ncapabilities = \"{CAPS}\"\ndomains = \"1\"\n"
    )
}

/// The shared notes' claim (§5.2), checked with our own code: a YubiHSM 1 AEAD of key handle
/// K opens on a YubiHSM 2 under an otp-aead-key with the same AES key and nonce id LE32(K),
/// its nonce put in front; with BE32(K) it does not.
#[test]
fn a_yubihsm1_aead_opens_on_a_yubihsm2_under_nonce_id_le32_of_its_key_handle() {
    let d = tempfile::tempdir().unwrap();
    let kh = KeyHandle(0x20);
    let key = kh_key_hex("0x20");
    let le = hex::encode(kh.0.to_le_bytes());
    let be = hex::encode(kh.0.to_be_bytes());
    assert_ne!(le, be);
    let config = format!("{}{}", otp_key(0x20, &key, &le), otp_key(0x21, &key, &be));
    let emu = Emulator::start(d.path(), Some(&config));
    let aes = AesKey::from_hex(&key).unwrap();
    for (i, k) in vectors_of(32).iter().enumerate() {
        let nonce: Nonce = PublicId::new(&k.id).unwrap().to_nonce().unwrap();
        let mut plain = hex::decode(&k.aes).unwrap();
        plain.extend(hex::decode(&k.uid).unwrap());
        let hsm1 = hsm_proto::aead::seal(&aes, kh, &nonce, &plain).unwrap();
        let a = OtpAead::from_yubihsm1(nonce.0, hsm1.as_bytes().try_into().unwrap());
        let counter = 7 + i as u16;
        assert_eq!(decode(&emu, 0x20, a, k, counter), Ok(counter), "{}", k.id);
        let refused = decode(&emu, 0x21, a, k, counter).unwrap_err();
        assert!(refused.contains("invalid-otp"), "{refused}");
    }
}

/// A YubiHSM 1 store to migrate: `ksm import-keys` on a soft YubiHSM 1 (pyhsm's JSON key
/// file) under key handle 0x20.
fn yubihsm1_store(d: &Path) -> (PathBuf, PathBuf, Vec<Key>) {
    let soft = d.join("soft-hsm.json");
    private(&soft, &format!("{{\"32\": \"{}\"}}", kh_key_hex("0x20")));
    let aeads = d.join("aeads");
    std::fs::create_dir(&aeads).unwrap();
    let keys = vectors_of(32);
    let o = ksm(
        &[
            "import-keys",
            "-D",
            soft.to_str().unwrap(),
            "--key-handles",
            "0x20",
            "-O",
            aeads.to_str().unwrap(),
        ],
        &ykksm(&keys),
    );
    assert!(ok(&o).contains(&format!("{} imported", keys.len())));
    (soft, aeads, keys)
}

fn password_file(d: &Path) -> PathBuf {
    let p = d.join("hsm2-password");
    private(&p, "password\n");
    p
}

#[test]
fn provision_then_migrate_keeps_every_otp_decoding_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let (soft, aeads, keys) = yubihsm1_store(d.path());
    let emu = Emulator::start(d.path(), None);
    let pw = password_file(d.path());
    let dev = ["-D", &emu.url, "--password-file", pw.to_str().unwrap()];
    let provisioned = ok(&ksm(
        &[
            &["provision-hsm2"][..],
            &dev,
            &[
                "--key-handle-key-file",
                soft.to_str().unwrap(),
                "--key-handle",
                "0x20",
                "--key-id",
                "0x30",
            ],
        ]
        .concat(),
        "",
    ));
    assert!(provisioned.contains("nonce id 20000000"), "{provisioned}");
    assert!(provisioned.contains("checked:"), "{provisioned}");
    assert!(!provisioned.contains(&kh_key_hex("0x20")), "{provisioned}");

    let migrate = |extra: &[&str]| {
        ksm(
            &[
                &[
                    "migrate-aeads",
                    "-B",
                    aeads.to_str().unwrap(),
                    "--key-handle",
                    "0x20",
                    "--to-key-id",
                    "48",
                ][..],
                &dev,
                extra,
            ]
            .concat(),
            "",
        )
    };
    let first = ok(&migrate(&[]));
    assert!(
        first.contains(&format!(
            "{} migrated, 0 skipped (already there), 0 failed",
            keys.len()
        )),
        "{first}"
    );
    assert!(
        first.contains(&format!("{} checked on the YubiHSM 2", keys.len() + 1)),
        "{first}"
    );
    for (i, k) in keys.iter().enumerate() {
        let a = stored(&aeads, 0x30, &k.id);
        assert_eq!(
            a.nonce(),
            PublicId::new(&k.id).unwrap().to_nonce().unwrap().0
        );
        assert_eq!(decode(&emu, 0x30, a, k, 100 + i as u16), Ok(100 + i as u16));
        // The YubiHSM 1 file is still there, unchanged in kind.
        let hsm1 = FsStore::open(&aeads, vec![KeyHandle(0x20)]).unwrap();
        assert!(matches!(
            hsm1.lookup(&PublicId::new(&k.id).unwrap())
                .unwrap()
                .unwrap()
                .sealed,
            Sealed::Hsm1 { .. }
        ));
    }
    // The default nonce rule holds for migrated files: served without --random-nonce-aeads.
    let strict = FsStore::open_keys(&aeads, vec![AeadKey::OtpKey(ObjectId(0x30))]).unwrap();
    assert!(strict
        .lookup(&PublicId::new(&keys[0].id).unwrap())
        .unwrap()
        .is_some());

    // Again: nothing to do.
    let again = ok(&migrate(&["--sample", "1"]));
    assert!(
        again.contains(&format!(
            "0 migrated, {} skipped (already there), 0 failed",
            keys.len()
        )),
        "{again}"
    );
    // A broken target is written again.
    let broken = aead_store::layout::aead_path(
        &aeads.join("otp-aead-key-0x0030"),
        &PublicId::new(&keys[1].id).unwrap(),
    );
    std::fs::write(&broken, b"YubiHSM AEAD\n\x02\x00\x30short").unwrap();
    let repaired = ok(&migrate(&["--no-check"]));
    assert!(
        repaired.contains(&format!("1 migrated, {} skipped", keys.len() - 1)),
        "{repaired}"
    );
    assert_eq!(
        decode(&emu, 0x30, stored(&aeads, 0x30, &keys[1].id), &keys[1], 300),
        Ok(300)
    );
    // A readable target that is not what its YubiHSM 1 file migrates to (YubiKey 2 was
    // personalised again between runs, say) is written again too: here it holds YubiKey 0's.
    let under = |n: usize| {
        aead_store::layout::aead_path(
            &aeads.join("otp-aead-key-0x0030"),
            &PublicId::new(&keys[n].id).unwrap(),
        )
    };
    std::fs::copy(under(0), under(2)).unwrap();
    assert!(decode(&emu, 0x30, stored(&aeads, 0x30, &keys[2].id), &keys[2], 301).is_err());
    let updated = ok(&migrate(&["--no-check"]));
    assert!(
        updated.contains(&format!("1 migrated, {} skipped", keys.len() - 1)),
        "{updated}"
    );
    assert!(updated.contains("UPDATED "), "{updated}");
    assert_eq!(
        decode(&emu, 0x30, stored(&aeads, 0x30, &keys[2].id), &keys[2], 302),
        Ok(302)
    );

    // store verify on the YubiHSM 2 opens every YubiHSM 2 AEAD; the YubiHSM 1 ones are
    // counted as not checked.
    let v = ok(&ksm(
        &[
            &["store", "verify", "-B", aeads.to_str().unwrap()][..],
            &dev,
        ]
        .concat(),
        "",
    ));
    assert!(
        v.contains(&format!(
            "{} AEADs are for the other kind of HSM",
            keys.len()
        )),
        "{v}"
    );
    assert!(v.contains(" 0 rejected by the HSM"), "{v}");
}

#[test]
fn migrating_to_a_key_that_does_not_match_stops_before_writing_anything() {
    let d = tempfile::tempdir().unwrap();
    let (_soft, aeads, _keys) = yubihsm1_store(d.path());
    // Key 0x30 has the right key but a big-endian nonce id: what python-yubihsm's
    // `generate` would have made.
    let config = otp_key(0x30, &kh_key_hex("0x20"), "00000020");
    let emu = Emulator::start(d.path(), Some(&config));
    let pw = password_file(d.path());
    let o = ksm(
        &[
            "migrate-aeads",
            "-B",
            aeads.to_str().unwrap(),
            "--key-handle",
            "0x20",
            "--to-key-id",
            "0x30",
            "-D",
            &emu.url,
            "--password-file",
            pw.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not open") && err.contains("untouched"),
        "{err}"
    );
    assert!(!aeads.join("otp-aead-key-0x0030").exists());

    // With -O the YubiHSM 2 files go elsewhere, and --no-check needs no device.
    let out = d.path().join("hsm2-aeads");
    std::fs::create_dir(&out).unwrap();
    let o = ok(&ksm(
        &[
            "migrate-aeads",
            "-B",
            aeads.to_str().unwrap(),
            "--key-handle",
            "32",
            "--to-key-id",
            "0x30",
            "-O",
            out.to_str().unwrap(),
            "--no-check",
        ],
        "",
    ));
    assert!(
        o.contains(" migrated, 0 skipped (already there), 0 failed"),
        "{o}"
    );
    assert!(out.join("otp-aead-key-0x0030").is_dir());
    assert!(!aeads.join("otp-aead-key-0x0030").exists());
    // Without -D and without --no-check: a usage error.
    let o = ksm(
        &[
            "migrate-aeads",
            "-B",
            aeads.to_str().unwrap(),
            "--key-handle",
            "32",
            "--to-key-id",
            "0x30",
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn generate_import_verify_and_rotate_on_a_yubihsm2() {
    let d = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        otp_key(5, "000102030405060708090a0b0c0d0e0f", "05000000"),
        otp_key(
            6,
            "101112131415161718191a1b1c1d1e1f101112131415161718191a1b1c1d1e1f",
            "06000000"
        )
    );
    let emu = Emulator::start(d.path(), Some(&config));
    let pw = password_file(d.path());
    let dev = [
        "-D",
        emu.url.as_str(),
        "--password-file",
        pw.to_str().unwrap(),
    ];
    let aeads = d.path().join("aeads");
    std::fs::create_dir(&aeads).unwrap();
    let out = ["-O", aeads.to_str().unwrap()];

    // generate-keys: the device chooses the nonce, so the operator must say so.
    let gen = |extra: &[&str]| {
        ksm(
            &[
                &[
                    "generate-keys",
                    "--key-id",
                    "5",
                    "--start-public-id",
                    "1",
                    "-c",
                    "3",
                ][..],
                &dev,
                &out,
                extra,
            ]
            .concat(),
            "",
        )
    };
    let refused = gen(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    // --key-id is for a YubiHSM 2: a serial device (or none) is a usage error.
    let o = ksm(
        &[
            "generate-keys",
            "--key-id",
            "5",
            "--random-nonce",
            "--start-public-id",
            "1",
            "-D",
            "/dev/ttyACM9",
            "-O",
            aeads.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is for a YubiHSM 2"), "{}", text(&o));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--random-nonce"));
    assert!(ok(&gen(&["--random-nonce"])).contains("Done: 3 generated, 0 already present"));
    assert!(ok(&gen(&["--random-nonce"])).contains("Done: 0 generated, 3 already present"));

    // import-keys from ykksm lines: a ykgenerate OTP of each decodes with its AEAD.
    let keys = vectors_of(33);
    let imported = ok(&ksm(
        &[
            &["import-keys", "--key-id", "5", "--random-nonce"][..],
            &dev,
            &out,
        ]
        .concat(),
        &ykksm(&keys),
    ));
    assert!(
        imported.contains(&format!("{} imported", keys.len())),
        "{imported}"
    );
    for k in &keys {
        assert_eq!(decode(&emu, 5, stored(&aeads, 5, &k.id), k, 40), Ok(40));
    }

    // store verify on the device: all open; the nonces are the device's, so only with
    // --random-nonce-aeads does verify pass.
    let verify = |extra: &[&str]| {
        ksm(
            &[
                &["store", "verify", "-B", aeads.to_str().unwrap()][..],
                &dev,
                extra,
            ]
            .concat(),
            "",
        )
    };
    let strict = verify(&[]);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    let v = ok(&verify(&["--random-nonce-aeads"]));
    assert!(
        v.contains(&format!(
            "{} good, 0 bad, 0 misplaced, 0 rejected",
            3 + keys.len()
        )),
        "{v}"
    );
    // A corrupted AEAD is rejected by the device.
    let victim = aead_store::layout::aead_path(
        &aeads.join("otp-aead-key-0x0005"),
        &PublicId::new(&keys[0].id).unwrap(),
    );
    let good = std::fs::read(&victim).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&victim, &bad).unwrap();
    let v = verify(&["--random-nonce-aeads"]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("REJECTED"),
        "{}",
        text(&v)
    );
    std::fs::write(&victim, &good).unwrap();

    // Rotation 5 → 6: every AEAD moves inside the device; both keys serve meanwhile.
    let rewrap = || {
        ksm(
            &[
                &[
                    "rewrap",
                    "--from-key",
                    "5",
                    "--to-key",
                    "6",
                    "-B",
                    aeads.to_str().unwrap(),
                ][..],
                &dev,
            ]
            .concat(),
            "",
        )
    };
    let r = ok(&rewrap());
    assert!(
        r.contains(&format!("{} rewrapped, 0 skipped", 3 + keys.len())),
        "{r}"
    );
    let r = ok(&rewrap());
    assert!(
        r.contains(&format!("0 rewrapped, {} skipped", 3 + keys.len())),
        "{r}"
    );
    for k in &keys {
        let moved = stored(&aeads, 6, &k.id);
        assert_eq!(moved.nonce(), stored(&aeads, 5, &k.id).nonce());
        assert_eq!(decode(&emu, 6, moved, k, 41), Ok(41));
        assert!(decode(&emu, 5, moved, k, 42).is_err());
    }
    // A daemon's store configured "6, then 5" finds 6 first, and 5 where 6 is missing.
    let both = FsStore::open_keys(
        &aeads,
        vec![AeadKey::OtpKey(ObjectId(6)), AeadKey::OtpKey(ObjectId(5))],
    )
    .unwrap()
    .with_nonce_policy(NoncePolicy::Any);
    let id0 = PublicId::new(&keys[0].id).unwrap();
    assert_eq!(
        both.lookup(&id0).unwrap().unwrap().key(),
        AeadKey::OtpKey(ObjectId(6))
    );
    std::fs::remove_file(aead_store::layout::aead_path(
        &aeads.join("otp-aead-key-0x0006"),
        &id0,
    ))
    .unwrap();
    assert_eq!(
        both.lookup(&id0).unwrap().unwrap().key(),
        AeadKey::OtpKey(ObjectId(5))
    );
}

/// `ksm provision-hsm2` of key handle 0x20 (its key in `soft`) as otp-aead-key 7 on the
/// device at `url`, with authentication key `auth_key` and its password in `pw`.
fn provision_7(url: &str, auth_key: &str, pw: &Path, soft: &Path) -> Output {
    ksm(
        &[
            "provision-hsm2",
            "-D",
            url,
            "--auth-key-id",
            auth_key,
            "--password-file",
            pw.to_str().unwrap(),
            "--key-handle-key-file",
            soft.to_str().unwrap(),
            "--key-handle",
            "0x20",
            "--key-id",
            "7",
        ],
        "",
    )
}

#[test]
fn secrets_stay_out_of_argv_and_group_readable_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let emu = Emulator::start(d.path(), None);
    let soft = d.path().join("kh.hex");
    std::fs::write(&soft, format!("{}\n", kh_key_hex("0x20"))).unwrap();
    std::fs::set_permissions(&soft, std::fs::Permissions::from_mode(0o640)).unwrap();
    let pw = password_file(d.path());
    let provision = |pw: &Path| provision_7(&emu.url, "1", pw, &soft);
    let o = provision(&pw);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    assert!(!text(&o).contains(&kh_key_hex("0x20")));
    std::fs::set_permissions(&soft, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = provision(&pw);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    // A wrong password: refused by the device, and not quoted.
    private(&pw, "Hunter2-not-it\n");
    let o = provision(&pw);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!text(&o).contains("Hunter2"), "{}", text(&o));
    // No flag takes a password or key: clap refuses one.
    let o = ksm(&["provision-hsm2", "--password", "x"], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // The right password: made once. Run again (as after an answer lost on the way back),
    // the key is found there and proved; another key-handle key for the same id is refused.
    private(&pw, "password\n");
    assert!(ok(&provision(&pw)).contains("checked:"));
    let again = ok(&provision(&pw));
    assert!(again.contains("is there already"), "{again}");
    assert!(again.contains("checked:"), "{again}");
    std::fs::write(&soft, format!("{}\n", kh_key_hex("0x21"))).unwrap();
    let o = provision(&pw);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("already has an object"), "{}", text(&o));
}

/// provision-hsm2 run again where its otp-aead-key exists: the key is compared by a proof
/// OTP. A device that refuses the comparison (here the authentication key may put keys but
/// not decrypt OTPs) is named as such, the object left alone: the run never says the id is
/// another key's ("choose another --key-id") when nothing showed that it is.
#[test]
fn provision_hsm2_reports_a_refused_comparison_of_an_existing_key() {
    let d = tempfile::tempdir().unwrap();
    let emu = Emulator::start(d.path(), None);
    let soft = d.path().join("kh.hex");
    private(&soft, &format!("{}\n", kh_key_hex("0x20")));
    let pw = password_file(d.path());
    let provision = |auth_key: &str| provision_7(&emu.url, auth_key, &pw, &soft);
    assert!(ok(&provision("1")).contains("checked:"));
    let (mut c, mut s) = emu.client();
    let narrow = hsm2_proto::cmd::PutAuthenticationKey {
        object: clone_test_object(
            2,
            hsm2_proto::Algorithm::Aes128YubicoAuthentication,
            "put-otp-aead-key",
        ),
        delegated: caps(ksm::tools::provision_hsm2::DEFAULT_CAPABILITIES),
        key: AuthKey::from_password(b"password"),
    };
    c.send(&mut s, &narrow).unwrap();

    let o = provision("2");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(
        out.contains("the YubiHSM 2 already has an otp-aead-key 0x0007, and it could not be compared with key handle 0x20's key"),
        "{out}"
    );
    assert!(out.contains("insufficient"), "{out}");
    assert!(!out.contains("choose another --key-id"), "{out}");
    // Nothing was changed: the full key still finds it there and proves it.
    let again = ok(&provision("1"));
    assert!(again.contains("is there already"), "{again}");
}

#[test]
fn yubihsm2_rows_in_a_database_are_made_verified_and_rotated() {
    let d = tempfile::tempdir().unwrap();
    let config = format!(
        "{}{}",
        otp_key(5, "000102030405060708090a0b0c0d0e0f", "05000000"),
        otp_key(6, "202122232425262728292a2b2c2d2e2f", "06000000")
    );
    let emu = Emulator::start(d.path(), Some(&config));
    let pw = password_file(d.path());
    let dev = [
        "-D",
        emu.url.as_str(),
        "--password-file",
        pw.to_str().unwrap(),
    ];
    let url = format!("sqlite:///{}", d.path().join("aeads.db").display());
    assert!(ok(&ksm(&["store", "db-init", &url], "")).contains("ready"));
    let keys = vectors_of(32);
    let imported = ok(&ksm(
        &[
            &[
                "import-keys",
                "--key-id",
                "5",
                "--random-nonce",
                "--db-url",
                &url,
            ][..],
            &dev,
        ]
        .concat(),
        &ykksm(&keys),
    ));
    assert!(
        imported.contains(&format!("{} imported", keys.len())),
        "{imported}"
    );
    let r = ok(&ksm(
        &[
            &[
                "rewrap",
                "--from-key",
                "5",
                "--to-key",
                "6",
                "--db-url",
                &url,
            ][..],
            &dev,
        ]
        .concat(),
        "",
    ));
    assert!(
        r.contains(&format!(
            "{} rewrapped, 0 skipped (already under the new key), 0 failed",
            keys.len()
        )),
        "{r}"
    );
    let v = ok(&ksm(
        &[
            &["store", "verify", "--db-url", &url, "--random-nonce-aeads"][..],
            &dev,
        ]
        .concat(),
        "",
    ));
    assert!(
        v.contains(&format!(
            "{} good, 0 bad, 0 misplaced, 0 rejected",
            2 * keys.len()
        )),
        "{v}"
    );
    // The rows decode: read back through the store as the daemon would, keys 6 then 5.
    let mut cfg = aead_store::DbConfig::with_keys(
        aead_store::DbUrl::parse(&url).unwrap(),
        vec![AeadKey::OtpKey(ObjectId(6)), AeadKey::OtpKey(ObjectId(5))],
    );
    cfg.nonce_policy = NoncePolicy::Any;
    let db = aead_store::DbStore::open(cfg).unwrap();
    for k in &keys {
        let found = aead_store::Store::lookup(&db, &PublicId::new(&k.id).unwrap())
            .unwrap()
            .unwrap();
        let Sealed::Hsm2 { key_id, aead } = found.sealed else {
            panic!("not a YubiHSM 2 row")
        };
        assert_eq!(key_id, ObjectId(6));
        assert_eq!(decode(&emu, 6, aead, k, 9), Ok(9));
    }
}

/// Yubico does not say whether Rewrap OTP AEAD keeps an AEAD's nonce. On a device that renews
/// it, AEADs whose nonce is their public id (migrated ones) would come back refused by the
/// default nonce rule, and stored under the new key, which daemons look at first, they would
/// stop their YubiKeys at once: rewrap stores none of them and fails, unless the store is
/// served with --random-nonce-aeads.
#[test]
fn a_device_that_renews_the_nonce_on_rewrap_cannot_break_a_public_id_store() {
    let d = tempfile::tempdir().unwrap();
    let (_soft, aeads, keys) = yubihsm1_store(d.path());
    let config = format!(
        "rewrap-renews-nonce = true\n{}{}",
        otp_key(0x30, &kh_key_hex("0x20"), "20000000"),
        otp_key(0x31, "202122232425262728292a2b2c2d2e2f", "31000000")
    );
    let emu = Emulator::start(d.path(), Some(&config));
    let pw = password_file(d.path());
    let dev = ["-D", &emu.url, "--password-file", pw.to_str().unwrap()];
    let dir = aeads.to_str().unwrap();
    let migrate = [
        "migrate-aeads",
        "-B",
        dir,
        "--key-handle",
        "0x20",
        "--to-key-id",
        "0x30",
    ];
    ok(&ksm(&[&migrate[..], &dev].concat(), ""));
    let rewrap = |extra: &[&str]| {
        let args = [
            "rewrap",
            "--from-key",
            "0x30",
            "--to-key",
            "0x31",
            "-B",
            dir,
        ];
        ksm(&[&args[..], &dev, extra].concat(), "")
    };
    let refused = rewrap(&[]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let out = String::from_utf8_lossy(&refused.stdout);
    assert!(
        out.contains(&format!(
            "0 rewrapped, 0 skipped (already under the new key), {} failed",
            keys.len()
        )),
        "{out}"
    );
    assert_eq!(out.matches("new nonce").count(), keys.len(), "{out}");
    assert!(!aeads.join("otp-aead-key-0x0031").exists());
    for (i, k) in keys.iter().enumerate() {
        let kept = stored(&aeads, 0x30, &k.id);
        assert_eq!(
            decode(&emu, 0x30, kept, k, 50 + i as u16),
            Ok(50 + i as u16)
        );
    }

    let moved = ok(&rewrap(&["--random-nonce-aeads"]));
    assert!(
        moved.contains(&format!(
            "{} rewrapped, 0 skipped (already under the new key), 0 failed",
            keys.len()
        )),
        "{moved}"
    );
    assert_eq!(moved.matches("NONCE ").count(), keys.len(), "{moved}");
    for (i, k) in keys.iter().enumerate() {
        let new = stored(&aeads, 0x31, &k.id);
        assert_ne!(new.nonce(), stored(&aeads, 0x30, &k.id).nonce());
        assert_eq!(decode(&emu, 0x31, new, k, 60 + i as u16), Ok(60 + i as u16));
    }
}

/// One AEAD made with another key among good ones, and first in the walk: the run names it
/// (its file, not the key), counts it failed and not migrated, and exits 1, the same with
/// a sample that takes it and with `--check all`, where it is not even written.
#[test]
fn a_wrong_key_aead_among_good_ones_is_named_and_counted_and_decides_the_exit_code() {
    let d = tempfile::tempdir().unwrap();
    let (soft, aeads, keys) = yubihsm1_store(d.path());
    // Handle 0x20's file for cccccccccccb, sealed with the key of 0x21.
    let other = d.path().join("other-soft-hsm.json");
    private(&other, &format!("{{\"32\": \"{}\"}}", kh_key_hex("0x21")));
    let other_dir = d.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let bad = Key {
        id: "cccccccccccb".into(),
        aes: keys[0].aes.clone(),
        uid: keys[0].uid.clone(),
    };
    let o = ksm(
        &[
            "import-keys",
            "-D",
            other.to_str().unwrap(),
            "--key-handles",
            "0x20",
            "-O",
            other_dir.to_str().unwrap(),
        ],
        &ykksm(std::slice::from_ref(&bad)),
    );
    ok(&o);
    let rel = "0x20/cc/cc/cc/cc/cc/cb/cccccccccccb";
    std::fs::create_dir_all(aeads.join(rel).parent().unwrap()).unwrap();
    std::fs::copy(other_dir.join(rel), aeads.join(rel)).unwrap();

    let emu = Emulator::start(d.path(), None);
    let pw = password_file(d.path());
    let dev = ["-D", &emu.url, "--password-file", pw.to_str().unwrap()];
    ok(&ksm(
        &[
            &["provision-hsm2"][..],
            &dev,
            &[
                "--key-handle-key-file",
                soft.to_str().unwrap(),
                "--key-handle",
                "0x20",
                "--key-id",
                "0x30",
            ],
        ]
        .concat(),
        "",
    ));
    for (name, extra) in [
        ("sampled", &["--sample", "1000"][..]),
        ("all", &["--check", "all"][..]),
    ] {
        let out = d.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let o = ksm(
            &[
                &[
                    "migrate-aeads",
                    "-B",
                    aeads.to_str().unwrap(),
                    "--key-handle",
                    "0x20",
                    "--to-key-id",
                    "48",
                    "-O",
                    out.to_str().unwrap(),
                ][..],
                &dev,
                extra,
            ]
            .concat(),
            "",
        );
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(
            stdout.contains(&format!(
                "{} migrated, 0 skipped (already there), 1 failed",
                keys.len()
            )),
            "{name}: {stdout}"
        );
        let failed: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("FAILED "))
            .collect();
        assert_eq!(failed.len(), 1, "{name}: {stdout}");
        assert!(
            failed[0].starts_with(&format!("FAILED {}: ", aeads.join(rel).display()))
                && failed[0].contains("does not open this AEAD"),
            "{name}: {stdout}"
        );
        assert!(
            !text(&o).contains("was it made by `ksm provision-hsm2`"),
            "{name}: the key is not to blame: {}",
            text(&o)
        );
        // Every good one opened; a sample checks the first one twice (before writing).
        let checked = keys.len() + usize::from(name == "sampled");
        assert!(
            stdout.contains(&format!("{checked} checked on the YubiHSM 2")),
            "{name}: {stdout}"
        );
        let written = out.join("otp-aead-key-0x0030/cc/cc/cc/cc/cc/cb/cccccccccccb");
        assert_eq!(written.exists(), name == "sampled", "{name}");
    }
}

/// Two emulated YubiHSM 2s for `ksm clone-hsm2`, the source `a` and the target `b`, and a
/// password file for authentication keys made with the factory password.
struct ClonePair {
    a: Emulator,
    b: Emulator,
    pw: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClonePair {
    fn start() -> ClonePair {
        let d = tempfile::tempdir().unwrap();
        let (a_dir, b_dir) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        ClonePair {
            a: Emulator::start(&a_dir, None),
            b: Emulator::start(&b_dir, None),
            pw: password_file(d.path()),
            _dir: d,
        }
    }

    /// `ksm clone-hsm2` from `a` to `b` under wrap key 0x30, both passwords from `pw`,
    /// with `extra` arguments.
    fn run(&self, extra: &[&str]) -> Output {
        let pw = self.pw.to_str().unwrap();
        let mut args = vec![
            "clone-hsm2",
            "--from",
            &self.a.url,
            "--to",
            &self.b.url,
            "--wrap-key-id",
            "0x30",
            "--from-password-file",
            pw,
            "--to-password-file",
            pw,
        ];
        args.extend_from_slice(extra);
        ksm(&args, "")
    }
}

fn caps(names: &str) -> hsm2_proto::Capabilities {
    hsm2_proto::Capabilities::parse(names).unwrap()
}

/// The head of an object the clone tests put on a device: domain 1.
fn clone_test_object(
    id: u16,
    algorithm: hsm2_proto::Algorithm,
    capabilities: &str,
) -> hsm2_proto::cmd::NewObject {
    hsm2_proto::cmd::NewObject {
        id: ObjectId(id),
        label: hsm2_proto::Label::new("clone test").unwrap(),
        domains: hsm2_proto::Domains(1),
        capabilities: caps(capabilities),
        algorithm,
    }
}

/// `ksm clone-hsm2`'s refusals, each before anything is copied: a wrap key missing on
/// either side, one that could export or decrypt more than otp-aead-keys, an object of
/// another type the wrap key could carry out (on the source, and on a target whose wrap
/// key may export too), a wrap key in a domain the session's key is not in, a
/// group-readable password file. Then a wrap key whose bytes differ between the devices is
/// named, a key id the target holds with another key is left alone while the rest is
/// copied, and a copy that cannot be proven is named and fails the run.
#[test]
fn clone_hsm2_refuses_a_wrap_key_that_could_move_more_and_overwrites_nothing() {
    use hsm2_proto::cmd::{DeleteObject, PutOpaque, PutOtpAeadKey};
    use hsm2_proto::{Algorithm, Domains, NonceId, ObjectType};
    use hsm2_proto::{OtpAeadKeyBytes, SecretBytes};

    let pair = ClonePair::start();
    let (a, b, pw) = (&pair.a, &pair.b, &pair.pw);
    let refused = |code: i32, says: &str| {
        let o = pair.run(&[]);
        assert_eq!(o.status.code(), Some(code), "{}", text(&o));
        assert!(text(&o).contains(says), "{}", text(&o));
    };
    let otp = "decrypt-otp:create-otp-aead:exportable-under-wrap";
    let (mut ca, mut sa) = a.client();
    let (mut cb, mut sb) = b.client();
    for (id, key) in [(0x10, [1u8; 16]), (0x11, [2u8; 16])] {
        let req = PutOtpAeadKey {
            object: clone_test_object(id, Algorithm::Aes128YubicoOtp, otp),
            nonce_id: NonceId([id as u8, 0, 0, 0]),
            key: OtpAeadKeyBytes::new(&key).unwrap(),
        };
        ca.send(&mut sa, &req).unwrap();
    }
    // The target's 0x11 is another key.
    let req = PutOtpAeadKey {
        object: clone_test_object(0x11, Algorithm::Aes128YubicoOtp, otp),
        nonce_id: NonceId([0x11, 0, 0, 0]),
        key: OtpAeadKeyBytes::new(&[3u8; 16]).unwrap(),
    };
    cb.send(&mut sb, &req).unwrap();
    let delete_wrap = |c: &mut Client<Box<dyn Transport>>,
                       s: &mut hsm2_proto::session::HostSession| {
        let req = DeleteObject {
            id: ObjectId(0x30),
            object_type: ObjectType::WrapKey,
        };
        c.send(s, &req).unwrap();
    };
    let put_wrap = |c: &mut Client<Box<dyn Transport>>,
                    s: &mut hsm2_proto::session::HostSession,
                    cap: &str,
                    delegated: &str,
                    key: u8| {
        c.put_wrap_key(
            s,
            clone_test_object(0x30, Algorithm::Aes128CcmWrap, cap),
            caps(delegated),
            SecretBytes::new(vec![key; 16]),
        )
        .unwrap();
    };

    refused(3, "the source has no wrap key 0x0030");
    put_wrap(
        &mut ca,
        &mut sa,
        "export-wrapped",
        &format!("{otp}:sign-hmac"),
        7,
    );
    refused(
        2,
        "delegates capabilities beyond the otp-aead-keys' (sign-hmac)",
    );
    delete_wrap(&mut ca, &mut sa);
    put_wrap(&mut ca, &mut sa, "export-wrapped:unwrap-data", otp, 7);
    refused(2, "may do more than export and import (unwrap-data)");
    delete_wrap(&mut ca, &mut sa);
    put_wrap(&mut ca, &mut sa, "export-wrapped", otp, 7);
    refused(3, "the target has no wrap key 0x0030");
    put_wrap(&mut cb, &mut sb, "import-wrapped", otp, 8);
    let opaque = PutOpaque {
        object: clone_test_object(5, Algorithm::OpaqueData, "exportable-under-wrap"),
        data: b"not an otp-aead-key".to_vec(),
    };
    ca.send(&mut sa, &opaque).unwrap();
    refused(2, "could also export opaque 0x0005 from the source");
    let req = DeleteObject {
        id: ObjectId(5),
        object_type: ObjectType::Opaque,
    };
    ca.send(&mut sa, &req).unwrap();
    // A target whose wrap key may also export is scanned the same way.
    delete_wrap(&mut cb, &mut sb);
    put_wrap(&mut cb, &mut sb, "export-wrapped:import-wrapped", otp, 8);
    cb.send(&mut sb, &opaque).unwrap();
    refused(2, "could also export opaque 0x0005 from the target");
    cb.send(&mut sb, &req).unwrap();
    delete_wrap(&mut cb, &mut sb);
    put_wrap(&mut cb, &mut sb, "import-wrapped", otp, 8);
    // A wrap key in a domain the session's authentication key is not in: the scan would
    // not see the objects there.
    let narrow = hsm2_proto::cmd::PutAuthenticationKey {
        object: clone_test_object(
            2,
            Algorithm::Aes128YubicoAuthentication,
            "export-wrapped:create-otp-aead",
        ),
        delegated: caps(otp),
        key: AuthKey::from_password(b"password"),
    };
    ca.send(&mut sa, &narrow).unwrap();
    delete_wrap(&mut ca, &mut sa);
    let mut wide = clone_test_object(0x30, Algorithm::Aes128CcmWrap, "export-wrapped");
    wide.domains = Domains(3);
    ca.put_wrap_key(&mut sa, wide, caps(otp), SecretBytes::new(vec![7; 16]))
        .unwrap();
    let o = pair.run(&["--from-auth-key-id", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("the source's wrap key 0x0030 is in domains (2) that authentication key 0x0002 is not in"),
        "{}",
        text(&o)
    );
    delete_wrap(&mut ca, &mut sa);
    put_wrap(&mut ca, &mut sa, "export-wrapped", otp, 7);
    std::fs::set_permissions(pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = pair.run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    std::fs::set_permissions(pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Other bytes under the same id on the target: named, nothing imported.
    let o = pair.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("FAILED otp-aead-key 0x0010: the target could not open what the source exported: the two wrap keys 0x0030 do not hold the same key bytes"),
        "{}",
        text(&o)
    );
    delete_wrap(&mut cb, &mut sb);
    put_wrap(&mut cb, &mut sb, "import-wrapped", otp, 7);
    let o = pair.run(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("copied otp-aead-key 0x0010"), "{out}");
    assert!(
        out.contains(
            "FAILED otp-aead-key 0x0011: the target has another otp-aead-key with this id"
        ),
        "{out}"
    );
    assert!(
        out.contains("1 copied (0 not checked), 0 already on the target, 1 failed"),
        "{out}"
    );
    // The target's own 0x11 is still its own: an OTP of a secret sealed there opens there,
    // and not on the source.
    let secret = hsm_proto::YubiKeySecret {
        key: [9; 16],
        uid: [8; 6],
    };
    let aead = cb
        .create_otp_aead(
            &mut sb,
            ObjectId(0x11),
            hsm2_proto::Secret(secret.key),
            hsm2_proto::Secret(secret.uid),
        )
        .unwrap();
    let token = hsm_proto::otp::Token {
        uid: secret.uid,
        counters: hsm_proto::otp::OtpCounters {
            use_ctr: 5,
            session_ctr: 0,
            ts_high: 0,
            ts_low: 1,
        },
        rnd: 0,
    };
    let otp = hsm_proto::otp::encrypt(&secret, &PublicId::from_number(1, 12).unwrap(), &token);
    let c = cb
        .decrypt_otp(&mut sb, ObjectId(0x11), aead, otp.ciphertext)
        .unwrap();
    assert_eq!(c.use_ctr, 5);
    let r = ca.decrypt_otp(&mut sa, ObjectId(0x11), aead, otp.ciphertext);
    assert!(r.is_err(), "the source's 0x11 is another key");

    // A copy that cannot be proven (the key lacks create-otp-aead) is named with what is
    // missing, and the run fails.
    let req = PutOtpAeadKey {
        object: clone_test_object(
            0x12,
            Algorithm::Aes128YubicoOtp,
            "decrypt-otp:exportable-under-wrap",
        ),
        nonce_id: NonceId([0x12, 0, 0, 0]),
        key: OtpAeadKeyBytes::new(&[4u8; 16]).unwrap(),
    };
    ca.send(&mut sa, &req).unwrap();
    let o = pair.run(&["--key-ids", "0x12"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("NOT PROVEN otp-aead-key 0x0012: create-otp-aead missing on the source"),
        "{out}"
    );
    assert!(
        out.contains("1 copied (1 not checked), 0 already on the target, 0 failed"),
        "{out}"
    );
}

/// `ksm clone-hsm2` calls a key the target already holds "the same" only once the target
/// has decoded an OTP under it from an AEAD the source made. When a device refuses that
/// comparison (the target's authentication key may import but not decrypt OTPs; the target's
/// key may not decrypt OTPs; the source's authentication key may export but not make AEADs),
/// the operator is told which refusal, the key is counted as failed (not as present, not as
/// another key) and the run exits 1. With the rights in place the same key is found the same.
#[test]
fn clone_hsm2_reports_a_refused_comparison_of_a_key_the_target_already_holds() {
    use hsm2_proto::cmd::{PutAuthenticationKey, PutOtpAeadKey};
    use hsm2_proto::{Algorithm, NonceId, OtpAeadKeyBytes, SecretBytes};

    let pair = ClonePair::start();
    let otp = "decrypt-otp:create-otp-aead:exportable-under-wrap";
    let (mut ca, mut sa) = pair.a.client();
    let (mut cb, mut sb) = pair.b.client();
    // 0x10: the same key on both devices. 0x11: the same key, but the target's copy may
    // not decrypt OTPs.
    for (id, target_caps) in [(0x10, otp), (0x11, "create-otp-aead:exportable-under-wrap")] {
        for (c, s, capabilities) in [(&mut ca, &mut sa, otp), (&mut cb, &mut sb, target_caps)] {
            let req = PutOtpAeadKey {
                object: clone_test_object(id, Algorithm::Aes128YubicoOtp, capabilities),
                nonce_id: NonceId([id as u8, 0, 0, 0]),
                key: OtpAeadKeyBytes::new(&[id as u8; 16]).unwrap(),
            };
            c.send(s, &req).unwrap();
        }
    }
    for (c, s, cap) in [
        (&mut ca, &mut sa, "export-wrapped"),
        (&mut cb, &mut sb, "import-wrapped"),
    ] {
        c.put_wrap_key(
            s,
            clone_test_object(0x30, Algorithm::Aes128CcmWrap, cap),
            caps(otp),
            SecretBytes::new(vec![7; 16]),
        )
        .unwrap();
        // Authentication key 2: all cloning needs of this side, and not the proof's
        // capability.
        let narrow = PutAuthenticationKey {
            object: clone_test_object(2, Algorithm::Aes128YubicoAuthentication, cap),
            delegated: caps(otp),
            key: AuthKey::from_password(b"password"),
        };
        c.send(s, &narrow).unwrap();
    }
    let refused = |extra: &[&str], key: &str, says: &str| {
        let o = pair.run(extra);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {out}");
        assert!(
            out.contains(&format!(
                "FAILED otp-aead-key {key}: the target has an otp-aead-key with this id, and its key cannot be compared ({says}): left alone"
            )),
            "{extra:?}: {out}"
        );
        assert!(
            out.contains("0 copied (0 not checked), 0 already on the target, 1 failed"),
            "{extra:?}: {out}"
        );
        assert!(
            out.contains("1 otp-aead-key(s) not cloned, 0 copied but not proven"),
            "{extra:?}: {out}"
        );
        assert!(
            !out.contains("is on the target already"),
            "{extra:?}: {out}"
        );
        assert!(!out.contains("another otp-aead-key"), "{extra:?}: {out}");
    };
    refused(
        &["--key-ids", "0x10", "--to-auth-key-id", "2"],
        "0x0010",
        "decrypt-otp missing on the target (its authentication key or the otp-aead-key)",
    );
    refused(
        &["--key-ids", "0x11"],
        "0x0011",
        "decrypt-otp missing on the target (its authentication key or the otp-aead-key)",
    );
    refused(
        &["--key-ids", "0x10", "--from-auth-key-id", "2"],
        "0x0010",
        "create-otp-aead missing on the source (its authentication key or the otp-aead-key)",
    );
    // Every refusal left the target's keys as they were: 0x10 there is the source's key,
    // as a run with the rights in place finds.
    let o = pair.run(&["--key-ids", "0x10"]);
    let out = ok(&o);
    assert!(
        out.contains("otp-aead-key 0x0010 is on the target already: the same key"),
        "{out}"
    );
    assert!(
        out.contains("0 copied (0 not checked), 1 already on the target, 0 failed"),
        "{out}"
    );
}

/// `ksm hsm2-log --advance` frees the device's entries: without `--audit-log` their only
/// copy would be standard output, so it is refused before any device is opened.
#[test]
fn hsm2_log_advance_needs_an_audit_log() {
    let o = ksm(&["hsm2-log", "-D", "http://127.0.0.1:9", "--advance"], "");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--audit-log"), "{}", text(&o));
}

/// Whether `strace` can trace here (installed, and ptrace allowed); `Some(why)` if not.
fn no_strace() -> Option<String> {
    match Command::new("strace")
        .args(["-qq", "-o", "/dev/null", "true"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!("strace cannot trace: {}", text(&o))),
        Err(e) => Some(format!("no strace: {e}")),
    }
}

/// `ksm ARGS` under `strace` (every thread, file descriptors shown with their paths): the
/// system calls it made on files, one a line. Killed after a minute.
fn traced_ksm(dir: &Path, args: &[&str]) -> (Output, Vec<String>) {
    let trace = dir.join("trace");
    let child = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=%file,%desc", "-o"])
        .arg(&trace)
        .arg(KSM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strace");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let o = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ksm under strace still running after a minute")
        .unwrap();
    let lines = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (o, lines)
}

/// The audit file is where the entries a drain frees from the device live on: a new file's
/// name must be as durable as the lines written into it, or a crash right after its
/// creation (a first start, a log rotation) could lose the file, and every entry in it,
/// while the device has already let them go. So creating it syncs its directory, and
/// opening a file that is already there does not. Seen in the system calls of a real `ksm
/// hsm2-log --audit-log`, which opens the file before the device (the connector here
/// refuses, so no device is needed).
#[test]
fn a_new_audit_file_has_its_directory_synced_and_one_already_there_does_not() {
    if let Some(why) = no_strace() {
        // CI installs strace (.ci/run): a skip there would hide a failure.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // strace shows a descriptor's path resolved.
    let dir = tmp.path().canonicalize().unwrap();
    let file = dir.join("audit.jsonl");
    let pw = dir.join("password");
    private(&pw, "password\n");
    let args = [
        "hsm2-log",
        "-D",
        "http://127.0.0.1:9",
        "--password-file",
        pw.to_str().unwrap(),
        "--audit-log",
        file.to_str().unwrap(),
    ];
    let dir_synced = |lines: &[String]| {
        let dir = format!("<{}>)", dir.display());
        lines
            .iter()
            .position(|l| (l.contains(" fsync(") || l.contains(" fdatasync(")) && l.contains(&dir))
    };
    let (o, lines) = traced_ksm(&dir, &args);
    assert!(text(&o).contains("unreachable"), "{}", text(&o));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let created = lines
        .iter()
        .position(|l| {
            l.contains(&format!("\"{}\"", file.display()))
                && l.contains("O_CREAT|O_EXCL")
                && !l.contains("= -1")
        })
        .unwrap_or_else(|| panic!("the file was not created: {lines:#?}"));
    let synced =
        dir_synced(&lines).unwrap_or_else(|| panic!("the directory was not synced: {lines:#?}"));
    assert!(
        created < synced,
        "synced before the file was made: {lines:#?}"
    );

    let (o, lines) = traced_ksm(&dir, &args);
    assert!(text(&o).contains("unreachable"), "{}", text(&o));
    assert_eq!(
        dir_synced(&lines),
        None,
        "a file already there: nothing new to sync"
    );
}
