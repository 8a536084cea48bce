//! `ksm keystore-unlock`: after every boot the YubiHSM's key store is encrypted; an operator
//! gives the master key (and, if admin YubiKeys are configured, an OTP from one) before any
//! OTP can be decoded.
//!
//! The master key is read from a no-echo prompt or standard input, never from argv or the
//! environment. Through the daemon's sharing socket every device the daemon owns is
//! unlocked in turn.
//!
//! A YubiHSM 2 has no key store to decrypt: what the daemon lacks after a boot is the
//! password of the authentication key its sessions use (unless a private password file is
//! configured). For each YubiHSM 2 of the daemon that is not `up` and unlocked (locked, or
//! `down`: a connector not up yet at boot is normal) the tool reads that password and hands
//! it over the sharing socket; the daemon checks it by opening a session and answers whether
//! the device took it, or, if the device cannot be reached now, keeps it to check when it
//! answers (the tool then says so and exits 6, so a script does not take it for done).
//!
//! Where the YubiHSM 2 password comes from, first that applies: `--hsm2-password-file`
//! (private, first line); with `--stdin` and a daemon that has no YubiHSM 1, the first line
//! of standard input; else a no-echo prompt. With `--stdin` and any YubiHSM 1 in the daemon,
//! standard input is the YubiHSM 1's (master key, then admin OTP) and never the YubiHSM 2's:
//! which lines a YubiHSM 1 consumes depends on whether it is locked, so a YubiHSM 2 password
//! after them would be read from the wrong line whenever it is not.

use std::io::BufRead;

use hsm_proto::otp::Otp;
use hsm_proto::{Error as HsmError, Status, Timeouts};
use zeroize::Zeroizing;

use crate::device::{open_tool, DeviceArgs, ToolDevice};
use crate::Error;

/// `ksm keystore-unlock`'s arguments.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// Where the HSM is.
    #[command(flatten)]
    pub dev: DeviceArgs,
    /// Where the secrets come from.
    #[command(flatten)]
    pub opts: Options,
    /// Read the YubiHSM 2 authentication key's password from the first line of this file
    /// (refused unless only its owner may read it), for scripts.
    #[arg(long, value_name = "FILE")]
    pub hsm2_password_file: Option<std::path::PathBuf>,
}

/// Where the secrets come from.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct Options {
    /// Read secrets from standard input. If any YubiHSM 1 is locked: line 1 its master key
    /// (hex), line 2 an admin OTP (unless --no-otp). If the daemon has no YubiHSM 1 at all:
    /// line 1 the YubiHSM 2 authentication key's password. With both kinds, standard input
    /// is the YubiHSM 1's only: give the YubiHSM 2 password with --hsm2-password-file (else
    /// it is asked on the terminal).
    #[arg(long)]
    pub stdin: bool,
    /// Read the admin YubiKey OTP from standard input.
    #[arg(long)]
    pub otp_stdin: bool,
    /// Do not ask for an admin YubiKey OTP.
    #[arg(long)]
    pub no_otp: bool,
}

/// `ksm keystore-unlock`: secrets from the terminal or standard input, answers on standard
/// output.
pub fn run(args: UnlockArgs) -> Result<(), Error> {
    let target = args.dev.choose()?;
    unlock_with(
        &target,
        &args.opts,
        args.hsm2_password_file.as_deref(),
        args.dev.timeouts()?,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout(),
    )
}

/// The master key and admin OTP as typed, each wiped when dropped.
struct Secrets {
    key: Option<Zeroizing<String>>,
    otp: Option<Zeroizing<String>>,
}

/// `text` without surrounding white space, as a wiped string. The copy is made at its final
/// size (`to_string` of a `&str` allocates exactly once), and `text` is wiped by its owner.
fn trimmed(text: &Zeroizing<String>) -> Zeroizing<String> {
    Zeroizing::new(text.trim().to_string())
}

/// A secret from the terminal, not echoed. rpassword's own buffers are its business; its
/// answer is wrapped at once so our copy is wiped.
fn prompt(what: &str) -> Result<Zeroizing<String>, Error> {
    let typed = Zeroizing::new(
        rpassword::prompt_password(what).map_err(|e| Error::io("read from the terminal", e))?,
    );
    Ok(trimmed(&typed))
}

