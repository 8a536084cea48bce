//! `ksm val revoke URL PUBLIC_ID` and `ksm val revoke --enable URL PUBLIC_ID`: the
//! `active` flag of a YubiKey's `yubikeys` row. Every validator reads that row for every
//! OTP, so the change holds on all of them with the next OTP: there is nothing to send
//! around (yubikey-val's users asked how to revoke a key everywhere; here it is one row).
//!
//! A YubiKey the table has not seen yet gets its row now, inactive (yubikey-val's new-key
//! row: counters -1), so a key revoked before its first use is refused too. `--enable`
//! on such a key changes nothing: a key without a row is accepted already.

use std::io::Write as _;

use otp_core::PublicId;

use super::ValDbArgs;
use crate::Error;

/// `ksm val revoke`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// Take a revoked YubiKey back into use instead.
    #[arg(long)]
    pub enable: bool,
    /// The database.
    #[command(flatten)]
    pub db: ValDbArgs,
    /// The YubiKey's public id (modhex, as its OTPs begin).
    pub public_id: String,
}

/// Revokes or enables the YubiKey and says which.
pub fn run(args: RevokeArgs) -> Result<(), Error> {
    let id = PublicId::new(args.public_id.trim())?;
    let name = id.as_str().to_string();
    let (name, enable) = (&name, args.enable);
    let said = args.db.with_db(|db| async move {
        if enable {
            Ok(if db.set_yubikey_active(name, true).await? {
                format!("{name} enabled")
            } else {
                format!("{name} has no row yet: its OTPs are accepted already")
            })
        } else {
            let seen = db.yubikey(name).await?.is_some();
            db.revoke(name).await?;
            Ok(if seen {
                format!("{name} revoked")
            } else {
                format!("{name} revoked (not seen before: its row was made, inactive)")
            })
        }
    })?;
    let _ = writeln!(std::io::stdout(), "{said}");
    Ok(())
}
