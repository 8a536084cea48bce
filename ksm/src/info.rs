//! `ksm info`: open a YubiHSM (running the full start-up: resync, system info, echo link
//! test) and print what it is.

use std::fmt::Write as _;

use hsm_proto::Hsm;

use crate::device::{open_tool, DeviceArgs, ToolDevice};
use crate::Error;

/// `ksm info`'s arguments.
#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Where the HSM is.
    #[command(flatten)]
    pub dev: DeviceArgs,
}

/// `ksm info`: the device's name and [`report`] on standard output.
pub fn run(args: InfoArgs) -> Result<(), Error> {
    let target = args.dev.choose()?;
    let mut hsm = open_tool(&target, args.dev.timeouts()?)?;
    let name = match &target {
        ToolDevice::Path(p) => p.display().to_string(),
        ToolDevice::Daemon { socket, .. } => format!("daemon at {}", socket.display()),
    };
    // Written, not print!'d: a closed stdout is an error to report, not a panic.
    let mut out = std::io::stdout();
    use std::io::Write as _;
    write!(out, "device: {name}\n{}", report(&mut hsm)?)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("write standard output", e))
}

/// A short report of the device.
pub fn report(hsm: &mut Hsm) -> Result<String, Error> {
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
