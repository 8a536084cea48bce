//! The `ksm` command line: one subcommand per job. Flag names follow pyhsm's tools where
//! they have an equivalent, so operators' scripts keep working.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hsm_proto::Timeouts;

use crate::Error;

/// YubiKey KSM backed by a YubiHSM 1.
#[derive(Debug, Parser)]
#[command(name = "ksm", version, about)]
pub struct Cli {
    /// Log what happens (info level).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Log in detail (debug level; never key material or OTPs).
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a software YubiHSM 1 on a pseudo-terminal until SIGTERM; prints the pty path.
    Emulate {
        /// Device configuration (TOML, or pyhsm's soft-HSM JSON key file); must not be
        /// world-readable. Default: the demo device built into ksm (fixtures/emulator/demo.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Path of the symlink to create to the pty's device node (like /dev/ttyACM0).
        #[arg(long)]
        pty: PathBuf,
        /// Unix socket (mode 0600) taking fault commands: stall on|off, garbage N,
        /// unplug SECONDS, config-mode, power-cycle, status.
        #[arg(long)]
        control: Option<PathBuf>,
    },
    /// Show the product working with nothing installed: a software YubiHSM on a real pty,
    /// the driver opening it like /dev/ttyACM0, and OTPs from fixtures/ decoded inside it.
    Demo,
    /// Open a YubiHSM (resync, system info, echo link test) and print what it is.
    Info {
        /// Serial device (e.g. /dev/ttyACM0 or an emulator's pty link), or a soft-HSM key file.
        #[arg(short = 'D', long = "device", default_value = "/dev/ttyACM0")]
        device: PathBuf,
        /// Seconds to wait for each response.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
    },
}

fn timeouts(secs: f64) -> Result<Timeouts, Error> {
    if !(0.01..=60.0).contains(&secs) {
        return Err(Error::Usage(
            "--timeout must be between 0.01 and 60 seconds".into(),
        ));
    }
    Ok(Timeouts {
        response: Duration::from_secs_f64(secs),
        ..Timeouts::default()
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Emulate {
            config,
            pty,
            control,
        } => crate::emulate::run(crate::emulate::EmulateArgs {
            config,
            pty,
            control,
        }),
        Command::Demo => crate::demo::run(),
        Command::Info { device, timeout } => {
            let mut hsm = crate::device::open(&device, timeouts(timeout)?)?;
            print!(
                "device: {}\n{}",
                device.display(),
                crate::info::report(&mut hsm)?
            );
            Ok(())
        }
    }
}
