//! `ksm migrate-aeads`: every YubiHSM 1 AEAD file of one key handle rewritten as a YubiHSM 2
//! file, under the otp-aead-key that `ksm provision-hsm2` made of that handle's key.
//!
//! No secret is involved and no HSM 1 is needed: a YubiHSM 1 AEAD of handle K is already a
//! YubiHSM 2 AEAD under an otp-aead-key with the same key and nonce id LE32(K), once its
//! 6-byte nonce is put in front (see `provision_hsm2`). So the rewrite is bytes only:
//! `YubiHSM AEAD\n 01 K nonce aead` becomes `YubiHSM AEAD\n 02 N nonce‖aead`. The nonce stays
//! the public id, so the default nonce rule still binds each file to its YubiKey.
//!
//! Each file is written atomically (a temp file renamed into place), the YubiHSM 1 files are
//! left as they are, and a run resumes: a target that is already there and readable is
//! skipped, a broken one is written again. The YubiHSM 2 checks the result, each AEAD
//! rewrapped to its own key (see `store verify --hsm`; the key needs the rewrap
//! capabilities): the first AEADs before anything is written, until one opens (if the first
//! three are all refused, or every one is, the key or its nonce id is wrong: the run stops
//! with nothing written); then either a random sample of all of them at the end
//! (`--check sample`, the default) or every AEAD before it is written (`--check all`).
//!
//! An AEAD the device refuses once the key has opened another is that AEAD's fault (made
//! with another key, or corrupt), not the key's: it is named on a `FAILED` line and counted
//! as failed, not migrated, in the counts, which are printed after every check, so they and
//! the exit status always agree.

use std::io::Write;
use std::path::PathBuf;

use aead_store::{AeadKey, AeadSource, FsStore, NoncePolicy, Sealed, Store, StoreError};
use hsm2_proto::{ObjectId, OtpAead};
use hsm_proto::KeyHandle;
use rand::Rng;

use crate::device::hsm2::{Hsm2AuthArgs, Hsm2Device};
use crate::tools::store_cmd::check_on_hsm2;
use crate::Error;

/// `ksm migrate-aeads`'s arguments.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The AEAD directory holding the YubiHSM 1 files.
    #[arg(short = 'B', long = "aead-dir")]
    pub aead_dir: PathBuf,
    /// The YubiHSM 1 key handle whose AEADs are migrated.
    #[arg(long)]
    pub key_handle: String,
    /// The otp-aead-key made of that handle's key (`ksm provision-hsm2 --key-id`).
    #[arg(long, value_parser = crate::device::hsm2::object_id_arg)]
    pub to_key_id: u16,
    /// Write the YubiHSM 2 files to this directory (must exist) instead of beside the
    /// YubiHSM 1 ones in -B.
    #[arg(short = 'O', long = "output-dir")]
    pub output_dir: Option<PathBuf>,
    /// The YubiHSM 2 that checks them (http://host:port, usb, usb:SERIAL).
    #[arg(short = 'D', long = "device", required_unless_present = "no_check")]
    pub device: Option<String>,
    /// Its authentication key and password.
    #[command(flatten)]
    pub hsm2: Hsm2AuthArgs,
    /// How many AEADs, chosen at random, the YubiHSM 2 checks at the end (`--check sample`).
    #[arg(long, default_value_t = 16)]
    pub sample: usize,
    /// What the YubiHSM 2 checks: a random sample of the migrated AEADs at the end
    /// (`--sample`), or every AEAD before it is written.
    #[arg(long, value_enum, default_value_t = CheckWhat::Sample, conflicts_with = "no_check")]
    pub check: CheckWhat,
    /// Check nothing on a YubiHSM 2 (no -D needed).
    #[arg(long)]
    pub no_check: bool,
    /// Seconds to wait for each answer of the YubiHSM 2.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// What `--check` asks the YubiHSM 2 to prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckWhat {
    /// A random sample (`--sample N`) of the AEADs, after they are written.
    Sample,
    /// Every AEAD, before it is written: a refused one is not written.
    All,
}

