//! `ksm rewrap`: key rotation on a YubiHSM 2. Every AEAD under otp-aead-key A is sent to the
//! device with `Rewrap OTP AEAD`, comes back sealed under key B, and is stored under B; the
//! secrets never leave the device.
//!
//! The A AEADs are left in place, so both keys serve while the rotation runs: a daemon whose
//! key list is `otp-aead-key:B, otp-aead-key:A` finds the new AEAD where it is written and
//! the old one where it is not yet. Once the run reports nothing failed (and the daemons
//! have B), A's AEADs and the key itself can go.
//!
//! Each AEAD is written atomically (a file renamed into place, or one row), and a run
//! resumes: an AEAD already readable under B is skipped. Whether the device keeps an AEAD's
//! 6-byte nonce when it rewraps, Yubico does not say (the emulator keeps it, and can be told
//! not to). Kept, AEADs whose nonce is their public id keep passing the default nonce rule.
//! Renewed, the new AEAD would be refused by a daemon with that rule, and, found first under
//! B, it would stop its YubiKey at once: so it is not stored, and counted as failed, unless
//! `--random-nonce-aeads` says the store is served that way.

use std::io::Write;

use aead_store::{AeadKey, NoncePolicy, Sealed, Store, StoreError};
use hsm2_proto::ObjectId;

use crate::device::hsm2::{Hsm2Args, Hsm2Device};
use crate::tools::store_cmd::AeadDirArgs;
use crate::Error;

/// `ksm rewrap`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RewrapArgs {
    /// The otp-aead-key the AEADs are under now.
    #[arg(long, value_parser = crate::device::hsm2::object_id_arg)]
    pub from_key: u16,
    /// The otp-aead-key to move them to (needs rewrap-to-otp-aead-key; A needs
    /// rewrap-from-otp-aead-key, and so does the authentication key, both).
    #[arg(long, value_parser = crate::device::hsm2::object_id_arg)]
    pub to_key: u16,
    /// The AEAD directory (or --db-url).
    #[command(flatten)]
    pub dir: AeadDirArgs,
    /// The YubiHSM 2 and its authentication key.
    #[command(flatten)]
    pub hsm2: Hsm2Args,
    /// The store is served with `ksm serve --random-nonce-aeads`: keep a rewrapped AEAD whose
    /// nonce the device renewed (without it, such an AEAD is not stored and counts as failed).
    #[arg(long)]
    pub random_nonce_aeads: bool,
}

/// Counts of a run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewrapped {
    /// AEADs stored under the new key.
    pub rewrapped: usize,
    /// AEADs already under the new key (an earlier run).
    pub skipped: usize,
    /// AEADs that are unusable, that the device refused, or that could not be stored:
    /// named.
    pub failed: usize,
}

/// `ksm rewrap`: fails (exit 1) if any AEAD failed.
pub fn run(args: RewrapArgs) -> Result<(), Error> {
    if args.from_key == args.to_key {
        return Err(Error::Usage(
            "--from-key and --to-key are the same key".into(),
        ));
    }
    let (from, to) = (ObjectId(args.from_key), ObjectId(args.to_key));
    let keys = vec![AeadKey::OtpKey(to), AeadKey::OtpKey(from)];
    let store = args.dir.open_keys(keys, NoncePolicy::Any)?;
    let mut dev = args.hsm2.open()?;
    let policy = crate::settings::parse::nonce_policy(args.random_nonce_aeads);
    let r = rewrap(&*store, from, to, policy, &mut dev, &mut std::io::stdout());
    dev.close();
    let r = r?;
    if r.failed > 0 {
        return Err(Error::AeadsFailed(r.failed));
    }
    Ok(())
}

/// Moves every AEAD under `from` in `store` to `to` on the device (see the module doc); a
/// rewrapped AEAD must pass `policy` (the nonce rule the store is served with) to be stored.
pub fn rewrap(
    store: &dyn Store,
    from: ObjectId,
    to: ObjectId,
    policy: NoncePolicy,
    dev: &mut Hsm2Device,
    out: &mut dyn Write,
) -> Result<Rewrapped, Error> {
    let mut r = Rewrapped::default();
    let to_key = AeadKey::OtpKey(to);
    for e in store.entries() {
        if e.dir_key != AeadKey::OtpKey(from) {
            continue;
        }
        let (stored, id) = match (e.result, e.id) {
            (Err(err @ StoreError::Unavailable(_)), _) => return Err(err.into()),
            (Err(err), _) => {
                r.failed += 1;
                let _ = writeln!(out, "FAILED {err}");
                continue;
            }
            (Ok(s), Some(id)) => (s, id),
            (Ok(_), None) => {
                r.failed += 1;
                let _ = writeln!(out, "FAILED {}: no public id", e.source);
                continue;
            }
        };
        let Sealed::Hsm2 { aead, .. } = stored.sealed else {
            r.failed += 1;
            let _ = writeln!(out, "FAILED {}: not a YubiHSM 2 AEAD", e.source);
            continue;
        };
        // Already under the new key and readable there: an earlier run did it.
        if store.exists_under(to_key, &id)?
            && store
                .lookup(&id)
                .is_ok_and(|f| f.is_some_and(|f| f.key() == to_key))
        {
            r.skipped += 1;
            continue;
        }
        let moved = match dev.call(|c, session| c.rewrap_otp_aead(session, from, to, aead)) {
            Ok(a) => a,
            Err(Error::Hsm2(err)) if !err.is_transport_error() => {
                r.failed += 1;
                let _ = writeln!(out, "FAILED {}: {err}", e.source);
                continue;
            }
            Err(err) => return Err(err),
        };
        if moved.nonce() != aead.nonce() {
            let nonce = hsm_proto::Nonce(moved.nonce());
            let place = std::path::PathBuf::from(e.source.to_string());
            if policy.check(&place, &id, &nonce).is_err() {
                r.failed += 1;
                let _ = writeln!(
                    out,
                    "FAILED {}: the device gave the rewrapped AEAD a new nonce, which the store's nonce rule refuses; not stored (a store served with --random-nonce-aeads: rewrap --random-nonce-aeads)",
                    e.source
                );
                continue;
            }
            let _ = writeln!(
                out,
                "NONCE {}: the device gave the rewrapped AEAD a new nonce",
                e.source
            );
        }
        match store.put(
            &id,
            &Sealed::Hsm2 {
                key_id: to,
                aead: moved,
            },
            true,
        ) {
            Ok(_) => r.rewrapped += 1,
            Err(err @ StoreError::Unavailable(_)) => return Err(err.into()),
            Err(err) => {
                r.failed += 1;
                let _ = writeln!(out, "FAILED {}: {err}", e.source);
            }
        }
    }
    let _ = writeln!(
        out,
        "{} rewrapped, {} skipped (already under the new key), {} failed",
        r.rewrapped, r.skipped, r.failed
    );
    Ok(r)
}
