//! `ksm val db-init URL`: yubikey-val's two tables, made if missing.

use crate::tools::val::ValDbArgs;
use crate::Error;

/// `ksm val db-init`'s arguments.
#[derive(Debug, clap::Args)]
pub struct DbInitArgs {
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
}

/// Creates the tables and says so.
pub fn run(args: DbInitArgs) -> Result<(), Error> {
    args.db.with_db(|db| async move { db.init().await })?;
    println!("clients and yubikeys are in place");
    Ok(())
}
