//! The shared, independently computed vectors (`fixtures/ccm-vectors.json`,
//! `fixtures/otp-vectors.json`): every AEAD reproduced, every `ykgenerate` OTP decoded to its
//! listed answer, in software and through the emulator over a pty.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use common::*;
use hsm_proto::otp::{self, Otp};
use hsm_proto::{aead, Aead, AesKey, KeyHandle, Nonce, PublicId, YubiKeySecret};
use serde_json::Value;

fn load(name: &str) -> Value {
    serde_json::from_str(&test_support::fixture_text(name)).expect("json")
}

fn hexs(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().expect(k)).expect("hex")
}

#[test]
fn every_ccm_vector_is_reproduced() {
    let vectors = load("ccm-vectors.json");
    let list = vectors.as_array().expect("array");
    assert!(list.len() >= 10);
    for v in list {
        let key = AesKey::new(&hexs(v, "key")).unwrap();
        let kh = KeyHandle(v["key_handle"].as_u64().unwrap() as u32);
        let nonce = Nonce(hexs(v, "nonce").try_into().unwrap());
        let plain = hexs(v, "plaintext");
        let sealed = aead::seal(&key, kh, &nonce, &plain).unwrap();
        assert_eq!(
            hex::encode(sealed.as_bytes()),
            v["aead"].as_str().unwrap(),
            "vector {v}"
        );
        assert_eq!(*aead::open(&key, kh, &nonce, &sealed).unwrap(), plain);
    }
}

struct YubiKey {
    public_id: PublicId,
    kh: KeyHandle,
    aead: Aead,
}

fn yubikeys(v: &Value) -> Vec<YubiKey> {
    v["yubikeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|y| {
            let public_id = PublicId::new(y["public_id"].as_str().unwrap()).unwrap();
            assert_eq!(
                hex::encode(public_id.to_bytes()),
                y["public_id_hex"].as_str().unwrap()
            );
            YubiKey {
                public_id,
                kh: KeyHandle(y["key_handle"].as_u64().unwrap() as u32),
                aead: Aead::new(&hexs(y, "aead")).unwrap(),
            }
        })
        .collect()
}

#[test]
fn otp_vector_aeads_and_otps_in_software() {
    let v = load("otp-vectors.json");
    let khs = &v["key_handles"];
    for (y, raw) in yubikeys(&v).iter().zip(v["yubikeys"].as_array().unwrap()) {
        let key = AesKey::from_hex(khs[y.kh.canonical()].as_str().unwrap()).unwrap();
        let mut plain = hexs(raw, "aes_key");
        plain.extend(hexs(raw, "uid"));
        let sealed = aead::seal(&key, y.kh, &y.public_id.to_nonce().unwrap(), &plain).unwrap();
        assert_eq!(sealed, y.aead);
    }
    let keys = yubikeys(&v);
    let raws = v["yubikeys"].as_array().unwrap();
    let otps = v["otps"].as_array().unwrap();
    assert_eq!(otps.len(), 12);
    for o in otps {
        let parsed = Otp::parse(o["otp"].as_str().unwrap()).unwrap();
        let i = keys
            .iter()
            .position(|k| k.public_id == parsed.public_id)
            .unwrap();
        let mut b = hexs(&raws[i], "aes_key");
        b.extend(hexs(&raws[i], "uid"));
        let secret = YubiKeySecret::from_bytes(&b).unwrap();
        let c = otp::decrypt(&secret, &parsed.ciphertext).unwrap();
        let line = format!(
            "OK counter={:04x} low={:04x} high={:02x} use={:02x}",
            c.use_ctr, c.ts_low, c.ts_high, c.session_ctr
        );
        assert_eq!(line, o["expect"].as_str().unwrap());
    }
}

#[test]
fn otp_vectors_decode_through_the_emulator_over_a_pty() {
    let v = load("otp-vectors.json");
    let keys = yubikeys(&v);
    let dev = Device::start(&config("demo.toml"));
    let mut hsm = dev.open();
    for o in v["otps"].as_array().unwrap() {
        let parsed = Otp::parse(o["otp"].as_str().unwrap()).unwrap();
        let y = keys
            .iter()
            .find(|k| k.public_id == parsed.public_id)
            .unwrap();
        let decoded = hsm
            .decode_otp(&parsed, y.kh, y.public_id.to_nonce().unwrap(), &y.aead)
            .unwrap();
        assert_eq!(decoded.ksm_line(), o["expect"].as_str().unwrap());
        assert_eq!(decoded.public_id(), &parsed.public_id);
        // The same AEAD under the other key handle does not open.
        let other = KeyHandle(y.kh.0 ^ 1);
        assert!(hsm
            .decode_otp(&parsed, other, y.public_id.to_nonce().unwrap(), &y.aead)
            .is_err());
    }
}
