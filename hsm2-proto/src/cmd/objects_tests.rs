//! Layouts of the opaque, wrap, HMAC and symmetric key commands as Yubico's command
//! reference gives them, what their responses promise, and that no key reaches `Debug`.

use super::tests::{h, request_is, response_is};
use super::*;
use crate::{Algorithm, Capabilities, Domains, Label, ObjectId, ObjectType, SecretBytes};

fn head(id: u16, algorithm: Algorithm) -> NewObject {
    NewObject {
        id: ObjectId(id),
        label: Label::new("w").unwrap(),
        domains: Domains(0x0001),
        capabilities: Capabilities(0x3000),
        algorithm,
    }
}

/// `id ‖ label ‖ domains ‖ capabilities ‖ algorithm` of [`head`].
fn head_hex(id: &str, alg: &str) -> String {
    format!(
        "{id}{}{}0001{:016x}{alg}",
        hex::encode(b"w"),
        "00".repeat(39),
        0x3000u64
    )
}

#[test]
fn wrap_commands_match_yubicos_reference() {
    // Put Wrap Key: I ‖ L ‖ D ‖ C ‖ A ‖ DC ‖ W (2 + 40 + 2 + 8 + 1 + 8 + 16).
    let put = PutWrapKey {
        object: head(0x0300, Algorithm::Aes128CcmWrap),
        delegated: Capabilities(0x1_0000),
        key: SecretBytes::new(vec![0xab; 16]),
    };
    let bytes = format!(
        "4c004d{}{:016x}{}",
        head_hex("0300", "1d"),
        0x1_0000u64,
        "ab".repeat(16)
    );
    request_is(&put, &h(&bytes));
    let gen = GenerateWrapKey {
        object: head(0, Algorithm::Aes256CcmWrap),
        delegated: Capabilities::NONE,
    };
    request_is(
        &gen,
        &h(&format!(
            "5b003d{}{}",
            head_hex("0000", "2a"),
            "00".repeat(8)
        )),
    );
    // Export Wrapped: Iw ‖ T ‖ Io; the answer is nonce ‖ wrapped, carried as it is.
    let export = ExportWrapped {
        wrap_key_id: ObjectId(0x0300),
        object_type: ObjectType::OtpAeadKey,
        id: ObjectId(0x0200),
    };
    request_is(&export, &h("4a0005030007 0200".replace(' ', "").as_str()));
    let wrapped = vec![7u8; 13 + 16 + 3];
    response_is::<ExportWrapped>(
        &WrappedResponse {
            wrapped: wrapped.clone(),
        },
        &h(&format!("ca0020{}", "07".repeat(32))),
    );
    // Shorter than a nonce and a tag: not something a wrap key made.
    let short = crate::codec::Frame::new(0xca, &[7; 28]).unwrap();
    assert!(decode_response::<ExportWrapped>(&short).is_err());
    // Import Wrapped: I ‖ N ‖ O; the answer T ‖ I.
    let import = ImportWrapped {
        wrap_key_id: ObjectId(0x0300),
        wrapped,
    };
    request_is(&import, &h(&format!("4b00220300{}", "07".repeat(32))));
    response_is::<ImportWrapped>(
        &ImportedObject {
            object_type: ObjectType::OtpAeadKey,
            id: ObjectId(0x0200),
        },
        &h("cb0003070200"),
    );
    // Wrap Data promises nonce + data + tag bytes, Unwrap Data the data back.
    let wrap = WrapData {
        wrap_key_id: ObjectId(1),
        data: SecretBytes::new(vec![1, 2, 3]),
    };
    request_is(&wrap, &h("680005 0001 010203".replace(' ', "").as_str()));
    assert!(wrap
        .check_response(&WrappedResponse {
            wrapped: vec![0; 13 + 3 + 16]
        })
        .is_ok());
    assert!(wrap
        .check_response(&WrappedResponse {
            wrapped: vec![0; 13 + 4 + 16]
        })
        .is_err());
    let unwrap = UnwrapData {
        wrap_key_id: ObjectId(1),
        wrapped: vec![0; 13 + 3 + 16],
    };
    assert!(unwrap
        .check_response(&UnwrappedResponse {
            data: SecretBytes::new(vec![0; 2])
        })
        .is_err());
}

