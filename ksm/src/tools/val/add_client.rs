//! `ksm val add-client URL [--id N] [--email E] [--notes N]`: what yubikey-val's
//! `ykval-gen-clients` does for one client. The key is 20 random bytes from the operating
//! system, kept and printed in base64 (28 characters); the row is active, `created` now,
//! `otp` empty; the id is the one given or the next after the highest there. Standard
//! output gets `id,key` and a line ending, as `ykval-gen-clients` prints it, for the
//! client's owner (pam_yubico's `id=` and `key=`).

use std::io::Write as _;

use base64::Engine as _;
use rand::RngCore as _;
use ykval::db::NewClient;
use zeroize::Zeroizing;

use super::ValDbArgs;
use crate::Error;

/// Bytes of a client key: an HMAC-SHA1 key as long as its output, as ykval-gen-clients
/// makes them.
pub const KEY_BYTES: usize = 20;

/// `ksm val add-client`'s arguments.
#[derive(Debug, clap::Args)]
pub struct AddClientArgs {
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
    /// The client's id, 1 to 2147483647 (`clients.id` is an INT; 0 is what a request
    /// without id reads as). Default: one more than the highest there, 1 in an empty table.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(i32::MAX)))]
    pub id: Option<u32>,
    /// The client's contact address (column `email`).
    #[arg(long)]
    pub email: Option<String>,
    /// Free text (column `notes`).
    #[arg(long)]
    pub notes: Option<String>,
}

/// Adds the client and prints `id,key`.
pub fn run(args: AddClientArgs) -> Result<(), Error> {
    for (flag, value, max) in [("--email", &args.email, 255), ("--notes", &args.notes, 100)] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(Error::Usage(format!(
                "{flag}: longer than the column's {max} characters"
            )));
        }
    }
    let mut raw = Zeroizing::new([0u8; KEY_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut *raw);
    let key = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(*raw));
    let new = NewClient {
        id: args.id.map(i64::from),
        email: args.email.clone(),
        notes: args.notes.clone(),
    };
    let (new, key_text) = (&new, &key);
    let id = args.db.with_db(|db| async move {
        if let Some(id) = new.id {
            if db.client(id).await?.is_some() {
                return Err(Error::Usage(format!(
                    "client {id} exists already (give another --id, or none for the next free one)"
                )));
            }
        }
        Ok(db.insert_client(new, key_text).await?)
    })?;
    let line = Zeroizing::new(format!("{id},{}\n", key.as_str()));
    std::io::stdout()
        .write_all(line.as_bytes())
        .map_err(|e| Error::io("write the client key", e))
}
