//! The YubiHSM 2's owner through the pool: sessions, re-authentication, the locked state
//! and the password `keystore-unlock` hands over, against the connector emulator.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm2_proto::emulator::ConnectorEmulator;
use hsm2_proto::{AuthKey, ObjectId};
use hsm_proto::otp::Otp;

use super::tests::{aeads, backend, emulator, line, rt, soon, PASSWORD};
use crate::daemon::health::DeviceState;
use crate::daemon::owner::{PoolError, Unlocked};
use crate::daemon::pool::{Backend, Pool, PoolConfig};
use crate::settings::serve::MAX_SESSIONS;

fn wait_for_state(pool: &Pool, state: DeviceState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.health()[0].state() != state {
        assert!(Instant::now() < deadline, "never {}", state.name());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The golden lines: every vector YubiKey's ykgenerate OTPs answer on the YubiHSM 2
/// exactly as on the YubiHSM 1 (the demo soft HSM), good and tampered alike.
#[test]
fn answers_are_the_yubihsm1_answers() {
    let emu = emulator("");
    let hsm2 = Pool::start(
        vec![backend(emu.url(), Some(PASSWORD), 2)],
        PoolConfig::default(),
    );
    let hsm1 = Pool::start(
        vec![Backend::Soft(Box::new(
            crate::device::demo_config().unwrap(),
        ))],
        PoolConfig::default(),
    );
    let rt = rt();
    for i in 0..6 {
        let (a1, a2) = aeads(i);
        for (ctr, use_) in [(1, 0), (0x0123, 0x45), (0xfffe, 0xff)] {
            let otp = Otp::parse(&test_support::vector_otp(i, ctr, use_)).unwrap();
            let want = line(rt.block_on(hsm1.decode(otp.clone(), a1, soon())));
            assert!(want.starts_with("OK counter="), "{want}");
            let got = line(rt.block_on(hsm2.decode(otp.clone(), a2, soon())));
            assert_eq!(got, want, "yubikey {i}");
            // A token made with another key: the same refusal.
            let mut bad = otp.clone();
            bad.ciphertext[3] ^= 1;
            assert_eq!(
                line(rt.block_on(hsm2.decode(bad.clone(), a2, soon()))),
                line(rt.block_on(hsm1.decode(bad, a1, soon())))
            );
        }
    }
    // Each AEAD goes to a device of its kind only.
    let otp = Otp::parse(&test_support::vector_otp(0, 1, 1)).unwrap();
    let (a1, a2) = aeads(0);
    assert_eq!(
        rt.block_on(hsm2.decode(otp.clone(), a1, soon())),
        Err(PoolError::Unavailable)
    );
    assert_eq!(
        rt.block_on(hsm1.decode(otp, a2, soon())),
        Err(PoolError::Unavailable)
    );
    let h = &hsm2.health()[0];
    assert_eq!(h.kind, crate::daemon::health::DeviceKind::YubiHsm2);
    assert_eq!(h.sessions_open.load(Ordering::SeqCst), 2);
    assert_eq!(h.reauthentications.load(Ordering::SeqCst), 0);
}

#[test]
fn locked_without_a_password_until_the_right_one_is_given() {
    let emu = emulator("");
    let pool = Pool::start(vec![backend(emu.url(), None, 1)], PoolConfig::default());
    wait_for_state(&pool, DeviceState::Locked);
    let rt = rt();
    let otp = Otp::parse(&test_support::vector_otp(0, 7, 7)).unwrap();
    let (_, a2) = aeads(0);
    assert_eq!(
        line(rt.block_on(pool.decode(otp.clone(), a2, soon()))),
        "ERR HSM locked"
    );
    let wrong = AuthKey::from_password(b"not the password");
    assert_eq!(
        rt.block_on(pool.unlock(0, wrong, soon())),
        Err(PoolError::WrongPassword)
    );
    assert_eq!(pool.health()[0].state(), DeviceState::Locked);
    assert_eq!(
        line(rt.block_on(pool.decode(otp.clone(), a2, soon()))),
        "ERR HSM locked"
    );
    let right = AuthKey::from_password(PASSWORD.as_bytes());
    assert_eq!(
        rt.block_on(pool.unlock(0, right.clone(), soon())),
        Ok(Unlocked::Now)
    );
    assert_eq!(pool.health()[0].state(), DeviceState::Up);
    assert_eq!(
        line(rt.block_on(pool.decode(otp, a2, soon()))),
        "OK counter=0007 low=4242 high=17 use=07"
    );
    assert_eq!(
        rt.block_on(pool.unlock(0, right, soon())),
        Ok(Unlocked::Already)
    );
}

#[test]
fn a_configured_password_the_device_refuses_leaves_it_locked() {
    let emu = emulator("");
    let pool = Pool::start(
        vec![backend(emu.url(), Some("stale password"), 1)],
        PoolConfig::default(),
    );
    wait_for_state(&pool, DeviceState::Locked);
    let (_, a2) = aeads(0);
    let otp = Otp::parse(&test_support::vector_otp(0, 7, 7)).unwrap();
    assert_eq!(
        line(rt().block_on(pool.decode(otp, a2, soon()))),
        "ERR HSM locked"
    );
    assert_eq!(pool.health()[0].sessions_open.load(Ordering::SeqCst), 0);
}

/// An emulator (`extra` in front of its configuration) and a pool holding one session on
/// it, up.
fn one_session_device(extra: &str) -> (ConnectorEmulator, Pool) {
    let emu = emulator(extra);
    let pool = Pool::start(
        vec![backend(emu.url(), Some(PASSWORD), 1)],
        PoolConfig::default(),
    );
    wait_for_state(&pool, DeviceState::Up);
    (emu, pool)
}

/// The answer line to vector YubiKey 1's OTP with counter `ctr` (use 1), through `pool`.
fn decode_vector_1(rt: &tokio::runtime::Runtime, pool: &Pool, ctr: u16) -> String {
    let (_, a2) = aeads(1);
    let otp = Otp::parse(&test_support::vector_otp(1, ctr, 1)).unwrap();
    line(rt.block_on(pool.decode(otp, a2, soon())))
}

#[test]
fn a_reset_and_an_expiry_are_re_authenticated_within_the_request() {
    let (emu, pool) = one_session_device("session-timeout = 1");
    let rt = rt();
    let decode = |ctr| decode_vector_1(&rt, &pool, ctr);
    let reauths = || pool.health()[0].reauthentications.load(Ordering::SeqCst);
    assert_eq!(decode(1), "OK counter=0001 low=4242 high=17 use=01");
    assert_eq!(reauths(), 0);
    // A reset drops every session on the device.
    emu.reset();
    assert_eq!(decode(2), "OK counter=0002 low=4242 high=17 use=01");
    assert_eq!(reauths(), 1);
    // An idle session expires on the device (1 s here, 30 s on a real one).
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(decode(3), "OK counter=0003 low=4242 high=17 use=01");
    assert_eq!(reauths(), 2);
    assert_eq!(pool.health()[0].sessions_open.load(Ordering::SeqCst), 1);
    assert_eq!(pool.health()[0].state(), DeviceState::Up);
}

#[test]
fn a_stalled_device_times_out_within_the_deadline_and_comes_back() {
    let emu = emulator("");
    let pool = Pool::start(
        vec![backend(emu.url(), Some(PASSWORD), 1)],
        PoolConfig::default(),
    );
    wait_for_state(&pool, DeviceState::Up);
    let rt = rt();
    let (_, a2) = aeads(0);
    let otp = Otp::parse(&test_support::vector_otp(0, 9, 9)).unwrap();
    emu.set_stall(true);
    let deadline = Instant::now() + Duration::from_millis(400);
    let r = rt.block_on(pool.decode(otp.clone(), a2, deadline));
    assert_eq!(r, Err(PoolError::Timeout));
    assert!(Instant::now() < deadline + Duration::from_millis(200));
    emu.set_stall(false);
    let mut last = String::new();
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        last = line(rt.block_on(pool.decode(otp.clone(), a2, soon())));
        if last.starts_with("OK") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last, "OK counter=0009 low=4242 high=17 use=09");
    // The request the stall caught failed on the way (its connection closed when the
    // stall ended, or its answer timed out first): counted, and the transport reopened.
    let h = &pool.health()[0];
    assert!(h.line_errors().map(|(_, n)| n).sum::<u64>() > 0);
    assert!(h.opens.load(Ordering::SeqCst) >= 2);
}

/// Every SIGHUP reopens the device: the sessions it drops are closed on the device, so
/// reloads in a row do not fill its 16 slots with sessions left to expire.
#[test]
fn reopens_close_their_sessions_on_the_device() {
    let emu = emulator("");
    let pool = Pool::start(
        vec![backend(emu.url(), Some(PASSWORD), MAX_SESSIONS)],
        PoolConfig::default(),
    );
    wait_for_state(&pool, DeviceState::Up);
    let rt = rt();
    let (_, a2) = aeads(0);
    for ctr in 1..=6u16 {
        let otp = Otp::parse(&test_support::vector_otp(0, ctr, 1)).unwrap();
        assert!(line(rt.block_on(pool.decode(otp, a2, soon()))).starts_with("OK"));
    }
    assert_eq!(emu.with_device(|d| d.open_sessions()), MAX_SESSIONS);
    for round in 0..6u16 {
        pool.reopen_all();
        wait_for_state(&pool, DeviceState::Up);
        // A decode after the reopen goes through its queue, so the reopen is done.
        let otp = Otp::parse(&test_support::vector_otp(0, 10 + round, 1)).unwrap();
        assert!(line(rt.block_on(pool.decode(otp, a2, soon()))).starts_with("OK"));
        let open = emu.with_device(|d| d.open_sessions());
        assert!(open <= MAX_SESSIONS, "round {round}: {open} sessions open");
    }
}

/// A YubiHSM 2 whose connector refuses connections (at boot) is handed `password`, which
/// it keeps unchecked; then the connector answers.
fn given_while_down(password: &[u8]) -> (ConnectorEmulator, Pool, tokio::runtime::Runtime) {
    let emu = emulator("");
    emu.set_refuse(true);
    let pool = Pool::start(
        vec![backend(emu.url(), None, 1)],
        PoolConfig {
            reopen_interval: Duration::from_millis(100),
            ..PoolConfig::default()
        },
    );
    wait_for_state(&pool, DeviceState::Down);
    let rt = rt();
    let key = AuthKey::from_password(password);
    assert_eq!(
        rt.block_on(pool.unlock(0, key, soon())),
        Ok(Unlocked::Pending)
    );
    emu.set_refuse(false);
    (emu, pool, rt)
}

/// A password handed over while the connector is down (at boot) is kept unchecked and
/// checked when the device answers: then it serves, with nobody running the tool again.
#[test]
fn a_password_given_while_the_device_is_down_is_checked_when_it_answers() {
    let (_emu, pool, rt) = given_while_down(PASSWORD.as_bytes());
    wait_for_state(&pool, DeviceState::Up);
    let (_, a2) = aeads(0);
    let otp = Otp::parse(&test_support::vector_otp(0, 7, 7)).unwrap();
    assert_eq!(
        line(rt.block_on(pool.decode(otp, a2, soon()))),
        "OK counter=0007 low=4242 high=17 use=07"
    );
}

/// A wrong password kept unchecked is forgotten when the device refuses it.
#[test]
fn a_wrong_password_given_while_the_device_is_down_is_forgotten_when_refused() {
    let (_emu, pool, rt) = given_while_down(b"not the password");
    wait_for_state(&pool, DeviceState::Locked);
    let right = AuthKey::from_password(PASSWORD.as_bytes());
    assert_eq!(
        rt.block_on(pool.unlock(0, right, soon())),
        Ok(Unlocked::Now)
    );
}

/// A configured password the device refuses (a changed password, or a corrupted
/// answer that only looks like a refusal) is kept and tried again, with a backoff that
/// leaves the device's slots free; a SIGHUP reads the fixed file and serves at once.
#[test]
fn a_refused_password_file_is_kept_retried_with_backoff_and_read_again_on_sighup() {
    let emu = emulator("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hsm2-password");
    std::fs::write(&file, "stale password\n").unwrap();
    std::fs::set_permissions(
        &file,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let Backend::Hsm2(mut b) = backend(emu.url(), Some("stale password"), 1) else {
        unreachable!()
    };
    let path = file.clone();
    b.reload_key = Some(Arc::new(move || {
        crate::device::hsm2::Hsm2Auth::from_file(ObjectId(2), &path).map(|a| a.auth_key().clone())
    }));
    b.refused_retry = Duration::from_millis(300);
    let pool = Pool::start(vec![Backend::Hsm2(b)], PoolConfig::default());
    wait_for_state(&pool, DeviceState::Locked);
    let rt = rt();
    let (_, a2) = aeads(0);
    // Decodes meanwhile answer locked without asking the device; the retries back off
    // (300 ms, 600 ms, 1.2 s, ...): a handful of tries in 2.5 s, not one per decode.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut ctr = 1;
    while Instant::now() < until {
        let otp = Otp::parse(&test_support::vector_otp(0, ctr, 1)).unwrap();
        assert_eq!(
            line(rt.block_on(pool.decode(otp, a2, soon()))),
            "ERR HSM locked"
        );
        ctr += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let tries = emu.with_device(|d| d.open_sessions());
    assert!((2..=5).contains(&tries), "{tries} half-open sessions");
    // The operator fixes the file and reloads.
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    pool.reopen_all();
    wait_for_state(&pool, DeviceState::Up);
    let otp = Otp::parse(&test_support::vector_otp(0, 7, 7)).unwrap();
    assert_eq!(
        line(rt.block_on(pool.decode(otp, a2, soon()))),
        "OK counter=0007 low=4242 high=17 use=07"
    );
}

/// Other clients of the device hold every session slot while the daemon holds none (its
/// session was dropped by a reset, and they were quicker): the device cannot decode for the
/// daemon, so `/health` must not call it up. It is down, with the slots named as why; the
/// owner's tick asks again, and it is up as soon as a slot frees, with no decode to prompt it.
#[test]
fn a_device_whose_session_slots_other_clients_hold_is_down_until_one_frees() {
    let (emu, pool) = one_session_device("");
    let rt = rt();
    let decode = |ctr| decode_vector_1(&rt, &pool, ctr);
    assert_eq!(decode(1), "OK counter=0001 low=4242 high=17 use=01");

    emu.reset();
    let timeouts = hsm2_proto::transport::HttpTimeouts {
        connect: Duration::from_secs(2),
        answer: Duration::from_secs(2),
    };
    let connector = hsm2_proto::transport::Connector::open(&emu.url(), timeouts).unwrap();
    let mut other = hsm2_proto::Client::new(connector);
    let key = AuthKey::from_password(PASSWORD.as_bytes());
    let mut held = Vec::new();
    let full = loop {
        match other.open_session(ObjectId(2), &key) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() <= 16, "a YubiHSM 2 has 16 session slots");
    };
    assert_eq!(
        full.code(),
        Some(hsm2_proto::ErrorCode::SessionsFull),
        "{full}"
    );
    assert_eq!(held.len(), 16);

    let refused = decode(2);
    assert!(refused.starts_with("ERR "), "{refused}");
    let health = &pool.health()[0];
    assert_eq!(health.state(), DeviceState::Down);
    assert_eq!(health.sessions_open.load(Ordering::SeqCst), 0);
    assert!(
        health.last_error().contains("session"),
        "{}",
        health.last_error()
    );

    other.close_session(held.pop().unwrap()).unwrap();
    wait_for_state(&pool, DeviceState::Up);
    assert_eq!(decode(2), "OK counter=0002 low=4242 high=17 use=01");
}
