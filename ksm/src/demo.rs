//! `ksm demo`: the product's main job end to end with nothing installed. A software YubiHSM
//! serves the real wire protocol on a pseudo-terminal; the driver opens it through the same
//! serial code as `/dev/ttyACM0`; OTPs made by Yubico's `ykgenerate` (from
//! `fixtures/otp-vectors.json`) are decoded inside the HSM from their AEADs.

use hsm_proto::emulator::{EmulatorConfig, PtyEmulator};
use hsm_proto::otp::Otp;
use hsm_proto::{Aead, Hsm, KeyHandle, PublicId, Timeouts};
use serde_json::Value;

use crate::Error;

const VECTORS: &str = include_str!("../../fixtures/otp-vectors.json");

/// The vectors compiled in are broken (a build from a damaged tree).
fn broken(reason: String) -> Error {
    Error::Config {
        path: "fixtures/otp-vectors.json".into(),
        reason,
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a str, Error> {
    v[k].as_str().ok_or_else(|| broken(format!("missing {k}")))
}

/// Runs the demo, printing each step.
pub fn run() -> Result<(), Error> {
    let dir = tempfile_dir()?;
    let link = dir.join("yhsm");
    let cfg = EmulatorConfig::parse(crate::device::DEMO_DEVICE)?.resolve()?;
    let emu = PtyEmulator::start(&cfg, &link)?;
    println!(
        "software YubiHSM on {} -> {}",
        link.display(),
        emu.slave_path().unwrap_or_default().display()
    );
    let mut hsm = Hsm::open_path(&link, Timeouts::default())?;
    print!("{}", crate::info::report(&mut hsm)?);

    let vectors: Value = serde_json::from_str(VECTORS).map_err(|e| broken(e.to_string()))?;
    let keys = vectors["yubikeys"].as_array().cloned().unwrap_or_default();
    for o in vectors["otps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .take(4)
    {
        let otp = Otp::parse(field(o, "otp")?)?;
        let Some(y) = keys
            .iter()
            .find(|y| y["public_id"].as_str() == Some(otp.public_id.as_str()))
        else {
            continue;
        };
        let kh = KeyHandle(y["key_handle"].as_u64().unwrap_or(0) as u32);
        let nonce = PublicId::new(field(y, "public_id")?)?.to_nonce()?;
        let aead =
            Aead::new(&hex::decode(field(y, "aead")?).map_err(|_| broken("bad hex".into()))?)?;
        let decoded = hsm.decode_otp(&otp, kh, nonce, &(&aead).try_into()?)?;
        println!(
            "decode {} (key handle {kh}) -> {}",
            otp.public_id,
            crate::daemon::answer::Outcome::Ok(decoded.counters())
                .answer()
                .1
        );
    }
    drop(hsm);
    emu.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("ksm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}
