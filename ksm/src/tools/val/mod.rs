//! `ksm val …`: the validation server's counter database (yubikey-val's `clients` and
//! `yubikeys` tables), as `ksm serve --val-db-url` reads it. Each subcommand has its own
//! file; this module holds the group and what they share: the database named the way
//! `--val-db-url` names it, and a runtime to ask it on.

pub mod db_init;

use std::path::PathBuf;

use ykval::{ValDb, ValDbConfig};

use crate::Error;

/// `ksm val`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ValArgs {
    /// What to do.
    #[command(subcommand)]
    pub cmd: ValCmd,
}

/// `ksm val …`.
#[derive(Debug, clap::Subcommand)]
pub enum ValCmd {
    /// Create yubikey-val's `clients` and `yubikeys` tables in URL if they are missing
    /// (tables there already are left as they are).
    DbInit(db_init::DbInitArgs),
}

/// Runs `ksm val …`.
pub fn run(args: ValArgs) -> Result<(), Error> {
    match args.cmd {
        ValCmd::DbInit(a) => db_init::run(a),
    }
}

/// The counter database as the tools name it: a URL (`--val-db-url`'s spelling, no
/// password in it) and a private password file.
#[derive(Debug, clap::Args)]
pub struct ValDbArgs {
    /// The database: postgresql://USER@HOST/DB, mysql://USER@HOST/DB or sqlite:///PATH.
    pub url: String,
    /// Private file (mode 0600) whose first line is the database password.
    #[arg(long)]
    pub db_password_file: Option<PathBuf>,
}

impl ValDbArgs {
    /// Runs `job` on the database, on a runtime of its own (the tools are not async).
    pub fn with_db<T, F, Fut>(&self, job: F) -> Result<T, Error>
    where
        F: FnOnce(ValDb) -> Fut,
        Fut: std::future::Future<Output = Result<T, ykval::DbError>>,
    {
        let url = aead_store::DbUrl::parse(&self.url).map_err(|e| Error::Usage(e.to_string()))?;
        let mut cfg = ValDbConfig::new(url);
        cfg.password_file = self.db_password_file.clone();
        cfg.timeout = std::time::Duration::from_secs(10);
        cfg.pool_size = 2;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start a runtime", e))?;
        rt.block_on(async { job(ValDb::open(&cfg)?).await })
            .map_err(Error::from)
    }
}
