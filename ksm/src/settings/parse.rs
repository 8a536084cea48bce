//! The options the daemon and the tools read alike, parsed in one place so both say the
//! same about a bad one; and how a checked setting is taken from [`super::options`].

use std::ops::RangeInclusive;
use std::time::Duration;

use aead_store::{AeadKey, NoncePolicy};

use crate::Error;

/// Parses `--key-handles` for the daemon: each argument may be comma-separated, each key a
/// YubiHSM 1 key handle in any pyhsm spelling (`0x20`, `32`, `KSM1`) or a YubiHSM 2
/// otp-aead-key (`otp-aead-key:0x0120`, `otp-aead-key:288`), tried in the order given.
pub fn aead_keys(args: &[String]) -> Result<Vec<AeadKey>, Error> {
    let mut out = Vec::new();
    for a in args {
        for part in a.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let key = match AeadKey::parse(part) {
                Some(k) => k,
                None if part.starts_with("otp-aead-key") => {
                    return Err(Error::Usage(format!(
                    "--key-handles {part:?}: a YubiHSM 2 key is otp-aead-key:N, N from 1 to 0xffff"
                )))
                }
                // pyhsm's spellings, with the key-handle parser's own message.
                None => AeadKey::from(hsm_proto::KeyHandle::parse(part)?),
            };
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "at least one key handle is needed (--key-handles)".into(),
        ));
    }
    Ok(out)
}

/// A `--db-url`, read as pyhsm's users write it; a bad one is a usage error that never
/// repeats the URL (it may hold a password).
pub fn db_url(url: &str) -> Result<aead_store::DbUrl, Error> {
    aead_store::DbUrl::parse(url).map_err(|e| Error::Usage(format!("--db-url: {e}")))
}

/// The store's nonce rule for `--random-nonce-aeads`.
pub fn nonce_policy(random_nonce_aeads: bool) -> NoncePolicy {
    if random_nonce_aeads {
        NoncePolicy::Any
    } else {
        NoncePolicy::PublicId
    }
}

/// An option's value once the defaults are under it; only options without a default (which
/// `settings` does not ask for this way) could be missing.
pub(super) fn set<T: Clone>(value: &Option<T>, key: &str) -> Result<T, Error> {
    value
        .clone()
        .ok_or_else(|| Error::Usage(format!("--{key} has no value")))
}

/// An option in seconds, within `range`.
pub(super) fn seconds(
    value: &Option<f64>,
    key: &str,
    range: RangeInclusive<f64>,
) -> Result<Duration, Error> {
    let secs = set(value, key)?;
    if !range.contains(&secs) {
        return Err(Error::Usage(format!(
            "--{key} must be between {} and {} seconds",
            range.start(),
            range.end()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}
