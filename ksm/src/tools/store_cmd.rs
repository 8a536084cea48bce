//! `ksm store verify` and `ksm store stats`: what is in the AEAD directory (or database),
//! and what is wrong with it; `ksm store db-init`, `db-import` and `db-export`: pyhsm's
//! `aead_table` made, filled from a directory, and written back out as one.
//!
//! With an HSM, verify also asks the device whether it can open each AEAD, using
//! `AEAD_DECRYPT_CMP` with the AEAD alone (no expected plaintext). Yubico's interface header
//! says that form only authenticates the AEAD; pyhsm never uses it, so whether a real device
//! treats it so is not confirmed (the emulator does). An AEAD that fails there is reported as
//! rejected; a device that refuses the form altogether shows up as every AEAD rejected with
//! the same status, which the report makes plain.

use std::io::Write;
use std::path::PathBuf;

use aead_store::{
    stats, AeadKey, DbConfig, DbStore, FsStore, NoncePolicy, Sealed, Store, StoreError,
};
use hsm_proto::{Hsm, KeyHandle, YubiKeyAead};

use crate::device::hsm2::{Hsm2AuthArgs, Hsm2Device};
use crate::device::DeviceArgs;
use crate::settings::options::DEFAULT_AEAD_DIR;
use crate::settings::parse::{db_url, nonce_policy};
use crate::Error;

/// `ksm store`'s arguments.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub cmd: StoreCmd,
}

/// `ksm store …`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCmd {
    /// Report unreadable, malformed and misplaced AEAD files; with -D, also AEADs the HSM
    /// will not open.
    Verify {
        /// The AEAD directory.
        #[command(flatten)]
        dir: AeadDirArgs,
        /// Also ask the HSM to open every AEAD: -D's device, else the daemon's socket.
        #[arg(long)]
        hsm: bool,
        /// Where the HSM is (implies --hsm); -D http://… (or usb) for a YubiHSM 2.
        #[command(flatten)]
        dev: DeviceArgs,
        /// For a YubiHSM 2: its authentication key and password.
        #[command(flatten)]
        hsm2: Hsm2AuthArgs,
        /// The store was made with --random-nonce: AEADs whose nonce is not their public id
        /// are still listed, but do not make verify fail.
        #[arg(long)]
        random_nonce_aeads: bool,
    },
    /// Count AEADs per key handle.
    Stats {
        /// The AEAD directory.
        #[command(flatten)]
        dir: AeadDirArgs,
    },
    /// Create pyhsm's aead_table in a database if it is missing (an existing one keeps its
    /// columns) and, on PostgreSQL, the trigger that tells every KSM of changed rows.
    DbInit {
        /// The database: postgresql://USER@HOST/DB, mysql://USER@HOST/DB, sqlite:///PATH.
        url: String,
        /// Private file whose first line is the database password.
        #[arg(long)]
        db_password_file: Option<PathBuf>,
    },
    /// Copy an AEAD directory into a database (pyhsm's yhsm-db-import): resumable (rows
    /// present are kept), bad files named and skipped.
    DbImport {
        /// The AEAD directory.
        dir: PathBuf,
        /// The database.
        url: String,
        /// Private file whose first line is the database password.
        #[arg(long)]
        db_password_file: Option<PathBuf>,
    },
    /// Write a database's AEADs out as an AEAD directory in pyhsm's layout (pyhsm's
    /// yhsm-db-export): resumable (files present are kept), bad rows named and skipped.
    DbExport {
        /// The database.
        url: String,
        /// The AEAD directory (must exist).
        dir: PathBuf,
        /// Private file whose first line is the database password.
        #[arg(long)]
        db_password_file: Option<PathBuf>,
    },
}

/// `--db-url` (and its password file): a database instead of a directory.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DbArgs {
    /// AEADs in this database instead (postgresql://, mysql://, sqlite:///; no password in
    /// the URL).
    #[arg(long = "db-url")]
    pub db_url: Option<String>,
    /// Private file (mode 0600) whose first line is the database password.
    #[arg(long)]
    pub db_password_file: Option<PathBuf>,
}

impl DbArgs {
    /// The database store, if `--db-url` was given: uncached, as tools want it.
    pub fn open(
        &self,
        key_handles: Vec<KeyHandle>,
        policy: NoncePolicy,
    ) -> Result<Option<DbStore>, Error> {
        let Some(url) = &self.db_url else {
            return Ok(None);
        };
        open_db(url, self.db_password_file.clone(), key_handles, policy).map(Some)
    }
}