fn read_secrets(opts: &Options, input: &mut dyn BufRead, need_key: bool) -> Result<Secrets, Error> {
    let mut line = || -> Result<Option<Zeroizing<String>>, Error> {
        match super::read_secret_line(input)? {
            super::SecretLine::End => Ok(None),
            super::SecretLine::Text(t) => Ok(Some(trimmed(&t))),
            super::SecretLine::Invalid(why) => Err(Error::Input(format!("standard input: {why}"))),
        }
    };
    let key = if !need_key {
        None
    } else if opts.stdin {
        line()?
    } else {
        Some(prompt("Master key (hex, not shown): ")?)
    };
    let otp = if opts.no_otp {
        None
    } else if opts.otp_stdin || opts.stdin {
        line()?
    } else {
        None
    };
    Ok(Secrets { key, otp })
}

fn master_key(hex_text: &str, max: usize) -> Result<Zeroizing<Vec<u8>>, Error> {
    let bytes = Zeroizing::new(
        hex::decode(hex_text).map_err(|_| Error::Input("the master key must be hex".into()))?,
    );
    if bytes.len() > max {
        return Err(Error::Input(format!(
            "the master key must be at most {} hex digits",
            max * 2
        )));
    }
    Ok(bytes)
}

/// The YubiHSM 2 password: from `file` (its first line), standard input's first line
/// (`--stdin` on a daemon without a YubiHSM 1), or the terminal (not echoed); taken as
/// typed, spaces included, without its line end.
fn read_password(
    opts: &Options,
    file: Option<&std::path::Path>,
    stdin_is_ours: bool,
    input: &mut dyn BufRead,
) -> Result<Zeroizing<String>, Error> {
    let password = if let Some(path) = file {
        let text = hsm_proto::keyfile::read_private(path)?;
        let line = text.lines().next().unwrap_or_default();
        Zeroizing::new(line.to_string())
    } else if opts.stdin && stdin_is_ours {
        match super::read_secret_line(input)? {
            super::SecretLine::End => Zeroizing::new(String::new()),
            super::SecretLine::Text(t) => t,
            super::SecretLine::Invalid(why) => {
                return Err(Error::Input(format!("standard input: {why}")))
            }
        }
    } else {
        Zeroizing::new(
            rpassword::prompt_password("YubiHSM 2 authentication key password (not shown): ")
                .map_err(|e| Error::io("read from the terminal", e))?,
        )
    };
    if password.is_empty() {
        return Err(Error::Input("Aborted: no YubiHSM 2 password given".into()));
    }
    Ok(password)
}

