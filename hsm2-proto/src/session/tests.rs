//! Known answers from the shared protocol notes §3.7 (computed with python-yubihsm 3.1.2
//! and replayed against its session code), and each side held to the other.

use super::*;
use crate::cmd::{self, CreateSessionResponse, Echo, EchoResponse};
use crate::codec::Frame;
use crate::{AuthKey, CommandCode, Error, ErrorCode, ObjectId};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex in a test vector")
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    h(s).try_into().expect("vector length")
}

const HOST: &str = "0001020304050607";
const CARD: &str = "08090a0b0c0d0e0f";
const CARD_CRYPTOGRAM: &str = "0d89ea51bf1bf533";
const AUTHENTICATE: &str = "04001100b01410d72022ed0ec1e620c499fbf1a9";
const CHAIN: &str = "c1e620c499fbf1a9430c6f8678618bdb";
const ECHO_MESSAGE: &str = "05001900bd8fdff005deb542856e3b7cbe958dfe176477cc3bf07c09";
const ECHO_ANSWER: &str = "850019004dedf1ebd55437479b44b329727900cde5514acde838867e";

fn key() -> AuthKey {
    AuthKey::from_password(b"password")
}

fn created() -> CreateSessionResponse {
    CreateSessionResponse {
        session_id: SessionId(0),
        card_challenge: Challenge(arr(CARD)),
        card_cryptogram: Cryptogram(arr(CARD_CRYPTOGRAM)),
    }
}

fn frame(s: &str) -> Frame {
    Frame::parse(&h(s)).expect("vector is a frame")
}

fn echo_inner() -> Frame {
    cmd::encode_request(&Echo {
        data: vec![1, 2, 3],
    })
    .unwrap()
}

/// A host session authenticated with the vectors' challenges.
fn host() -> HostSession {
    HostSession::authenticate(&key(), Challenge(arr(HOST)), &created())
        .unwrap()
        .0
}

#[test]
fn session_keys_and_cryptograms_match_python_yubihsm() {
    let ctx = Context::new(&Challenge(arr(HOST)), &Challenge(arr(CARD)));
    let keys = SessionKeys::derive(&key(), &ctx);
    let (enc, mac, rmac) = keys.expose();
    assert_eq!(enc.to_vec(), h("6a7481280688c6e0acf6226085a33167"));
    assert_eq!(mac.to_vec(), h("4387b8a1aef81f16782246452c6485c1"));
    assert_eq!(rmac.to_vec(), h("3a5b6bcce25badb45333b40160557a67"));
    assert_eq!(keys.card_cryptogram(&ctx).0.to_vec(), h(CARD_CRYPTOGRAM));
    assert_eq!(keys.host_cryptogram(&ctx).0.to_vec(), h("b01410d72022ed0e"));
    assert_eq!(
        envelope::iv(enc, 1).to_vec(),
        h("acd472272db65af95e7cd64c0f888bbc")
    );
    assert_eq!(format!("{keys:?}"), "SessionKeys(redacted)");
}

#[test]
fn the_host_side_produces_and_accepts_the_vector_frames() {
    let (mut s, auth) =
        HostSession::authenticate(&key(), Challenge(arr(HOST)), &created()).unwrap();
    assert_eq!(
        cmd::encode_request(&auth).unwrap().as_bytes(),
        h(AUTHENTICATE)
    );
    assert_eq!(s.chain.to_vec(), h(CHAIN));
    assert_eq!(s.counter(), 1);

    let sealed = s.seal(&echo_inner()).unwrap();
    assert_eq!(sealed.as_bytes(), h(ECHO_MESSAGE));
    let inner = s.open(&frame(ECHO_ANSWER)).unwrap();
    assert_eq!(inner.as_bytes(), [0x81, 0x00, 0x03, 1, 2, 3]);
    assert_eq!(
        cmd::decode_response::<Echo>(&inner).unwrap(),
        EchoResponse {
            data: vec![1, 2, 3]
        }
    );
    assert_eq!(s.counter(), 2);
    assert!(s.is_usable());
    // The chain moved on to the command's full C-MAC, whose head was sent.
    assert_eq!(s.chain[..8], h(ECHO_MESSAGE)[h(ECHO_MESSAGE).len() - 8..]);
}

