//! `ksm val export URL [--clients]`: the `yubikeys` table as yubikey-val's `ykval-export`
//! prints it (or `clients` as `ykval-export-clients` does), on standard output, for
//! `ksm val import-ykval` or yubikey-val's own import on the other side. The format is
//! in `ykval::csv`.

use std::io::Write as _;

use zeroize::Zeroizing;

use super::ValDbArgs;
use crate::Error;

/// `ksm val export`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The clients table (ids and keys) instead of the YubiKeys' counters.
    #[arg(long)]
    pub clients: bool,
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
}

/// Prints the table.
pub fn run(args: ExportArgs) -> Result<(), Error> {
    // Client keys pass through this text: wiped when dropped.
    let clients = args.clients;
    let out = args.db.with_db(|db| async move {
        let mut out = Zeroizing::new(String::new());
        if clients {
            for c in db.all_clients().await? {
                ykval::csv::write_client(&c, &mut out);
            }
        } else {
            for y in db.all_yubikeys().await? {
                ykval::csv::write_yubikey(&y, &mut out);
            }
        }
        Ok(out)
    })?;
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Error::io("write the export", e))
}