impl DbArgs {
    /// [`DbArgs::open`] with keys of either kind.
    pub fn open_keys(
        &self,
        keys: Vec<AeadKey>,
        policy: NoncePolicy,
    ) -> Result<Option<DbStore>, Error> {
        let Some(url) = &self.db_url else {
            return Ok(None);
        };
        let mut cfg = DbConfig::with_keys(db_url(url)?, keys);
        cfg.password_file = self.db_password_file.clone();
        cfg.nonce_policy = policy;
        Ok(Some(DbStore::open(cfg)?))
    }
}

fn open_db(
    url: &str,
    password_file: Option<PathBuf>,
    key_handles: Vec<KeyHandle>,
    policy: NoncePolicy,
) -> Result<DbStore, Error> {
    let mut cfg = DbConfig::new(db_url(url)?, key_handles);
    cfg.password_file = password_file;
    cfg.nonce_policy = policy;
    Ok(DbStore::open(cfg)?)
}

/// `-B`: the AEAD directory to look at, or `--db-url`: the database.
#[derive(Debug, clap::Args)]
pub struct AeadDirArgs {
    /// AEAD directory.
    #[arg(short = 'B', long = "aead-dir", default_value = DEFAULT_AEAD_DIR)]
    pub aead_dir: PathBuf,
    /// The database instead.
    #[command(flatten)]
    pub db: DbArgs,
}

impl AeadDirArgs {
    /// The store, looking AEADs up under `keys` in this order.
    pub fn open_keys(
        &self,
        keys: Vec<AeadKey>,
        policy: NoncePolicy,
    ) -> Result<Box<dyn Store>, Error> {
        Ok(match self.db.open_keys(keys.clone(), policy)? {
            Some(db) => Box::new(db),
            None => Box::new(FsStore::open_keys(&self.aead_dir, keys)?.with_nonce_policy(policy)),
        })
    }

    fn open(&self, policy: NoncePolicy) -> Result<Box<dyn Store>, Error> {
        Ok(match self.db.open(Vec::new(), policy)? {
            Some(db) => Box::new(db),
            None => Box::new(FsStore::open(&self.aead_dir, Vec::new())?.with_nonce_policy(policy)),
        })
    }
}

/// `ksm store verify` (fails if it finds problems) or `ksm store stats`.
pub fn run(args: StoreArgs) -> Result<(), Error> {
    let mut out = std::io::stdout();
    match args.cmd {
        StoreCmd::Verify {
            dir,
            hsm,
            dev,
            hsm2,
            random_nonce_aeads,
        } => {
            let policy = nonce_policy(random_nonce_aeads);
            let store = dir.open(policy)?;
            let is_hsm2 = dev
                .device
                .as_ref()
                .and_then(|d| d.to_str())
                .is_some_and(crate::device::hsm2::Hsm2Spec::is_hsm2);
            let r = if is_hsm2 {
                let device = crate::tools::hsm2_device_arg(&dev)?;
                let mut d = hsm2.open(&device, crate::tools::hsm2_timeout(&dev)?)?;
                let r = verify(&*store, Some(Checker::Hsm2(&mut d)), &mut out);
                d.close();
                r?
            } else if hsm || dev.device.is_some() {
                let mut h = dev.open()?;
                verify(&*store, Some(Checker::Hsm1(&mut h)), &mut out)?
            } else {
                verify(&*store, None, &mut out)?
            };
            let nonce_problems = match policy {
                NoncePolicy::PublicId => r.nonce_differs,
                NoncePolicy::Any => 0,
            };
            if r.bad + r.misplaced + r.rejected + nonce_problems > 0 {
                return Err(Error::VerifyFailed);
            }
            Ok(())
        }
        StoreCmd::Stats { dir } => {
            print_stats(&*dir.open(NoncePolicy::PublicId)?, &mut out);
            Ok(())
        }
        StoreCmd::DbInit {
            url,
            db_password_file,
        } => {
            let db = open_db(&url, db_password_file, Vec::new(), NoncePolicy::PublicId)?;
            db.init()?;
            let _ = writeln!(out, "aead_table ready");
            Ok(())
        }
        StoreCmd::DbImport {
            dir,
            url,
            db_password_file,
        } => {
            let from = FsStore::open(&dir, Vec::new())?;
            let to = open_db(&url, db_password_file, Vec::new(), NoncePolicy::PublicId)?;
            copy_all(&from, &to, &mut out)
        }
        StoreCmd::DbExport {
            url,
            dir,
            db_password_file,
        } => {
            // Rows go out as they are: a file carries its nonce, and whoever serves the
            // directory applies its own nonce rule to it.
            let from = open_db(&url, db_password_file, Vec::new(), NoncePolicy::Any)?;
            let to = FsStore::open(&dir, Vec::new())?;
            copy_all(&from, &to, &mut out)
        }
    }
}

