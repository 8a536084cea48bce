//! Layouts against the shared protocol notes (§3, §4), strict lengths, error frames, the
//! response checks, redaction, and decoders fed random bytes.

use rand::{RngCore, SeedableRng};

use super::*;
use crate::session::{Challenge, Cryptogram, SessionId};
use crate::{
    Algorithm, AuthKey, Capabilities, Domains, Label, NonceId, ObjectId, ObjectType, Origin,
    OtpAead, OtpAeadKeyBytes, OtpCounters, Secret, SecretBytes,
};

pub(super) fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex in a test vector")
}

/// Encodes `m` as a `C` request frame, checks the bytes, and decodes them back to `m`.
pub(super) fn request_is<C: Command + PartialEq>(m: &C, bytes: &[u8]) {
    let f = encode_request(m).unwrap();
    assert_eq!(f.as_bytes(), bytes, "{}", C::CODE);
    assert_eq!(&decode_request::<C>(&f).unwrap(), m);
}

/// The same for a response to `C`.
pub(super) fn response_is<C: Command>(m: &C::Response, bytes: &[u8])
where
    C::Response: PartialEq,
{
    let f = encode_response::<C>(m).unwrap();
    assert_eq!(f.as_bytes(), bytes, "{} response", C::CODE);
    assert_eq!(&decode_response::<C>(&f).unwrap(), m);
}

fn otp_head(id: u16, alg: Algorithm) -> NewObject {
    NewObject {
        id: ObjectId(id),
        label: Label::new("otp").unwrap(),
        domains: Domains(0x0001),
        capabilities: Capabilities::parse("decrypt-otp:create-otp-aead:randomize-otp-aead")
            .unwrap(),
        algorithm: alg,
    }
}

fn head_bytes(id: &str, alg: &str) -> String {
    let mut label = hex::encode(b"otp");
    label.push_str(&"00".repeat(37));
    format!("{id}{label}0001{:016x}{alg}", 0xe000_0000u64)
}

#[test]
fn plain_commands_match_the_notes() {
    request_is(
        &Echo {
            data: vec![1, 2, 3],
        },
        &h("010003010203"),
    );
    response_is::<Echo>(
        &EchoResponse {
            data: vec![1, 2, 3],
        },
        &h("810003010203"),
    );
    request_is(&DeviceInfo, &h("060000"));
    response_is::<DeviceInfo>(
        &DeviceInfoResponse {
            version: [2, 3, 1],
            serial: 0x0102_0304,
            log_capacity: 62,
            log_used: 4,
            algorithms: vec![Algorithm::Aes128YubicoOtp, Algorithm::Unknown(0xee)],
        },
        &h("86000b02030101020304 3e04 25ee".replace(' ', "").as_str()),
    );
    request_is(
        &CreateSession {
            auth_key_id: ObjectId(1),
            host_challenge: Challenge([0, 1, 2, 3, 4, 5, 6, 7]),
        },
        &h("03000a00010001020304050607"),
    );
    response_is::<CreateSession>(
        &CreateSessionResponse {
            session_id: SessionId(0),
            card_challenge: Challenge([8, 9, 10, 11, 12, 13, 14, 15]),
            card_cryptogram: Cryptogram(h("0d89ea51bf1bf533").try_into().unwrap()),
        },
        &h("83001100 08090a0b0c0d0e0f 0d89ea51bf1bf533"
            .replace(' ', "")
            .as_str()),
    );
    response_is::<AuthenticateSession>(&EmptyResponse, &h("840000"));
}

