//! YubiHSM 2 session messages: the envelope checks and the decryption behind them.
//!
//! Why: a session message is the one thing the driver decrypts, and the software YubiHSM 2
//! will open commands from any local process. A forged or garbled envelope must be refused
//! (and leave the host's session unusable, since its MAC chain has parted from the
//! device's), never accepted or panicked on; and what a genuine MAC covers must still be
//! parsed without trusting it.
//!
//! The sessions are those of the shared protocol notes §3.7 (password `password`, fixed
//! challenges), the host having sealed the vectors' Echo. Input: a mode byte, then
//! - `0`: an answer to the host session; only the vectors' genuine answer may open;
//! - `1`: a command to the device session; only the vectors' genuine command may open;
//! - `2`: a ciphertext (cut to whole blocks) sealed here with the correct R-MAC, so the
//!   decryption, unpadding and inner frame parsing see arbitrary plaintext: an error or a
//!   well-formed inner frame, and the session stays in step either way.
#![no_main]
#![forbid(unsafe_code)]

use aes::Aes128;
use cmac::{Cmac, Mac};
use hsm2_proto::cmd::{self, Echo};
use hsm2_proto::codec::Frame;
use hsm2_proto::session::{Challenge, Cryptogram, DeviceSession, HostSession, SessionId};
use hsm2_proto::{AuthKey, ObjectId};
use libfuzzer_sys::fuzz_target;

const HOST: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
const CARD: [u8; 8] = [8, 9, 10, 11, 12, 13, 14, 15];
const CARD_CRYPTOGRAM: [u8; 8] = [0x0d, 0x89, 0xea, 0x51, 0xbf, 0x1b, 0xf5, 0x33];
const ECHO_MESSAGE: &str = "05001900bd8fdff005deb542856e3b7cbe958dfe176477cc3bf07c09";
const ECHO_ANSWER: &str = "850019004dedf1ebd55437479b44b329727900cde5514acde838867e";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex constant"))
        .collect()
}

fn key() -> AuthKey {
    AuthKey::from_password(b"password")
}

/// The host session of §3.7 with the Echo sealed, awaiting its answer.
fn host() -> HostSession {
    let created = cmd::CreateSessionResponse {
        session_id: SessionId(0),
        card_challenge: Challenge(CARD),
        card_cryptogram: Cryptogram(CARD_CRYPTOGRAM),
    };
    let (mut s, _) = HostSession::authenticate(&key(), Challenge(HOST), &created).expect("vectors");
    let echo = cmd::encode_request(&Echo {
        data: vec![1, 2, 3],
    })
    .expect("echo");
    assert_eq!(s.seal(&echo).expect("seal").as_bytes(), unhex(ECHO_MESSAGE));
    s
}

/// The device session of §3.7, authenticated.
fn device() -> DeviceSession {
    let req = HostSession::create_request(ObjectId(1), Challenge(HOST));
    let (mut d, _) = DeviceSession::create(SessionId(0), &key(), &req, Challenge(CARD));
    let auth = Frame::parse(&unhex("04001100b01410d72022ed0ec1e620c499fbf1a9")).expect("frame");
    d.authenticate(&auth).expect("vectors");
    d
}

fn cmac(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut m = <Cmac<Aes128> as Mac>::new_from_slice(key).expect("16-byte key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// An answer envelope around `ciphertext` with the R-MAC the host expects.
fn sealed_answer(ciphertext: &[u8]) -> Vec<u8> {
    let s_mac = unhex("4387b8a1aef81f16782246452c6485c1");
    let s_rmac = unhex("3a5b6bcce25badb45333b40160557a67");
    let chain0 = unhex("c1e620c499fbf1a9430c6f8678618bdb");
    let message = unhex(ECHO_MESSAGE);
    let chain = cmac(&s_mac, &[&chain0, &message[..message.len() - 8]]);
    let len = (1 + ciphertext.len() + 8) as u16;
    let mut answer = vec![0x85];
    answer.extend(len.to_be_bytes());
    answer.push(0);
    answer.extend(ciphertext);
    let rmac = cmac(&s_rmac, &[&chain, &answer]);
    answer.extend(&rmac[..8]);
    answer
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            let mut s = host();
            if let Ok(frame) = Frame::parse(rest) {
                match s.open(&frame) {
                    Ok(_) => assert_eq!(rest, unhex(ECHO_ANSWER), "a forged answer opened"),
                    Err(_) => assert!(!s.is_usable(), "a refused answer left the session usable"),
                }
            }
        }
        1 => {
            let mut d = device();
            if let Ok(frame) = Frame::parse(rest) {
                if d.open(&frame).is_ok() {
                    assert_eq!(rest, unhex(ECHO_MESSAGE), "a forged command opened");
                }
            }
        }
        _ => {
            let blocks = (rest.len() / 16).clamp(1, 100);
            let mut ciphertext = rest.to_vec();
            ciphertext.resize(blocks * 16, 0);
            let mut s = host();
            let answer = Frame::parse(&sealed_answer(&ciphertext)).expect("well-formed envelope");
            if let Ok(inner) = s.open(&answer) {
                assert_eq!(Frame::parse(inner.as_bytes()).as_ref(), Ok(&inner));
            }
            assert!(
                s.is_usable(),
                "a genuine envelope put the session out of step"
            );
            assert_eq!(s.counter(), 2);
        }
    }
});
