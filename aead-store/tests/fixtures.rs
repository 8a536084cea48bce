//! AEAD files written by Python's `cryptography` in pyhsm's three formats, under several
//! key-handle spellings and both layouts (`fixtures/aead-files/`), read by our store.

use std::path::PathBuf;

use aead_store::{FsStore, Store};
use hsm_proto::{aead, AesKey, KeyHandle, PublicId};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

#[test]
fn every_fixture_file_reads_and_opens_to_its_secret() {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("otp-vectors.json")).unwrap(),
    )
    .unwrap();
    let store = FsStore::open(
        &fixtures().join("aead-files/store"),
        vec![KeyHandle(0x20), KeyHandle(0x21)],
    )
    .unwrap();
    for y in v["yubikeys"].as_array().unwrap() {
        let id = PublicId::new(y["public_id"].as_str().unwrap()).unwrap();
        let found = store
            .lookup(&id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} not found"));
        assert_eq!(found.key_handle.0 as u64, y["key_handle"].as_u64().unwrap());
        assert_eq!(found.nonce, id.to_nonce().unwrap());
        assert_eq!(
            hex::encode(found.aead.as_bytes()),
            y["aead"].as_str().unwrap()
        );
        let key = AesKey::from_hex(
            v["key_handles"][found.key_handle.canonical()]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let plain = aead::open(&key, found.key_handle, &found.nonce, &found.aead).unwrap();
        assert_eq!(
            hex::encode(&*plain),
            format!(
                "{}{}",
                y["aes_key"].as_str().unwrap(),
                y["uid"].as_str().unwrap()
            )
        );
    }
    let walk = store.walk();
    assert_eq!(walk.len(), 6);
    assert!(
        walk.iter()
            .all(|e| e.result.is_ok() && e.misplaced.is_empty()),
        "{walk:#?}"
    );
}
