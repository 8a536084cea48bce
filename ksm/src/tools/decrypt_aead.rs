//! `ksm decrypt-aead`: offline, with a key-handle key from a protected file, decrypt AEAD
//! files back to YubiKey secrets, e.g. as `ykksm 1` lines for the personalisation site.
//! The key never appears in argv; the output holds secrets and goes where the operator
//! sends it.
//!
//! Whatever lies in the trees it is given, it neither blocks, nor reads without bound, nor
//! loops: files are read with [`aead_store::read_aead_file`] (no blocking open, regular
//! files only, at most one byte more than any AEAD file), and the walk does not follow
//! symlinked directories (and visits each directory once, by device and inode). What it
//! cannot read is an error naming the path; the rest is still decrypted.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aead_store::format::AeadFile;
use aead_store::{read_aead_file, FsStore, Sealed, Store as _};
use hsm_proto::{aead, AesKey, KeyHandle, PublicId};

use crate::tools;
use crate::Error;

/// `ksm decrypt-aead`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DecryptArgs {
    /// File holding the key-handle AES key in hex (mode 0600). Keys are never taken from
    /// the command line.
    #[arg(long)]
    pub aes_key_file: PathBuf,
    /// Key handle for version-0 files, which do not record one.
    #[arg(long)]
    pub key_handle: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: Format,
    /// With --format aead: AEAD directory to write to.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// With --format aead: key handle to seal under.
    #[arg(long)]
    pub key_handle_out: Option<String>,
    /// With --format aead: file holding the new key (hex, mode 0600).
    #[arg(long)]
    pub aes_key_out_file: Option<PathBuf>,
    /// Only public ids from this one (number or modhex).
    #[arg(long)]
    pub start_public_id: Option<String>,
    /// Only public ids up to this one (number or modhex).
    #[arg(long)]
    pub stop_public_id: Option<String>,
    /// Prefix each output line with the file name.
    #[arg(long)]
    pub print_filename: bool,
    /// Stop at the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// AEAD files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// `ksm decrypt-aead`: secrets on standard output, failures on standard error; fails if
/// any AEAD failed.
pub fn run(args: DecryptArgs) -> Result<(), Error> {
    let reencrypt = if args.format == Format::Aead {
        let (Some(dir), Some(kh), Some(keyf)) =
            (args.output_dir, args.key_handle_out, args.aes_key_out_file)
        else {
            return Err(Error::Usage(
                "--format aead needs --output-dir, --key-handle-out and --aes-key-out-file".into(),
            ));
        };
        let kh = KeyHandle::parse(&kh)?;
        Some((
            FsStore::open(&dir, vec![kh])?,
            kh,
            tools::read_key_file(&keyf)?,
        ))
    } else {
        None
    };
    let id_num = |s: Option<String>| -> Result<Option<u64>, Error> {
        s.map(|v| tools::public_id_arg(&v, 12).map(|i| i.to_number()))
            .transpose()
    };
    let opts = Options {
        key: tools::read_key_file(&args.aes_key_file)?,
        key_handle: args
            .key_handle
            .as_deref()
            .map(KeyHandle::parse)
            .transpose()?,
        format: args.format,
        reencrypt,
        start: id_num(args.start_public_id)?,
        stop: id_num(args.stop_public_id)?,
        print_filename: args.print_filename,
        fail_fast: args.fail_fast,
    };
    let (_, failed) = decrypt(
        &opts,
        &args.paths,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )?;
    if failed > 0 {
        return Err(Error::AeadsFailed(failed));
    }
    Ok(())
}

/// Output formats, as pyhsm's `yhsm-decrypt-aead --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Hex of the plaintext (AES key ‖ uid for a YubiKey).
    Raw,
    /// `ykksm 1` lines: `N,public id,uid,aes key,000000000000,,,,,,`, after a `# ykksm 1` header.
    YubikeyCsv,
    /// Re-encrypt under another key handle and key into an AEAD directory.
    Aead,
}

/// What to decrypt and how.
pub struct Options {
    /// The key-handle key.
    pub key: AesKey,
    /// Key handle for version-0 files (which do not record one).
    pub key_handle: Option<KeyHandle>,
    /// Output format.
    pub format: Format,
    /// For `aead`: where, with which handle and key.
    pub reencrypt: Option<(FsStore, KeyHandle, AesKey)>,
    /// Only ids from here (inclusive).
    pub start: Option<u64>,
    /// Only ids up to here (inclusive).
    pub stop: Option<u64>,
    /// Prefix each line with the file name.
    pub print_filename: bool,
    /// Stop at the first failure.
    pub fail_fast: bool,
}