/// What the YubiHSM 2 checks in [`migrate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// This many AEADs chosen at random, at the end.
    Sample(usize),
    /// Every AEAD, before it is written.
    All,
}

/// How many AEADs in a row, before any opened, the device may refuse before the key (not
/// the AEADs) is taken to be wrong.
const REFUSED_BEFORE_BLAMING_THE_KEY: usize = 3;

/// Counts of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// YubiHSM 2 files written.
    pub migrated: usize,
    /// Targets already there and readable (an earlier run).
    pub skipped: usize,
    /// YubiHSM 1 files that are not usable YubiKey AEADs, could not be written, or whose
    /// AEAD the YubiHSM 2 refused: named.
    pub failed: usize,
    /// AEADs the YubiHSM 2 opened.
    pub checked: usize,
}

/// `ksm migrate-aeads`: fails (exit 1) if any file failed, and stops at once if the
/// YubiHSM 2 does not open a migrated AEAD.
pub fn run(args: MigrateArgs) -> Result<(), Error> {
    let kh = KeyHandle::parse(&args.key_handle)?;
    let to = ObjectId(args.to_key_id);
    let from = FsStore::open(&args.aead_dir, vec![kh])?.with_nonce_policy(NoncePolicy::Any);
    let target_dir = args.output_dir.as_ref().unwrap_or(&args.aead_dir);
    let target = FsStore::open_keys(target_dir, vec![AeadKey::OtpKey(to)])?
        .with_nonce_policy(NoncePolicy::Any);
    let mut dev = match (&args.device, args.no_check) {
        (Some(d), false) => Some(args.hsm2.open(
            d,
            std::time::Duration::from_secs(args.timeout.clamp(1, 600)),
        )?),
        _ => None,
    };
    let check = match args.check {
        CheckWhat::Sample => Check::Sample(args.sample),
        CheckWhat::All => Check::All,
    };
    let r = migrate(
        &from,
        kh,
        &target,
        to,
        dev.as_mut(),
        check,
        &mut std::io::stdout(),
    );
    if let Some(d) = dev {
        d.close();
    }
    let m = r?;
    if m.failed > 0 {
        return Err(Error::AeadsFailed(m.failed));
    }
    Ok(())
}

