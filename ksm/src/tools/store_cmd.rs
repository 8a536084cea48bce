//! `ksm store verify` and `ksm store stats`: what is in the AEAD directory, and what is
//! wrong with it.
//!
//! With an HSM, verify also asks the device whether it can open each AEAD, using
//! `AEAD_DECRYPT_CMP` with the AEAD alone (no expected plaintext). Yubico's interface header
//! says that form only authenticates the AEAD; pyhsm never uses it, so whether a real device
//! treats it so is not confirmed (the emulator does). An AEAD that fails there is reported as
//! rejected; a device that refuses the form altogether shows up as every AEAD rejected with
//! the same status, which the report makes plain.

use std::io::Write;

use aead_store::{stats, FsStore};
use hsm_proto::Hsm;

use crate::Error;

/// Counts from a verify run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files that are good AEADs in the right place.
    pub good: usize,
    /// Files unreadable or malformed.
    pub bad: usize,
    /// Good files in the wrong place (or with a nonce other than the public id).
    pub misplaced: usize,
    /// AEADs the HSM would not open.
    pub rejected: usize,
}

/// Checks every file; with `hsm`, also whether the HSM opens each AEAD.
pub fn verify(
    store: &FsStore,
    mut hsm: Option<&mut Hsm>,
    out: &mut dyn Write,
) -> Result<Report, Error> {
    let mut r = Report::default();
    for e in store.walk() {
        match &e.result {
            Err(err) => {
                r.bad += 1;
                let _ = writeln!(out, "BAD {err}");
            }
            Ok(s) => {
                if !e.misplaced.is_empty() {
                    r.misplaced += 1;
                    let _ = writeln!(
                        out,
                        "MISPLACED {}: {}",
                        e.path.display(),
                        e.misplaced.join("; ")
                    );
                }
                if let Some(h) = hsm.as_deref_mut() {
                    match h.aead_decrypt_cmp(s.key_handle, s.nonce, &[], &s.aead) {
                        Ok(true) => {}
                        Ok(false) => {
                            r.rejected += 1;
                            let _ = writeln!(
                                out,
                                "REJECTED {}: HSM answered mismatch",
                                e.path.display()
                            );
                        }
                        Err(err) if err.is_link_error() => return Err(err.into()),
                        Err(err) => {
                            r.rejected += 1;
                            let _ = writeln!(out, "REJECTED {}: {err}", e.path.display());
                        }
                    }
                }
                if e.misplaced.is_empty() {
                    r.good += 1;
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "{} good, {} bad, {} misplaced, {} rejected by the HSM",
        r.good, r.bad, r.misplaced, r.rejected
    );
    Ok(r)
}

/// Prints counts per key handle.
pub fn print_stats(store: &FsStore, out: &mut dyn Write) {
    let entries = store.walk();
    let _ = writeln!(out, "key handle  AEADs  problems");
    for (kh, (good, bad)) in stats(&entries) {
        let _ = writeln!(out, "{:<10}  {good:>5}  {bad:>8}", kh.to_string());
    }
}
