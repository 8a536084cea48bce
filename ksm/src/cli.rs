//! The `ksm` command line: one subcommand per job, each with its arguments and its `run` in
//! its own module. Flag names follow pyhsm's tools where they have an equivalent (`-D`,
//! `-B/--aead-dir`, `--key-handles`, `-U`, `-S`, …), so operators' scripts keep working.

use clap::{CommandFactory, Parser, Subcommand};

use crate::emulate::EmulateArgs;
use crate::info::InfoArgs;
use crate::settings::options::ServeArgs;
use crate::tools::clone_hsm2::CloneHsm2Args;
use crate::tools::config_import::ConfigArgs;
use crate::tools::decrypt_aead::DecryptArgs;
use crate::tools::docs::OutDirArgs;
use crate::tools::generate_keys::GenerateArgs;
use crate::tools::hsm2_log::Hsm2LogArgs;
use crate::tools::import_keys::ImportArgs;
use crate::tools::keystore_unlock::UnlockArgs;
use crate::tools::migrate_aeads::MigrateArgs;
use crate::tools::provision::ProvisionArgs;
use crate::tools::provision_hsm2::ProvisionHsm2Args;
use crate::tools::rewrap::RewrapArgs;
use crate::tools::store_cmd::StoreArgs;
use crate::tools::val::ValArgs;
use crate::{daemon, demo, emulate, info, tools, Error};

