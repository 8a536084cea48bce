//! `ksm decrypt-aead`: offline, with a key-handle key from a protected file, decrypt AEAD
//! files back to YubiKey secrets, e.g. as `ykksm 1` lines for the personalisation site.
//! The key never appears in argv; the output holds secrets and goes where the operator
//! sends it.

use std::io::Write;
use std::path::{Path, PathBuf};

use aead_store::format::{self, AeadFile};
use aead_store::FsStore;
use hsm_proto::{aead, AesKey, KeyHandle, PublicId};

use crate::Error;

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

fn files(paths: &[PathBuf], out: &mut Vec<PathBuf>) {
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            entries.sort();
            files(&entries, out);
        } else {
            out.push(p.clone());
        }
    }
}

/// Decrypts every AEAD file under `paths`; returns (done, failed).
pub fn run(
    opts: &Options,
    paths: &[PathBuf],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(usize, usize), Error> {
    let mut all = Vec::new();
    files(paths, &mut all);
    let (mut done, mut failed) = (0usize, 0usize);
    if opts.format == Format::YubikeyCsv {
        let _ = writeln!(out, "{}", super::import_keys::HEADER);
    }
    for path in all {
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
                    format!("{} ", path.display())
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
                            path.display(),
                            plain.len()
                        );
                    }
                    Format::Aead => {
                        if let Some((store, kh, key)) = &opts.reencrypt {
                            let a = aead::seal(key, *kh, &nonce, &plain)?;
                            store
                                .write(*kh, &id, &nonce, &a, false)
                                .map_err(|e| Error::Usage(e.to_string()))?;
                        }
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(err, "{}: {e}", path.display());
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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    match format::parse(&bytes).map_err(|e| Error::Usage(format!("malformed AEAD file: {e:?}")))? {
        AeadFile::V1 {
            key_handle,
            nonce,
            aead,
        } => Ok((key_handle, nonce, aead)),
        AeadFile::V0(a) => {
            let kh = kh_for_v0
                .ok_or_else(|| Error::Usage("version-0 file: --key-handle is needed".into()))?;
            Ok((kh, PublicId::new(name)?.to_nonce()?, a))
        }
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
