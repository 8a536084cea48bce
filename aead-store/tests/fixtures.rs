//! AEAD files written by Python's `cryptography` (`fixtures/aead-files/make.py`), not by our
//! writer, in pyhsm's three formats, under several key-handle spellings and both layouts:
//! our store finds each, reads it in the right format, and the AEAD opens to the YubiKey
//! secret listed in `fixtures/aead-files/README.md` and `fixtures/otp-vectors.json`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] functions unwrap too

use std::path::{Path, PathBuf};

use aead_store::{format, FsStore, Store, WalkEntry};
use otp_core::{aead, AesKey, KeyHandle, PublicId};
use serde_json::Value;

fn fixtures() -> PathBuf {
    // Resolved, as the store resolves its base (and so the paths it reports).
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .canonicalize()
        .unwrap()
}

fn vectors() -> Value {
    let text = std::fs::read_to_string(fixtures().join("otp-vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The table of the fixtures' README: (file, format, public id).
const FILES: [(&str, &str, &str); 6] = [
    ("0x20/cc/cc/de/ul/fb/vj/ccccdeulfbvj", "v1", "ccccdeulfbvj"),
    (
        "33/cc/cc/gk/eg/kh/cg/ccccgkegkhcg",
        "v1-crlf",
        "ccccgkegkhcg",
    ),
    (
        "0x00000020/cc/cc/bg/vj/kj/ccccbgvjkjfd",
        "v0",
        "ccccbgvjkjfd",
    ),
    ("0x21/cc/cc/kf/ei/ib/dh/cccckfeiibdh", "v1", "cccckfeiibdh"),
    ("32/cc/cc/nf/uu/gr/fr/ccccnfuugrfr", "v0", "ccccnfuugrfr"),
    ("0x21/cc/cc/rt/ej/de/ccccrtejdebu", "v1", "ccccrtejdebu"),
];

fn store_dir() -> PathBuf {
    fixtures().join("aead-files/store")
}

#[test]
fn each_file_is_in_the_format_the_readme_says() {
    for (file, fmt, _) in FILES {
        let bytes = std::fs::read(store_dir().join(file)).unwrap();
        let parsed = format::parse(&bytes).unwrap();
        match (fmt, parsed) {
            ("v0", format::AeadFile::V0(a)) => assert_eq!(a.as_bytes().len(), 30),
            ("v1", format::AeadFile::V1 { .. }) => assert!(bytes.starts_with(format::MARKER)),
            ("v1-crlf", format::AeadFile::V1 { .. }) => {
                assert!(bytes.starts_with(format::MARKER_CRLF))
            }
            (f, p) => panic!("{file}: expected {f}, parsed {p:?}"),
        }
    }
}

#[test]
fn every_fixture_is_found_and_opens_to_its_yubikey_secret() {
    let v = vectors();
    let store = FsStore::open(store_dir(), vec![KeyHandle(0x20), KeyHandle(0x21)]).unwrap();
    let yubikeys = v["yubikeys"].as_array().unwrap();
    assert_eq!(yubikeys.len(), FILES.len());
    for (file, _, public_id) in FILES {
        let y = yubikeys
            .iter()
            .find(|y| y["public_id"] == public_id)
            .unwrap_or_else(|| panic!("{public_id} not in otp-vectors.json"));
        let id = PublicId::new(public_id).unwrap();
        let found = store
            .lookup(&id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id} not found"));
        assert_eq!(
            FsStore::path_of(&found.source),
            Some(store_dir().join(file).as_path())
        );
        assert_eq!(
            u64::from(found.key_handle().unwrap().0),
            y["key_handle"].as_u64().unwrap()
        );
        assert_eq!(found.nonce(), id.to_nonce().unwrap());
        assert_eq!(
            hex::encode(found.hsm1_aead().unwrap().as_bytes()),
            y["aead"].as_str().unwrap()
        );
        let key = AesKey::from_hex(
            v["key_handles"][found.key_handle().unwrap().canonical()]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        let plain = aead::open(
            &key,
            found.key_handle().unwrap(),
            &found.nonce(),
            found.hsm1_aead().unwrap(),
        )
        .unwrap();
        let expected = format!(
            "{}{}",
            y["aes_key"].as_str().unwrap(),
            y["uid"].as_str().unwrap()
        );
        assert_eq!(hex::encode(&*plain), expected, "{file}");
    }
}

#[test]
fn the_walk_finds_every_fixture_good_and_in_place() {
    let store = FsStore::open(store_dir(), vec![KeyHandle(0x20)]).unwrap();
    let walk: Vec<WalkEntry> = store.entries().collect();
    let mut walked: Vec<&Path> = walk
        .iter()
        .map(|e| FsStore::path_of(&e.source).expect("a file"))
        .collect();
    walked.sort();
    let mut expected: Vec<PathBuf> = FILES.iter().map(|(f, _, _)| store_dir().join(f)).collect();
    expected.sort();
    assert_eq!(walked, expected);
    assert!(walk.iter().all(|e| e.is_good()), "{walk:#?}");
    let stats = aead_store::stats(store.entries());
    assert_eq!(stats[&KeyHandle(0x20).into()].good, 3);
    assert_eq!(stats[&KeyHandle(0x21).into()].good, 3);
}

#[test]
fn a_handle_not_configured_finds_nothing() {
    let store = FsStore::open(store_dir(), vec![KeyHandle(0x21)]).unwrap();
    assert_eq!(
        Store::lookup(&store, &PublicId::new("ccccdeulfbvj").unwrap()).unwrap(),
        None
    );
}
