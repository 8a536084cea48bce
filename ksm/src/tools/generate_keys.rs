//! `ksm generate-keys`: new YubiKey secrets made by the HSM's own random generator, stored
//! only as AEADs. The secret never leaves the HSM in clear: `BUFFER_RANDOM_LOAD` fills the
//! device's buffer, `BUFFER_AEAD_GENERATE` seals it under each key handle.

use std::io::Write;

use aead_store::Store;
use clap::Args;
use hsm_proto::{Hsm, KeyHandle, Nonce, PublicId, YubiKeySecret};
use indicatif::{ProgressBar, ProgressStyle};

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
    let bar = ProgressBar::new(plan.count);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} keys, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
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
    bar.finish_and_clear();
    let _ = writeln!(
        out,
        "Done: {} generated, {} already present, {} incomplete",
        s.generated, s.skipped, s.incomplete
    );
    Ok(s)
}
