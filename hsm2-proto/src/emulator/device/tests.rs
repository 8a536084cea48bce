//! The device in-process, driven by the crate's own client through a transport that calls
//! [`Device::handle`] with a clock the test moves.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::transport::Transport;
use crate::{Client, Error, OtpCounters, Result, Secret};

pub(super) struct InProcess {
    pub(super) device: Device,
    pub(super) now: Instant,
}

impl Transport for InProcess {
    fn exchange(&mut self, request: &Frame) -> Result<Frame> {
        Ok(self.device.handle(request.as_bytes(), self.now))
    }
}

pub(super) fn client(cfg: &DeviceConfig) -> Client<InProcess> {
    Client::new(InProcess {
        device: Device::new(cfg),
        now: Instant::now(),
    })
}

pub(super) fn h<const N: usize>(s: &str) -> [u8; N] {
    let v: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

pub(super) fn factory_key() -> AuthKey {
    AuthKey::from_password(b"password")
}

pub(super) fn otp_key_cfg(id: u16, key: &[u8], nonce_id: [u8; 4], caps: &str) -> OtpAeadKeyConfig {
    OtpAeadKeyConfig {
        id: ObjectId(id),
        label: Label::default(),
        key: OtpAeadKeyBytes::new(key).unwrap(),
        nonce_id: NonceId(nonce_id),
        capabilities: super::super::config::capabilities(caps).unwrap(),
        domains: Domains(1),
    }
}

pub(super) fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
    r.unwrap_err().code().expect("a device refusal")
}

/// Shared notes §5.2: the AES-128 and AES-256 examples, byte for byte.
#[test]
fn aeads_match_the_shared_notes() {
    let secret = YubiKeySecret {
        key: h("000102030405060708090a0b0c0d0e0f"),
        uid: h("010203040506"),
    };
    let k128 = AesKey::new(&h::<16>("808182838485868788898a8b8c8d8e8f")).unwrap();
    let a = seal(
        &k128,
        NonceId([0x78, 0x56, 0x34, 0x12]),
        h("0a0b0c0d0e0f"),
        &secret,
    )
    .unwrap();
    assert_eq!(
        a,
        OtpAead(h(
            "0a0b0c0d0e0f2389697159fdc6d107b6579ee88ddf6becd5e41c02b7ae83437b5a0d0f1e"
        ))
    );
    let k256 = AesKey::new(&h::<32>(&"2000".repeat(16))).unwrap();
    let nid = NonceId::from_key_handle(0x2000);
    let a = seal(&k256, nid, [0, 0, 0, 0, 0, 1], &secret).unwrap();
    assert_eq!(
        a,
        OtpAead(h(
            "000000000001a93b0a5bc3145e5e905fe08015ca2f138533347e4563f5e8c11f74ec20ae"
        ))
    );
    assert_eq!(open(&k256, nid, &a).unwrap(), secret);
    // The other byte order of the same number is another key.
    assert!(open(&k256, NonceId([0, 0, 0x20, 0]), &a).is_none());
}

