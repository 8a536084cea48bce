//! Opaque objects, wrap, HMAC and symmetric keys, in-process: the crate's own client
//! against [`Device::handle`], with known-answer vectors where a standard gives them.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use super::super::{Device, DeviceConfig};
use crate::cmd::{self, NewObject};
use crate::codec::Frame;
use crate::session::HostSession;
use crate::transport::Transport;
use crate::{
    Algorithm, AuthKey, Capabilities, Capability, Client, Domains, ErrorCode, Label, NonceId,
    ObjectId, ObjectType, Origin, Result, Secret, SecretBytes,
};

struct InProcess(Device);

impl Transport for InProcess {
    fn exchange(&mut self, request: &Frame) -> Result<Frame> {
        Ok(self.0.handle(request.as_bytes(), Instant::now()))
    }
}

fn device() -> (Client<InProcess>, HostSession) {
    let mut c = Client::new(InProcess(Device::new(&DeviceConfig::factory())));
    let s = c
        .open_session(ObjectId(1), &AuthKey::from_password(b"password"))
        .unwrap();
    (c, s)
}

fn caps(names: &str) -> Capabilities {
    if names == "all" {
        return Capabilities::all_known();
    }
    Capabilities::parse(names).unwrap()
}

fn head(id: u16, algorithm: Algorithm, capabilities: Capabilities) -> NewObject {
    NewObject {
        id: ObjectId(id),
        label: Label::new("test").unwrap(),
        domains: Domains(1),
        capabilities,
        algorithm,
    }
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> ErrorCode {
    r.unwrap_err().code().expect("a device refusal")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const WRAP_KEY: [u8; 32] = [0x42; 32];

/// Puts the same AES-256 wrap key as id 0x20 with `capabilities` and `delegated`.
fn put_wrap(c: &mut Client<InProcess>, s: &mut HostSession, capabilities: &str, delegated: &str) {
    c.put_wrap_key(
        s,
        head(0x20, Algorithm::Aes256CcmWrap, caps(capabilities)),
        caps(delegated),
        SecretBytes::new(WRAP_KEY),
    )
    .unwrap();
}

/// An otp-aead-key exported from one device and imported into another under the same wrap
/// key opens there the AEADs the first makes: the clone `ksm clone-hsm2` relies on.
#[test]
fn an_otp_aead_key_moves_between_devices_under_a_shared_wrap_key() {
    let (mut a, mut sa) = device();
    let (mut b, mut sb) = device();
    let otp_caps = "decrypt-otp:randomize-otp-aead:create-otp-aead:exportable-under-wrap";
    put_wrap(&mut a, &mut sa, "export-wrapped", otp_caps);
    put_wrap(&mut b, &mut sb, "import-wrapped", otp_caps);
    let key_head = head(0x10, Algorithm::Aes128YubicoOtp, caps(otp_caps));
    a.send(
        &mut sa,
        &cmd::GenerateOtpAeadKey {
            object: key_head,
            nonce_id: NonceId([1, 2, 3, 4]),
        },
    )
    .unwrap();

    let wrapped = a
        .export_wrapped(
            &mut sa,
            ObjectId(0x20),
            ObjectType::OtpAeadKey,
            ObjectId(0x10),
        )
        .unwrap();
    let again = a
        .export_wrapped(
            &mut sa,
            ObjectId(0x20),
            ObjectType::OtpAeadKey,
            ObjectId(0x10),
        )
        .unwrap();
    assert_ne!(wrapped, again, "each export draws a fresh nonce");
    assert_eq!(wrapped.len(), 13 + 59 + 4 + 16 + 16);

    let imported = b
        .import_wrapped(&mut sb, ObjectId(0x20), wrapped.clone())
        .unwrap();
    assert_eq!(
        (imported.object_type, imported.id),
        (ObjectType::OtpAeadKey, ObjectId(0x10))
    );
    let info = b
        .object_info(&mut sb, ObjectId(0x10), ObjectType::OtpAeadKey)
        .unwrap();
    assert_eq!(
        info.origin,
        Origin(Origin::GENERATED.0 | Origin::WRAPPED_FLAG)
    );
    assert_eq!(info.capabilities, caps(otp_caps));
    assert_eq!(info.label, key_head.label);

    // An AEAD made on the first decodes an OTP on the second (the shared notes' §5.3
    // YubiKey).
    let key: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
    let uid: [u8; 6] = hex("010203040506").try_into().unwrap();
    let aead = a
        .create_otp_aead(&mut sa, ObjectId(0x10), Secret(key), Secret(uid))
        .unwrap();
    let otp: [u8; 16] = hex("2f5d71a4915dec304aa13ccf97bb0dbb").try_into().unwrap();
    let counters = b.decrypt_otp(&mut sb, ObjectId(0x10), aead, otp).unwrap();
    assert_eq!((counters.use_ctr, counters.session_ctr), (1, 1));

    // Once there, it is there: a second import is refused.
    let r = b.import_wrapped(&mut sb, ObjectId(0x20), wrapped.clone());
    assert_eq!(code(r), ErrorCode::ObjectExists);
    // A changed byte does not authenticate.
    let mut bad = again.clone();
    bad[20] ^= 1;
    let r = b.import_wrapped(&mut sb, ObjectId(0x20), bad);
    assert_eq!(code(r), ErrorCode::InvalidData);
}

/// Export needs `export-wrapped` on the wrap key, `exportable-under-wrap` on the object,
/// and every capability of the object among the wrap key's delegated ones; import needs
/// `import-wrapped`, and the object's capabilities among the importing key's delegated.
#[test]
fn wrap_key_capabilities_bound_what_moves() {
    let (mut a, mut sa) = device();
    a.send(
        &mut sa,
        &cmd::PutOpaque {
            object: head(5, Algorithm::OpaqueData, caps("exportable-under-wrap")),
            data: vec![0xaa; 8],
        },
    )
    .unwrap();
    let export = |c: &mut Client<InProcess>, s: &mut HostSession| {
        c.export_wrapped(s, ObjectId(0x20), ObjectType::Opaque, ObjectId(5))
    };
    put_wrap(&mut a, &mut sa, "export-wrapped:import-wrapped", "");
    assert_eq!(
        code(export(&mut a, &mut sa)),
        ErrorCode::InsufficientPermissions
    );
    a.send(
        &mut sa,
        &cmd::DeleteObject {
            id: ObjectId(0x20),
            object_type: ObjectType::WrapKey,
        },
    )
    .unwrap();
    put_wrap(&mut a, &mut sa, "import-wrapped", "exportable-under-wrap");
    assert_eq!(
        code(export(&mut a, &mut sa)),
        ErrorCode::InsufficientPermissions
    );
    let r = a.export_wrapped(&mut sa, ObjectId(0x21), ObjectType::Opaque, ObjectId(5));
    assert_eq!(code(r), ErrorCode::ObjectNotFound);

    let (mut b, mut sb) = device();
    put_wrap(&mut b, &mut sb, "export-wrapped", "exportable-under-wrap");
    let wrapped = export(&mut b, &mut sb);
    assert_eq!(
        code(wrapped),
        ErrorCode::ObjectNotFound,
        "no such object on b"
    );
    b.send(
        &mut sb,
        &cmd::PutOpaque {
            object: head(
                5,
                Algorithm::OpaqueData,
                caps("exportable-under-wrap:get-opaque"),
            ),
            data: vec![0xbb; 3],
        },
    )
    .unwrap();
    // get-opaque is not among the delegated capabilities.
    assert_eq!(
        code(export(&mut b, &mut sb)),
        ErrorCode::InsufficientPermissions
    );

    // Import: the key must hold import-wrapped, and bound the object's capabilities.
    let wrapped = {
        let (mut c, mut sc) = device();
        put_wrap(&mut c, &mut sc, "export-wrapped", "all");
        c.send(
            &mut sc,
            &cmd::PutOpaque {
                object: head(
                    6,
                    Algorithm::OpaqueData,
                    caps("exportable-under-wrap:get-opaque"),
                ),
                data: vec![0xcc; 3],
            },
        )
        .unwrap();
        c.export_wrapped(&mut sc, ObjectId(0x20), ObjectType::Opaque, ObjectId(6))
            .unwrap()
    };
    let r = b.import_wrapped(&mut sb, ObjectId(0x20), wrapped.clone());
    assert_eq!(
        code(r),
        ErrorCode::InsufficientPermissions,
        "no import-wrapped"
    );
    let (mut d, mut sd) = device();
    put_wrap(&mut d, &mut sd, "import-wrapped", "exportable-under-wrap");
    let r = d.import_wrapped(&mut sd, ObjectId(0x20), wrapped.clone());
    assert_eq!(
        code(r),
        ErrorCode::InsufficientPermissions,
        "get-opaque not delegated"
    );
    let (mut e, mut se) = device();
    put_wrap(
        &mut e,
        &mut se,
        "import-wrapped",
        "exportable-under-wrap:get-opaque",
    );
    e.import_wrapped(&mut se, ObjectId(0x20), wrapped).unwrap();
    let data = e
        .send(&mut se, &cmd::GetOpaque { id: ObjectId(6) })
        .unwrap();
    assert_eq!(data.data, [0xcc; 3]);
}

#[test]
fn wrap_data_round_trips_and_needs_the_keys_capability() {
    let (mut c, mut s) = device();
    put_wrap(&mut c, &mut s, "wrap-data", "");
    let data = SecretBytes::new(vec![9u8; 100]);
    let wrapped = c
        .send(
            &mut s,
            &cmd::WrapData {
                wrap_key_id: ObjectId(0x20),
                data: data.clone(),
            },
        )
        .unwrap()
        .wrapped;
    let unwrap = cmd::UnwrapData {
        wrap_key_id: ObjectId(0x20),
        wrapped,
    };
    // Firmware 2.3 answers invalid-data for a key lacking the capability.
    assert_eq!(code(c.send(&mut s, &unwrap)), ErrorCode::InvalidData);
    let (mut d, mut sd) = device();
    put_wrap(&mut d, &mut sd, "unwrap-data", "");
    assert_eq!(d.send(&mut sd, &unwrap).unwrap().data, data);
}

/// RFC 4231 test case 2 ("Jefe"), and a wrong MAC.
#[test]
fn hmac_keys_sign_and_verify_rfc_4231() {
    let (mut c, mut s) = device();
    c.send(
        &mut s,
        &cmd::PutHmacKey {
            object: head(3, Algorithm::HmacSha256, caps("sign-hmac:verify-hmac")),
            key: SecretBytes::new(b"Jefe".to_vec()),
        },
    )
    .unwrap();
    let data = b"what do ya want for nothing?".to_vec();
    let mac = c
        .send(
            &mut s,
            &cmd::SignHmac {
                key_id: ObjectId(3),
                data: data.clone(),
            },
        )
        .unwrap()
        .mac;
    assert_eq!(
        mac,
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    let verify = |c: &mut Client<InProcess>, s: &mut HostSession, mac: &[u8]| {
        let mut mac_and_data = mac.to_vec();
        mac_and_data.extend_from_slice(&data);
        c.send(
            s,
            &cmd::VerifyHmac {
                key_id: ObjectId(3),
                mac_and_data,
            },
        )
        .map(|r| r.valid)
    };
    assert!(verify(&mut c, &mut s, &mac).unwrap());
    let mut wrong = mac.clone();
    wrong[0] ^= 1;
    assert!(!verify(&mut c, &mut s, &wrong).unwrap());
    let r = c.send(
        &mut s,
        &cmd::PutHmacKey {
            object: head(4, Algorithm::HmacSha1, caps("sign-hmac")),
            key: SecretBytes::new(vec![1u8; 65]),
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidData, "longer than a SHA-1 block");
}

/// FIPS-197 appendix C.1 (AES-128), then CBC against ECB by hand.
#[test]
fn symmetric_keys_do_aes_ecb_and_cbc() {
    let (mut c, mut s) = device();
    c.send(
        &mut s,
        &cmd::PutSymmetricKey {
            object: head(
                7,
                Algorithm::Aes128,
                caps("encrypt-ecb:decrypt-ecb:encrypt-cbc:decrypt-cbc"),
            ),
            key: SecretBytes::new(hex("000102030405060708090a0b0c0d0e0f")),
        },
    )
    .unwrap();
    let pt = hex("00112233445566778899aabbccddeeff");
    let ct = c
        .send(
            &mut s,
            &cmd::EncryptEcb {
                key_id: ObjectId(7),
                data: SecretBytes::new(pt.clone()),
            },
        )
        .unwrap()
        .data;
    assert_eq!(ct.expose(), hex("69c4e0d86a7b0430d8cdb78070b4c55a"));
    let back = c
        .send(
            &mut s,
            &cmd::DecryptEcb {
                key_id: ObjectId(7),
                data: ct.clone(),
            },
        )
        .unwrap()
        .data;
    assert_eq!(back.expose(), pt);
    // CBC with a zero IV over one block is ECB.
    let cbc = c
        .send(
            &mut s,
            &cmd::EncryptCbc {
                key_id: ObjectId(7),
                iv: [0; 16],
                data: SecretBytes::new(pt.clone()),
            },
        )
        .unwrap()
        .data;
    assert_eq!(cbc, ct);
    let r = c.send(
        &mut s,
        &cmd::EncryptEcb {
            key_id: ObjectId(7),
            data: SecretBytes::new(vec![0; 15]),
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidData, "not whole blocks");
}

#[test]
fn each_type_is_deleted_with_its_own_capability() {
    let (mut c, mut s) = device();
    c.send(
        &mut s,
        &cmd::PutOpaque {
            object: head(5, Algorithm::OpaqueData, Capabilities::NONE),
            data: vec![1],
        },
    )
    .unwrap();
    let r = c.send(
        &mut s,
        &cmd::PutOpaque {
            object: head(6, Algorithm::OpaqueData, Capabilities::NONE),
            data: vec![],
        },
    );
    assert_eq!(code(r), ErrorCode::InvalidData, "empty opaque");
    // A session that may delete opaque objects only.
    c.send(
        &mut s,
        &cmd::PutAuthenticationKey {
            object: NewObject {
                domains: Domains::ALL,
                ..head(
                    2,
                    Algorithm::Aes128YubicoAuthentication,
                    Capabilities::NONE.with(Capability::DeleteOpaque),
                )
            },
            delegated: Capabilities::NONE,
            key: AuthKey::from_password(b"two"),
        },
    )
    .unwrap();
    put_wrap(&mut c, &mut s, "", "");
    let mut s2 = c
        .open_session(ObjectId(2), &AuthKey::from_password(b"two"))
        .unwrap();
    let delete = |id, object_type| cmd::DeleteObject {
        id: ObjectId(id),
        object_type,
    };
    let r = c.send(&mut s2, &delete(0x20, ObjectType::WrapKey));
    assert_eq!(code(r), ErrorCode::InsufficientPermissions);
    c.send(&mut s2, &delete(5, ObjectType::Opaque)).unwrap();
}

/// Every type modelled here survives the trip: an authentication key opens sessions on the
/// second device with its password, and HMAC, AES and wrap keys give the same answers there.
#[test]
fn every_modelled_type_exports_and_imports() {
    let (mut a, mut sa) = device();
    let (mut b, mut sb) = device();
    put_wrap(&mut a, &mut sa, "export-wrapped", "all");
    put_wrap(&mut b, &mut sb, "import-wrapped", "all");
    let x = Capability::ExportableUnderWrap;
    let with_x = |names: &str| caps(names).with(x);
    a.send(
        &mut sa,
        &cmd::PutAuthenticationKey {
            object: head(
                2,
                Algorithm::Aes128YubicoAuthentication,
                with_x("get-pseudo-random"),
            ),
            delegated: caps("get-pseudo-random"),
            key: AuthKey::from_password(b"moved"),
        },
    )
    .unwrap();
    a.send(
        &mut sa,
        &cmd::PutHmacKey {
            object: head(3, Algorithm::HmacSha512, with_x("sign-hmac")),
            key: SecretBytes::new(b"key".to_vec()),
        },
    )
    .unwrap();
    a.send(
        &mut sa,
        &cmd::GenerateSymmetricKey {
            object: head(4, Algorithm::Aes256, with_x("encrypt-ecb")),
        },
    )
    .unwrap();
    a.send(
        &mut sa,
        &cmd::GenerateWrapKey {
            object: head(
                0x21,
                Algorithm::Aes192CcmWrap,
                with_x("wrap-data:unwrap-data"),
            ),
            delegated: Capabilities::NONE,
        },
    )
    .unwrap();
    for (id, t) in [
        (2, ObjectType::AuthenticationKey),
        (3, ObjectType::HmacKey),
        (4, ObjectType::SymmetricKey),
        (0x21, ObjectType::WrapKey),
    ] {
        let wrapped = a
            .export_wrapped(&mut sa, ObjectId(0x20), t, ObjectId(id))
            .unwrap();
        let got = b.import_wrapped(&mut sb, ObjectId(0x20), wrapped).unwrap();
        assert_eq!((got.object_type, got.id), (t, ObjectId(id)));
        let (ia, ib) = (
            a.object_info(&mut sa, ObjectId(id), t).unwrap(),
            b.object_info(&mut sb, ObjectId(id), t).unwrap(),
        );
        assert_eq!(
            (
                ia.capabilities,
                ia.delegated,
                ia.size,
                ia.algorithm,
                ia.label
            ),
            (
                ib.capabilities,
                ib.delegated,
                ib.size,
                ib.algorithm,
                ib.label
            ),
            "{t}"
        );
        assert_eq!(ib.origin.0, ia.origin.0 | Origin::WRAPPED_FLAG);
    }
    let info = b
        .object_info(&mut sb, ObjectId(2), ObjectType::AuthenticationKey)
        .unwrap();
    assert_eq!(info.size, 40, "delegated capabilities, K-ENC and K-MAC");
    let mut moved = b
        .open_session(ObjectId(2), &AuthKey::from_password(b"moved"))
        .unwrap();
    b.send(&mut moved, &cmd::GetPseudoRandom { length: 4 })
        .unwrap();
    let sign = cmd::SignHmac {
        key_id: ObjectId(3),
        data: b"same".to_vec(),
    };
    assert_eq!(
        a.send(&mut sa, &sign).unwrap(),
        b.send(&mut sb, &sign).unwrap()
    );
    let ecb = cmd::EncryptEcb {
        key_id: ObjectId(4),
        data: SecretBytes::new(vec![3; 32]),
    };
    assert_eq!(
        a.send(&mut sa, &ecb).unwrap(),
        b.send(&mut sb, &ecb).unwrap()
    );
    let wrapped = a
        .send(
            &mut sa,
            &cmd::WrapData {
                wrap_key_id: ObjectId(0x21),
                data: SecretBytes::new(b"across".to_vec()),
            },
        )
        .unwrap()
        .wrapped;
    let back = b
        .send(
            &mut sb,
            &cmd::UnwrapData {
                wrap_key_id: ObjectId(0x21),
                wrapped,
            },
        )
        .unwrap();
    assert_eq!(back.data.expose(), b"across");
}
