//! `ksm info`: open a YubiHSM (running the full start-up: resync, system info, echo link
//! test) and print what it is.

use std::fmt::Write as _;

use hsm_proto::Hsm;

/// A short report of the device.
pub fn report(hsm: &mut Hsm) -> Result<String, crate::Error> {
    let info = hsm.system_info()?;
    let echo = hsm.echo(b"ksm link check")?;
    let mut out = String::new();
    let (a, b, c) = info.version();
    let _ = writeln!(out, "firmware: {a}.{b}.{c}");
    let _ = writeln!(out, "protocol: {}", info.protocol);
    let _ = writeln!(out, "system uid: {}", hex::encode(info.system_uid));
    let _ = writeln!(
        out,
        "echo: {}",
        if echo == b"ksm link check" {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    Ok(out)
}