/// Shared notes §5.3: OTPs of the C example's YubiKey, through a session.
#[test]
fn otp_aead_commands_through_a_session() {
    let mut cfg = DeviceConfig::factory();
    cfg.otp_aead_keys.push(otp_key_cfg(
        0x10,
        &h::<16>("808182838485868788898a8b8c8d8e8f"),
        [0x78, 0x56, 0x34, 0x12],
        "all",
    ));
    let mut c = client(&cfg);
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let aead = c
        .create_otp_aead(
            &mut s,
            ObjectId(0x10),
            Secret(h("000102030405060708090a0b0c0d0e0f")),
            Secret(h("010203040506")),
        )
        .unwrap();
    for (otp, use_ctr, session_ctr) in [
        ("2f5d71a4915dec304aa13ccf97bb0dbb", 1, 1),
        ("cb710b462b7b1c23100cb24685b64d33", 1, 2),
        ("779978129bcc2642c8adf5c19981a016", 0x0fff, 1),
    ] {
        let got = c.decrypt_otp(&mut s, ObjectId(0x10), aead, h(otp)).unwrap();
        assert_eq!(
            got,
            OtpCounters {
                use_ctr,
                session_ctr,
                ts_high: 1,
                ts_low: 1
            }
        );
    }
    let mut tampered = h::<16>("2f5d71a4915dec304aa13ccf97bb0dbb");
    tampered[0] ^= 1;
    let r = c.decrypt_otp(&mut s, ObjectId(0x10), aead, tampered);
    assert_eq!(code(r), ErrorCode::InvalidOtp);
    let mut bad = aead;
    bad.0[10] ^= 1;
    let r = c.decrypt_otp(
        &mut s,
        ObjectId(0x10),
        bad,
        h("2f5d71a4915dec304aa13ccf97bb0dbb"),
    );
    assert_eq!(code(r), ErrorCode::InvalidOtp);
    let r = c.decrypt_otp(&mut s, ObjectId(0x11), aead, [0; 16]);
    assert_eq!(code(r), ErrorCode::ObjectNotFound);

    // Rewrap to a second key keeps the nonce and opens there.
    let put = cmd::PutOtpAeadKey {
        object: cmd::NewObject {
            id: ObjectId(0),
            label: Label::new("second").unwrap(),
            domains: Domains(1),
            capabilities: super::super::config::capabilities("decrypt-otp:rewrap-to-otp-aead-key")
                .unwrap(),
            algorithm: Algorithm::Aes256YubicoOtp,
        },
        nonce_id: NonceId([1, 2, 3, 4]),
        key: OtpAeadKeyBytes::new(&[7; 32]).unwrap(),
    };
    let id = c.send(&mut s, &put).unwrap().id;
    assert_eq!(id, ObjectId(1), "the lowest free otp-aead-key id");
    let moved = c.rewrap_otp_aead(&mut s, ObjectId(0x10), id, aead).unwrap();
    assert_eq!(moved.nonce(), aead.nonce());
    assert_ne!(moved, aead);
    let got = c
        .decrypt_otp(&mut s, id, moved, h("2f5d71a4915dec304aa13ccf97bb0dbb"))
        .unwrap();
    assert_eq!(got.use_ctr, 1);
    // The second key may not be a rewrap source, nor open what the first sealed.
    assert_eq!(
        code(c.rewrap_otp_aead(&mut s, id, ObjectId(0x10), moved)),
        ErrorCode::InsufficientPermissions
    );
    assert_eq!(
        code(c.rewrap_otp_aead(&mut s, ObjectId(0x10), id, moved)),
        ErrorCode::InvalidData
    );
    // A randomized AEAD opens under the key with the nonce id as sent.
    let r = c.randomize_otp_aead(&mut s, ObjectId(0x10)).unwrap();
    let k = AesKey::new(&h::<16>("808182838485868788898a8b8c8d8e8f")).unwrap();
    assert!(open(&k, NonceId([0x78, 0x56, 0x34, 0x12]), &r).is_some());
    assert_eq!(
        code(c.randomize_otp_aead(&mut s, id)),
        ErrorCode::InsufficientPermissions
    );
    c.close_session(s).unwrap();
    assert_eq!(c.transport_mut().device.open_sessions(), 0);
}

