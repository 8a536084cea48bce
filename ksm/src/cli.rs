//! The `ksm` command line: one subcommand per job. Flag names follow pyhsm's tools where
//! they have an equivalent (`-D`, `-B/--aead-dir`, `--key-handles`, `-U`, `-S`, …), so
//! operators' scripts keep working.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use aead_store::{FsStore, NoncePolicy};
use clap::{Args, Parser, Subcommand};
use hsm_proto::Timeouts;

use crate::daemon::config::{nonce_policy, ServeArgs};
use crate::daemon::serve;
use crate::daemon::sharing::DEFAULT_SOCKET;
use crate::device::{self, choose, open_tool};
use crate::tools::{
    self, decrypt_aead, generate_keys, import_keys, keystore_unlock, store_cmd, DEFAULT_AEAD_DIR,
};
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

/// Where a tool finds its HSM.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// Serial device (/dev/ttyACM0, an emulator's pty link) or soft-HSM key file. Default:
    /// the running daemon's sharing socket if it answers, else /dev/ttyACM0.
    #[arg(short = 'D', long = "device")]
    pub device: Option<PathBuf>,
    /// The daemon's sharing socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Seconds to wait for each HSM response.
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the KSM: the HTTP decode API validation servers call (yhsm-yubikey-ksm's flags).
    Serve(ServeArgs),
    /// Unlock the HSM key store after boot: master key from a no-echo prompt or --stdin,
    /// then an admin YubiKey OTP if the HSM has admin keys.
    KeystoreUnlock {
        /// Where the HSM is.
        #[command(flatten)]
        dev: DeviceArgs,
        /// Read the master key (hex) from the first line of standard input; an admin OTP may
        /// follow on the second.
        #[arg(long)]
        stdin: bool,
        /// Read the admin YubiKey OTP from standard input.
        #[arg(long)]
        otp_stdin: bool,
        /// Do not ask for an admin YubiKey OTP.
        #[arg(long)]
        no_otp: bool,
    },
    /// Have the HSM generate YubiKey secrets for a range of public ids and store them as
    /// AEADs (resumable: existing AEADs are skipped).
    GenerateKeys {
        /// Where the HSM is.
        #[command(flatten)]
        dev: DeviceArgs,
        /// Key handles to seal each secret under (repeat or comma-separate).
        #[arg(long = "key-handles", alias = "key-handle", num_args = 1.., required = true)]
        key_handles: Vec<String>,
        /// First public id: a decimal number, else modhex.
        #[arg(long)]
        start_public_id: String,
        /// How many keys.
        #[arg(short = 'c', long, default_value_t = 1)]
        count: u64,
        /// AEAD directory (must exist).
        #[arg(short = 'O', long = "output-dir", alias = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
        output_dir: PathBuf,
        /// Public id length in modhex characters.
        #[arg(long, default_value_t = 12)]
        public_id_chars: usize,
        /// Let the HSM choose each AEAD's nonce instead of using the public id.
        #[arg(long)]
        random_nonce: bool,
        /// Replace existing AEADs.
        #[arg(long)]
        force: bool,
    },
    /// Import YubiKey secrets from `# ykksm 1` export lines (a file or standard input) as
    /// AEADs made by the HSM.
    ImportKeys {
        /// Where the HSM is.
        #[command(flatten)]
        dev: DeviceArgs,
        /// Key handles to seal each secret under (repeat or comma-separate).
        #[arg(long = "key-handles", alias = "key-handle", num_args = 1.., required = true)]
        key_handles: Vec<String>,
        /// AEAD directory (must exist).
        #[arg(short = 'O', long = "output-dir", alias = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
        output_dir: PathBuf,
        /// Read this file instead of standard input.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Let the HSM choose each AEAD's nonce instead of using the public id.
        #[arg(long)]
        random_nonce: bool,
        /// Store into the HSM's internal database instead of files (one key handle).
        #[arg(long)]
        internal_db: bool,
        /// Replace existing AEADs.
        #[arg(long)]
        force: bool,
        /// Accepted for pyhsm compatibility; file names are always the public id as given.
        #[arg(long, hide = true)]
        public_id_chars: Option<usize>,
    },
    /// Offline: decrypt AEAD files with the key-handle key from a protected file.
    DecryptAead {
        /// File holding the key-handle AES key in hex (mode 0600). Keys are never taken from
        /// the command line.
        #[arg(long)]
        aes_key_file: PathBuf,
        /// Key handle for version-0 files, which do not record one.
        #[arg(long)]
        key_handle: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "raw")]
        format: decrypt_aead::Format,
        /// With --format aead: AEAD directory to write to.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// With --format aead: key handle to seal under.
        #[arg(long)]
        key_handle_out: Option<String>,
        /// With --format aead: file holding the new key (hex, mode 0600).
        #[arg(long)]
        aes_key_out_file: Option<PathBuf>,
        /// Only public ids from this one (number or modhex).
        #[arg(long)]
        start_public_id: Option<String>,
        /// Only public ids up to this one (number or modhex).
        #[arg(long)]
        stop_public_id: Option<String>,
        /// Prefix each output line with the file name.
        #[arg(long)]
        print_filename: bool,
        /// Stop at the first failure.
        #[arg(long)]
        fail_fast: bool,
        /// AEAD files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Inspect the AEAD directory.
    Store {
        /// What to do.
        #[command(subcommand)]
        cmd: StoreCmd,
    },
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
    /// Open a YubiHSM (resync, system info, echo link test) and print what it is.
    Info {
        /// Where the HSM is.
        #[command(flatten)]
        dev: DeviceArgs,
    },
    /// The decode path end to end with nothing installed: a software YubiHSM on a real pty,
    /// the driver opening it like /dev/ttyACM0, OTPs from fixtures/ decoded inside it.
    Demo,
}

