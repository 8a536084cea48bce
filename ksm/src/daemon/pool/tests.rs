//! The pool's tests: spreading, failover and verdicts across devices of both kinds, and the
//! helpers every daemon test that runs a YubiHSM 2 emulator shares.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsm2_proto::emulator::{ConnectorEmulator, DeviceConfig};
use hsm2_proto::transport::{Connector, HttpTimeouts, Transport};
use hsm2_proto::{AuthKey, ObjectId, OtpAead};
use hsm_proto::otp::{Otp, OtpCounters};
use hsm_proto::{Aead, KeyHandle, PublicId, YubiKeyAead};

use crate::daemon::answer::Outcome;
use crate::daemon::health::DeviceState;
use crate::daemon::hsm1_owner::Hsm1Aead;
use crate::daemon::hsm2_owner::{Hsm2Aead, Hsm2Backend, OpenTransport, KEEPALIVE, REFUSED_RETRY};
use crate::daemon::owner::PoolError;
use crate::daemon::pool::{Backend, DecodeAead, Pool, PoolConfig};

/// Authentication key 2's password in `fixtures/emulator/yubihsm2-migrated.toml`.
pub(crate) const PASSWORD: &str = "ksm test password";

/// The YubiHSM 2 that took over the demo YubiHSM 1, with `extra` lines in front.
pub(crate) fn emulator(extra: &str) -> ConnectorEmulator {
    let text = format!(
        "{extra}\n{}",
        test_support::emulator_fixture("yubihsm2-migrated.toml")
            .replace("session-timeout = 30", "")
    );
    let cfg = DeviceConfig::parse(&text).unwrap();
    ConnectorEmulator::start("127.0.0.1:0".parse().unwrap(), &cfg).unwrap()
}

/// A YubiHSM 2 backend on the connector at `url`, authenticating with key 2 and
/// `password` (none: locked until unlocked).
pub(crate) fn backend(url: String, password: Option<&str>, sessions: usize) -> Backend {
    connector(url, Duration::from_millis(700), password, sessions)
}

/// A YubiHSM 2 backend on the connector at `url`, each answer awaited up to `answer`.
fn connector(url: String, answer: Duration, password: Option<&str>, sessions: usize) -> Backend {
    let target = url.clone();
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(2),
        answer,
    };
    let open: OpenTransport =
        Arc::new(move || Ok(Box::new(Connector::open(&target, timeouts)?) as Box<dyn Transport>));
    reached_by(url, open, password, sessions)
}

/// A YubiHSM 2 backend named `name` whose transport `open` makes.
fn reached_by(
    name: String,
    open: OpenTransport,
    password: Option<&str>,
    sessions: usize,
) -> Backend {
    Backend::Hsm2(Hsm2Backend {
        name,
        open,
        auth_key_id: ObjectId(2),
        key: password.map(|p| AuthKey::from_password(p.as_bytes())),
        reload_key: None,
        refused_retry: REFUSED_RETRY,
        keepalive: KEEPALIVE,
        sessions,
        audit_log: None,
    })
}

pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Yubikey vector `i`'s AEAD, for each kind of HSM.
pub(crate) fn aeads(i: usize) -> (DecodeAead, DecodeAead) {
    let v = test_support::otp_vectors();
    let y = &v["yubikeys"][i];
    let kh = y["key_handle"].as_u64().unwrap() as u32;
    let nonce = PublicId::new(y["public_id"].as_str().unwrap())
        .unwrap()
        .to_nonce()
        .unwrap();
    let bytes: [u8; 30] = hex::decode(y["aead"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let aead = YubiKeyAead::try_from(&Aead::new(&bytes).unwrap()).unwrap();
    (
        DecodeAead::Hsm1(Hsm1Aead {
            key_handle: KeyHandle(kh),
            nonce,
            aead,
        }),
        DecodeAead::Hsm2(Hsm2Aead {
            key_id: ObjectId(0x100 + kh as u16),
            aead: OtpAead::from_yubihsm1(nonce.0, bytes),
        }),
    )
}

pub(crate) fn line(r: Result<OtpCounters, PoolError>) -> String {
    match r {
        Ok(c) => Outcome::Ok(c).answer().1,
        Err(e) => Outcome::from(e).answer().1,
    }
}

pub(crate) fn soon() -> Instant {
    Instant::now() + Duration::from_secs(3)
}

fn wait_for(pool: &Pool, states: &[DeviceState]) {
    let until = Instant::now() + Duration::from_secs(10);
    while pool
        .health()
        .iter()
        .zip(states)
        .any(|(h, s)| h.state() != *s)
    {
        assert!(Instant::now() < until, "devices never reached {states:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn verdicts_end_the_request_and_device_conditions_fail_over() {
    use hsm2_proto::{CommandCode, Error as E, ErrorCode as C};
    let dev = |code| {
        PoolError::Hsm2(E::Device {
            cmd: CommandCode::DecryptOtp,
            code,
        })
    };
    for code in [C::InvalidOtp, C::InvalidData, C::WrongLength] {
        assert!(dev(code).is_verdict(), "{code:?}");
    }
    for code in [
        C::ObjectNotFound,
        C::InsufficientPermissions,
        C::InvalidSession,
        C::SessionsFull,
    ] {
        assert!(!dev(code).is_verdict(), "{code:?}");
    }
    assert!(!PoolError::Hsm2(E::Mac).is_verdict());
    for e in [
        PoolError::Locked,
        PoolError::Unavailable,
        PoolError::Overloaded,
        PoolError::Timeout,
    ] {
        assert!(!e.is_verdict(), "{e:?}");
    }
}

/// Two YubiHSM 2s, one locked: a tampered OTP gets the unlocked one's verdict, not the
/// locked one's state, whichever device the rotation starts with.
#[test]
fn a_forged_otp_is_refused_once_not_retried_on_a_locked_device() {
    let up = emulator("");
    let locked = emulator("");
    let pool = Pool::start(
        vec![
            backend(up.url(), Some(PASSWORD), 1),
            backend(locked.url(), None, 1),
        ],
        PoolConfig::default(),
    );
    wait_for(&pool, &[DeviceState::Up, DeviceState::Locked]);
    let rt = rt();
    let (_, a2) = aeads(0);
    for ctr in 1..5 {
        let otp = Otp::parse(&test_support::vector_otp(0, ctr, 1)).unwrap();
        let mut bad = otp.clone();
        bad.ciphertext[3] ^= 1;
        assert_eq!(
            line(rt.block_on(pool.decode(bad, a2, soon()))),
            "ERR Corrupt OTP"
        );
        assert_eq!(
            line(rt.block_on(pool.decode(otp, a2, soon()))),
            format!("OK counter={ctr:04x} low=4242 high=17 use=01")
        );
    }
}

/// A transport whose device answers every command with error frame `code`: what a
/// broken or hostile connector can send before any session authenticates it.
struct Refuses(u8);

impl hsm2_proto::transport::Transport for Refuses {
    fn exchange(
        &mut self,
        _: &hsm2_proto::codec::Frame,
    ) -> hsm2_proto::Result<hsm2_proto::codec::Frame> {
        hsm2_proto::codec::Frame::parse(&[0x7f, 0x00, 0x01, self.0])
    }
}

/// A session the device will not open, for any reason the owner does not handle, is
/// the device being unusable (503, counted as an open error), never a verdict on the
/// OTP made of unauthenticated bytes.
#[test]
fn an_unauthenticated_refusal_to_open_a_session_is_unavailable() {
    for code in [0x0f, 0x02, 0x08, 0x01] {
        let open: OpenTransport =
            Arc::new(move || Ok(Box::new(Refuses(code)) as Box<dyn Transport>));
        let pool = Pool::start(
            vec![reached_by(
                format!("refuses {code:#x}"),
                open,
                Some(PASSWORD),
                1,
            )],
            PoolConfig::default(),
        );
        let (_, a2) = aeads(0);
        let otp = Otp::parse(&test_support::vector_otp(0, 1, 1)).unwrap();
        let r = rt().block_on(pool.decode(otp, a2, soon()));
        assert_eq!(r, Err(PoolError::Unavailable), "code {code:#x}");
        assert_eq!(line(r), "ERR HSM unavailable");
        let h = &pool.health()[0];
        let opens = h
            .line_errors()
            .find(|(k, _)| *k == crate::daemon::health::LineError::Open)
            .map(|(_, n)| n);
        assert!(opens >= Some(1), "code {code:#x}: {opens:?}");
    }
}

/// A stalled YubiHSM 2 holds its owner thread only until the request it serves gives
/// up, not a transport timeout (5 s here) per exchange: the device's queue is empty
/// again by the deadline, while the device still stalls, and once the stall ends the
/// next request is served at once.
#[test]
fn a_stalled_exchange_ends_at_the_request_deadline() {
    let emu = emulator("");
    let pool = Pool::start(
        vec![connector(
            emu.url(),
            Duration::from_secs(5),
            Some(PASSWORD),
            1,
        )],
        PoolConfig::default(),
    );
    wait_for(&pool, &[DeviceState::Up]);
    let rt = rt();
    let (_, a2) = aeads(0);
    let otp = Otp::parse(&test_support::vector_otp(0, 3, 3)).unwrap();
    emu.set_stall(true);
    let deadline = Instant::now() + Duration::from_millis(300);
    let r = rt.block_on(pool.decode(otp.clone(), a2, deadline));
    assert_eq!(r, Err(PoolError::Timeout));
    let h = pool.health()[0].clone();
    let until = deadline + Duration::from_millis(500);
    while h.queued.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < until,
            "the owner thread is still waiting on the stalled device"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    emu.set_stall(false);
    let start = Instant::now();
    let mut got = String::new();
    while start.elapsed() < Duration::from_secs(2) {
        got = line(rt.block_on(pool.decode(otp.clone(), a2, soon())));
        if got.starts_with("OK") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got, "OK counter=0003 low=4242 high=17 use=03");
}

/// A migrated YubiKey's YubiHSM 2 AEAD, the YubiHSM 2 locked: its YubiHSM 1 AEAD is
/// tried on the YubiHSM 1, good and tampered OTPs alike; with nothing to fall back on
/// it stays `ERR HSM locked`. Once the YubiHSM 2 serves, its verdict is the answer and
/// the store is not even asked for fallbacks.
#[test]
fn a_locked_yubihsm2_fails_over_to_the_yubikeys_yubihsm1_aead_never_on_a_verdict() {
    use std::sync::atomic::AtomicBool;
    let emu = emulator("");
    let pool = Pool::start(
        vec![
            Backend::Soft(Box::new(crate::device::demo_config().unwrap())),
            backend(emu.url(), None, 1),
        ],
        PoolConfig::default(),
    );
    wait_for(&pool, &[DeviceState::Up, DeviceState::Locked]);
    let rt = rt();
    let (a1, a2) = aeads(0);
    let asked = AtomicBool::new(false);
    let failover = |otp: Otp, more: Vec<DecodeAead>| {
        asked.store(false, Ordering::SeqCst);
        let (r, served) = rt.block_on(pool.decode_failover(
            otp,
            a2,
            || async {
                asked.store(true, Ordering::SeqCst);
                more
            },
            soon(),
        ));
        (line(r), served)
    };
    let otp = Otp::parse(&test_support::vector_otp(0, 5, 1)).unwrap();
    let mut bad = otp.clone();
    bad.ciphertext[3] ^= 1;
    let good = "OK counter=0005 low=4242 high=17 use=01".to_string();
    assert_eq!(failover(otp.clone(), vec![a1]), (good.clone(), Some(0)));
    assert_eq!(
        failover(bad.clone(), vec![a1]),
        ("ERR Corrupt OTP".into(), Some(0))
    );
    assert_eq!(
        failover(otp.clone(), vec![]),
        ("ERR HSM locked".into(), None)
    );
    assert!(asked.load(Ordering::SeqCst));
    let key = hsm2_proto::AuthKey::from_password(PASSWORD.as_bytes());
    assert!(rt.block_on(pool.unlock(1, key, soon())).is_ok());
    assert_eq!(failover(otp, vec![a1]), (good, None));
    assert!(!asked.load(Ordering::SeqCst));
    assert_eq!(failover(bad, vec![a1]), ("ERR Corrupt OTP".into(), None));
    assert!(
        !asked.load(Ordering::SeqCst),
        "a verdict is not failed over"
    );
}