#[test]
fn session_commands_match_the_notes() {
    request_is(&CloseSession, &h("400000"));
    request_is(&GetPseudoRandom { length: 300 }, &h("510002012c"));
    request_is(
        &GetObjectInfo {
            id: ObjectId(0x1234),
            object_type: ObjectType::OtpAeadKey,
        },
        &h("4e0003123407"),
    );
    request_is(
        &DeleteObject {
            id: ObjectId(2),
            object_type: ObjectType::AuthenticationKey,
        },
        &h("580003000202"),
    );
    request_is(
        &ListObjects {
            filters: vec![
                ObjectFilter::Type(ObjectType::OtpAeadKey),
                ObjectFilter::Id(ObjectId(0x0102)),
                ObjectFilter::Algorithm(Algorithm::Aes256YubicoOtp),
                ObjectFilter::Domains(Domains(0x8001)),
                ObjectFilter::Capabilities(Capabilities(0x2000_0000)),
            ],
        },
        &h("480013 0207 010102 0528 038001 040000000020000000"
            .replace(' ', "")
            .as_str()),
    );
    response_is::<ListObjects>(
        &ListObjectsResponse {
            objects: vec![
                ListedObject {
                    id: ObjectId(1),
                    object_type: ObjectType::AuthenticationKey,
                    sequence: 0,
                },
                ListedObject {
                    id: ObjectId(0x20),
                    object_type: ObjectType::OtpAeadKey,
                    sequence: 3,
                },
            ],
        },
        &h("c80008 00010200 00200703".replace(' ', "").as_str()),
    );
    // Put OTP AEAD Key: 53-byte head, the nonce id as given, the key (§4.3): 73 bytes.
    request_is(
        &PutOtpAeadKey {
            object: otp_head(0x20, Algorithm::Aes128YubicoOtp),
            nonce_id: NonceId([0x78, 0x56, 0x34, 0x12]),
            key: OtpAeadKeyBytes::new(&h("808182838485868788898a8b8c8d8e8f")).unwrap(),
        },
        &h(&format!(
            "650049{}78563412808182838485868788898a8b8c8d8e8f",
            head_bytes("0020", "25")
        )),
    );
    request_is(
        &GenerateOtpAeadKey {
            object: otp_head(0, Algorithm::Aes256YubicoOtp),
            nonce_id: NonceId([0, 0x20, 0, 0]),
        },
        &h(&format!("660039{}00200000", head_bytes("0000", "28"))),
    );
    response_is::<PutOtpAeadKey>(&ObjectIdResponse { id: ObjectId(0x20) }, &h("e500020020"));
    let put_auth = PutAuthenticationKey {
        object: NewObject {
            algorithm: Algorithm::Aes128YubicoAuthentication,
            ..otp_head(2, Algorithm::Aes128YubicoAuthentication)
        },
        delegated: Capabilities(0x2000_0000),
        key: AuthKey::from_password(b"password"),
    };
    let f = encode_request(&put_auth).unwrap();
    assert_eq!(f.data().len(), 93);
    assert_eq!(
        f.data()[53..],
        h("0000000020000000090b47dbed595654901dee1cc655e420592fd483f759e29909a04c4505d2ce0a")
    );
    assert_eq!(
        decode_request::<PutAuthenticationKey>(&f).unwrap(),
        put_auth
    );

    let aead = OtpAead(
        h("0a0b0c0d0e0f2389697159fdc6d107b6579ee88ddf6becd5e41c02b7ae83437b5a0d0f1e")
            .try_into()
            .unwrap(),
    );
    request_is(
        &CreateOtpAead {
            key_id: ObjectId(0x20),
            aes_key: Secret(h("000102030405060708090a0b0c0d0e0f").try_into().unwrap()),
            private_id: Secret(h("010203040506").try_into().unwrap()),
        },
        &h("610018 0020 000102030405060708090a0b0c0d0e0f 010203040506"
            .replace(' ', "")
            .as_str()),
    );
    request_is(
        &RandomizeOtpAead {
            key_id: ObjectId(0x20),
        },
        &h("6200020020"),
    );
    let mut rewrap = h("630028 0020 0021".replace(' ', "").as_str());
    rewrap.extend(aead.0);
    request_is(
        &RewrapOtpAead {
            from: ObjectId(0x20),
            to: ObjectId(0x21),
            aead,
        },
        &rewrap,
    );
    let mut aead_answer = h("e10024");
    aead_answer.extend(aead.0);
    response_is::<CreateOtpAead>(&OtpAeadResponse { aead }, &aead_answer);
    let mut decrypt = h("600036 0020".replace(' ', "").as_str());
    decrypt.extend(aead.0);
    decrypt.extend(h("2f5d71a4915dec304aa13ccf97bb0dbb"));
    request_is(
        &DecryptOtp {
            key_id: ObjectId(0x20),
            aead,
            otp: Secret(h("2f5d71a4915dec304aa13ccf97bb0dbb").try_into().unwrap()),
        },
        &decrypt,
    );
}

