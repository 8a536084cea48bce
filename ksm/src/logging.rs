//! Logging set-up: `tracing` to stderr. `-v` shows info, `--debug` debug; `RUST_LOG`
//! overrides both.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber once.
pub fn init(verbose: bool, debug: bool) {
    let default = if debug {
        "debug"
    } else if verbose {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
