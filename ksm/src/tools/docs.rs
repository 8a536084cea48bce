//! `ksm generate-man DIR` and `ksm generate-completions DIR`: the manual pages and shell
//! completions, made from the same clap command that parses the flags (the caller hands it
//! over, so this file need not name the command line that names it), so they can never
//! disagree with it. The Debian package's script runs both before `cargo deb` packs the
//! files; nothing generated is kept in the source tree.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::Error;

/// The directory argument of both commands.
#[derive(Debug, clap::Args)]
pub struct OutDirArgs {
    /// Where to write the files (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

fn out_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))
}

/// Writes `ksm.1` and one page per visible subcommand (`ksm-serve.1`, `ksm-store-verify.1`, …).
pub fn man(cmd: clap::Command, args: OutDirArgs) -> Result<(), Error> {
    out_dir(&args.dir)?;
    clap_mangen::generate_to(cmd, &args.dir)
        .map_err(|e| Error::io(format!("write manual pages to {}", args.dir.display()), e))
}

/// Writes `ksm.bash`, `_ksm` (zsh) and `ksm.fish`.
pub fn completions(mut cmd: clap::Command, args: OutDirArgs) -> Result<(), Error> {
    out_dir(&args.dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "ksm", &args.dir).map_err(|e| {
            Error::io(
                format!("write {shell} completions to {}", args.dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}
