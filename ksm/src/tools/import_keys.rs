//! `ksm import-keys`: YubiKey secrets from Yubico's KSM export format (`# ykksm 1`, then
//! `serial,public id,uid,aes key,lock code,created,accessed[,...]` lines) into AEADs. Each
//! secret goes into the HSM's buffer and is sealed there under every key handle; only AEADs
//! reach the disk. Bad lines are reported with their line number and skipped.
//!
//! On a YubiHSM 2 (`-D http://…` and `--key-id N`), each secret goes to the device in one
//! `Create OTP AEAD` inside the encrypted session and comes back sealed under otp-aead-key N.
//! The device chooses the nonce, hence `--random-nonce` (see `generate-keys`).
//!
//! Secrets in input lines: each line is read into memory wiped when dropped
//! ([`super::read_secret_line`]); fields are borrowed slices of it, decoded bytes are
//! `Zeroizing`, and errors name the line and the field, never a field's text (with the
//! columns shifted, the "public id" may be the AES key).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use zeroize::Zeroizing;

use aead_store::{AeadKey, Sealed, Store, StoreError};
use hsm2_proto::{ObjectId, Secret};
use hsm_proto::cmd::DbYubikeyAeadStore;
use hsm_proto::{Hsm, KeyHandle, Nonce, PublicId, YubiKeySecret};

use crate::device::hsm2::{Hsm2AuthArgs, Hsm2Device};
use crate::device::DeviceArgs;
use crate::tools::{self, KeyHandleArgs, OutputDirArgs};
use crate::Error;

/// `ksm import-keys`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Where the HSM is.
    #[command(flatten)]
    pub dev: DeviceArgs,
    /// Key handles.
    #[command(flatten)]
    pub key_handles: KeyHandleArgs,
    /// YubiHSM 2: the otp-aead-key to seal under, instead of key handles (-D names the
    /// YubiHSM 2; needs --random-nonce, as the device chooses every nonce).
    #[arg(long, conflicts_with_all = ["key_handles", "internal_db"], value_parser = crate::device::hsm2::object_id_arg)]
    pub key_id: Option<u16>,
    /// YubiHSM 2: its authentication key and password.
    #[command(flatten)]
    pub hsm2: Hsm2AuthArgs,
    /// Where the AEADs go.
    #[command(flatten)]
    pub output: OutputDirArgs,
    /// Read this file instead of standard input.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Let the HSM choose each AEAD's nonce instead of using the public id.
    #[arg(long)]
    pub random_nonce: bool,
    /// Store into the HSM's internal database instead of files (one key handle).
    #[arg(long)]
    pub internal_db: bool,
    /// Replace existing AEADs.
    #[arg(long)]
    pub force: bool,
    /// Accepted for pyhsm compatibility; file names are always the public id as given.
    #[arg(long, hide = true)]
    pub public_id_chars: Option<usize>,
}