#[test]
fn the_device_side_produces_and_accepts_the_vector_frames() {
    let req = HostSession::create_request(ObjectId(1), Challenge(arr(HOST)));
    assert_eq!(
        cmd::encode_request(&req).unwrap().as_bytes(),
        h("03000a00010001020304050607")
    );
    let (mut d, resp) = DeviceSession::create(SessionId(0), &key(), &req, Challenge(arr(CARD)));
    assert_eq!(resp, created());
    assert!(!d.is_authenticated());
    assert_eq!(d.open(&frame(ECHO_MESSAGE)), Err(Error::SessionUnusable(0)));

    d.authenticate(&frame(AUTHENTICATE)).unwrap();
    assert!(d.is_authenticated());
    let inner = d.open(&frame(ECHO_MESSAGE)).unwrap();
    assert_eq!(inner, echo_inner());
    let answer = d
        .seal(
            &cmd::encode_response::<Echo>(&EchoResponse {
                data: vec![1, 2, 3],
            })
            .unwrap(),
        )
        .unwrap();
    assert_eq!(answer.as_bytes(), h(ECHO_ANSWER));
}

#[test]
fn a_wrong_password_fails_on_the_card_cryptogram() {
    let err = HostSession::authenticate(
        &AuthKey::from_password(b"passw0rd"),
        Challenge(arr(HOST)),
        &created(),
    )
    .unwrap_err();
    assert_eq!(err, Error::CardCryptogram);
    // The device refuses a host that used other keys, and stays unauthenticated.
    let req = HostSession::create_request(ObjectId(1), Challenge(arr(HOST)));
    let (mut d, resp) = DeviceSession::create(
        SessionId(0),
        &AuthKey::from_password(b"other"),
        &req,
        Challenge(arr(CARD)),
    );
    assert_ne!(resp.card_cryptogram, created().card_cryptogram);
    assert_eq!(d.authenticate(&frame(AUTHENTICATE)), Err(Error::Mac));
    assert!(!d.is_authenticated());
}

#[test]
fn every_altered_byte_of_an_answer_is_caught_and_ends_the_session() {
    let answer = h(ECHO_ANSWER);
    for i in 0..answer.len() {
        let mut bad = answer.clone();
        bad[i] ^= 0x01;
        let mut s = host();
        s.seal(&echo_inner()).unwrap();
        let result = Frame::parse(&bad).and_then(|f| s.open(&f));
        assert!(result.is_err(), "byte {i} altered and accepted");
        if Frame::parse(&bad).is_ok() {
            assert!(!s.is_usable(), "byte {i}: session still usable");
            assert_eq!(s.seal(&echo_inner()), Err(Error::SessionUnusable(0)));
        }
    }
}

#[test]
fn answers_out_of_turn_are_refused() {
    // An answer with no command sealed.
    let mut s = host();
    assert_eq!(s.open(&frame(ECHO_ANSWER)), Err(Error::SessionUnusable(0)));
    // A second command before the first's answer: the chains have parted.
    let mut s = host();
    s.seal(&echo_inner()).unwrap();
    assert_eq!(s.seal(&echo_inner()), Err(Error::SessionUnusable(0)));
    assert!(!s.is_usable());
    // A replayed answer: the first is good, the same again is not.
    let mut s = host();
    s.seal(&echo_inner()).unwrap();
    s.open(&frame(ECHO_ANSWER)).unwrap();
    s.seal(&echo_inner()).unwrap();
    assert_eq!(s.open(&frame(ECHO_ANSWER)), Err(Error::Mac));
}

#[test]
fn an_outer_error_frame_is_the_devices_refusal_and_ends_the_session() {
    let mut s = host();
    s.seal(&echo_inner()).unwrap();
    assert_eq!(
        s.open(&cmd::error_frame(ErrorCode::InvalidSession)),
        Err(Error::Device {
            cmd: CommandCode::SessionMessage,
            code: ErrorCode::InvalidSession
        })
    );
    assert!(!s.is_usable());
}

/// Host and device sides talk for many messages, of every padding case, and an inner
/// error frame passes through without harming the session.
#[test]
fn host_and_device_stay_in_step() {
    let req = HostSession::create_request(ObjectId(7), Challenge::random());
    let (mut d, resp) = DeviceSession::create(SessionId(5), &key(), &req, Challenge::random());
    let (mut s, auth) = HostSession::authenticate(&key(), req.host_challenge, &resp).unwrap();
    d.authenticate(&cmd::encode_request(&auth).unwrap())
        .unwrap();
    for n in 0..70usize {
        let data: Vec<u8> = (0..n as u8).collect();
        let inner = cmd::encode_request(&Echo { data: data.clone() }).unwrap();
        let got = d.open(&s.seal(&inner).unwrap()).unwrap();
        assert_eq!(got, inner, "length {n}");
        let answer = if n % 7 == 3 {
            cmd::error_frame(ErrorCode::InvalidData)
        } else {
            cmd::encode_response::<Echo>(&EchoResponse { data }).unwrap()
        };
        let opened = s.open(&d.seal(&answer).unwrap()).unwrap();
        assert_eq!(opened, answer, "length {n}");
        assert!(s.is_usable());
    }
    assert_eq!(s.counter(), 71);
    assert_eq!(
        format!("{s:?}"),
        "HostSession { id: SessionId(5), counter: 71, usable: true, .. }"
    );
}