/// Counts from a copy between stores.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// AEADs written.
    pub copied: usize,
    /// AEADs the target already had (kept: a copy resumes).
    pub present: usize,
    /// Files or rows that are not usable AEADs, or could not be written: named and skipped.
    pub bad: usize,
}

/// Copies every good AEAD of `from` into `to` (`db-import`, `db-export`), naming each bad
/// one; fails at once if a store cannot be reached, and with exit 1 if anything was bad.
pub fn copy_all(from: &dyn Store, to: &dyn Store, out: &mut dyn Write) -> Result<(), Error> {
    let c = copy(from, to, out)?;
    if c.bad > 0 {
        return Err(Error::AeadsFailed(c.bad));
    }
    Ok(())
}

/// Why an AEAD that parses is still of no use to a KSM: only a YubiKey AEAD (30 bytes: the
/// 22-byte secret and the 8-byte MAC) decodes OTPs, and the daemon answers `ERR Corrupt AEAD`
/// for any other. The tools say so at once rather than leave it to the first login.
/// A YubiHSM 2 AEAD is always a YubiKey's (the format holds exactly 36 bytes).
fn not_a_yubikey_aead(s: &aead_store::StoredAead) -> Option<String> {
    let aead = s.hsm1_aead()?;
    YubiKeyAead::try_from(aead).err().map(|_| {
        format!(
            "{}: an AEAD of {} bytes, not a YubiKey AEAD (30 bytes); the KSM answers ERR Corrupt AEAD for it",
            s.source,
            aead.as_bytes().len()
        )
    })
}

/// [`copy_all`]'s work, returning the counts.
pub fn copy(from: &dyn Store, to: &dyn Store, out: &mut dyn Write) -> Result<Copied, Error> {
    let mut c = Copied::default();
    for e in from.entries() {
        let (s, id) = match (e.result, e.id) {
            (Err(err @ StoreError::Unavailable(_)), _) => return Err(err.into()),
            (Err(err), _) => {
                c.bad += 1;
                let _ = writeln!(out, "BAD {err}");
                continue;
            }
            (Ok(s), Some(id)) => (s, id),
            (Ok(_), None) => {
                c.bad += 1;
                let _ = writeln!(out, "BAD {}: no public id", e.source);
                continue;
            }
        };
        if let Some(why) = not_a_yubikey_aead(&s) {
            c.bad += 1;
            let _ = writeln!(out, "BAD {why}");
            continue;
        }
        match to.put(&id, &s.sealed, false) {
            Ok(_) => c.copied += 1,
            Err(StoreError::AlreadyExists(_)) => c.present += 1,
            Err(err @ StoreError::Unavailable(_)) => return Err(err.into()),
            Err(err) => {
                c.bad += 1;
                let _ = writeln!(out, "BAD {}: {err}", e.source);
            }
        }
    }
    let _ = writeln!(
        out,
        "{} copied, {} already present, {} bad (skipped)",
        c.copied, c.present, c.bad
    );
    Ok(c)
}

/// Counts from a verify run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files that are good AEADs in the right place.
    pub good: usize,
    /// Files unreadable or malformed.
    pub bad: usize,
    /// Good files in the wrong place.
    pub misplaced: usize,
    /// Version-1 files whose nonce is not their public id: refused by a store with the
    /// default [`aead_store::NoncePolicy`], usable (and also counted good) under
    /// `--random-nonce-aeads`. Listed either way; the caller decides whether they fail.
    pub nonce_differs: usize,
    /// AEADs the HSM would not open.
    pub rejected: usize,
    /// AEADs for the other kind of HSM than the one checked with (counted good if sound).
    pub unchecked: usize,
}