/// YubiKey KSM backed by a YubiHSM 1 or YubiHSM 2.
#[derive(Debug, Parser)]
#[command(name = "ksm", version, about)]
pub struct Cli {
    /// Log what happens (info level).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Log in detail (debug level; never key material or OTPs).
    #[arg(long, global = true)]
    pub debug: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once at start-up and matched at once: boxing `serve`'s options saves nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the KSM: the HTTP decode API validation servers call (yhsm-yubikey-ksm's flags).
    Serve(ServeArgs),
    /// Unlock the HSM key store after boot: master key from a no-echo prompt or --stdin,
    /// then an admin YubiKey OTP if the HSM has admin keys.
    KeystoreUnlock(UnlockArgs),
    /// Have the HSM generate YubiKey secrets for a range of public ids and store them as
    /// AEADs (resumable: existing AEADs are skipped).
    GenerateKeys(GenerateArgs),
    /// Import YubiKey secrets from `# ykksm 1` export lines (a file or standard input) as
    /// AEADs made by the HSM.
    ImportKeys(ImportArgs),
    /// Offline: decrypt AEAD files with the key-handle key from a protected file.
    DecryptAead(DecryptArgs),
    /// Inspect the AEAD directory.
    Store(StoreArgs),
    /// Set up a spare YubiHSM 1 at its configuration console from a device TOML (the
    /// emulator's format), then prove each key in HSM mode. Prints the dialogue unless --yes.
    Provision(ProvisionArgs),
    /// Put a YubiHSM 1 key-handle key into a YubiHSM 2 as an otp-aead-key (nonce id = the
    /// handle, little-endian), so the handle's AEADs open there; then prove it.
    ProvisionHsm2(ProvisionHsm2Args),
    /// Copy otp-aead-keys from one YubiHSM 2 to another under a wrap key both hold (Export
    /// and Import Wrapped; refused if the wrap key could move more than otp-aead-keys);
    /// each copy proven by an OTP decoded on the target.
    CloneHsm2(CloneHsm2Args),
    /// Rewrite every YubiHSM 1 AEAD file of a key handle as a YubiHSM 2 file (no secret
    /// leaves either HSM; resumable); a YubiHSM 2 checks a sample, or all (`--check all`).
    MigrateAeads(MigrateArgs),
    /// Rotate YubiHSM 2 AEADs from one otp-aead-key to another with Rewrap OTP AEAD (inside
    /// the device; resumable; the old AEADs stay until removed).
    Rewrap(RewrapArgs),
    /// Print a YubiHSM 2's audit log and check its digest chain; --advance then frees the
    /// log (a device with force-audit on refuses commands once it is full).
    Hsm2Log(Hsm2LogArgs),
    /// Serve a software YubiHSM 1 on a pseudo-terminal until SIGTERM; prints the pty path.
    /// With --hsm2, a software YubiHSM 2 behind yubihsm-connector's HTTP API instead.
    Emulate(EmulateArgs),
    /// Open a YubiHSM (resync, system info, echo link test) and print what it is.
    Info(InfoArgs),
    /// The decode path end to end with nothing installed: a software YubiHSM on a real pty,
    /// the driver opening it like /dev/ttyACM0, OTPs from fixtures/ decoded inside it.
    Demo,
    /// The validation server's database, as yubikey-val's tools keep it: `db-init`,
    /// `add-client`, `revoke`, and yubikey-val's CSV files (`import-ykval`, `export`).
    Val(ValArgs),
    /// Configuration helpers: `ksm config import-pyhsm` turns pyhsm's
    /// /etc/default/yhsm-yubikey-ksm into a ksm.toml.
    Config(ConfigArgs),
    /// Write the manual pages (ksm.1, ksm-serve.1, ...) into DIR (for packaging).
    #[command(hide = true)]
    GenerateMan(OutDirArgs),
    /// Write bash, zsh and fish completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateCompletions(OutDirArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Serve(args) => daemon::serve::run(args),
        Command::KeystoreUnlock(args) => tools::keystore_unlock::run(args),
        Command::GenerateKeys(args) => tools::generate_keys::run(args),
        Command::ImportKeys(args) => tools::import_keys::run(args),
        Command::DecryptAead(args) => tools::decrypt_aead::run(args),
        Command::Store(args) => tools::store_cmd::run(args),
        Command::Provision(args) => tools::provision::run(args),
        Command::ProvisionHsm2(args) => tools::provision_hsm2::run(args),
        Command::CloneHsm2(args) => tools::clone_hsm2::run(args),
        Command::MigrateAeads(args) => tools::migrate_aeads::run(args),
        Command::Rewrap(args) => tools::rewrap::run(args),
        Command::Hsm2Log(args) => tools::hsm2_log::run(args),
        Command::Emulate(args) => emulate::run(args),
        Command::Info(args) => info::run(args),
        Command::Demo => demo::run(),
        Command::Config(args) => tools::config_import::run(args),
        Command::Val(args) => tools::val::run(args),
        Command::GenerateMan(args) => tools::docs::man(Cli::command(), args),
        Command::GenerateCompletions(args) => tools::docs::completions(Cli::command(), args),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::tools::docs::{completions, man};

    #[test]
    fn pages_for_every_visible_command_and_three_shells() {
        let dir = tempfile::tempdir().unwrap();
        let man_dir = dir.path().join("man");
        man(
            Cli::command(),
            OutDirArgs {
                dir: man_dir.clone(),
            },
        )
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
        completions(
            Cli::command(),
            OutDirArgs {
                dir: comp_dir.clone(),
            },
        )
        .unwrap();
        let bash = std::fs::read_to_string(comp_dir.join("ksm.bash")).unwrap();
        assert!(bash.contains("import-pyhsm") && bash.contains("--key-handles"));
        assert!(comp_dir.join("_ksm").is_file() && comp_dir.join("ksm.fish").is_file());
    }

    /// The command lines the daemon's audit-log warnings tell an operator to run are ones
    /// this CLI takes (`hsm2-log --advance` alone it refuses: the entries need a file).
    #[test]
    fn the_audit_log_drain_hint_names_commands_that_parse() {
        let lines: Vec<&str> = crate::daemon::health::DRAIN_HINT.split(", or ").collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in lines {
            let words = line
                .split_whitespace()
                .map(|w| match w {
                    "URL" => "http://127.0.0.1:12345",
                    "FILE" => "audit.jsonl",
                    w => w,
                })
                .collect::<Vec<_>>();
            if let Err(e) = Cli::try_parse_from(&words) {
                panic!("{line}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["ksm", "hsm2-log", "-D", "http://x", "--advance"]).is_err());
    }
}