/// §5.3: the counters come back little-endian.
#[test]
fn decrypt_otp_counters_are_little_endian() {
    for (bytes, use_ctr, session_ctr) in [
        ("010001010100", 1, 1),
        ("010002010100", 1, 2),
        ("ff0f01010100", 0x0fff, 1),
    ] {
        response_is::<DecryptOtp>(
            &DecryptOtpResponse {
                counters: OtpCounters {
                    use_ctr,
                    session_ctr,
                    ts_high: 1,
                    ts_low: 1,
                },
            },
            &h(&format!("e00006{bytes}")),
        );
    }
}

#[test]
fn object_info_is_66_bytes_in_the_notes_order() {
    let info = ObjectInfo {
        capabilities: Capabilities(0x2000_0000),
        id: ObjectId(0x20),
        size: 16,
        domains: Domains(1),
        object_type: ObjectType::OtpAeadKey,
        algorithm: Algorithm::Aes128YubicoOtp,
        sequence: 0,
        origin: Origin::IMPORTED,
        label: Label::new("k").unwrap(),
        delegated: Capabilities::NONE,
    };
    let mut bytes = h("ce0042 0000000020000000 0020 0010 0001 07 25 00 02 6b"
        .replace(' ', "")
        .as_str());
    bytes.extend([0; 39 + 8]);
    response_is::<GetObjectInfo>(&info, &bytes);
}

#[test]
fn lengths_are_exact() {
    let code = CommandCode::CreateSession;
    assert_eq!(
        decode_exact::<CreateSessionResponse>(code, &[0; 16]),
        Err(Error::Truncated(code))
    );
    assert_eq!(
        decode_exact::<CreateSessionResponse>(code, &[0; 18]),
        Err(Error::TrailingBytes(code))
    );
    let code = CommandCode::DecryptOtp;
    assert_eq!(
        decode_exact::<DecryptOtpResponse>(code, &[0; 5]),
        Err(Error::Truncated(code))
    );
    assert_eq!(
        decode_exact::<DecryptOtpResponse>(code, &[0; 7]),
        Err(Error::TrailingBytes(code))
    );
    assert_eq!(
        decode_exact::<ObjectInfo>(CommandCode::GetObjectInfo, &[0; 65]).err(),
        Some(Error::Truncated(CommandCode::GetObjectInfo))
    );
    assert!(matches!(
        decode_exact::<ListObjectsResponse>(CommandCode::ListObjects, &[0; 5]),
        Err(Error::InvalidField { .. })
    ));
    assert!(matches!(
        decode_exact::<ListObjects>(CommandCode::ListObjects, &[0x07, 0]),
        Err(Error::InvalidField {
            field: "filter tag",
            ..
        })
    ));
    assert_eq!(
        decode_exact::<ListObjects>(CommandCode::ListObjects, &[0x06; 40]),
        Err(Error::Truncated(CommandCode::ListObjects))
    );
    // A key of 20 bytes is no AES key.
    let mut put = encode_request(&PutOtpAeadKey {
        object: otp_head(1, Algorithm::Aes128YubicoOtp),
        nonce_id: NonceId::default(),
        key: OtpAeadKeyBytes::new(&[0; 16]).unwrap(),
    })
    .unwrap()
    .data()
    .to_vec();
    put.extend([0; 4]);
    assert!(matches!(
        decode_exact::<PutOtpAeadKey>(CommandCode::PutOtpAeadKey, &put),
        Err(Error::InvalidField {
            field: "key length",
            ..
        })
    ));
    // Session messages carry whole, non-empty blocks of ciphertext.
    let code = CommandCode::SessionMessage;
    for n in [0usize, 8, 15, 17] {
        let mut d = vec![0u8; 1 + n + 8];
        d[0] = 1;
        assert!(
            decode_exact::<SessionMessage>(code, &d).is_err(),
            "{n} bytes of ciphertext"
        );
    }
    assert_eq!(
        decode_exact::<SessionMessage>(code, &[0; 8]),
        Err(Error::Truncated(code))
    );
    assert!(decode_exact::<SessionMessageResponse>(code, &[0; 1 + 32 + 8]).is_ok());
}