/// Hands the password to each YubiHSM 2 of the daemon that is not `up` (a `down` one keeps
/// it to check later); prints one line per device and returns how many stay locked and how
/// many kept it unchecked.
fn unlock_hsm2(
    socket: &std::path::Path,
    devices: &[(u8, String, String)],
    opts: &Options,
    file: Option<&std::path::Path>,
    stdin_is_ours: bool,
    input: &mut dyn BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(usize, usize), Error> {
    let mut password: Option<Zeroizing<String>> = None;
    let mut failed = 0;
    let mut pending = 0;
    for (index, state, name) in devices {
        // Only `up` means a session works with a password the daemon has; `locked`,
        // `down` (a connector not up yet) and the rest need it.
        if state == "up" {
            let _ = writeln!(out, "{name}: already unlocked");
            continue;
        }
        let p = match &password {
            Some(p) => p,
            None => password.insert(read_password(opts, file, stdin_is_ours, input)?),
        };
        match crate::device::sharing::unlock_hsm2(socket, *index, p) {
            Ok(answer) => {
                if answer == crate::device::sharing::PENDING {
                    pending += 1;
                }
                let _ = writeln!(out, "{name}: {answer}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::Other => {
                // The daemon's refusal: "daemon: wrong password: …".
                let _ = writeln!(out, "{name}: {e}");
                failed += 1;
            }
            Err(e) => return Err(Error::io(format!("unlock {name}"), e)),
        }
    }
    Ok((failed, pending))
}

/// Unlocks every device; prints one line per device. Fails if any stays locked.
pub fn unlock(
    dev: &ToolDevice,
    opts: &Options,
    timeouts: Timeouts,
    input: &mut dyn BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(), Error> {
    unlock_with(dev, opts, None, timeouts, input, out)
}

/// [`unlock`], the YubiHSM 2 password from `hsm2_password_file` if given. Fails with
/// [`Error::StillLocked`] if any device stays locked, else with [`Error::PasswordPending`]
/// if a YubiHSM 2 could not be reached and kept the password unchecked.
pub fn unlock_with(
    dev: &ToolDevice,
    opts: &Options,
    hsm2_password_file: Option<&std::path::Path>,
    timeouts: Timeouts,
    input: &mut dyn BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(), Error> {
    let mut hsm2: Vec<(u8, String, String)> = Vec::new();
    let targets: Vec<(String, ToolDevice)> = match dev {
        ToolDevice::Path(p) => vec![(p.display().to_string(), dev.clone())],
        ToolDevice::Daemon { socket, .. } => {
            let mut hsm1 = Vec::new();
            let listed = crate::device::sharing::list_device_kinds(socket).map_err(|e| {
                Error::io(
                    format!("daemon not running (no answer on {})", socket.display()),
                    e,
                )
            })?;
            for (i, (kind, state, name)) in listed.into_iter().enumerate() {
                if kind == "yubihsm2" {
                    hsm2.push((i as u8, state, name));
                } else {
                    hsm1.push((
                        name,
                        ToolDevice::Daemon {
                            socket: socket.clone(),
                            index: i as u8,
                        },
                    ));
                }
            }
            hsm1
        }
    };
    // With a YubiHSM 1 in the daemon, standard input is its (see the module doc).
    let stdin_is_ours = targets.is_empty();
    let mut secrets: Option<Secrets> = None;
    let mut failed = 0;
    for (name, target) in targets {
        let mut hsm = open_tool(&target, timeouts)?;
        if !hsm.is_locked()? {
            let _ = writeln!(out, "{name}: already unlocked");
            continue;
        }
        if secrets.is_none() {
            // Nobody should wait for the device while the operator types the master key.
            hsm.end_operation()?;
            secrets = Some(read_secrets(opts, input, true)?);
        }
        let s = secrets
            .as_ref()
            .ok_or_else(|| Error::Input("no secrets".into()))?;
        let key_text = s
            .key
            .as_ref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::Input("Aborted: no master key given".into()))?;
        let firmware = hsm.info().version();
        let result = if firmware >= (1, 0, 0) {
            hsm.key_store_decrypt(&master_key(key_text, 32)?)
        } else {
            hsm.key_storage_unlock(&master_key(key_text, 16)?)
        };
        match result {
            Ok(()) => {}
            Err(HsmError::Device {
                status: Status::Mismatch | Status::KeyStorageLocked,
                ..
            }) => {
                let _ = writeln!(out, "{name}: wrong key");
                failed += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if hsm.is_locked()? && firmware >= (1, 0, 0) && !opts.no_otp {
            let otp_text = match &s.otp {
                Some(o) => o.clone(),
                None => prompt("Admin YubiKey OTP: ")?,
            };
            let otp = Otp::parse(&otp_text)
                .ok()
                .filter(|o| o.public_id.as_str().len() == 12);
            match otp.map(|o| hsm.hsm_unlock(&o)) {
                None => {
                    let _ = writeln!(
                        out,
                        "{name}: invalid YubiKey OTP (44 modhex characters expected)"
                    );
                }
                Some(Err(HsmError::Device { status, .. })) => {
                    let _ = writeln!(out, "{name}: admin OTP refused: {status}");
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(())) => {}
            }
        }
        if hsm.is_locked()? {
            let _ = writeln!(out, "{name}: still locked");
            failed += 1;
        } else {
            let _ = writeln!(out, "{name}: unlocked");
        }
    }
    let mut pending = 0;
    if let ToolDevice::Daemon { socket, .. } = dev {
        let (f, p) = unlock_hsm2(
            socket,
            &hsm2,
            opts,
            hsm2_password_file,
            stdin_is_ours,
            input,
            out,
        )?;
        failed += f;
        pending = p;
    }
    if failed > 0 {
        return Err(Error::StillLocked(failed));
    }
    if pending > 0 {
        return Err(Error::PasswordPending(pending));
    }
    Ok(())
}
