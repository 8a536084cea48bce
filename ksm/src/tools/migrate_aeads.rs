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
//! skipped, a broken one is written again. The YubiHSM 2 checks the result: the first AEAD
//! before anything is written (a wrong key or nonce id stops the run with nothing written),
//! then a random sample of all of them at the end, each rewrapped to its own key (see
//! `store verify --hsm`; the key needs the rewrap capabilities).

use std::io::Write;
use std::path::PathBuf;

use aead_store::{AeadKey, FsStore, NoncePolicy, Sealed, Store, StoreError};
use hsm2_proto::{ObjectId, OtpAead};
use hsm_proto::{KeyHandle, PublicId};
use rand::Rng;

use crate::hsm2_device::{Hsm2AuthArgs, Hsm2Device};
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
    #[arg(long, value_parser = crate::hsm2_device::object_id_arg)]
    pub to_key_id: u16,
    /// Write the YubiHSM 2 files to this directory (must exist) instead of beside the
    /// YubiHSM 1 ones in -B.
    #[arg(short = 'O', long = "output-dir")]
    pub output_dir: Option<PathBuf>,
    /// The YubiHSM 2 that checks a sample (http://host:port, usb, usb:SERIAL).
    #[arg(short = 'D', long = "device", required_unless_present = "no_check")]
    pub device: Option<String>,
    /// Its authentication key and password.
    #[command(flatten)]
    pub hsm2: Hsm2AuthArgs,
    /// How many AEADs, chosen at random, the YubiHSM 2 checks at the end.
    #[arg(long, default_value_t = 16)]
    pub sample: usize,
    /// Check nothing on a YubiHSM 2 (no -D needed).
    #[arg(long)]
    pub no_check: bool,
    /// Seconds to wait for each answer of the YubiHSM 2.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// Counts of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// YubiHSM 2 files written.
    pub migrated: usize,
    /// Targets already there and readable (an earlier run).
    pub skipped: usize,
    /// YubiHSM 1 files that are not usable YubiKey AEADs, or could not be written: named.
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
    let r = migrate(
        &from,
        kh,
        &target,
        to,
        dev.as_mut(),
        args.sample,
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
/// each failure and the counts. With a device, the first AEAD is checked before anything is
/// written and `sample` more at random at the end.
pub fn migrate(
    from: &dyn Store,
    kh: KeyHandle,
    target: &dyn Store,
    to: ObjectId,
    mut dev: Option<&mut Hsm2Device>,
    sample: usize,
    out: &mut dyn Write,
) -> Result<Migrated, Error> {
    let mut m = Migrated::default();
    let mut first_checked = false;
    // Reservoir sampling: every AEAD has the same chance, whatever the store's size.
    let mut reservoir: Vec<(PublicId, OtpAead)> = Vec::with_capacity(sample);
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
        if let (Some(d), false) = (dev.as_deref_mut(), first_checked) {
            check_on_hsm2(d, to, aead).map_err(|err| refused(&e.source, to, kh, &err))?;
            first_checked = true;
            m.checked += 1;
        }
        let sealed = Sealed::Hsm2 { key_id: to, aead };
        let wrote = match target.exists_under(to_key, &id)? {
            // Readable: an earlier run wrote it (or a rewrap since). Anything else there
            // (a broken file) is written again.
            true if target
                .lookup(&id)
                .is_ok_and(|found| found.is_some_and(|f| f.key() == to_key)) =>
            {
                Ok(false)
            }
            true => target.put(&id, &sealed, true).map(|_| true),
            false => target.put(&id, &sealed, false).map(|_| true),
        };
        match wrote {
            Ok(true) => m.migrated += 1,
            Ok(false) => m.skipped += 1,
            Err(err @ StoreError::Unavailable(_)) => return Err(err.into()),
            Err(err) => {
                m.failed += 1;
                let _ = writeln!(out, "FAILED {}: {err}", e.source);
                continue;
            }
        }
        seen += 1;
        if reservoir.len() < sample {
            reservoir.push((id, aead));
        } else if sample > 0 {
            let j = rand::thread_rng().gen_range(0..seen);
            if j < sample {
                reservoir[j] = (id, aead);
            }
        }
    }
    let _ = writeln!(
        out,
        "{} migrated, {} skipped (already there), {} failed",
        m.migrated, m.skipped, m.failed
    );
    if let Some(d) = dev {
        for (id, aead) in &reservoir {
            check_on_hsm2(d, to, *aead).map_err(|err| refused(id, to, kh, &err))?;
            m.checked += 1;
        }
        let _ = writeln!(
            out,
            "{} checked on the YubiHSM 2 under otp-aead-key {:#06x}",
            m.checked, to.0
        );
    }
    Ok(m)
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
    use hsm_proto::{Aead, Nonce};

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
        let m = migrate(&from, kh, &to, ObjectId(9), None, 4, &mut out).unwrap();
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
