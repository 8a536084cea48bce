//! The software YubiHSM 2's request handling: whatever a local process posts to its
//! connector API, in clear or inside a genuine session.
//!
//! Why: `ksm emulate --hsm2` answers any process that can reach its port; its dispatch,
//! capability checks and OTP AEAD commands run on bytes nobody vouches for. Every request
//! must get a well-formed answer frame and never a panic, and a genuine session must stay
//! in step whatever its commands hold (a refusal is sealed like an answer).
//!
//! The device is in its factory state plus otp-aead-key 0x20 (the shared notes' AES-128
//! key and nonce id); in a session, the target also puts a wrap key (0x21), an HMAC key
//! (0x22) and an AES key (0x23) with every capability first, so that hostile requests
//! naming them reach the wrapped-object, HMAC and AES parsers. Input: a mode byte, then requests, each a u16 big-endian length and
//! that many bytes:
//! - `0`: each request is posted as it is;
//! - otherwise: a session is opened with authentication key 1, and each request that is a
//!   frame is sealed in it as an inner command; the answer must open under the session.
#![no_main]
#![forbid(unsafe_code)]

use std::sync::OnceLock;
use std::time::Instant;

use hsm2_proto::codec::Frame;
use hsm2_proto::emulator::{Device, DeviceConfig, OtpAeadKeyConfig};
use hsm2_proto::session::{Challenge, HostSession};
use hsm2_proto::{
    cmd, Algorithm, AuthKey, Capabilities, CommandCode, Domains, Label, NonceId, ObjectId,
    OtpAeadKeyBytes, SecretBytes,
};
use libfuzzer_sys::fuzz_target;

/// PBKDF2 once, not per input.
fn key() -> &'static AuthKey {
    static KEY: OnceLock<AuthKey> = OnceLock::new();
    KEY.get_or_init(|| AuthKey::from_password(b"password"))
}

/// The device's configuration, made once (the factory key's PBKDF2 too).
fn config() -> &'static DeviceConfig {
    static CONFIG: OnceLock<DeviceConfig> = OnceLock::new();
    CONFIG.get_or_init(make_config)
}

fn make_config() -> DeviceConfig {
    let mut cfg = DeviceConfig::factory();
    cfg.otp_aead_keys.push(OtpAeadKeyConfig {
        id: ObjectId(0x20),
        label: Label::default(),
        key: OtpAeadKeyBytes::new(&[
            0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d,
            0x8e, 0x8f,
        ])
        .expect("16-byte key"),
        nonce_id: NonceId([0x78, 0x56, 0x34, 0x12]),
        capabilities: Capabilities::all_known(),
        domains: Domains(1),
    });
    cfg
}

/// Splits `data` into length-prefixed requests.
fn requests(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let n = usize::from(u16::from_be_bytes(*len)).min(rest.len());
        let (req, rest) = rest.split_at(n);
        data = rest;
        Some(req)
    })
}

fn checked(answer: Frame) -> Frame {
    assert_eq!(Frame::parse(answer.as_bytes()).as_ref(), Ok(&answer));
    answer
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut dev = Device::new(config());
    let now = Instant::now();
    if mode == 0 {
        for req in requests(rest).take(64) {
            checked(dev.handle(req, now));
        }
        return;
    }
    let challenge = Challenge([1; 8]);
    let create =
        cmd::encode_request(&HostSession::create_request(ObjectId(1), challenge)).expect("create");
    let created = cmd::decode_response::<cmd::CreateSession>(&dev.handle(create.as_bytes(), now))
        .expect("a free slot");
    let (mut session, auth) =
        HostSession::authenticate(key(), challenge, &created).expect("the factory key");
    let auth = cmd::encode_request(&auth).expect("authenticate");
    cmd::decode_response::<cmd::AuthenticateSession>(&dev.handle(auth.as_bytes(), now))
        .expect("authenticated");
    let head = |id: u16, algorithm| cmd::NewObject {
        id: ObjectId(id),
        label: Label::default(),
        domains: Domains(1),
        capabilities: Capabilities::all_known(),
        algorithm,
    };
    let puts = [
        cmd::encode_request(&cmd::PutWrapKey {
            object: head(0x21, Algorithm::Aes128CcmWrap),
            delegated: Capabilities::all_known(),
            key: SecretBytes::new(vec![0x42; 16]),
        }),
        cmd::encode_request(&cmd::PutHmacKey {
            object: head(0x22, Algorithm::HmacSha256),
            key: SecretBytes::new(vec![0x43; 32]),
        }),
        cmd::encode_request(&cmd::PutSymmetricKey {
            object: head(0x23, Algorithm::Aes128),
            key: SecretBytes::new(vec![0x44; 16]),
        }),
    ];
    for put in puts {
        let sealed = session.seal(&put.expect("a put")).expect("sealed");
        let answer = session
            .open(&dev.handle(sealed.as_bytes(), now))
            .expect("opens");
        assert_eq!(cmd::device_error(&answer), Ok(None), "the key is put");
    }
    for req in requests(rest).take(64) {
        let Ok(inner) = Frame::parse(req) else {
            continue;
        };
        let Ok(sealed) = session.seal(&inner) else {
            continue; // too long to seal: the host refuses before sending
        };
        let answer = checked(dev.handle(sealed.as_bytes(), now));
        let opened = session
            .open(&answer)
            .expect("a genuine command's answer opens");
        let closed = inner.cmd() == CommandCode::CloseSession.to_u8()
            && cmd::device_error(&opened) == Ok(None);
        if closed {
            return;
        }
    }
});
