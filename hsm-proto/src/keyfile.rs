//! Files that hold keys in clear (emulator and soft-HSM key files, `--aes-key-file`): the one
//! rule for reading them, and the one way of saying what is wrong with their text.
//!
//! Every such file is read with [`read_private`]: refused if its group or other users have
//! any access (`mode & 0o077`), never blocking on a FIFO, bounded in size, and held in memory
//! that is wiped when dropped. Errors from parsing such text go through [`toml_error`],
//! [`json_error`] or [`scrub`]: they give the line, the column and the field name, never the
//! text itself. The parsers' own messages quote the input (toml's display prints the
//! offending line, serde's "invalid type: string \"…\"" the value), and in a key file the
//! offending line is usually the key.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use crate::{Error, Result};

/// Longest key file read. An emulator configuration with a full internal database is far
/// below this; anything longer is not a key file.
pub const MAX_KEY_FILE: usize = 1 << 20;

/// Refuses a key file that anyone but its owner may read, write or execute.
pub fn check_private(path: &Path, mode: u32) -> Result<()> {
    if mode & 0o077 != 0 {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!(
                "holds keys in clear but has mode {:04o}, so other users may read it; run `chmod 600 {}`",
                mode & 0o7777,
                path.display()
            ),
        });
    }
    Ok(())
}

/// Reads a key file as text: opened without blocking (a FIFO cannot hang the caller), then
/// checked through the opened handle (a regular file, private by [`check_private`]), so a
/// file swapped between a check and the open cannot slip through; at most [`MAX_KEY_FILE`]
/// bytes.
///
/// The bytes go into one buffer allocated up front at the size the read is capped to, so it
/// never reallocates (a reallocation would leave an unwiped copy behind), and the text is
/// returned in it, wiped on drop.
pub fn read_private(path: &Path) -> Result<Zeroizing<String>> {
    let io_err = |e: std::io::Error| Error::KeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    check_private(path, meta.permissions().mode())?;
    let cap = usize::try_from(meta.len())
        .unwrap_or(usize::MAX)
        .min(MAX_KEY_FILE)
        + 1;
    let mut bytes = Zeroizing::new(Vec::with_capacity(cap));
    file.take(cap as u64)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() > MAX_KEY_FILE {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!("longer than {MAX_KEY_FILE} bytes: not a key file"),
        });
    }
    into_text(bytes).map_err(|line| Error::KeyFile {
        path: path.to_path_buf(),
        reason: format!("line {line}: not UTF-8 text"),
    })
}

/// Secret bytes as text, moved (not copied) into a string wiped on drop. If they are not
/// UTF-8 they are wiped, and the error is the (1-based) line where the text goes wrong.
pub fn into_text(mut bytes: Zeroizing<Vec<u8>>) -> std::result::Result<Zeroizing<String>, usize> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            let valid = e
                .as_bytes()
                .get(..e.utf8_error().valid_up_to())
                .unwrap_or_default();
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            e.into_bytes().zeroize();
            Err(line)
        }
    }
}

/// 1-based line and column of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A TOML error as `line N, column M: <what>`, without the input toml's display quotes.
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    let what = scrub(e.message().trim());
    match e.span() {
        Some(span) => {
            let (line, column) = line_col(text, span.start);
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

/// A JSON error as `line N, column M: <what>`, without the values serde_json may quote.
pub fn json_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    // serde_json appends " at line L column C" to every message that has a position.
    let what = match full.rfind(" at line ") {
        Some(i) if e.line() > 0 => &full[..i],
        _ => full.as_str(),
    };
    let what = scrub(what);
    if e.line() > 0 {
        format!("line {}, column {}: {what}", e.line(), e.column())
    } else {
        what
    }
}

/// A parser's message with every quoted piece of input replaced by `…`, except quoted
/// field names and punctuation (``unknown field `keys`, expected `key` ``, ``expected `=` ``),
/// which say what is wrong without being secret; a long run of hex digits outside quotes
/// is removed too. Names are words with at least one letter outside `a`–`f`, so a quoted
/// hex key never passes for one.
pub fn scrub(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&drop_hex_runs(&rest[..open]));
        let after = &rest[open + 1..];
        // An escaped quote inside a Rust-style debug string does not end it.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            // An unterminated quote: everything after it may be input.
            out.push(quote);
            out.push('…');
            return out;
        };
        let inner = &after[..end];
        out.push(quote);
        out.push_str(if is_name(inner) { inner } else { "…" });
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(&drop_hex_runs(rest));
    out
}

/// True for a quoted piece a message may show: punctuation, or a field or flag name.
fn is_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 48 {
        return false;
    }
    if s.chars().all(|c| c.is_ascii_punctuation() || c == ' ') {
        return true;
    }
    s.chars()
        .all(|c| c.is_ascii_alphabetic() || matches!(c, '_' | '-' | '.'))
        && s.chars()
            .any(|c| c.is_ascii_alphabetic() && !c.is_ascii_hexdigit())
}

/// `s` with runs of 8 or more hex digits replaced by `…`.
fn drop_hex_runs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        if run.len() >= 8 {
            out.push('…');
        } else {
            out.push_str(&run);
        }
        run.zeroize();
        out.push(c);
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_keeps_names_and_drops_values() {
        assert_eq!(
            scrub("unknown field `keys`, expected one of `key`, `firmware`"),
            "unknown field `keys`, expected one of `key`, `firmware`"
        );
        assert_eq!(
            scrub("invalid type: string \"00112233445566778899aabbccddeeff\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(scrub("expected `=`"), "expected `=`");
        assert_eq!(scrub("a \"deadbeef\" b"), "a \"…\" b");
        assert_eq!(scrub("integer `123456`"), "integer `…`");
        assert_eq!(scrub("x \"ab\\\"cd\" y"), "x \"…\" y");
        assert_eq!(scrub("open \"fd9198"), "open \"…");
        assert_eq!(scrub("bare 0123456789abcdef0123 end"), "bare … end");
        assert_eq!(scrub("line 12 ok"), "line 12 ok");
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn read_private_refuses_shared_special_and_huge_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "00").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_private(&p)
            .unwrap_err()
            .to_string()
            .contains("mode 0640"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private(&p).unwrap().as_str(), "00");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(read_private(&fifo)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let big = d.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(100 << 20)
            .unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_private(&big)
            .unwrap_err()
            .to_string()
            .contains("not a key file"));
    }
}