#[test]
fn error_frames_become_device_errors() {
    let f = error_frame(ErrorCode::ObjectNotFound);
    assert_eq!(f.as_bytes(), [0x7f, 0x00, 0x01, 0x0b]);
    assert_eq!(
        decode_response::<GetObjectInfo>(&f),
        Err(Error::Device {
            cmd: CommandCode::GetObjectInfo,
            code: ErrorCode::ObjectNotFound
        })
    );
    let odd = crate::codec::Frame::parse(&[0x7f, 0, 2, 0x0b, 0]).unwrap();
    assert!(matches!(
        decode_response::<Echo>(&odd),
        Err(Error::InvalidField { .. })
    ));
    let other = encode_response::<DeviceInfo>(&DeviceInfoResponse {
        version: [2, 0, 0],
        serial: 1,
        log_capacity: 0,
        log_used: 0,
        algorithms: vec![],
    })
    .unwrap();
    assert_eq!(
        decode_response::<Echo>(&other),
        Err(Error::WrongCommand {
            sent: CommandCode::Echo,
            got: 0x86
        })
    );
    // A request frame is not its own answer.
    let req = encode_request(&Echo { data: vec![] }).unwrap();
    assert!(matches!(
        decode_response::<Echo>(&req),
        Err(Error::WrongCommand { got: 0x01, .. })
    ));
    assert!(matches!(
        decode_request::<DeviceInfo>(&req),
        Err(Error::WrongCommand { got: 0x01, .. })
    ));
    assert_eq!(ErrorCode::from_u8(0x0d), ErrorCode::Unknown(0x0d));
    assert_eq!(ErrorCode::InvalidOtp.to_u8(), 0x0f);
    assert_eq!(
        ErrorCode::CommandUnexecuted.to_string(),
        "command-unexecuted"
    );
}

#[test]
fn answers_must_keep_the_requests_promises() {
    let echo = Echo { data: vec![1, 2] };
    assert!(echo
        .check_response(&EchoResponse { data: vec![1, 2] })
        .is_ok());
    assert!(matches!(
        echo.check_response(&EchoResponse { data: vec![1] }),
        Err(Error::EchoMismatch { field: "data", .. })
    ));
    let rnd = GetPseudoRandom { length: 4 };
    assert!(rnd
        .check_response(&PseudoRandomResponse {
            bytes: SecretBytes::new(vec![0; 4])
        })
        .is_ok());
    assert!(rnd
        .check_response(&PseudoRandomResponse {
            bytes: SecretBytes::new(vec![0; 3])
        })
        .is_err());
    let put = GenerateOtpAeadKey {
        object: otp_head(0x20, Algorithm::Aes128YubicoOtp),
        nonce_id: NonceId::default(),
    };
    assert!(put
        .check_response(&ObjectIdResponse { id: ObjectId(0x20) })
        .is_ok());
    assert!(put
        .check_response(&ObjectIdResponse { id: ObjectId(0x21) })
        .is_err());
    let any = GenerateOtpAeadKey {
        object: otp_head(0, Algorithm::Aes128YubicoOtp),
        ..put
    };
    assert!(any
        .check_response(&ObjectIdResponse { id: ObjectId(0x21) })
        .is_ok());
    let info = GetObjectInfo {
        id: ObjectId(3),
        object_type: ObjectType::OtpAeadKey,
    };
    let mut resp = decode_exact::<ObjectInfo>(CommandCode::GetObjectInfo, &[0; 66]).unwrap();
    assert!(info.check_response(&resp).is_err());
    resp.id = ObjectId(3);
    resp.object_type = ObjectType::OtpAeadKey;
    assert!(info.check_response(&resp).is_ok());
}

