//! Names from the store (file names, directory names, database ids) as they may be printed.
//!
//! A file name may hold any byte but `/` and NUL, and a database id any text: a newline
//! would forge a whole line of `store verify`'s report (`BAD …`, `NONCE …`) or of a log,
//! and an escape sequence could rewrite the terminal. Every message and line that shows
//! such a name shows it through [`shown`], the one place that decides what is escaped.

use std::ffi::OsStr;
use std::fmt::{self, Write};

/// `name` for printing: see [`Shown`].
pub fn shown<N: AsRef<OsStr> + ?Sized>(name: &N) -> Shown<'_> {
    Shown(name.as_ref().as_encoded_bytes())
}

/// A name shown with what is not printable escaped: control characters as Rust writes them
/// (`\n`, `\t`, `\u{1b}`), the invisible characters that reorder or hide text (bidi
/// controls, zero-width ones) as `\u{…}`, bytes that are not UTF-8 as `\xNN`. Anything else,
/// a backslash included, is shown as it is, so showing a shown name again changes nothing.
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a [u8]);

/// Whether `c` must not reach a terminal or a log line as it is.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        )
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if hidden(c) {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn what_is_not_printable_is_escaped_and_the_rest_kept() {
        let name = OsStr::from_bytes(b"0x20/cc\nBAD x\x1b[2J\xff\xfe \\n \xc3\xa9\xe2\x80\xae.");
        assert_eq!(
            shown(name).to_string(),
            "0x20/cc\\nBAD x\\u{1b}[2J\\xff\\xfe \\n \u{e9}\\u{202e}."
        );
        // Printable names are unchanged, and showing twice is showing once.
        assert_eq!(
            shown("/var/aeads/0x20/cc/ccbbddeeffcc").to_string(),
            "/var/aeads/0x20/cc/ccbbddeeffcc"
        );
        let once = shown(name).to_string();
        assert_eq!(shown(&once).to_string(), once);
    }
}
