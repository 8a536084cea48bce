//! The driver against the software YubiHSM 2 over real HTTP on 127.0.0.1: every command,
//! sessions expiring and re-opened, and a connector that stalls, refuses or restarts.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hsm2_proto::cmd::{self, NewObject, ObjectFilter};
use hsm2_proto::emulator::{ConnectorEmulator, DeviceConfig, MAX_SESSIONS};
use hsm2_proto::session::HostSession;
use hsm2_proto::transport::{Connector, HttpTimeouts};
use hsm2_proto::{
    Algorithm, AuthKey, Capabilities, Capability, Client, Domains, Error, ErrorCode, Label,
    NonceId, ObjectId, ObjectType, Origin, OtpAeadKeyBytes, Secret,
};

fn start(cfg: &DeviceConfig) -> ConnectorEmulator {
    ConnectorEmulator::start("127.0.0.1:0".parse().unwrap(), cfg).unwrap()
}

fn timeouts() -> HttpTimeouts {
    HttpTimeouts {
        connect: Duration::from_secs(2),
        answer: Duration::from_secs(2),
    }
}

fn client(emu: &ConnectorEmulator) -> Client<Connector> {
    Client::new(Connector::open(&emu.url(), timeouts()).unwrap())
}

fn factory(c: &mut Client<Connector>) -> HostSession {
    c.open_session(ObjectId(1), &AuthKey::from_password(b"password"))
        .unwrap()
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    r.unwrap_err().code().expect("a device refusal")
}

fn caps(names: &[Capability]) -> Capabilities {
    names.iter().copied().collect()
}

fn otp_key(id: u16, caps: Capabilities, nonce_id: [u8; 4], key: &[u8]) -> cmd::PutOtpAeadKey {
    cmd::PutOtpAeadKey {
        object: NewObject {
            id: ObjectId(id),
            label: Label::new("ksm").unwrap(),
            domains: Domains(1),
            capabilities: caps,
            algorithm: Algorithm::for_otp_key_len(key.len()).unwrap(),
        },
        nonce_id: NonceId(nonce_id),
        key: OtpAeadKeyBytes::new(key).unwrap(),
    }
}

/// Shared notes §5.3: the OTP the C example's YubiKey makes, counters 1/1/1/1.
const OTP: &str = "2f5d71a4915dec304aa13ccf97bb0dbb";
const YK_KEY: &str = "000102030405060708090a0b0c0d0e0f";

fn h<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).unwrap().try_into().unwrap()
}

