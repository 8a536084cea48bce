//! `ksm val …`: the validator's database, as yubikey-val's own tools keep it. One file per
//! command: `db-init` makes the tables, `add-client` a client and its key
//! (`ykval-gen-clients`), `revoke` stops a YubiKey on every validator at once, `export` and
//! `import-ykval` move both tables as yubikey-val's CSV files (`ykval-export`,
//! `ykval-import` and their `-clients` twins).

pub mod add_client;
pub mod db_init;
pub mod export;
pub mod import_ykval;
pub mod revoke;

use std::path::PathBuf;
use std::time::Duration;

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
    /// Create yubikey-val's tables `clients` and `yubikeys` if they are missing (tables
    /// that are there are left as they are).
    DbInit(db_init::DbInitArgs),
    /// Add an API client with a new random key and print `id,key` (as ykval-gen-clients).
    AddClient(add_client::AddClientArgs),
    /// Revoke a YubiKey (every validator on the database refuses it at once), or with
    /// --enable take it back.
    Revoke(revoke::RevokeArgs),
    /// Import a CSV file written by yubikey-val's ykval-export (or, with --clients,
    /// ykval-export-clients): counters only ever move up; one transaction.
    ImportYkval(import_ykval::ImportArgs),
    /// Print the yubikeys table (or with --clients the clients table) as yubikey-val's
    /// ykval-export (ykval-export-clients) prints it.
    Export(export::ExportArgs),
}

/// The validator's database as the tools take it.
#[derive(Debug, Clone, clap::Args)]
pub struct ValDbArgs {
    /// The database: postgresql://USER@HOST/DB, mysql://USER@HOST/DB or sqlite:///PATH (no
    /// password in the URL).
    pub url: String,
    /// Private file (mode 0600) whose first line is the database password.
    #[arg(long)]
    pub db_password_file: Option<PathBuf>,
}

/// How long a tool waits for the database (a connection, or one statement): longer than
/// the daemon's, which must answer `BACKEND_ERROR` within the request's deadline, and short
/// enough that an unreachable database is reported while the operator still waits.
const TOOL_DB_TIMEOUT: Duration = Duration::from_secs(10);

impl ValDbArgs {
    /// Runs `f` on the database, on a runtime of its own (the tools are not async).
    pub fn with_db<T, F>(&self, f: impl FnOnce(ValDb) -> F) -> Result<T, Error>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let url = aead_store::DbUrl::parse(&self.url).map_err(|e| Error::Usage(e.to_string()))?;
        let mut cfg = ValDbConfig::new(url);
        cfg.password_file = self.db_password_file.clone();
        cfg.pool_size = 1;
        cfg.timeout = TOOL_DB_TIMEOUT;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start the runtime", e))?;
        rt.block_on(async {
            let db = ValDb::open(&cfg)?;
            f(db).await
        })
    }
}

/// Runs `ksm val …`.
pub fn run(args: ValArgs) -> Result<(), Error> {
    match args.cmd {
        ValCmd::DbInit(a) => db_init::run(a),
        ValCmd::AddClient(a) => add_client::run(a),
        ValCmd::Revoke(a) => revoke::run(a),
        ValCmd::ImportYkval(a) => import_ykval::run(a),
        ValCmd::Export(a) => export::run(a),
    }
}