/// `ksm store …`.
#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Report unreadable, malformed and misplaced AEAD files; with -D, also AEADs the HSM
    /// will not open.
    Verify {
        /// AEAD directory.
        #[arg(short = 'B', long = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
        aead_dir: PathBuf,
        /// Also ask the HSM to open every AEAD: -D's device, else the daemon's socket.
        #[arg(long)]
        hsm: bool,
        /// Where the HSM is (implies --hsm).
        #[command(flatten)]
        dev: DeviceArgs,
        /// The store was made with --random-nonce: AEADs whose nonce is not their public id
        /// are still listed, but do not make verify fail.
        #[arg(long)]
        random_nonce_aeads: bool,
    },
    /// Count AEADs per key handle.
    Stats {
        /// AEAD directory.
        #[arg(short = 'B', long = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
        aead_dir: PathBuf,
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

fn open_store(dir: &Path, khs: Vec<hsm_proto::KeyHandle>) -> Result<FsStore, Error> {
    FsStore::open(dir, khs).map_err(|e| Error::Usage(e.to_string()))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::KeystoreUnlock {
            dev,
            stdin,
            otp_stdin,
            no_otp,
        } => {
            let target = choose(dev.device.as_deref(), &dev.socket)?;
            let opts = keystore_unlock::Options {
                stdin,
                otp_stdin,
                no_otp,
            };
            keystore_unlock::run(
                &target,
                &opts,
                timeouts(dev.timeout)?,
                &mut std::io::stdin().lock(),
                &mut out,
            )
        }
        Command::GenerateKeys {
            dev,
            key_handles,
            start_public_id,
            count,
            output_dir,
            public_id_chars,
            random_nonce,
            force,
        } => {
            let khs = tools::key_handles(&key_handles)?;
            let store = open_store(&output_dir, khs.clone())?;
            let mut hsm = open_tool(
                &choose(dev.device.as_deref(), &dev.socket)?,
                timeouts(dev.timeout)?,
            )?;
            let plan = generate_keys::Plan {
                key_handles: khs,
                start: tools::public_id_arg(&start_public_id, public_id_chars)?,
                count,
                public_id_chars,
                random_nonce,
                force,
            };
            let s = generate_keys::run(&mut hsm, &store, &plan, &mut out)?;
            if s.incomplete > 0 {
                return Err(Error::Usage(format!(
                    "{} ids had AEADs for some key handles only",
                    s.incomplete
                )));
            }
            Ok(())
        }
        Command::ImportKeys {
            dev,
            key_handles,
            output_dir,
            input,
            random_nonce,
            internal_db,
            force,
            public_id_chars: _,
        } => {
            let khs = tools::key_handles(&key_handles)?;
            if internal_db && khs.len() != 1 {
                return Err(Error::Usage(
                    "--internal-db takes exactly one key handle".into(),
                ));
            }
            let store = if internal_db {
                None
            } else {
                Some(open_store(&output_dir, khs.clone())?)
            };
            let mut hsm = open_tool(
                &choose(dev.device.as_deref(), &dev.socket)?,
                timeouts(dev.timeout)?,
            )?;
            let opts = import_keys::Options {
                key_handles: khs,
                random_nonce,
                force,
                internal_db,
            };
            let mut reader: Box<dyn BufRead> = match &input {
                Some(p) => Box::new(BufReader::new(
                    std::fs::File::open(p)
                        .map_err(|e| Error::io(format!("open {}", p.display()), e))?,
                )),
                None => Box::new(std::io::stdin().lock()),
            };
            let s = import_keys::run(
                &mut hsm,
                store.as_ref(),
                &opts,
                &mut reader,
                &mut out,
                &mut err,
            )?;
            if s.rejected > 0 {
                return Err(Error::Usage(format!("{} line(s) rejected", s.rejected)));
            }
            Ok(())
        }
        Command::DecryptAead {
            aes_key_file,
            key_handle,
            format,
            output_dir,
            key_handle_out,
            aes_key_out_file,
            start_public_id,
            stop_public_id,
            print_filename,
            fail_fast,
            paths,
        } => {
            let reencrypt = if format == decrypt_aead::Format::Aead {
                let (Some(dir), Some(kh), Some(keyf)) =
                    (output_dir, key_handle_out, aes_key_out_file)
                else {
                    return Err(Error::Usage(
                        "--format aead needs --output-dir, --key-handle-out and --aes-key-out-file"
                            .into(),
                    ));
                };
                let kh = hsm_proto::KeyHandle::parse(&kh)?;
                Some((
                    open_store(&dir, vec![kh])?,
                    kh,
                    tools::read_key_file(&keyf)?,
                ))
            } else {
                None
            };
            let id_num = |s: &Option<String>| -> Result<Option<u64>, Error> {
                s.as_deref()
                    .map(|v| tools::public_id_arg(v, 12).map(|i| i.to_number()))
                    .transpose()
            };
            let opts = decrypt_aead::Options {
                key: tools::read_key_file(&aes_key_file)?,
                key_handle: key_handle
                    .as_deref()
                    .map(hsm_proto::KeyHandle::parse)
                    .transpose()?,
                format,
                reencrypt,
                start: id_num(&start_public_id)?,
                stop: id_num(&stop_public_id)?,
                print_filename,
                fail_fast,
            };
            let (_, failed) = decrypt_aead::run(&opts, &paths, &mut out, &mut err)?;
            if failed > 0 {
                return Err(Error::Usage(format!("{failed} AEAD(s) failed")));
            }
            Ok(())
        }
        Command::Store {
            cmd:
                StoreCmd::Verify {
                    aead_dir,
                    hsm,
                    dev,
                    random_nonce_aeads,
                },
        } => {
            let policy = nonce_policy(random_nonce_aeads);
            let store = open_store(&aead_dir, Vec::new())?.with_nonce_policy(policy);
            let mut hsm = if hsm || dev.device.is_some() {
                Some(open_tool(
                    &choose(dev.device.as_deref(), &dev.socket)?,
                    timeouts(dev.timeout)?,
                )?)
            } else {
                None
            };
            let r = store_cmd::verify(&store, hsm.as_mut(), &mut out)?;
            let nonce_problems = match policy {
                NoncePolicy::PublicId => r.nonce_differs,
                NoncePolicy::Any => 0,
            };
            if r.bad + r.misplaced + r.rejected + nonce_problems > 0 {
                return Err(Error::Usage(
                    "the AEAD directory has problems (listed above)".into(),
                ));
            }
            Ok(())
        }
        Command::Store {
            cmd: StoreCmd::Stats { aead_dir },
        } => {
            store_cmd::print_stats(&open_store(&aead_dir, Vec::new())?, &mut out);
            Ok(())
        }
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
        Command::Info { dev } => {
            let target = choose(dev.device.as_deref(), &dev.socket)?;
            let mut hsm = open_tool(&target, timeouts(dev.timeout)?)?;
            let name = match &target {
                device::ToolDevice::Path(p) => p.display().to_string(),
                device::ToolDevice::Daemon { socket, .. } => {
                    format!("daemon at {}", socket.display())
                }
            };
            // Written, not print!'d: a closed stdout is an error to report, not a panic.
            use std::io::Write as _;
            write!(out, "device: {name}\n{}", crate::info::report(&mut hsm)?)
                .and_then(|_| out.flush())
                .map_err(|e| Error::io("write standard output", e))
        }
    }
}
