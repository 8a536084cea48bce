//! `ksm generate-keys`: new YubiKey secrets made by the HSM's own random generator, stored
//! only as AEADs. The secret never leaves the HSM in clear: `BUFFER_RANDOM_LOAD` fills the
//! device's buffer, `BUFFER_AEAD_GENERATE` seals it under each key handle.
//!
//! On a YubiHSM 2 (`-D http://…` and `--key-id N`), `Randomize OTP AEAD` draws the secret and
//! seals it under otp-aead-key N in one command; the AEADs go to YubiHSM 2 files (or rows).
//! The device chooses each AEAD's nonce, so such a store is one of random nonces: the run
//! asks for `--random-nonce` to say so, and the daemon serves it with
//! `--random-nonce-aeads` (see [`aead_store::NoncePolicy`]).

use std::io::Write;

use aead_store::{AeadKey, Sealed, Store};
use clap::Args;
use hsm2_proto::ObjectId;
use hsm_proto::{Hsm, KeyHandle, Nonce, PublicId, YubiKeySecret};
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::hsm2::{Hsm2AuthArgs, Hsm2Device};
use crate::device::DeviceArgs;
use crate::tools::{self, KeyHandleArgs, OutputDirArgs};
use crate::Error;

/// `ksm generate-keys`'s arguments.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where the HSM is.
    #[command(flatten)]
    pub dev: DeviceArgs,
    /// Key handles.
    #[command(flatten)]
    pub key_handles: KeyHandleArgs,
    /// YubiHSM 2: the otp-aead-key to seal under, instead of key handles (-D names the
    /// YubiHSM 2; needs --random-nonce, as the device chooses every nonce).
    #[arg(long, conflicts_with = "key_handles", value_parser = crate::device::hsm2::object_id_arg)]
    pub key_id: Option<u16>,
    /// YubiHSM 2: its authentication key and password.
    #[command(flatten)]
    pub hsm2: Hsm2AuthArgs,
    /// First public id: a decimal number, else modhex.
    #[arg(long)]
    pub start_public_id: String,
    /// How many keys.
    #[arg(short = 'c', long, default_value_t = 1)]
    pub count: u64,
    /// Where the AEADs go.
    #[command(flatten)]
    pub output: OutputDirArgs,
    /// Public id length in modhex characters.
    #[arg(long, default_value_t = 12)]
    pub public_id_chars: usize,
    /// Let the HSM choose each AEAD's nonce instead of using the public id.
    #[arg(long)]
    pub random_nonce: bool,
    /// Replace existing AEADs.
    #[arg(long)]
    pub force: bool,
}

/// `ksm generate-keys`: fails if some ids were left with AEADs for some key handles only.
pub fn run(args: GenerateArgs) -> Result<(), Error> {
    if let Some(key_id) = args.key_id {
        return run_hsm2(&args, ObjectId(key_id));
    }
    let khs = args.key_handles.parse()?;
    let store = args.output.open(khs.clone())?;
    let mut hsm = args.dev.open()?;
    let plan = Plan {
        key_handles: khs,
        start: tools::public_id_arg(&args.start_public_id, args.public_id_chars)?,
        count: args.count,
        public_id_chars: args.public_id_chars,
        random_nonce: args.random_nonce,
        force: args.force,
    };
    let s = generate(&mut hsm, &*store, &plan, &mut std::io::stdout())?;
    if s.incomplete > 0 {
        return Err(Error::Incomplete(s.incomplete));
    }
    Ok(())
}

/// `generate-keys --key-id`: on a YubiHSM 2.
fn run_hsm2(args: &GenerateArgs, key_id: ObjectId) -> Result<(), Error> {
    if !args.random_nonce {
        return Err(Error::Usage(random_nonce_needed("generate-keys")));
    }
    let device = tools::hsm2_device_arg(&args.dev)?;
    let key = AeadKey::OtpKey(key_id);
    let store = args.output.open_keys(vec![key])?;
    let start = tools::public_id_arg(&args.start_public_id, args.public_id_chars)?;
    let mut dev = args.hsm2.open(&device, tools::hsm2_timeout(&args.dev)?)?;
    let plan = Hsm2Plan {
        key_id,
        start,
        count: args.count,
        public_id_chars: args.public_id_chars,
        force: args.force,
    };
    let r = generate_hsm2(&mut dev, &*store, &plan, &mut std::io::stdout());
    dev.close();
    r.map(drop)
}

/// Why a YubiHSM 2 run wants `--random-nonce`.
pub(crate) fn random_nonce_needed(cmd: &str) -> String {
    format!("{cmd} --key-id: the YubiHSM 2 chooses each AEAD's nonce itself, so it cannot be the public id; give --random-nonce to go on, and serve the store with --random-nonce-aeads")
}

/// What to generate on a YubiHSM 2.
#[derive(Debug, Clone)]
pub struct Hsm2Plan {
    /// The otp-aead-key to seal under.
    pub key_id: ObjectId,
    /// First public id.
    pub start: PublicId,
    /// How many ids.
    pub count: u64,
    /// Public id length in modhex characters.
    pub public_id_chars: usize,
    /// Replace existing AEADs.
    pub force: bool,
}