#[test]
fn every_command_over_http() {
    use Capability::*;
    let emu = start(&DeviceConfig::factory());
    let mut c = client(&emu);
    let status = c.transport_mut().status().unwrap();
    assert!(status.has_device());
    assert_eq!(status.port, Some(emu.addr().port().to_string()));

    let info = c.device_info().unwrap();
    assert_eq!(info.serial, hsm2_proto::emulator::DEFAULT_SERIAL);
    let echo = c.send_plain(&cmd::Echo { data: vec![9; 100] }).unwrap();
    assert_eq!(echo.data, vec![9; 100]);

    let mut s = factory(&mut c);
    assert_eq!(
        c.send(
            &mut s,
            &cmd::Echo {
                data: b"in".to_vec()
            }
        )
        .unwrap()
        .data,
        b"in"
    );
    let random = c
        .send(&mut s, &cmd::GetPseudoRandom { length: 64 })
        .unwrap();
    assert_eq!(random.bytes.len(), 64);
    assert_eq!(
        code(c.send(&mut s, &cmd::GetPseudoRandom { length: 4000 })),
        ErrorCode::InvalidData
    );

    // Put OTP AEAD Key, Create, Decrypt, Randomize, Generate, Rewrap.
    let all_otp = caps(&[
        DecryptOtp,
        CreateOtpAead,
        RandomizeOtpAead,
        RewrapFromOtpAeadKey,
    ]);
    let put = otp_key(0x10, all_otp, [0x78, 0x56, 0x34, 0x12], &[0x80; 16]);
    assert_eq!(c.send(&mut s, &put).unwrap().id, ObjectId(0x10));
    assert_eq!(code(c.send(&mut s, &put)), ErrorCode::ObjectExists);
    let aead = c
        .create_otp_aead(
            &mut s,
            ObjectId(0x10),
            Secret(h(YK_KEY)),
            Secret(h("010203040506")),
        )
        .unwrap();
    let counters = c.decrypt_otp(&mut s, ObjectId(0x10), aead, h(OTP)).unwrap();
    assert_eq!((counters.use_ctr, counters.session_ctr), (1, 1));
    let random_aead = c.randomize_otp_aead(&mut s, ObjectId(0x10)).unwrap();
    assert_ne!(random_aead.nonce(), aead.nonce());
    let generate = cmd::GenerateOtpAeadKey {
        object: NewObject {
            id: ObjectId(0),
            label: Label::new("generated").unwrap(),
            domains: Domains(1),
            capabilities: caps(&[DecryptOtp, RewrapToOtpAeadKey]),
            algorithm: Algorithm::Aes256YubicoOtp,
        },
        nonce_id: NonceId([0, 0, 0x20, 0]),
    };
    let second = c.send(&mut s, &generate).unwrap().id;
    let moved = c
        .rewrap_otp_aead(&mut s, ObjectId(0x10), second, aead)
        .unwrap();
    let counters = c.decrypt_otp(&mut s, second, moved, h(OTP)).unwrap();
    assert_eq!(counters.ts_low, 1);
    assert_eq!(
        code(c.decrypt_otp(&mut s, second, aead, h(OTP))),
        ErrorCode::InvalidOtp
    );

    // Objects: list (filtered), info, put an authentication key, delete.
    let listed = c
        .send(
            &mut s,
            &cmd::ListObjects {
                filters: vec![ObjectFilter::Type(ObjectType::OtpAeadKey)],
            },
        )
        .unwrap();
    let ids: Vec<_> = listed.objects.iter().map(|o| o.id).collect();
    assert_eq!(ids, [second, ObjectId(0x10)]);
    let info = c
        .send(
            &mut s,
            &cmd::GetObjectInfo {
                id: second,
                object_type: ObjectType::OtpAeadKey,
            },
        )
        .unwrap();
    assert_eq!(
        (info.size, info.origin, info.algorithm, info.label.text()),
        (
            32,
            Origin::GENERATED,
            Algorithm::Aes256YubicoOtp,
            "generated".into()
        )
    );
    let put_auth = cmd::PutAuthenticationKey {
        object: NewObject {
            id: ObjectId(2),
            label: Label::new("decrypt only").unwrap(),
            domains: Domains(1),
            capabilities: caps(&[DecryptOtp]),
            algorithm: Algorithm::Aes128YubicoAuthentication,
        },
        delegated: Capabilities::NONE,
        key: AuthKey::from_password(b"second password"),
    };
    assert_eq!(c.send(&mut s, &put_auth).unwrap().id, ObjectId(2));
    let mut s2 = c
        .open_session(ObjectId(2), &AuthKey::from_password(b"second password"))
        .unwrap();
    c.decrypt_otp(&mut s2, ObjectId(0x10), aead, h(OTP))
        .unwrap();
    assert_eq!(
        code(c.create_otp_aead(&mut s2, ObjectId(0x10), Secret([0; 16]), Secret([0; 6]))),
        ErrorCode::InsufficientPermissions
    );
    c.close_session(s2).unwrap();
    let del = cmd::DeleteObject {
        id: ObjectId(0x10),
        object_type: ObjectType::OtpAeadKey,
    };
    c.send(&mut s, &del).unwrap();
    assert_eq!(
        code(c.decrypt_otp(&mut s, ObjectId(0x10), aead, h(OTP))),
        ErrorCode::ObjectNotFound
    );
    c.close_session(s).unwrap();
    assert_eq!(emu.with_device(|d| d.open_sessions()), 0);
}

#[test]
fn sessions_expire_and_are_reopened() {
    let mut cfg = DeviceConfig::factory();
    cfg.session_timeout = Duration::from_secs(1);
    let emu = start(&cfg);
    let mut c = client(&emu);
    let mut s = factory(&mut c);
    c.send(&mut s, &cmd::Echo { data: vec![1] }).unwrap();
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        code(c.send(&mut s, &cmd::Echo { data: vec![2] })),
        ErrorCode::InvalidSession
    );
    let mut s = factory(&mut c);
    c.send(&mut s, &cmd::Echo { data: vec![3] }).unwrap();
}

