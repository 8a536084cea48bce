//! The daemon end to end: a real HTTP server on 127.0.0.1, HSMs behind it (the in-process
//! soft HSM, and emulators on real ptys), AEAD files on disk, OTPs from Yubico's
//! `ykgenerate`. Every answer line is compared byte for byte: it is the contract yubikey-val
//! parses.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_tests::*;
use support::{assert_answer, assert_answer_soon, settings, Daemon};

/// Every vector OTP and fresh ykgenerate OTPs decode to their exact lines; each OTP or AEAD
/// problem gets its own ERR line.
fn decode_contract(d: &Daemon, aeads: &Path) {
    let v = otp_vectors();
    for o in v["otps"].as_array().unwrap() {
        assert_answer(
            &d.decode(o["otp"].as_str().unwrap()),
            200,
            o["expect"].as_str().unwrap(),
        );
    }
    for i in 0..6 {
        assert_answer(
            &d.decode(&vector_otp(i, 0x0123, 0x45)),
            200,
            "OK counter=0123 low=4242 high=17 use=45",
        );
    }
    // As yubikey-val sends it, and as people paste it: upper case, surrounding space.
    let otp = vector_otp(0, 9, 9);
    assert_answer(
        &get(
            d.addr,
            &format!("/wsapi/decrypt/?otp=%20{}%20", otp.to_uppercase()),
        ),
        200,
        "OK counter=0009 low=4242 high=17 use=09",
    );
    let post = format!("POST /wsapi/decrypt HTTP/1.1\r\nHost: ksm\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\notp={otp}", otp.len() + 4);
    assert_answer(
        &raw(d.addr, post.as_bytes()),
        200,
        "OK counter=0009 low=4242 high=17 use=09",
    );

    assert_answer(
        &get(d.addr, "/wsapi/decrypt?id=1"),
        200,
        "ERR No OTP provided",
    );
    assert_answer(&d.decode("cccccc"), 200, "ERR Invalid OTP format");
    assert_answer(&d.decode(&"c".repeat(49)), 200, "ERR Invalid OTP format");
    assert_answer(
        &d.decode("ccccdeulfbvjktbbvtiekgclldvdnbhhccnjvvvfevrX"),
        200,
        "ERR Invalid OTP format",
    );
    assert_answer(
        &d.decode(&ykgenerate(
            "ccccccccccdd",
            &"11".repeat(16),
            "010203040506",
            1,
            1,
            1,
            1,
        )),
        200,
        "ERR Unknown public_id",
    );
    assert_answer(
        &d.decode(&ykgenerate(
            "ccccdeulfbvj",
            &"11".repeat(16),
            "4f27a712b157",
            1,
            1,
            1,
            1,
        )),
        200,
        "ERR Corrupt OTP",
    );
    assert_answer(
        &d.decode(&ykgenerate(
            "ccccdeulfbvj",
            "708dabb7fcdab9536fe4fb6f0df4a8ae",
            "000000000000",
            1,
            1,
            1,
            1,
        )),
        200,
        "ERR Corrupt OTP",
    );

    // A truncated AEAD file, and one whose AEAD the HSM rejects.
    let truncated = aeads.join("0x21/cc/cc/kf/ei/ib/dh/cccckfeiibdh");
    std::fs::write(&truncated, b"YubiHSM AEAD\n\x01\x21\x00").unwrap();
    assert_answer_soon(d, &vector_otp(3, 1, 1), "ERR Corrupt AEAD");
    let tampered = aeads.join("0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj");
    let mut bytes = std::fs::read(&tampered).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&tampered, &bytes).unwrap();
    assert_answer_soon(d, &vector_otp(0, 2, 2), "ERR Corrupt AEAD");
    // Others are unaffected.
    assert_answer(
        &d.decode(&vector_otp(1, 7, 7)),
        200,
        "OK counter=0007 low=4242 high=17 use=07",
    );
    assert_eq!(get(d.addr, "/nope").status, 404);
    assert_eq!(get(d.addr, "/wsapi/decrypt/extra?otp=x").status, 404);
}

#[test]
fn soft_hsm_decode_contract() {
    let aeads = aead_dir();
    let d = Daemon::start(settings(vec![], aeads.path(), Duration::from_secs(5)));
    decode_contract(&d, aeads.path());
    let m = get(d.addr, "/metrics").body;
    assert!(
        m.contains("ksm_decodes_total{result=\"corrupt_aead\"} "),
        "{m}"
    );
    assert!(!m.contains("ksm_decodes_total{result=\"ok\"} 0\n"));
}

#[test]
fn emulator_over_pty_decode_contract() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let aeads = aead_dir();
    let d = Daemon::start(settings(
        vec![dev.path()],
        aeads.path(),
        Duration::from_secs(5),
    ));
    decode_contract(&d, aeads.path());
}

