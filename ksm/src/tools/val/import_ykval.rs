//! `ksm val import-ykval FILE URL [--clients]`: a file yubikey-val's `ykval-export` wrote
//! (or, with `--clients`, `ykval-export-clients`), or `ksm val export`, into the tables.
//! `-` reads standard input, as the PHP tools do.
//!
//! The whole file is read and checked first: a bad line is an error naming its line, and
//! nothing is written. Then every row goes in in one transaction (`ykval::db`'s import
//! rules: a YubiKey's counters only ever move up, a client id already there must have the
//! same key), so a failure there writes nothing either.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use otp_core::keyfile;
use ykval::csv::{parse_client, parse_yubikey, Reader};
use ykval::db::{ImportError, Imported};
use zeroize::Zeroizing;

use super::ValDbArgs;
use crate::Error;

/// `ksm val import-ykval`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file is a clients file (id,active,created,secret,email,notes,otp).
    #[arg(long)]
    pub clients: bool,
    /// The CSV file (`-`: standard input).
    pub file: PathBuf,
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
}

/// Imports the file and says what changed.
pub fn run(args: ImportArgs) -> Result<(), Error> {
    let name = args.file.display().to_string();
    let text = if name == "-" {
        // Standard input has no size to read ahead: one buffer of the key-file cap, so a
        // clients file of that size is read without a copy left behind by a reallocation.
        let mut bytes = Zeroizing::new(Vec::with_capacity(keyfile::MAX_KEY_FILE));
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("read {name}"), e))?;
        keyfile::into_text(bytes).map_err(|line| not_text(&name, line))?
    } else if args.clients {
        // A clients file holds every client's key in clear: read as every key file is
        // (refused if others may read it, one buffer, wiped when dropped).
        keyfile::read_private(&args.file)?
    } else {
        // Counters only, no secret; still read into one buffer of the file's size.
        let mut f =
            std::fs::File::open(&args.file).map_err(|e| Error::io(format!("read {name}"), e))?;
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1));
        f.read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("read {name}"), e))?;
        keyfile::into_text(bytes).map_err(|line| not_text(&name, line))?
    };
    let bad_line =
        |e: ykval::csv::CsvError| Error::Input(format!("{name}: {e} (nothing was imported)"));
    // A row the database refused is the file's problem at that line; a database that
    // cannot be reached is the database's.
    let failed = |e: ImportError| match e.line {
        Some(_) => Error::Input(format!("{name}: {e}")),
        None => Error::from(e.error),
    };
    let (what, done) = if args.clients {
        let mut rows = Vec::new();
        for r in Reader::new(&text) {
            let r = r.map_err(bad_line)?;
            rows.push((r.line, parse_client(&r).map_err(bad_line)?));
        }
        let rows = &rows;
        let done = args
            .db
            .with_db(|db| async move { db.import_clients(rows).await.map_err(failed) })?;
        ("clients", done)
    } else {
        let mut rows = Vec::new();
        for r in Reader::new(&text) {
            let r = r.map_err(bad_line)?;
            rows.push((r.line, parse_yubikey(&r).map_err(bad_line)?));
        }
        let rows = &rows;
        let done = args
            .db
            .with_db(|db| async move { db.import_yubikeys(rows).await.map_err(failed) })?;
        ("yubikeys", done)
    };
    let _ = writeln!(std::io::stdout(), "{}", summary(what, done));
    Ok(())
}

/// The line an import ends with.
fn summary(what: &str, d: Imported) -> String {
    if what == "clients" {
        format!(
            "clients: {} added, {} already there with the same key",
            d.added, d.kept
        )
    } else {
        format!(
            "yubikeys: {} added, {} advanced to the file's counters, {} kept (the table's counters as high or higher)",
            d.added, d.advanced, d.kept
        )
    }
}

/// A file that is not UTF-8 text, named with the line where it stops being text.
fn not_text(name: &str, line: usize) -> Error {
    Error::Input(format!("{name}: not UTF-8 text (line {line})"))
}