/// `ksm import-keys`: lines from `--input` or standard input; fails if any was rejected.
pub fn run(args: ImportArgs) -> Result<(), Error> {
    if let Some(key_id) = args.key_id {
        return run_hsm2(&args, ObjectId(key_id));
    }
    let khs = args.key_handles.parse()?;
    if args.internal_db && khs.len() != 1 {
        return Err(Error::Usage(
            "--internal-db takes exactly one key handle".into(),
        ));
    }
    let store = if args.internal_db {
        None
    } else {
        Some(args.output.open(khs.clone())?)
    };
    let mut hsm = args.dev.open()?;
    let opts = Options {
        key_handles: khs,
        random_nonce: args.random_nonce,
        force: args.force,
        internal_db: args.internal_db,
    };
    let mut reader = input(&args)?;
    let s = import(
        &mut hsm,
        store.as_deref(),
        &opts,
        &mut reader,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    if s.rejected > 0 {
        return Err(Error::LinesRejected(s.rejected));
    }
    Ok(())
}

fn input(args: &ImportArgs) -> Result<Box<dyn BufRead>, Error> {
    Ok(match &args.input {
        Some(p) => Box::new(BufReader::new(
            std::fs::File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    })
}

/// `import-keys --key-id`: on a YubiHSM 2.
fn run_hsm2(args: &ImportArgs, key_id: ObjectId) -> Result<(), Error> {
    if !args.random_nonce {
        return Err(Error::Usage(super::generate_keys::random_nonce_needed(
            "import-keys",
        )));
    }
    let device = tools::hsm2_device_arg(&args.dev)?;
    let store = args.output.open_keys(vec![AeadKey::OtpKey(key_id)])?;
    let mut dev = args.hsm2.open(&device, tools::hsm2_timeout(&args.dev)?)?;
    let mut reader = input(args)?;
    let s = import_hsm2(
        &mut dev,
        &*store,
        key_id,
        args.force,
        &mut reader,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    dev.close();
    let rejected = s?.rejected;
    if rejected > 0 {
        return Err(Error::LinesRejected(rejected));
    }
    Ok(())
}

/// Imports every line of `input` into a YubiHSM 2 (`Create OTP AEAD` under `key_id`), as
/// [`import`] does for a YubiHSM 1: ids with an AEAD under the key are kept unless
/// `force`, bad lines named and skipped.
pub fn import_hsm2(
    dev: &mut Hsm2Device,
    store: &dyn Store,
    key_id: ObjectId,
    force: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, Error> {
    let key = AeadKey::OtpKey(key_id);
    import_lines(input, out, err, |l| {
        if !force && store.exists_under(key, &l.id)? {
            return Ok(Ok(false));
        }
        let created = dev.call(|c, session| {
            c.create_otp_aead(session, key_id, Secret(l.secret.key), Secret(l.secret.uid))
        });
        let aead = match created {
            Ok(a) => a,
            // The device refused this one (a key it may not use, say): named, skipped.
            Err(Error::Hsm2(e)) if !e.is_transport_error() => return Ok(Err(e.to_string())),
            Err(e) => return Err(e),
        };
        Ok(
            match store.put(&l.id, &Sealed::Hsm2 { key_id, aead }, force) {
                Ok(_) => Ok(true),
                Err(StoreError::AlreadyExists(_)) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
        )
    })
}

/// How to import.
#[derive(Debug, Clone)]
pub struct Options {
    /// Key handles to seal each secret under.
    pub key_handles: Vec<KeyHandle>,
    /// Let the HSM choose each AEAD's nonce instead of using the public id.
    pub random_nonce: bool,
    /// Replace existing AEADs.
    pub force: bool,
    /// Store into the HSM's internal database (`DB_YUBIKEY_AEAD_STORE`) instead of files.
    pub internal_db: bool,
}

/// What happened.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Keys imported.
    pub imported: usize,
    /// Keys whose AEADs already existed.
    pub existing: usize,
    /// Lines rejected.
    pub rejected: usize,
}

/// The header every ykksm export starts with.
pub const HEADER: &str = "# ykksm 1";

/// One parsed data line.
struct Line {
    id: PublicId,
    secret: YubiKeySecret,
}

/// Parses a data line. Errors say which field (numbered from 1, as in the file) is wrong,
/// never what it holds.
fn parse_line(text: &str) -> Result<Line, String> {
    let f: Vec<&str> = text.split(',').map(str::trim).collect();
    if f.len() < 4 {
        return Err(format!(
            "expected at least 4 comma-separated fields, found {}",
            f.len()
        ));
    }
    let id = PublicId::new(f[1])
        .map_err(|_| "field 2 (public id) is not 2-16 modhex characters".to_string())?;
    if id.to_number() == 0 {
        return Err("public id 0 is not supported by the YubiHSM".into());
    }
    let uid = Zeroizing::new(
        hex::decode(f[2])
            .ok()
            .filter(|u| u.len() == 6)
            .ok_or("field 3 (uid) must be 12 hex digits")?,
    );
    let key = Zeroizing::new(
        hex::decode(f[3])
            .ok()
            .filter(|k| k.len() == 16)
            .ok_or("field 4 (AES key) must be 32 hex digits")?,
    );
    // Sized up front: growing it would leave an unwiped copy of the key behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(YubiKeySecret::LEN));
    bytes.extend_from_slice(&key);
    bytes.extend_from_slice(&uid);
    let secret = YubiKeySecret::from_bytes(&bytes).map_err(|e| e.to_string())?;
    Ok(Line { id, secret })
}

/// Imports every line of `input`. Line errors are written to `err` and counted; HSM or disk
/// failures of one key are reported the same way; nothing else is lost.
pub fn import(
    hsm: &mut Hsm,
    store: Option<&dyn Store>,
    opts: &Options,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Summary, Error> {
    import_lines(input, out, err, |parsed| {
        let result = import_one(hsm, store, opts, parsed);
        // One secret, loaded and sealed: other tools may use the device again.
        hsm.end_operation()?;
        Ok(result)
    })
}

/// The loop both kinds of HSM share: the header, then each data line parsed and handed to
/// `one`, which answers `Ok(Ok(false))` if its AEADs existed already, `Ok(Err(why))` to
/// skip the line (named by its number), or `Err` to stop the import (the device or store
/// is gone).
fn import_lines(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mut one: impl FnMut(&Line) -> Result<Result<bool, String>, Error>,
) -> Result<Summary, Error> {
    let header_ok = match super::read_secret_line(input)? {
        super::SecretLine::Text(t) => *t == HEADER,
        _ => false,
    };
    if !header_ok {
        return Err(Error::Input(format!(
            "did not get '{HEADER}' as the first line of input"
        )));
    }
    let mut s = Summary::default();
    for no in 2.. {
        let text = match super::read_secret_line(input)? {
            super::SecretLine::End => break,
            super::SecretLine::Invalid(why) => {
                let _ = writeln!(err, "line {no}: {why}; skipped");
                s.rejected += 1;
                continue;
            }
            super::SecretLine::Text(t) => t,
        };
        if text.trim().is_empty() || text.starts_with('#') {
            continue;
        }
        let parsed = match parse_line(&text) {
            Ok(p) => p,
            Err(why) => {
                let _ = writeln!(err, "line {no}: {why}; skipped");
                s.rejected += 1;
                continue;
            }
        };
        match one(&parsed)? {
            Ok(true) => s.imported += 1,
            Ok(false) => s.existing += 1,
            Err(why) => {
                let _ = writeln!(err, "line {no} ({}): {why}; skipped", parsed.id);
                s.rejected += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "Done: {} imported, {} already present, {} rejected",
        s.imported, s.existing, s.rejected
    );
    Ok(s)
}

/// `Ok(false)`: every AEAD already existed.
fn import_one(
    hsm: &mut Hsm,
    store: Option<&dyn Store>,
    opts: &Options,
    l: &Line,
) -> Result<bool, String> {
    let todo: Vec<KeyHandle> = match store {
        Some(st) if !opts.force => opts
            .key_handles
            .iter()
            .copied()
            .filter(|kh| !st.exists(*kh, &l.id).unwrap_or(false))
            .collect(),
        _ => opts.key_handles.clone(),
    };
    if todo.is_empty() {
        return Ok(false);
    }
    let nonce = if opts.random_nonce {
        Nonce::ZERO
    } else {
        l.id.to_nonce().map_err(|e| e.to_string())?
    };
    let count = hsm
        .buffer_load(0, &*l.secret.to_bytes())
        .map_err(|e| e.to_string())?;
    if usize::from(count) != YubiKeySecret::LEN {
        return Err(format!(
            "HSM buffer holds {count} bytes, expected {}",
            YubiKeySecret::LEN
        ));
    }
    for kh in todo {
        let (used, aead) = hsm
            .buffer_aead_generate(kh, nonce)
            .map_err(|e| e.to_string())?;
        if opts.internal_db {
            let a = hsm_proto::YubiKeyAead::try_from(&aead).map_err(|e| e.to_string())?;
            hsm.send(&DbYubikeyAeadStore {
                public_id: l.id.to_nonce().map_err(|e| e.to_string())?,
                key_handle: kh,
                aead: *a.as_bytes(),
            })
            .map_err(|e| e.to_string())?;
        } else if let Some(st) = store {
            match st.write(kh, &l.id, &used, &aead, opts.force) {
                Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(true)
}