#[test]
fn stall_unplug_and_lock_answer_503_within_the_deadline_and_recover() {
    let text = std::fs::read_to_string(fixtures().join("emulator/demo.toml")).unwrap();
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!(
        "master_key = \"{}\"\n{text}",
        "ab".repeat(32)
    ))
    .unwrap()
    .resolve()
    .unwrap();
    let dev = Device::start(&cfg);
    let aeads = aead_dir();
    let d = Daemon::start(settings(
        vec![dev.path()],
        aeads.path(),
        Duration::from_millis(800),
    ));

    // Locked at power-on.
    let wait_for = |body: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let a = d.decode(&vector_otp(0, 1, 1));
            if a.body == format!("{body}\n") || Instant::now() > deadline {
                return a;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_answer(&wait_for("ERR HSM locked"), 503, "ERR HSM locked");
    let health = get(d.addr, "/health");
    assert_eq!(health.status, 503);
    assert!(health.body.contains("\"locked\""), "{}", health.body);
    dev.emu.with_engine(|e| {
        let mut frame = vec![33, 0x29];
        frame.extend_from_slice(&[0xab; 32]);
        e.feed(&frame)
    });
    assert_answer(
        &wait_for("OK counter=0001 low=4242 high=17 use=01"),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );

    // Stalled: each request ends with ERR Timeout by its deadline.
    dev.emu.set_stall(true);
    let t = Instant::now();
    assert_answer(&d.decode(&vector_otp(0, 2, 1)), 503, "ERR Timeout");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    dev.emu.set_stall(false);
    assert_answer(
        &wait_for("OK counter=0001 low=4242 high=17 use=01"),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );

    // Unplugged: answers come within the deadline; plugged back: served again, no restart.
    dev.emu.unplug(Duration::from_secs(2));
    let t = Instant::now();
    let a = wait_for("ERR HSM unavailable");
    assert_answer(&a, 503, "ERR HSM unavailable");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(get(d.addr, "/metrics").body.contains("state=\"down\"} 1"));
    // Plugging back in power-cycles the device: locked again until unlocked.
    assert_answer(&wait_for("ERR HSM locked"), 503, "ERR HSM locked");
    dev.emu.with_engine(|e| {
        let mut frame = vec![33, 0x29];
        frame.extend_from_slice(&[0xab; 32]);
        e.feed(&frame)
    });
    assert_answer(
        &wait_for("OK counter=0001 low=4242 high=17 use=01"),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );
}

#[test]
fn full_queue_answers_overloaded_at_once() {
    let dev = Device::start(&emulator_config("demo.toml"));
    let aeads = aead_dir();
    let mut s = settings(vec![dev.path()], aeads.path(), Duration::from_secs(2));
    s.queue_depth = 1;
    let d = Daemon::start(s);
    assert_answer(
        &d.decode(&vector_otp(0, 1, 1)),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );
    dev.emu.set_stall(true);
    let addr = d.addr;
    let otp = vector_otp(0, 1, 2);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let otp = otp.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                (get(addr, &format!("/wsapi/decrypt?otp={otp}")), t.elapsed())
            })
        })
        .collect();
    let answers: Vec<(Answer, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let overloaded: Vec<_> = answers
        .iter()
        .filter(|(a, _)| a.body == "ERR Overloaded\n")
        .collect();
    assert!(!overloaded.is_empty(), "{answers:?}");
    assert!(
        overloaded
            .iter()
            .all(|(a, t)| a.status == 503 && *t < Duration::from_millis(500)),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(a, _)| a.body == "ERR Overloaded\n" || a.body == "ERR Timeout\n"),
        "{answers:?}"
    );
    dev.emu.set_stall(false);
}