#[test]
fn debug_output_shows_no_secret() {
    let texts = [
        format!(
            "{:?}",
            DecryptOtp {
                key_id: ObjectId(1),
                aead: OtpAead([0; 36]),
                otp: Secret([0xab; 16]),
            }
        ),
        format!(
            "{:?}",
            CreateOtpAead {
                key_id: ObjectId(1),
                aes_key: Secret([0xab; 16]),
                private_id: Secret([0xab; 6]),
            }
        ),
        format!(
            "{:?}",
            PutOtpAeadKey {
                object: otp_head(1, Algorithm::Aes128YubicoOtp),
                nonce_id: NonceId::default(),
                key: OtpAeadKeyBytes::new(&[0xab; 16]).unwrap(),
            }
        ),
        format!(
            "{:?}",
            PutAuthenticationKey {
                object: otp_head(1, Algorithm::Aes128YubicoAuthentication),
                delegated: Capabilities::NONE,
                key: AuthKey::new([0xab; 16], [0xab; 16]),
            }
        ),
        format!(
            "{:?}",
            PseudoRandomResponse {
                bytes: SecretBytes::new(vec![0xab; 8])
            }
        ),
    ];
    for t in texts {
        assert!(!t.contains("abab") && !t.contains("171"), "{t}");
    }
}

/// A decode of random bytes gives a message that encodes back to the same bytes, or a layout
/// error naming its command, never anything else.
fn layout_error_or_round_trip<M: Message>(got: Result<M>, code: CommandCode, buf: &[u8]) {
    match got {
        Ok(m) => {
            let mut w = crate::codec::Writer::new();
            m.encode(&mut w);
            assert_eq!(
                *w.into_inner(),
                *buf,
                "{code}: {m:?} encodes to what it was read from"
            );
        }
        Err(Error::Truncated(c) | Error::TrailingBytes(c)) => assert_eq!(c, code),
        Err(Error::InvalidField { cmd, .. }) => assert_eq!(cmd, code),
        Err(e) => panic!("{code}: {} random bytes gave {e:?}", buf.len()),
    }
}

fn never_panics<C: Command>(rng: &mut rand::rngs::StdRng, buf: &mut Vec<u8>) {
    use crate::codec::MAX_DATA;
    for len in (0..=200).chain([MAX_DATA - 1, MAX_DATA, MAX_DATA + 1]) {
        buf.resize(len, 0);
        rng.fill_bytes(buf);
        layout_error_or_round_trip(decode_exact::<C>(C::CODE, buf), C::CODE, buf);
        layout_error_or_round_trip(decode_exact::<C::Response>(C::CODE, buf), C::CODE, buf);
        // The same bytes as the body of a well-formed frame, so the frame decoders get
        // past the header: a request, a response, and an error frame.
        if len > MAX_DATA {
            continue;
        }
        let len16 = u16::try_from(len).expect("a frame's length fits 16 bits");
        for cmd in [
            C::CODE.to_u8(),
            C::CODE.response_byte(),
            CommandCode::Error.to_u8(),
        ] {
            let mut bytes = vec![cmd];
            bytes.extend(len16.to_be_bytes());
            bytes.extend_from_slice(buf);
            let f = crate::codec::Frame::parse(&bytes).expect("a valid header makes a frame");
            let _ = decode_response::<C>(&f);
            let _ = decode_request::<C>(&f);
        }
    }
}

#[test]
fn decoders_never_panic_on_random_bytes() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut buf = Vec::new();
    for round in 0..30u8 {
        for code in CommandCode::ALL {
            crate::with_command!(*code, never_panics(&mut rng, &mut buf), {
                assert_eq!(*code, CommandCode::Error, "{code} has no request type");
            });
        }
        // Frames with a valid header for every command byte.
        buf.clear();
        buf.extend([round | 0x80, 0, 4, 1, 2, 3, 4]);
        let _ = crate::codec::Frame::parse(&buf).map(|f| decode_response::<Echo>(&f));
    }
}