/// Checks every file; with `hsm`, also whether the HSM opens each AEAD. Each problem is
/// printed as the walk finds it, and no file is kept once checked.
pub fn verify(
    store: &dyn Store,
    mut hsm: Option<Checker<'_>>,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let mut r = Report::default();
    for e in store.entries() {
        if e.nonce_differs {
            r.nonce_differs += 1;
            let nonce = match &e.result {
                Ok(s) => Some(s.nonce()),
                Err(StoreError::NonceMismatch { nonce, .. }) => Some(*nonce),
                Err(StoreError::ShortId { id, .. }) => id.to_nonce().ok(),
                Err(_) => None,
            };
            // A short id whose padded bytes are the nonce: the length is what does not bind.
            let why = match (&e.id, nonce) {
                (Some(id), Some(n)) if id.to_nonce().is_ok_and(|p| p == n) => {
                    "public id shorter than 6 bytes, not bound by its zero-padded nonce"
                }
                _ => "nonce differs from public id",
            };
            let _ = writeln!(
                out,
                "NONCE {}: {why} (nonce {}, public id {})",
                e.source,
                nonce.map_or_else(|| "?".into(), |n| n.to_string()),
                e.id.as_ref().map_or_else(|| "?".into(), |i| i.to_string()),
            );
        }
        match &e.result {
            // Listed above, on a line of its own.
            Err(StoreError::NonceMismatch { .. } | StoreError::ShortId { .. }) => {}
            Err(err) => {
                r.bad += 1;
                let _ = writeln!(out, "BAD {err}");
            }
            Ok(s) => {
                if let Some(why) = not_a_yubikey_aead(s) {
                    r.bad += 1;
                    let _ = writeln!(out, "BAD {why}");
                    continue;
                }
                if !e.misplaced.is_empty() {
                    r.misplaced += 1;
                    let _ = writeln!(out, "MISPLACED {}: {}", e.source, e.misplaced.join("; "));
                }
                match (&mut hsm, &s.sealed) {
                    (None, _) => {}
                    (
                        Some(Checker::Hsm1(h)),
                        Sealed::Hsm1 {
                            key_handle,
                            nonce,
                            aead,
                        },
                    ) => {
                        // Each check stands alone: between two, other tools may use the
                        // device.
                        let checked = h.aead_decrypt_cmp(*key_handle, *nonce, &[], aead);
                        h.end_operation()?;
                        match checked {
                            Ok(true) => {}
                            Ok(false) => {
                                r.rejected += 1;
                                let _ =
                                    writeln!(out, "REJECTED {}: HSM answered mismatch", e.source);
                            }
                            Err(err) if err.is_link_error() => return Err(err.into()),
                            Err(err) => {
                                r.rejected += 1;
                                let _ = writeln!(out, "REJECTED {}: {err}", e.source);
                            }
                        }
                    }
                    (Some(Checker::Hsm2(dev)), Sealed::Hsm2 { key_id, aead }) => {
                        match check_on_hsm2(dev, *key_id, *aead) {
                            Ok(()) => {}
                            Err(Error::Hsm2(err)) if !err.is_transport_error() => {
                                r.rejected += 1;
                                let _ = writeln!(out, "REJECTED {}: {err}", e.source);
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    // An AEAD for the other kind of HSM than the one given.
                    (Some(_), _) => r.unchecked += 1,
                }
                if e.misplaced.is_empty() {
                    r.good += 1;
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} good, {} bad, {} misplaced, {} rejected by the HSM, {} nonce differs from public id",
        r.good, r.bad, r.misplaced, r.rejected, r.nonce_differs
    );
    if r.unchecked > 0 {
        let _ = writeln!(
            out,
            "{} AEADs are for the other kind of HSM and were not checked on this one",
            r.unchecked
        );
    }
    Ok(r)
}

/// The device `verify` asks to open each AEAD of its kind.
pub enum Checker<'a> {
    /// A YubiHSM 1: `AEAD_DECRYPT_CMP` (see the module doc).
    Hsm1(&'a mut Hsm),
    /// A YubiHSM 2: `Rewrap OTP AEAD` from the AEAD's key to the same key.
    Hsm2(&'a mut Hsm2Device),
}

/// Whether the YubiHSM 2 opens `aead` under otp-aead-key `key_id`: it is rewrapped from that
/// key to the same key and the result dropped, so nothing changes anywhere. The device
/// authenticates the AEAD before it seals anything, so a corrupt AEAD, or one of another
/// key, is refused (`invalid-data`). Needs the `rewrap-from-otp-aead-key` and
/// `rewrap-to-otp-aead-key` capabilities on both the session's authentication key and the
/// otp-aead-key. No secret leaves the device, and no OTP is needed.
pub fn check_on_hsm2(
    dev: &mut Hsm2Device,
    key_id: hsm2_proto::ObjectId,
    aead: hsm2_proto::OtpAead,
) -> Result<(), Error> {
    dev.call(|c, session| c.rewrap_otp_aead(session, key_id, key_id, aead))
        .map(drop)
}

/// Prints counts per key handle, counted as the walk goes.
pub fn print_stats(store: &dyn Store, out: &mut dyn Write) {
    let counts = stats(store.entries());
    let _ = writeln!(out, "key handle  AEADs  problems");
    for (kh, c) in counts {
        let _ = writeln!(
            out,
            "{:<10}  {:>5}  {:>8}",
            kh.to_string(),
            c.good,
            c.problems()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_proto::{Aead, KeyHandle, PublicId};
    use std::path::PathBuf;

    /// Output that removes a file as soon as the first line is written.
    struct RemovesOnFirstWrite {
        text: Vec<u8>,
        doomed: Option<PathBuf>,
    }

    impl Write for RemovesOnFirstWrite {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Some(p) = self.doomed.take() {
                std::fs::remove_file(p)?;
            }
            self.text.extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Verify prints each problem when the walk reaches it, before it has looked further:
    /// a file removed at the first line is never seen, which a collected walk would count.
    #[test]
    fn verify_streams_what_it_finds() {
        let d = tempfile::tempdir().expect("temp dir");
        let store = FsStore::open(d.path(), Vec::new()).expect("store");
        // 0x20 is walked first: a file that is no AEAD.
        std::fs::create_dir_all(d.path().join("0x20/zz")).expect("dir");
        std::fs::write(d.path().join("0x20/zz/README"), b"x").expect("file");
        // 0x21 after it: a good AEAD.
        let id = PublicId::new("cccccccccccb").expect("id");
        let nonce = id.to_nonce().expect("nonce");
        let aead = Aead::new(&[1; 30]).expect("aead");
        let good = store
            .write(KeyHandle(0x21), &id, &nonce, &aead, false)
            .expect("write");
        let mut out = RemovesOnFirstWrite {
            text: Vec::new(),
            doomed: FsStore::path_of(&good).map(PathBuf::from),
        };
        let r = verify(&store, None, &mut out).expect("verify");
        assert_eq!((r.good, r.bad), (0, 1), "{r:?}");
        let text = String::from_utf8_lossy(&out.text);
        assert!(text.starts_with("BAD "), "{text}");
        assert!(text.ends_with("0 good, 1 bad, 0 misplaced, 0 rejected by the HSM, 0 nonce differs from public id\n"), "{text}");
    }

    /// An AEAD that parses but is not 30 bytes can never decode an OTP: verify counts it
    /// bad and the copies (`db-import`, `db-export`) name it and skip it.
    #[test]
    fn aeads_that_are_not_yubikey_aeads_are_bad() {
        let d = tempfile::tempdir().expect("temp dir");
        for dir in ["from", "to"] {
            std::fs::create_dir(d.path().join(dir)).expect("dir");
        }
        let from = FsStore::open(d.path().join("from"), Vec::new()).expect("store");
        let to = FsStore::open(d.path().join("to"), Vec::new()).expect("store");
        for (id, len) in [
            ("cccccccccccb", 30),
            ("cccccccccccd", 8),
            ("ccccccccccce", 48),
        ] {
            let id = PublicId::new(id).expect("id");
            let nonce = id.to_nonce().expect("nonce");
            let aead = Aead::new(&vec![1; len]).expect("aead");
            from.write(KeyHandle(0x20), &id, &nonce, &aead, false)
                .expect("write");
        }
        let mut out = Vec::new();
        let r = verify(&from, None, &mut out).expect("verify");
        assert_eq!((r.good, r.bad), (1, 2), "{}", String::from_utf8_lossy(&out));
        let text = String::from_utf8_lossy(&out).to_string();
        assert!(
            text.contains("cccccccccccd: an AEAD of 8 bytes, not a YubiKey AEAD"),
            "{text}"
        );
        let mut out = Vec::new();
        let c = copy(&from, &to, &mut out).expect("copy");
        assert_eq!(
            (c.copied, c.bad),
            (1, 2),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(to.entries().count(), 1);
    }
}
