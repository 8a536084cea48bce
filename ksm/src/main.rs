//! `ksm`: the YubiKey KSM daemon and its operator tools. Parses flags, sets up logging, and
//! hands over to the library.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ksm::cli::Cli::parse();
    ksm::logging::init(cli.verbose, cli.debug);
    ksm::process::no_core_dumps();
    match ksm::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ksm: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}
