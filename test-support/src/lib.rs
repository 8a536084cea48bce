//! Test support shared by every crate's tests: the project's fixtures and OTPs from Yubico's
//! `ykgenerate`, as paths, texts and strings.
//!
//! It depends on no crate of the workspace, so `hsm-proto` can use it in its own tests
//! without a cycle; whoever needs typed values (an emulator configuration, an `Otp`) builds
//! them from these in a thin wrapper.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The project's `fixtures/`.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// The text of `fixtures/<name>`. Panics if it cannot be read: a broken checkout.
pub fn fixture_text(name: &str) -> String {
    let path = fixtures().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The text of the emulator configuration `fixtures/emulator/<name>`.
pub fn emulator_fixture(name: &str) -> String {
    fixture_text(&format!("emulator/{name}"))
}

/// `fixtures/otp-vectors.json`.
pub fn otp_vectors() -> Value {
    serde_json::from_str(&fixture_text("otp-vectors.json")).expect("otp-vectors.json is JSON")
}

/// An OTP made by Yubico's `ykgenerate` (Debian libyubikey-dev), prefixed with `public_id`:
/// the token part comes from Yubico's code, not ours.
pub fn ykgenerate(
    public_id: &str,
    aes_key: &str,
    uid: &str,
    counter: u16,
    low: u16,
    high: u8,
    use_: u8,
) -> String {
    let out = Command::new("ykgenerate")
        .args([
            aes_key,
            uid,
            &format!("{counter:04x}"),
            &format!("{low:04x}"),
            &format!("{high:02x}"),
            &format!("{use_:02x}"),
        ])
        .output()
        .expect("ykgenerate not found: apt-get install libyubikey-dev (.ci/run does)");
    assert!(out.status.success(), "ykgenerate failed");
    format!(
        "{public_id}{}",
        String::from_utf8(out.stdout).expect("utf8").trim()
    )
}

/// A fresh OTP for YubiKey `i` of the vectors, with the given counters.
pub fn vector_otp(i: usize, counter: u16, use_: u8) -> String {
    let v = otp_vectors();
    let y = &v["yubikeys"][i];
    ykgenerate(
        y["public_id"].as_str().unwrap_or_default(),
        y["aes_key"].as_str().unwrap_or_default(),
        y["uid"].as_str().unwrap_or_default(),
        counter,
        0x4242,
        0x17,
        use_,
    )
}