#[test]
fn capabilities_and_domains_are_checked() {
    let mut cfg = DeviceConfig::factory();
    cfg.auth_keys.push(AuthKeyConfig {
        id: ObjectId(2),
        label: Label::default(),
        key: AuthKey::from_password(b"two"),
        capabilities: super::super::config::capabilities("decrypt-otp:put-otp-aead-key").unwrap(),
        delegated: super::super::config::capabilities("decrypt-otp").unwrap(),
        domains: Domains(0b10),
    });
    cfg.otp_aead_keys.push(otp_key_cfg(
        0x10,
        &[1; 16],
        [0; 4],
        "decrypt-otp:create-otp-aead",
    ));
    let mut c = client(&cfg);
    let mut s = c
        .open_session(ObjectId(2), &AuthKey::from_password(b"two"))
        .unwrap();
    // Key 0x10 is in domain 1 only: not there for a domain-2 session.
    assert_eq!(
        code(c.decrypt_otp(&mut s, ObjectId(0x10), OtpAead([0; 36]), [0; 16])),
        ErrorCode::ObjectNotFound
    );
    let listed = c.send(&mut s, &cmd::ListObjects::default()).unwrap();
    let ids: Vec<_> = listed
        .objects
        .iter()
        .map(|o| (o.id.0, o.object_type))
        .collect();
    let auth = ObjectType::AuthenticationKey;
    assert_eq!(
        ids,
        [(1, auth), (2, auth)],
        "the otp-aead-key is in domain 1 only"
    );
    // Missing capability on the session.
    assert_eq!(
        code(c.send(&mut s, &cmd::GetPseudoRandom { length: 4 })),
        ErrorCode::InsufficientPermissions
    );
    // New objects: only delegated capabilities, only the session's domains.
    let mut put = cmd::PutOtpAeadKey {
        object: cmd::NewObject {
            id: ObjectId(0x20),
            label: Label::default(),
            domains: Domains(0b10),
            capabilities: super::super::config::capabilities("create-otp-aead").unwrap(),
            algorithm: Algorithm::Aes128YubicoOtp,
        },
        nonce_id: NonceId([0; 4]),
        key: OtpAeadKeyBytes::new(&[2; 16]).unwrap(),
    };
    assert_eq!(
        code(c.send(&mut s, &put)),
        ErrorCode::InsufficientPermissions
    );
    put.object.capabilities = super::super::config::capabilities("decrypt-otp").unwrap();
    put.object.domains = Domains(0b11);
    assert_eq!(
        code(c.send(&mut s, &put)),
        ErrorCode::InsufficientPermissions
    );
    put.object.domains = Domains(0b10);
    put.object.algorithm = Algorithm::Aes256YubicoOtp;
    assert_eq!(code(c.send(&mut s, &put)), ErrorCode::InvalidData);
    put.object.algorithm = Algorithm::Aes128YubicoOtp;
    assert_eq!(c.send(&mut s, &put).unwrap().id, ObjectId(0x20));
    assert_eq!(code(c.send(&mut s, &put)), ErrorCode::ObjectExists);
    // The session key may not delete it.
    let del = cmd::DeleteObject {
        id: ObjectId(0x20),
        object_type: ObjectType::OtpAeadKey,
    };
    assert_eq!(
        code(c.send(&mut s, &del)),
        ErrorCode::InsufficientPermissions
    );
    // The factory key sees both and may delete; the object's sequence goes up when the
    // id is used again.
    let mut f = c.open_session(ObjectId(1), &factory_key()).unwrap();
    assert_eq!(
        c.send(&mut f, &cmd::ListObjects::default())
            .unwrap()
            .objects
            .len(),
        4
    );
    let filtered = c
        .send(
            &mut f,
            &cmd::ListObjects {
                filters: vec![
                    ObjectFilter::Type(ObjectType::OtpAeadKey),
                    ObjectFilter::Domains(Domains(2)),
                ],
            },
        )
        .unwrap();
    assert_eq!(filtered.objects.len(), 1);
    assert_eq!(filtered.objects[0].id, ObjectId(0x20));
    c.send(&mut f, &del).unwrap();
    assert_eq!(code(c.send(&mut f, &del)), ErrorCode::ObjectNotFound);
    c.send(&mut s, &put).unwrap();
    let info = c
        .send(
            &mut f,
            &cmd::GetObjectInfo {
                id: ObjectId(0x20),
                object_type: ObjectType::OtpAeadKey,
            },
        )
        .unwrap();
    assert_eq!(
        (info.sequence, info.origin, info.size),
        (1, Origin::IMPORTED, 16)
    );
}

#[test]
fn sixteen_sessions_and_their_idle_timeout() {
    let mut cfg = DeviceConfig::factory();
    cfg.session_timeout = Duration::from_secs(30);
    let mut c = client(&cfg);
    let key = factory_key();
    let mut sessions: Vec<_> = (0..MAX_SESSIONS)
        .map(|_| c.open_session(ObjectId(1), &key).unwrap())
        .collect();
    let ids: Vec<u8> = sessions.iter().map(|s| s.id().0).collect();
    assert_eq!(ids, (0..16).collect::<Vec<u8>>());
    assert_eq!(
        code(c.open_session(ObjectId(1), &key)),
        ErrorCode::SessionsFull
    );
    // Session 0 stays busy; the others go idle past the timeout.
    c.transport_mut().now += Duration::from_secs(20);
    c.send(&mut sessions[0], &cmd::Echo { data: vec![1] })
        .unwrap();
    c.transport_mut().now += Duration::from_secs(15);
    let e = c.send(&mut sessions[1], &cmd::Echo { data: vec![1] });
    assert_eq!(code(e), ErrorCode::InvalidSession);
    c.send(&mut sessions[0], &cmd::Echo { data: vec![2] })
        .unwrap();
    let again = c.open_session(ObjectId(1), &key).unwrap();
    assert_eq!(again.id().0, 1);
    assert_eq!(c.transport_mut().device.open_sessions(), 2);
    c.transport_mut().device.reset();
    assert_eq!(
        code(c.send(&mut sessions[0], &cmd::Echo { data: vec![3] })),
        ErrorCode::InvalidSession
    );
}