/// Generates the planned keys on a YubiHSM 2 (`Randomize OTP AEAD`) into `store`: ids that
/// have an AEAD under the key already are skipped (a run resumes), unless `force`.
pub fn generate_hsm2(
    dev: &mut Hsm2Device,
    store: &dyn Store,
    plan: &Hsm2Plan,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let first = plan.start.to_number();
    if first == 0 {
        return Err(Error::Usage(
            "the start public id must be greater than 0".into(),
        ));
    }
    let key = AeadKey::OtpKey(plan.key_id);
    let _ = writeln!(
        out,
        "Generating {} keys from {} under YubiHSM 2 {key}",
        plan.count, plan.start
    );
    let bar = progress(plan.count);
    let mut s = Summary::default();
    for n in first..first.saturating_add(plan.count) {
        bar.inc(1);
        let id = PublicId::from_number(n, plan.public_id_chars)?;
        if !plan.force && store.exists_under(key, &id)? {
            s.skipped += 1;
            continue;
        }
        let aead = dev.call(|c, session| c.randomize_otp_aead(session, plan.key_id))?;
        let sealed = Sealed::Hsm2 {
            key_id: plan.key_id,
            aead,
        };
        let path = store.put(&id, &sealed, plan.force)?;
        tracing::info!(path = %path, "AEAD written");
        s.generated += 1;
    }
    Ok(s.done(bar, out))
}

fn progress(count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} keys, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Key handles to seal each secret under (the same secret under each).
    pub key_handles: Vec<KeyHandle>,
    /// First public id.
    pub start: PublicId,
    /// How many ids.
    pub count: u64,
    /// Public id length in modhex characters.
    pub public_id_chars: usize,
    /// Let the HSM choose each AEAD's nonce instead of using the public id.
    pub random_nonce: bool,
    /// Replace existing AEADs.
    pub force: bool,
}

/// What happened.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Ids generated.
    pub generated: u64,
    /// Ids skipped because their AEADs exist (resuming).
    pub skipped: u64,
    /// Ids with AEADs for some handles only (an interrupted earlier run): left alone.
    pub incomplete: u64,
}

impl Summary {
    /// Ends a run of either kind of device: clears the progress bar and prints the count.
    fn done(self, bar: ProgressBar, out: &mut dyn Write) -> Summary {
        bar.finish_and_clear();
        let _ = writeln!(
            out,
            "Done: {} generated, {} already present, {} incomplete",
            self.generated, self.skipped, self.incomplete
        );
        self
    }
}

/// Generates the planned keys into `store`, with a progress bar on stderr.
pub fn generate(
    hsm: &mut Hsm,
    store: &dyn Store,
    plan: &Plan,
    out: &mut dyn Write,
) -> Result<Summary, Error> {
    let first = plan.start.to_number();
    if first == 0 {
        return Err(Error::Usage(
            "the start public id must be greater than 0".into(),
        ));
    }
    let _ = writeln!(
        out,
        "Generating {} keys from {} under key handles {}",
        plan.count,
        plan.start,
        plan.key_handles
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bar = progress(plan.count);
    let mut s = Summary::default();
    for n in first..first.saturating_add(plan.count) {
        bar.inc(1);
        let id = PublicId::from_number(n, plan.public_id_chars)?;
        let mut present = 0;
        for kh in &plan.key_handles {
            present += usize::from(store.exists(*kh, &id)?);
        }
        if !plan.force && present == plan.key_handles.len() {
            s.skipped += 1;
            continue;
        }
        if !plan.force && present > 0 {
            // The secret of the existing AEADs cannot be made again: mixing would give one
            // YubiKey two different secrets.
            bar.suspend(|| eprintln!("{id}: AEADs exist for some key handles only; left alone (use --force to regenerate all)"));
            s.incomplete += 1;
            continue;
        }
        let nonce = if plan.random_nonce {
            Nonce::ZERO
        } else {
            id.to_nonce()?
        };
        let count = hsm.buffer_random_load(0, YubiKeySecret::LEN as u8)?;
        if usize::from(count) != YubiKeySecret::LEN {
            return Err(Error::DeviceAnswer(format!(
                "HSM buffer holds {count} bytes, expected {}",
                YubiKeySecret::LEN
            )));
        }
        // The buffer's secret is sealed under every handle before anyone else may use the
        // device (see `Hsm::end_operation`); only then is the next one loaded.
        let mut sealed = Vec::with_capacity(plan.key_handles.len());
        for kh in &plan.key_handles {
            sealed.push((*kh, hsm.buffer_aead_generate(*kh, nonce)?));
        }
        hsm.end_operation()?;
        for (kh, (used, aead)) in sealed {
            let path = store.write(kh, &id, &used, &aead, plan.force)?;
            tracing::info!(path = %path, "AEAD written");
        }
        s.generated += 1;
    }
    Ok(s.done(bar, out))
}