#[test]
fn sixteen_sessions_at_once() {
    let emu = start(&DeviceConfig::factory());
    let mut c = client(&emu);
    let key = AuthKey::from_password(b"password");
    let mut all: Vec<_> = (0..MAX_SESSIONS)
        .map(|_| c.open_session(ObjectId(1), &key).unwrap())
        .collect();
    assert_eq!(
        code(c.open_session(ObjectId(1), &key)),
        ErrorCode::SessionsFull
    );
    c.close_session(all.pop().unwrap()).unwrap();
    all.push(c.open_session(ObjectId(1), &key).unwrap());
    for s in &mut all {
        c.send(s, &cmd::Echo { data: vec![4] }).unwrap();
    }
    assert_eq!(
        emu.status(),
        format!("sessions={MAX_SESSIONS} stall=false refuse=false")
    );
}

#[test]
fn a_stalled_connector_times_out_and_recovers() {
    let emu = start(&DeviceConfig::factory());
    let mut c = client(&emu);
    let mut s = factory(&mut c);
    emu.set_stall(true);
    let began = Instant::now();
    let e = c.send(&mut s, &cmd::Echo { data: vec![1] }).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.is_transport_error());
    assert!(began.elapsed() < Duration::from_secs(5));
    // The lost answer leaves the driver's session unusable: it refuses to go on with it.
    assert!(!s.is_usable());
    emu.set_stall(false);
    // The stalled command never reached the device: a new session works at once.
    let mut s = factory(&mut c);
    c.send(&mut s, &cmd::Echo { data: vec![2] }).unwrap();
}

#[test]
fn a_connector_that_restarts() {
    let emu = start(&DeviceConfig::factory());
    let mut c = client(&emu);
    let mut s = factory(&mut c);
    c.send(&mut s, &cmd::Echo { data: vec![1] }).unwrap();
    // Down: connections refused, the open one cut.
    emu.set_refuse(true);
    let e = c.send(&mut s, &cmd::Echo { data: vec![2] }).unwrap_err();
    assert!(e.is_transport_error(), "{e:?}");
    assert!(TcpStream::connect(emu.addr()).is_err());
    // Back, with the device reset: old sessions are gone, new ones work.
    emu.reset();
    emu.set_refuse(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        match Connector::open(&emu.url(), timeouts()) {
            Ok(conn) => break Client::new(conn),
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transport_error(), "{e:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the connector did not come back: {e:?}"),
        }
    };
    assert_eq!(emu.with_device(|d| d.open_sessions()), 0);
    let mut s = factory(&mut c);
    c.send(&mut s, &cmd::Echo { data: vec![3] }).unwrap();
}

/// What the connector does with HTTP that is not a frame.
#[test]
fn the_http_surface() {
    let emu = start(&DeviceConfig::factory());
    let ask = |req: &[u8]| -> String {
        let mut t = TcpStream::connect(emu.addr()).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        t.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = t.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let get = ask(b"GET /connector/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 405"), "{get}");
    assert!(get.to_ascii_lowercase().contains("allow: post"), "{get}");
    let short = ask(b"POST /connector/api HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\x01\x00");
    assert!(short.starts_with("HTTP/1.1 400"), "{short}");
    let mut long = b"POST /connector/api HTTP/1.1\r\nHost: x\r\nContent-Length: 3140\r\nConnection: close\r\n\r\n"
        .to_vec();
    long.extend([0u8; 3140]);
    assert!(ask(&long).starts_with("HTTP/1.1 400"));
    let other = ask(b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    // A frame the device does not know: HTTP 200 and the device's error frame.
    let unknown = ask(b"POST /connector/api HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n\x22\x00\x00");
    assert!(unknown.starts_with("HTTP/1.1 200"), "{unknown}");
    assert!(unknown.ends_with("\x7f\x00\x01\x01"), "{unknown:?}");
}