/// Migrates every AEAD of `kh` in `from` into `target` under otp-aead-key `to`, printing
/// each failure and then the counts. With a device, the first AEADs are checked before
/// anything is written (until one opens), then what `check` says.
pub fn migrate(
    from: &dyn Store,
    kh: KeyHandle,
    target: &dyn Store,
    to: ObjectId,
    mut dev: Option<&mut Hsm2Device>,
    check: Check,
    out: &mut dyn Write,
) -> Result<Migrated, Error> {
    let mut m = Migrated::default();
    // Refused before any AEAD opened: the key's fault or theirs, not known yet.
    let mut refused_first: Vec<(AeadSource, Error)> = Vec::new();
    let mut key_opens = false;
    let sample = match check {
        Check::Sample(n) => n,
        Check::All => 0,
    };
    // Reservoir sampling: every AEAD has the same chance, whatever the store's size.
    let mut reservoir: Vec<Sampled> = Vec::with_capacity(sample);
    let mut seen = 0usize;
    let to_key = AeadKey::OtpKey(to);
    for e in from.entries() {
        if e.dir_key != AeadKey::Handle(kh) {
            continue;
        }
        let (stored, id) = match (e.result, e.id) {
            (Err(err @ StoreError::Unavailable(_)), _) => return Err(err.into()),
            (Err(err), _) => {
                m.failed += 1;
                let _ = writeln!(out, "FAILED {err}");
                continue;
            }
            (Ok(s), Some(id)) => (s, id),
            (Ok(_), None) => {
                m.failed += 1;
                let _ = writeln!(out, "FAILED {}: no public id", e.source);
                continue;
            }
        };
        let Some(aead) = as_hsm2(&stored.sealed) else {
            m.failed += 1;
            let _ = writeln!(
                out,
                "FAILED {}: not a 30-byte YubiKey AEAD of key handle {kh}",
                e.source
            );
            continue;
        };
        if let Some(d) = dev.as_deref_mut() {
            if !key_opens || check == Check::All {
                match check_on_hsm2(d, to, aead) {
                    Ok(()) => {
                        m.checked += 1;
                        if !key_opens {
                            key_opens = true;
                            // The key opens AEADs: those refused before are theirs to blame.
                            for (source, err) in refused_first.drain(..) {
                                m.failed += 1;
                                let _ = writeln!(out, "FAILED {source}: {}", not_opened(to, &err));
                            }
                        }
                    }
                    Err(Error::Hsm2(err)) if err.is_transport_error() => {
                        return Err(Error::Hsm2(err))
                    }
                    Err(err) if key_opens => {
                        m.failed += 1;
                        let _ = writeln!(out, "FAILED {}: {}", e.source, not_opened(to, &err));
                        continue;
                    }
                    Err(err) => {
                        refused_first.push((e.source.clone(), err));
                        if refused_first.len() >= REFUSED_BEFORE_BLAMING_THE_KEY {
                            let (source, err) = &refused_first[0];
                            return Err(refused(source, to, kh, err));
                        }
                        continue;
                    }
                }
            }
        }
        let sealed = Sealed::Hsm2 { key_id: to, aead };
        let wrote = match target.exists_under(to_key, &id)? {
            // What an earlier run wrote: the same bytes. Anything else there (a broken
            // file, or the AEAD of a YubiKey personalised again since) is written again:
            // the YubiHSM 1 file is what is being migrated.
            true => match target.lookup(&id) {
                Ok(Some(f)) if f.key() == to_key && f.otp_aead() == Some(&aead) => Ok(false),
                found => {
                    if let Ok(Some(f)) = found.as_ref() {
                        if f.key() == to_key {
                            let _ = writeln!(
                                out,
                                "UPDATED {}: differed from its YubiHSM 1 AEAD, written again",
                                f.source
                            );
                        }
                    }
                    target.put(&id, &sealed, true).map(|_| true)
                }
            },
            false => target.put(&id, &sealed, false).map(|_| true),
        };
        let written = match wrote {
            Ok(true) => {
                m.migrated += 1;
                true
            }
            Ok(false) => {
                m.skipped += 1;
                false
            }
            Err(err @ StoreError::Unavailable(_)) => return Err(err.into()),
            Err(err) => {
                m.failed += 1;
                let _ = writeln!(out, "FAILED {}: {err}", e.source);
                continue;
            }
        };
        seen += 1;
        let s = Sampled {
            source: e.source,
            aead,
            written,
        };
        if reservoir.len() < sample {
            reservoir.push(s);
        } else if sample > 0 {
            let j = rand::thread_rng().gen_range(0..seen);
            if j < sample {
                reservoir[j] = s;
            }
        }
    }
    if let Some((source, err)) = refused_first.first() {
        // Every AEAD there was refused, and nothing was written.
        return Err(refused(source, to, kh, err));
    }
    if let Some(d) = dev.as_deref_mut() {
        for s in &reservoir {
            match check_on_hsm2(d, to, s.aead) {
                Ok(()) => m.checked += 1,
                Err(Error::Hsm2(err)) if err.is_transport_error() => return Err(Error::Hsm2(err)),
                Err(err) => {
                    // Written (or there) but refused: a failure, not a migration.
                    if s.written {
                        m.migrated -= 1;
                    } else {
                        m.skipped -= 1;
                    }
                    m.failed += 1;
                    let _ = writeln!(out, "FAILED {}: {}", s.source, not_opened(to, &err));
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} migrated, {} skipped (already there), {} failed",
        m.migrated, m.skipped, m.failed
    );
    if dev.is_some() {
        let _ = writeln!(
            out,
            "{} checked on the YubiHSM 2 under otp-aead-key {:#06x}",
            m.checked, to.0
        );
    }
    Ok(m)
}

/// An AEAD kept for the final check, with the YubiHSM 1 file it came from (which names it
/// if refused) and whether this run wrote it.
struct Sampled {
    source: AeadSource,
    aead: OtpAead,
    written: bool,
}

/// Why one AEAD failed the check, once the key has opened others: that AEAD is wrong.
fn not_opened(to: ObjectId, err: &Error) -> String {
    format!(
        "the YubiHSM 2 does not open this AEAD under otp-aead-key {:#06x} ({err}), though it opens others: made with another key, or corrupt",
        to.0
    )
}

/// The YubiHSM 2 form of a YubiHSM 1 YubiKey AEAD: its nonce in front of its 30 bytes.
fn as_hsm2(sealed: &Sealed) -> Option<OtpAead> {
    match sealed {
        Sealed::Hsm1 { nonce, aead, .. } => {
            let bytes: [u8; 30] = aead.as_bytes().try_into().ok()?;
            Some(OtpAead::from_yubihsm1(nonce.0, bytes))
        }
        Sealed::Hsm2 { .. } => None,
    }
}

/// A transport failure stays what it is; a refusal says what it most likely means.
fn refused(what: &dyn std::fmt::Display, to: ObjectId, kh: KeyHandle, err: &Error) -> Error {
    match err {
        Error::Hsm2(e) if e.is_transport_error() => Error::Hsm2(e.clone()),
        _ => Error::DeviceAnswer(format!(
            "the YubiHSM 2 does not open {what} under otp-aead-key {:#06x} ({err}); was it made by `ksm provision-hsm2` from the key of handle {kh}, and may it rewrap (rewrap-from/to-otp-aead-key)? The YubiHSM 1 files are untouched.",
            to.0
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aead_store::format;
    use hsm_proto::{Aead, Nonce, PublicId};

    fn put(base: &std::path::Path, kh_dir: &str, id: &str, bytes: &[u8]) {
        let p = aead_store::layout::aead_path(&base.join(kh_dir), &PublicId::new(id).unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn unusable_files_are_named_and_counted_and_the_rest_migrated() {
        let d = tempfile::tempdir().unwrap();
        let kh = KeyHandle(0x20);
        let n = |id: &str| PublicId::new(id).unwrap().to_nonce().unwrap();
        let good = Aead::new(&[7; 30]).unwrap();
        put(
            d.path(),
            "0x20",
            "cccccccccccb",
            &format::write_v1(kh, &n("cccccccccccb"), &good),
        );
        // A version-0 file: its nonce is its name.
        put(d.path(), "0x20", "cccccccccccd", &[8; 30]);
        // Not a YubiKey AEAD (16 bytes), and not an AEAD file at all.
        let short = Aead::new(&[9; 16]).unwrap();
        put(
            d.path(),
            "0x20",
            "ccccccccccce",
            &format::write_v1(kh, &n("ccccccccccce"), &short),
        );
        put(d.path(), "0x20", "cccccccccccf", b"YubiHSM AEAD\n\x07");
        // Another handle's file is not touched.
        put(
            d.path(),
            "0x21",
            "cccccccccccg",
            &format::write_v1(KeyHandle(0x21), &Nonce([0; 6]), &good),
        );
        let from = FsStore::open(d.path(), vec![kh]).unwrap();
        let to = FsStore::open_keys(d.path(), vec![AeadKey::OtpKey(ObjectId(9))]).unwrap();
        let mut out = Vec::new();
        let m = migrate(
            &from,
            kh,
            &to,
            ObjectId(9),
            None,
            Check::Sample(4),
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            m,
            Migrated {
                migrated: 2,
                skipped: 0,
                failed: 2,
                checked: 0
            },
            "{out}"
        );
        assert!(
            out.contains("ccccccccccce: not a 30-byte YubiKey AEAD"),
            "{out}"
        );
        assert!(
            out.contains("cccccccccccf: unknown AEAD file format version 7"),
            "{out}"
        );
        assert!(
            out.contains("2 migrated, 0 skipped (already there), 2 failed"),
            "{out}"
        );
        let v0 = to
            .lookup(&PublicId::new("cccccccccccd").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(
            v0.otp_aead(),
            Some(&OtpAead::from_yubihsm1(n("cccccccccccd").0, [8; 30]))
        );
        assert!(!d
            .path()
            .join("otp-aead-key-0x0009")
            .join("cc")
            .join("cc")
            .join("cc")
            .join("cc")
            .join("cc")
            .join("cg")
            .exists());
    }
}
