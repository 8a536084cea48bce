//! `ksm val db-init URL`: yubikey-val's `clients` and `yubikeys`, made if missing.

use std::io::Write as _;

use super::ValDbArgs;
use crate::Error;

/// `ksm val db-init`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DbInitArgs {
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
}

/// Creates the tables that are missing.
pub fn run(args: DbInitArgs) -> Result<(), Error> {
    args.db.with_db(|db| async move { Ok(db.init().await?) })?;
    let _ = writeln!(std::io::stdout(), "clients and yubikeys are in place");
    Ok(())
}
