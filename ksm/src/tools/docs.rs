//! `ksm generate-man DIR` and `ksm generate-completions DIR`: the manual pages and shell
//! completions, made from the same clap command that parses the flags, so they can never
//! disagree with it. The Debian package's script runs both before `cargo deb` packs the
//! files; nothing generated is kept in the source tree.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
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
pub fn man(args: OutDirArgs) -> Result<(), Error> {
    out_dir(&args.dir)?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .map_err(|e| Error::io(format!("write manual pages to {}", args.dir.display()), e))
}

/// Writes `ksm.bash`, `_ksm` (zsh) and `ksm.fish`.
pub fn completions(args: OutDirArgs) -> Result<(), Error> {
    out_dir(&args.dir)?;
    let mut cmd = Cli::command();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_for_every_visible_command_and_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let man_dir = dir.path().join("man");
        man(OutDirArgs {
            dir: man_dir.clone(),
        })
        .unwrap();
        let page = std::fs::read_to_string(man_dir.join("ksm-serve.1")).unwrap();
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
        assert!(page.contains("key\\-handles"), "{page}");
        // The NAME line says what ksm is for: both kinds of YubiHSM.
        let top = std::fs::read_to_string(man_dir.join("ksm.1")).unwrap();
        assert!(top.contains("YubiHSM 1 or YubiHSM 2"), "{top}");
        for name in ["ksm.1", "ksm-config-import-pyhsm.1", "ksm-store-verify.1"] {
            assert!(man_dir.join(name).is_file(), "{name}");
        }
        for hidden in ["ksm-generate-man.1", "ksm-generate-completions.1"] {
            assert!(!man_dir.join(hidden).exists(), "{hidden} is hidden");
        }

        let comp_dir = dir.path().join("completions");
        completions(OutDirArgs {
            dir: comp_dir.clone(),
        })
        .unwrap();
        let bash = std::fs::read_to_string(comp_dir.join("ksm.bash")).unwrap();
        assert!(bash.contains("import-pyhsm") && bash.contains("--key-handles"));
        assert!(comp_dir.join("_ksm").is_file() && comp_dir.join("ksm.fish").is_file());
    }
}