#[test]
fn two_devices_one_unplugged_no_failed_requests() {
    let a = Device::start(&emulator_config("demo.toml"));
    let b = Device::start(&emulator_config("demo.toml"));
    let aeads = aead_dir();
    let d = Daemon::start(settings(
        vec![a.path(), b.path()],
        aeads.path(),
        Duration::from_secs(3),
    ));
    assert_answer(
        &d.decode(&vector_otp(1, 1, 1)),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );
    let otp = vector_otp(1, 5, 5);
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Instant::now() + Duration::from_millis(2500);
    let addr = d.addr;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (otp, ok, bad) = (otp.clone(), ok.clone(), bad.clone());
            std::thread::spawn(move || {
                while Instant::now() < stop {
                    let a = get(addr, &format!("/wsapi/decrypt?otp={otp}"));
                    if a.body == "OK counter=0005 low=4242 high=17 use=05\n" {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("failed: {a:?}");
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    a.emu.unplug(Duration::from_millis(1000));
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    assert!(
        ok.load(Ordering::Relaxed) > 50,
        "{}",
        ok.load(Ordering::Relaxed)
    );
    // The unplugged device comes back by itself (reopened, both up)...
    let health =
        || -> serde_json::Value { serde_json::from_str(&get(d.addr, "/health").body).unwrap() };
    let until = Instant::now() + Duration::from_secs(10);
    let mut h = health();
    while h["status"] != "ok" {
        assert!(Instant::now() < until, "never back: {h}");
        std::thread::sleep(Duration::from_millis(20));
        h = health();
    }
    assert_eq!(h["devices"][0]["state"], "up", "{h}");
    assert_eq!(h["devices"][1]["state"], "up", "{h}");
    assert!(h["devices"][0]["opens"].as_u64().unwrap() >= 2, "{h}");
    // ...and serves: with the other one unplugged now, the answer can only be its.
    b.emu.unplug(Duration::from_secs(3));
    let until = Instant::now() + Duration::from_secs(5);
    while health()["devices"][1]["state"] != "down" {
        assert!(Instant::now() < until, "{}", health());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_answer(
        &d.decode(&vector_otp(1, 6, 6)),
        200,
        "OK counter=0006 low=4242 high=17 use=06",
    );
}

#[test]
fn key_handle_missing_on_the_hsm_is_a_set_up_error() {
    // An HSM that only has key handle 0x20, and a store with AEADs under 0x21 too.
    let key20 = otp_vectors()["key_handles"]["0x20"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = hsm_proto::emulator::EmulatorConfig::parse(&format!("{{\"32\": \"{key20}\"}}"))
        .unwrap()
        .resolve()
        .unwrap();
    let dev = Device::start(&cfg);
    let aeads = aead_dir();
    let d = Daemon::start(settings(
        vec![dev.path()],
        aeads.path(),
        Duration::from_secs(5),
    ));
    assert_answer(
        &d.decode(&vector_otp(0, 1, 1)),
        200,
        "OK counter=0001 low=4242 high=17 use=01",
    );
    assert_answer(
        &d.decode(&vector_otp(1, 1, 1)),
        503,
        "ERR HSM refused key handle",
    );
}

#[test]
fn oversized_and_malformed_requests_are_refused_cheaply() {
    let aeads = aead_dir();
    let d = Daemon::start(settings(vec![], aeads.path(), Duration::from_secs(5)));
    // A 1 MB URL: refused by the HTTP layer with a 4xx, without reading it all.
    let huge = format!(
        "GET /wsapi/decrypt?otp={} HTTP/1.1\r\nHost: ksm\r\nConnection: close\r\n\r\n",
        "c".repeat(1 << 20)
    );
    let a = raw(d.addr, huge.as_bytes());
    assert!(
        (400..500).contains(&a.status) || a.status == 0,
        "{}",
        a.status
    );
    // Bad percent-encoding is just not an OTP.
    assert_answer(
        &get(d.addr, "/wsapi/decrypt?otp=%zz%C3%28cccc"),
        200,
        "ERR Invalid OTP format",
    );
    assert_answer(
        &get(d.addr, "/wsapi/decrypt?otp=%00%ff"),
        200,
        "ERR Invalid OTP format",
    );
    // Pipelined garbage closes that connection; others are unaffected.
    let a = raw(
        d.addr,
        b"\x16\x03\x01\x02\x00garbage\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    assert!(a.status == 400 || a.status == 0, "{}", a.status);
    // A large POST body is refused.
    let body = "otp=".to_string() + &"c".repeat(10_000);
    let post = format!("POST /wsapi/decrypt HTTP/1.1\r\nHost: ksm\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    assert_eq!(raw(d.addr, post.as_bytes()).status, 413);
    assert_answer(
        &d.decode(&vector_otp(0, 3, 3)),
        200,
        "OK counter=0003 low=4242 high=17 use=03",
    );
}

/// A daemon whose AEAD directory vanished (or lost its permissions) may still answer from
/// its cache, but monitoring must see it.
#[test]
fn an_unreadable_aead_directory_makes_health_degraded() {
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("aeads");
    std::fs::create_dir(&store).unwrap();
    copy_tree(&fixtures().join("aead-files/store"), &store);
    let d = Daemon::start(settings(vec![], &store, Duration::from_secs(5)));
    let health = || -> (u16, serde_json::Value) {
        let a = get(d.addr, "/health");
        (a.status, serde_json::from_str(&a.body).unwrap())
    };
    assert_eq!(health().0, 200);
    assert_eq!(health().1["status"], "ok");
    let away = parent.path().join("moved");
    std::fs::rename(&store, &away).unwrap();
    let (code, h) = health();
    assert_eq!((code, h["status"].as_str()), (200, Some("degraded")), "{h}");
    assert!(
        h["store"]["error"].as_str().unwrap().contains("aeads"),
        "{h}"
    );
    std::fs::rename(&away, &store).unwrap();
    assert_eq!(health().1["status"], "ok");
}