/// Every file under `paths`, in name order, or why a path could not be walked.
///
/// A path the operator named is followed if it is a symlink; below it, a symlink to a
/// directory is reported, not followed (so `loop -> ..` cannot make the walk go round), and
/// each directory is listed once (`seen`, by device and inode: bind mounts). A symlink to a
/// file is kept: reading it is as safe as reading any file.
fn files(
    paths: &[PathBuf],
    named: bool,
    seen: &mut HashSet<(u64, u64)>,
    out: &mut Vec<Result<PathBuf, (PathBuf, String)>>,
) {
    for p in paths {
        let meta = if named {
            std::fs::metadata(p)
        } else {
            std::fs::symlink_metadata(p)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                out.push(Err((p.clone(), e.to_string())));
                continue;
            }
        };
        if meta.is_symlink() {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => {
                    out.push(Err((
                        p.clone(),
                        "symlink to a directory: not followed".into(),
                    )));
                }
                // A symlink to a file (or to something else, which the read refuses).
                Ok(_) => out.push(Ok(p.clone())),
                Err(e) => out.push(Err((p.clone(), format!("symlink: {e}")))),
            }
            continue;
        }
        if !meta.is_dir() {
            out.push(Ok(p.clone()));
            continue;
        }
        if !seen.insert((meta.dev(), meta.ino())) {
            out.push(Err((
                p.clone(),
                "directory already walked: not walked again".into(),
            )));
            continue;
        }
        match std::fs::read_dir(p).and_then(|d| {
            d.map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
        }) {
            Ok(mut entries) => {
                entries.sort();
                files(&entries, false, seen, out);
            }
            Err(e) => out.push(Err((p.clone(), e.to_string()))),
        }
    }
}

/// Decrypts every AEAD file under `paths`; returns (done, failed).
pub fn decrypt(
    opts: &Options,
    paths: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(usize, usize), Error> {
    let mut all = Vec::new();
    files(paths, true, &mut HashSet::new(), &mut all);
    let (mut done, mut failed) = (0usize, 0usize);
    if opts.format == Format::YubikeyCsv {
        let _ = writeln!(out, "{}", super::import_keys::HEADER);
    }
    for path in all {
        let path = match path {
            Ok(p) => p,
            Err((p, why)) => {
                failed += 1;
                let _ = writeln!(err, "{}: {why}", aead_store::shown(&p));
                if opts.fail_fast {
                    break;
                }
                continue;
            }
        };
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Ok(id) = PublicId::new(name) else {
            continue;
        };
        let n = id.to_number();
        if opts.start.is_some_and(|s| n < s) || opts.stop.is_some_and(|s| n > s) {
            continue;
        }
        match decrypt_one(opts, &path) {
            Ok((nonce, plain)) => {
                done += 1;
                let prefix = if opts.print_filename {
                    format!("{} ", aead_store::shown(&path))
                } else {
                    String::new()
                };
                match opts.format {
                    Format::Raw => {
                        let _ = writeln!(out, "{prefix}{}", hex::encode(&*plain));
                    }
                    Format::YubikeyCsv if plain.len() == 22 => {
                        let _ = writeln!(
                            out,
                            "{prefix}{done},{id},{},{},000000000000,,,,,,",
                            hex::encode(&plain[16..]),
                            hex::encode(&plain[..16])
                        );
                    }
                    Format::YubikeyCsv => {
                        done -= 1;
                        failed += 1;
                        let _ = writeln!(
                            err,
                            "{}: not a YubiKey secret ({} bytes)",
                            aead_store::shown(&path),
                            plain.len()
                        );
                    }
                    Format::Aead => {
                        if let Some((store, kh, key)) = &opts.reencrypt {
                            let a = aead::seal(key, *kh, &nonce, &plain)?;
                            store.write(*kh, &id, &nonce, &a, false)?;
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(err, "{}: {e}", aead_store::shown(&path));
                if opts.fail_fast {
                    break;
                }
            }
        }
    }
    if failed > 0 {
        let _ = writeln!(err, "error: {failed}/{} AEADs failed", done + failed);
    }
    Ok((done, failed))
}

fn read(
    path: &Path,
    kh_for_v0: Option<KeyHandle>,
) -> Result<(KeyHandle, hsm_proto::Nonce, hsm_proto::Aead), Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match read_aead_file(path)? {
        AeadFile::Keyed(Sealed::Hsm1 {
            key_handle,
            nonce,
            aead,
        }) => Ok((key_handle, nonce, aead)),
        AeadFile::V0(a) => {
            let kh = kh_for_v0
                .ok_or_else(|| Error::Usage("version-0 file: --key-handle is needed".into()))?;
            Ok((kh, PublicId::new(name)?.to_nonce()?, a))
        }
        AeadFile::Keyed(Sealed::Hsm2 { .. }) => Err(Error::Usage(format!(
            "{}: a YubiHSM 2 AEAD file; decrypt-aead reads YubiHSM 1 files only",
            aead_store::shown(&path)
        ))),
    }
}

/// The AEAD's nonce and plaintext.
fn decrypt_one(
    opts: &Options,
    path: &Path,
) -> Result<(hsm_proto::Nonce, zeroize::Zeroizing<Vec<u8>>), Error> {
    let (kh, nonce, a) = read(path, opts.key_handle)?;
    Ok((nonce, aead::open(&opts.key, kh, &nonce, &a)?))
}
