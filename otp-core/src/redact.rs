//! Parser messages about key-file text, without the text: they give the line, the column and
//! the field name, never the input. The parsers' own messages quote it (toml's display
//! prints the offending line, serde's "invalid type: string \"…\"" the value), and in a key
//! file the offending line is usually the key.
//!
//! [`scrub`] works on any message; `toml_error` and `json_error` read the position
//! from their parser's error (features `toml` and `json`).

use zeroize::Zeroize;

/// 1-based line and column of byte `offset` of `text`.
#[cfg_attr(not(feature = "toml"), allow(dead_code))]
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A TOML error as `line N, column M: <what>`, without the input toml's display quotes.
#[cfg(feature = "toml")]
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
#[cfg(feature = "json")]
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

/// A parser's message with every quoted piece of input replaced by `…`, except punctuation
/// and field names: the name right after `field` or `key` (``unknown field `keys` ``), and
/// the names the parser lists after `expected` (``expected one of `key`, `firmware` ``,
/// ``expected `=` ``). Those say what is wrong without being secret. A quoted value is never
/// shown, whatever it looks like: a letters-only password typed into the wrong field
/// (``unknown variant `Hunter` ``, `invalid type: string "Hunter"`) reads like a name, so
/// only where a piece stands, not what it holds, makes it a name. A long run of hex digits
/// outside quotes is removed too, and names are words with at least one letter outside
/// `a`–`f`, so a quoted hex key never passes for one.
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
        let before = &msg[..msg.len() - rest.len() + open];
        let shown = is_punctuation(inner) || (names_here(before) && is_name(inner));
        out.push(quote);
        out.push_str(if shown { inner } else { "…" });
        out.push(quote);
        rest = &after[end + 1..];
    }
    out.push_str(&drop_hex_runs(rest));
    out
}

/// True where the message has a name at this point (`before` is the message up to the
/// opening quote): right after `field` or `key`, or anywhere after `expected`, where the
/// parser lists what it would have taken.
fn names_here(before: &str) -> bool {
    let before = before.trim_end();
    before.ends_with(" field") || before.ends_with(" key") || before.contains("expected")
}

/// True for quoted punctuation (`=`, `.`): the parser's syntax, never input.
fn is_punctuation(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_punctuation() || c == ' ')
}

/// True for a word that may be a field or flag name.
fn is_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 48 {
        return false;
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

    /// A letters-only secret in a field that wants something else reads like a name; it
    /// is a value all the same, and never shown.
    #[test]
    fn scrub_never_shows_a_value_that_looks_like_a_name() {
        assert_eq!(
            scrub("unknown variant `Hunterpassword`, expected `tools` or `all`"),
            "unknown variant `…`, expected `tools` or `all`"
        );
        assert_eq!(
            scrub("invalid type: string \"Hunterpassword\", expected u32"),
            "invalid type: string \"…\", expected u32"
        );
        assert_eq!(
            scrub("invalid value: string \"Hunterpassword\", expected a key handle"),
            "invalid value: string \"…\", expected a key handle"
        );
        assert_eq!(scrub("duplicate key `addr`"), "duplicate key `addr`");
        assert_eq!(scrub("missing field `key`"), "missing field `key`");
    }

    #[test]
    fn line_and_column_count_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
