//! The settings the daemon and the tools share, in one place: `ksm.toml`'s schema (the same
//! names as `ksm serve`'s flags), its defaults, and the parsing of the options the tools
//! take too. Nothing here opens a device or serves a request, so the daemon and the tools
//! both build on it and neither needs the other for it.
//!
//! - [`options`]: the flags and `ksm.toml` keys of `ksm serve`, one type for both, and
//!   the defaults (`--help` and `ksm/dist/ksm.toml` show them from there);
//! - [`serve`]: the settings `ksm serve` runs with, checked and typed, and how flags,
//!   file and defaults merge into them; [`http`]: the decode API's part of them;
//! - [`parse`]: the options the daemon and the tools read alike (`--key-handles`,
//!   `--db-url`, `--random-nonce-aeads`); [`socket_policy`]: what the sharing socket
//!   forwards.

pub mod http;
pub mod options;
pub mod parse;
pub mod serve;
pub mod socket_policy;

#[cfg(test)]
mod tests;