#[test]
fn authentication_failures() {
    let mut c = client(&DeviceConfig::factory());
    // A wrong password: the driver sees the card cryptogram is wrong before answering.
    let e = c.open_session(ObjectId(1), &AuthKey::from_password(b"wrong"));
    assert_eq!(e.unwrap_err(), Error::CardCryptogram);
    assert_eq!(
        code(c.open_session(ObjectId(9), &factory_key())),
        ErrorCode::ObjectNotFound
    );
    // A host that answers with a forged cryptogram is refused and the slot is freed.
    let dev = &mut c.transport_mut().device;
    let now = Instant::now();
    let created = dev.handle(&[0x03, 0, 10, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8], now);
    assert_eq!(created.cmd(), 0x83);
    let sid = created.data()[0];
    let mut forged = vec![0x04, 0, 17, sid];
    forged.extend([0xaa; 16]);
    let answer = dev.handle(&forged, now);
    assert_eq!(
        cmd::device_error(&answer),
        Ok(Some(ErrorCode::AuthenticationFailed))
    );
    // An unauthenticated or unknown session takes no messages.
    let mut msg = vec![0x05, 0, 25, 7];
    msg.extend([0; 24]);
    assert_eq!(
        cmd::device_error(&dev.handle(&msg, now)),
        Ok(Some(ErrorCode::InvalidSession))
    );
    // Only the session the wrong password left half-open remains (until it times out).
    assert_eq!(dev.open_sessions(), 1);
    // A bad MAC on a real session: refused in clear, the session goes on.
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let mut frame = s
        .seal(&cmd::encode_request(&cmd::Echo { data: vec![1] }).unwrap())
        .unwrap()
        .into_bytes();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let dev = &mut c.transport_mut().device;
    let answer = dev.handle(&frame, Instant::now());
    assert_eq!(
        cmd::device_error(&answer),
        Ok(Some(ErrorCode::AuthenticationFailed))
    );
}

#[test]
fn plain_commands_and_malformed_requests() {
    let mut c = client(&DeviceConfig::factory());
    let info = c.device_info().unwrap();
    assert_eq!(info.version, FIRMWARE);
    assert!(info.supports(Algorithm::Aes256YubicoOtp));
    let echo = c
        .send_plain(&cmd::Echo {
            data: b"hi".to_vec(),
        })
        .unwrap();
    assert_eq!(echo.data, b"hi");
    let dev = &mut c.transport_mut().device;
    let now = Instant::now();
    for (req, want) in [
        (&[][..], ErrorCode::WrongLength),
        (&[0x01, 0, 5, 1][..], ErrorCode::WrongLength),
        (&[0x60, 0, 0][..], ErrorCode::InvalidCommand),
        (&[0x22, 0, 0][..], ErrorCode::InvalidCommand),
        (&[0x03, 0, 2, 0, 1][..], ErrorCode::WrongLength),
        (&[0x06, 0, 1, 1][..], ErrorCode::WrongLength),
    ] {
        assert_eq!(
            cmd::device_error(&dev.handle(req, now)),
            Ok(Some(want)),
            "{req:02x?}"
        );
    }
}