#[test]
fn the_device_refuses_forged_and_misdirected_commands_without_losing_step() {
    let mut d = {
        let req = HostSession::create_request(ObjectId(1), Challenge(arr(HOST)));
        let (mut d, _) = DeviceSession::create(SessionId(0), &key(), &req, Challenge(arr(CARD)));
        d.authenticate(&frame(AUTHENTICATE)).unwrap();
        d
    };
    let mut forged = h(ECHO_MESSAGE);
    forged[5] ^= 0x80;
    assert_eq!(d.open(&Frame::parse(&forged).unwrap()), Err(Error::Mac));
    let mut other_sid = h(ECHO_MESSAGE);
    other_sid[3] = 1;
    assert!(matches!(
        d.open(&Frame::parse(&other_sid).unwrap()),
        Err(Error::EchoMismatch { .. })
    ));
    // Still in step: the genuine message opens.
    assert_eq!(d.open(&frame(ECHO_MESSAGE)).unwrap(), echo_inner());
}

#[test]
fn an_inner_frame_too_long_for_the_envelope_is_refused_before_sending() {
    let mut s = host();
    let max = (crate::codec::MAX_DATA - 9) / 16 * 16 - 1;
    let fits = Frame::new(0x01, &vec![0; max - 3]).unwrap();
    let sealed = s.seal(&fits).unwrap();
    assert_eq!(
        sealed.data().len(),
        crate::codec::MAX_DATA - (crate::codec::MAX_DATA - 9) % 16
    );
    let mut s = host();
    let over = Frame::new(0x01, &vec![0; max - 2]).unwrap();
    assert!(matches!(s.seal(&over), Err(Error::TooLong { .. })));
    assert!(s.is_usable());
}

#[test]
fn the_device_ends_a_session_whose_counter_runs_out() {
    let req = HostSession::create_request(ObjectId(7), Challenge::random());
    let (mut d, resp) = DeviceSession::create(SessionId(5), &key(), &req, Challenge::random());
    let (mut s, auth) = HostSession::authenticate(&key(), req.host_challenge, &resp).unwrap();
    d.authenticate(&cmd::encode_request(&auth).unwrap())
        .unwrap();
    // Both sides at the last counter.
    (s.counter, d.counter) = (u32::MAX, u32::MAX);
    assert_eq!(
        d.open(&s.seal(&echo_inner()).unwrap()).unwrap(),
        echo_inner()
    );
    let answer = cmd::encode_response::<Echo>(&EchoResponse {
        data: vec![1, 2, 3],
    })
    .unwrap();
    assert_eq!(s.open(&d.seal(&answer).unwrap()).unwrap(), answer);
    assert!(!s.is_usable());
    assert!(d.is_used_up());
    // A host that went on anyway: counter 0 would reuse the first message's IV.
    let mut wrapped = HostSession::authenticate(&key(), req.host_challenge, &resp)
        .unwrap()
        .0;
    (wrapped.chain, wrapped.counter) = (s.chain, 0);
    let message = wrapped.seal(&echo_inner()).unwrap();
    assert_eq!(d.open(&message), Err(Error::SessionUnusable(5)));
}

#[test]
fn plaintexts_that_are_not_padded_or_not_whole_blocks_are_refused() {
    let (enc, iv) = ([3u8; 16], [4u8; 16]);
    let good = envelope::encrypt(&enc, &iv, &echo_inner()).unwrap();
    assert_eq!(envelope::decrypt(&enc, &iv, &good).unwrap(), echo_inner());
    // Another key: the last block decrypts to noise, not `80 00 …`.
    assert_eq!(envelope::decrypt(&[5; 16], &iv, &good), Err(Error::Padding));
    for len in [0, 1, 15, 17] {
        assert_eq!(
            envelope::decrypt(&enc, &iv, &vec![0; len]),
            Err(Error::Padding),
            "{len}"
        );
    }
}