#[test]
fn opaque_hmac_and_aes_commands_match_yubicos_reference() {
    request_is(
        &PutOpaque {
            object: head(5, Algorithm::OpaqueData),
            data: vec![0xaa, 0xbb],
        },
        &h(&format!("420037{}aabb", head_hex("0005", "1e"))),
    );
    request_is(&GetOpaque { id: ObjectId(5) }, &h("4300020005"));
    response_is::<GetOpaque>(
        &OpaqueResponse {
            data: vec![0xaa, 0xbb],
        },
        &h("c30002aabb"),
    );
    request_is(
        &PutHmacKey {
            object: head(6, Algorithm::HmacSha256),
            key: SecretBytes::new(b"Jefe".to_vec()),
        },
        &h(&format!(
            "520039{}{}",
            head_hex("0006", "14"),
            hex::encode("Jefe")
        )),
    );
    request_is(
        &SignHmac {
            key_id: ObjectId(6),
            data: b"hi".to_vec(),
        },
        &h("5300040006 6869".replace(' ', "").as_str()),
    );
    request_is(
        &VerifyHmac {
            key_id: ObjectId(6),
            mac_and_data: vec![1, 2],
        },
        &h("5c00040006 0102".replace(' ', "").as_str()),
    );
    response_is::<VerifyHmac>(&VerifyResponse { valid: true }, &h("dc000101"));
    response_is::<VerifyHmac>(&VerifyResponse { valid: false }, &h("dc000100"));
    let two = crate::codec::Frame::new(0xdc, &[2]).unwrap();
    assert!(decode_response::<VerifyHmac>(&two).is_err());
    request_is(
        &GenerateSymmetricKey {
            object: head(7, Algorithm::Aes128),
        },
        &h(&format!("6e0035{}", head_hex("0007", "32"))),
    );
    // Encrypt CBC: key id ‖ IV ‖ data; the answer as long as the data.
    let cbc = EncryptCbc {
        key_id: ObjectId(7),
        iv: [9; 16],
        data: SecretBytes::new(vec![1; 16]),
    };
    request_is(
        &cbc,
        &h(&format!("720022 0007 {}{}", "09".repeat(16), "01".repeat(16)).replace(' ', "")),
    );
    assert_eq!(DecryptEcb::CODE, CommandCode::DecryptEcb);
    assert_eq!(EncryptEcb::CODE.to_u8(), 0x70);
    assert_eq!(DecryptCbc::CODE.to_u8(), 0x71);
    assert!(cbc
        .check_response(&AesResponse {
            data: SecretBytes::new(vec![0; 32])
        })
        .is_err());
}

#[test]
fn no_key_or_plaintext_reaches_debug() {
    let put = PutWrapKey {
        object: head(1, Algorithm::Aes128CcmWrap),
        delegated: Capabilities::NONE,
        key: SecretBytes::new(vec![0x5a; 16]),
    };
    let hmac = PutHmacKey {
        object: head(1, Algorithm::HmacSha1),
        key: SecretBytes::new(vec![0x5a; 16]),
    };
    let aes = PutSymmetricKey {
        object: head(1, Algorithm::Aes128),
        key: SecretBytes::new(vec![0x5a; 16]),
    };
    let wrap = WrapData {
        wrap_key_id: ObjectId(1),
        data: SecretBytes::new(vec![0x5a; 16]),
    };
    for text in [
        format!("{put:?}"),
        format!("{hmac:?}"),
        format!("{aes:?}"),
        format!("{wrap:?}"),
    ] {
        assert!(!text.contains("90") && !text.contains("5a"), "{text}");
    }
}
