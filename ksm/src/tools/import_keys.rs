//! `ksm import-keys`: YubiKey secrets from Yubico's KSM export format (`# ykksm 1`, then
//! `serial,public id,uid,aes key,lock code,created,accessed[,...]` lines) into AEADs. Each
//! secret goes into the HSM's buffer and is sealed there under every key handle; only AEADs
//! reach the disk. Bad lines are reported with their line number and skipped.
//!
//! Secrets in input lines: each line is read into memory wiped when dropped
//! ([`super::read_secret_line`]); fields are borrowed slices of it, decoded bytes are
//! `Zeroizing`, and errors name the line and the field, never a field's text (with the
//! columns shifted, the "public id" may be the AES key).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

use zeroize::Zeroizing;

use aead_store::{Store, StoreError};
use hsm_proto::cmd::DbYubikeyAeadStore;
use hsm_proto::{Hsm, KeyHandle, Nonce, PublicId, YubiKeySecret};

use crate::device::DeviceArgs;
use crate::tools::{KeyHandleArgs, OutputDirArgs};
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
    let mut reader: Box<dyn BufRead> = match &args.input {
        Some(p) => Box::new(BufReader::new(
            std::fs::File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
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
        let result = import_one(hsm, store, opts, &parsed);
        // One secret, loaded and sealed: other tools may use the device again.
        hsm.end_operation()?;
        match result {
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