/// Get Device Public Key, plain: the device's own P-256 point, its algorithm first; each
/// device has its own, and a factory reset keeps it. Inside a session it is not a command.
#[test]
fn the_device_public_key_is_its_own_and_outlives_a_reset() {
    let mut a = client(&DeviceConfig::factory());
    let mut b = client(&DeviceConfig::factory());
    let key = a.send_plain(&cmd::GetDevicePublicKey).unwrap();
    assert_eq!(key.algorithm, Algorithm::EcP256YubicoAuthentication);
    assert_ne!(key.point, [0; 64]);
    assert_ne!(
        b.send_plain(&cmd::GetDevicePublicKey).unwrap().point,
        key.point
    );
    let mut s = a.open_session(ObjectId(1), &factory_key()).unwrap();
    assert_eq!(
        a.send(&mut s, &cmd::GetDevicePublicKey).unwrap_err().code(),
        Some(ErrorCode::InvalidCommand)
    );
    a.send(&mut s, &cmd::ResetDevice).unwrap();
    assert_eq!(a.send_plain(&cmd::GetDevicePublicKey).unwrap(), key);
    // The request has no data.
    let dev = &mut a.transport_mut().device;
    assert_eq!(
        cmd::device_error(&dev.handle(&[0x0a, 0, 1, 0], Instant::now())),
        Ok(Some(ErrorCode::WrongLength))
    );
}

/// Any bytes, as a whole request or as the plaintext of a genuine session message, get a
/// frame back and never a panic. The device holds a wrap key, an HMAC key and an AES key
/// with every capability, and a quarter of the requests name one of them first, so the
/// hostile bytes reach the wrapped-object, HMAC and AES parsers and not only "no such
/// object".
#[test]
fn arbitrary_bytes_never_panic() {
    use crate::cmd::{NewObject, PutHmacKey, PutSymmetricKey};
    use crate::{Algorithm, Capabilities, Domains, Label, SecretBytes};
    let mut c = client(&DeviceConfig::factory());
    let mut s = c.open_session(ObjectId(1), &factory_key()).unwrap();
    let head = |id: u16, algorithm| NewObject {
        id: ObjectId(id),
        label: Label::new("hostile").unwrap(),
        domains: Domains(1),
        capabilities: Capabilities::all_known(),
        algorithm,
    };
    c.put_wrap_key(
        &mut s,
        head(0x0100, Algorithm::Aes128CcmWrap),
        Capabilities::all_known(),
        SecretBytes::new(vec![0x42; 16]),
    )
    .unwrap();
    c.send(
        &mut s,
        &PutHmacKey {
            object: head(0x0101, Algorithm::HmacSha256),
            key: SecretBytes::new(vec![0x43; 32]),
        },
    )
    .unwrap();
    c.send(
        &mut s,
        &PutSymmetricKey {
            object: head(0x0102, Algorithm::Aes128),
            key: SecretBytes::new(vec![0x44; 16]),
        },
    )
    .unwrap();
    let key_ids = [0x0100u16, 0x0101, 0x0102];
    // Seeded, so a failure reproduces.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0x4853_4d32);
    for i in 0..2000 {
        let len = (rng.next_u32() % 120) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if i % 2 == 0 && len >= 3 {
            // A valid frame header around random data, with a known command byte.
            let codes = CommandCode::ALL;
            bytes[0] = codes[i % codes.len()].to_u8();
            let n = (len - 3) as u16;
            bytes[1..3].copy_from_slice(&n.to_be_bytes());
            if i % 4 == 0 && len >= 5 {
                let id = key_ids[(i / 4) % key_ids.len()];
                bytes[3..5].copy_from_slice(&id.to_be_bytes());
            }
        }
        let now = c.transport_mut().now;
        let _ = c.transport_mut().device.handle(&bytes, now);
        if let Ok(inner) = Frame::parse(&bytes) {
            // Close Session ends the session; so does Reset Device when its (empty) data is
            // right.
            let reset = inner.cmd() == CommandCode::ResetDevice.to_u8() && inner.data().is_empty();
            if inner.cmd() == CommandCode::CloseSession.to_u8() || reset {
                continue;
            }
            let sealed = s.seal(&inner).unwrap();
            let answer = match c.transport_mut().exchange(&sealed) {
                Ok(a) => a,
                Err(e) => panic!(
                    "request {i}, inner command {:#04x} ({} bytes): {e}",
                    inner.cmd(),
                    inner.data().len()
                ),
            };
            if let Err(e) = s.open(&answer) {
                panic!(
                    "request {i}, inner command {:#04x} ({} bytes): {e}",
                    inner.cmd(),
                    inner.data().len()
                );
            }
        }
    }
}
