//! yubikey-val's CSV files, as its `ykval-export`/`ykval-import` (table `yubikeys`) and
//! `ykval-export-clients`/`ykval-import-clients` (table `clients`) write and read them.
//!
//! The PHP writes one row a line, the columns in table order joined by commas, with no
//! quoting (`active` as `0`/`1`), ordered by `yk_publicname` and by `id`; it reads with PHP's
//! `fgetcsv`, which also takes `"quoted, fields"` (a doubled `""` inside one is a quote), and
//! skips blank lines and lines whose first field starts with `#`. So:
//!
//! - [`write_yubikey`] and [`write_client`] give the PHP's bytes for every row whose text
//!   fields hold no comma, quote or line break; a field that does is quoted, which `fgetcsv`
//!   reads back as it was (the PHP would have split it).
//! - [`Reader`] reads what `fgetcsv` reads: quoted or bare fields, blank and `#` lines
//!   skipped, a line break inside quotes kept. Each record carries the line it starts on,
//!   for errors.
//! - [`parse_yubikey`] and [`parse_client`] check every field against yubikey-val's
//!   schema (types, lengths, modhex names, base64 keys) so nothing the validator would choke
//!   on gets into the tables. A `yubikeys` line the PHP wrote with a comma in its last
//!   column (`notes`) has more than ten fields: the rest is that column, commas put back.

use std::fmt;

use zeroize::Zeroizing;

use crate::db::{Client, Counters, Yubikey};
use crate::sign::ClientKey;
use otp_core::PublicId;

/// One CSV record and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The line of the file it starts on.
    pub line: usize,
    /// Its fields, unquoted. A clients file holds keys: each field is wiped when dropped.
    pub fields: Vec<Zeroizing<String>>,
}

/// Appends `text` to `out` without leaving a copy behind: a buffer too small is replaced by
/// a larger one and wiped, where `String`'s own growth would free it as it is.
fn push_wiping(out: &mut Zeroizing<String>, text: &str) {
    if out.capacity() - out.len() < text.len() {
        let size = (out.len() + text.len()).max(2 * out.capacity()).max(16);
        let mut bigger = Zeroizing::new(String::with_capacity(size));
        bigger.push_str(out);
        *out = bigger;
    }
    out.push_str(text);
}

/// What is wrong with a line of a CSV file; shown as `line N: …`. It never holds a client
/// key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError {
    /// The line of the file.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for CsvError {}

fn bad(line: usize, reason: impl Into<String>) -> CsvError {
    CsvError {
        line,
        reason: reason.into(),
    }
}

/// Splits a CSV text into records the way PHP's `fgetcsv` does with `,` and `"`.
pub struct Reader<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Reader<'a> {
    /// Reads `text`.
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader {
            rest: text,
            line: 1,
        }
    }
}

impl Iterator for Reader<'_> {
    type Item = Result<Record, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let start = self.line;
            let mut fields: Vec<Zeroizing<String>> = Vec::new();
            let mut field = Zeroizing::new(String::new());
            let mut buf = [0u8; 4];
            let mut push = |field: &mut Zeroizing<String>, c: char| {
                push_wiping(field, c.encode_utf8(&mut buf));
            };
            // Inside a quoted field: commas and line breaks are text. Text after the closing
            // quote is kept in the field, as fgetcsv keeps it.
            let mut quoted = false;
            let mut chars = self.rest.char_indices().peekable();
            let mut end = self.rest.len();
            let mut ended = false;
            while let Some((i, c)) = chars.next() {
                match (quoted, c) {
                    (true, '"') => {
                        if matches!(chars.peek(), Some((_, '"'))) {
                            chars.next();
                            push(&mut field, '"');
                        } else {
                            quoted = false;
                        }
                    }
                    (true, '\n') => {
                        self.line += 1;
                        push(&mut field, '\n');
                    }
                    (true, c) => push(&mut field, c),
                    (false, '"') if field.is_empty() => quoted = true,
                    (false, ',') => fields.push(std::mem::take(&mut field)),
                    (false, '\n') => {
                        end = i + 1;
                        ended = true;
                        break;
                    }
                    (false, '\r') if matches!(chars.peek(), Some((_, '\n')) | None) => {}
                    (false, c) => push(&mut field, c),
                }
            }
            if quoted {
                self.rest = "";
                return Some(Err(bad(start, "a quoted field is not closed")));
            }
            self.rest = &self.rest[end..];
            if ended {
                self.line += 1;
            }
            let blank = fields.is_empty() && field.is_empty();
            fields.push(field);
            if blank || fields[0].starts_with('#') {
                continue;
            }
            return Some(Ok(Record {
                line: start,
                fields,
            }));
        }
    }
}

/// A field as the PHP writes it, quoted where a comma, quote or line break would otherwise
/// split the row.
fn field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

/// Columns of a `yubikeys` line.
pub const YUBIKEY_COLUMNS: usize = 10;
/// Columns of a `clients` line.
pub const CLIENT_COLUMNS: usize = 7;

fn active(line: usize, s: &str) -> Result<bool, CsvError> {
    match s.trim() {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(bad(line, format!("active is {other:?}; 1 or 0 expected"))),
    }
}

fn int<T: std::str::FromStr>(line: usize, name: &str, s: &str) -> Result<T, CsvError> {
    s.trim().parse().map_err(|_| {
        bad(
            line,
            format!("{name} is {s:?}, not a whole number in range"),
        )
    })
}

/// A counter column: -1 (never) up to what the YubiKey's field holds.
fn ranged(line: usize, name: &str, s: &str, max: i64) -> Result<i64, CsvError> {
    let v: i64 = int(line, name, s)?;
    if !(-1..=max).contains(&v) {
        return Err(bad(line, format!("{name} is {v}; -1 to {max} expected")));
    }
    Ok(v)
}

/// A Unix time in one of the schema's `INT` columns.
fn time(line: usize, name: &str, s: &str) -> Result<i64, CsvError> {
    int::<i32>(line, name, s).map(i64::from)
}

fn text(line: usize, name: &str, s: &str, max: usize) -> Result<String, CsvError> {
    if s.chars().count() > max {
        return Err(bad(
            line,
            format!("{name} is longer than the column's {max} characters"),
        ));
    }
    Ok(s.to_string())
}

/// Checks a record of a `yubikeys` file and gives the row. A line with more than ten fields
/// is one the PHP wrote with commas in `notes`, its last column: they are put back.
pub fn parse_yubikey(r: &Record) -> Result<Yubikey, CsvError> {
    let (l, f) = (r.line, &r.fields);
    if f.len() < YUBIKEY_COLUMNS {
        let hint = if f.len() == CLIENT_COLUMNS {
            ": this looks like a clients line (give --clients)"
        } else {
            ""
        };
        return Err(bad(
            l,
            format!(
                "{} fields; a yubikeys line has {YUBIKEY_COLUMNS} (active,created,modified,\
                 yk_publicname,yk_counter,yk_use,yk_low,yk_high,nonce,notes){hint}",
                f.len()
            ),
        ));
    }
    let name = f[3].trim();
    if PublicId::new(name).is_err() {
        return Err(bad(
            l,
            format!("yk_publicname {name:?} is not a public id (2 to 16 lower-case modhex characters, an even number)"),
        ));
    }
    let nonce = f[8].trim();
    if nonce.len() > 40 || !nonce.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(
            l,
            format!("nonce {nonce:?} is not up to 40 letters and digits"),
        ));
    }
    let rest: Vec<&str> = f[9..].iter().map(|s| s.as_str()).collect();
    let notes = text(l, "notes", &rest.join(","), 100)?;
    Ok(Yubikey {
        active: active(l, &f[0])?,
        created: time(l, "created", &f[1])?,
        modified: time(l, "modified", &f[2])?,
        public_name: name.to_string(),
        counters: Counters {
            counter: ranged(l, "yk_counter", &f[4], 0xffff)?,
            session_use: ranged(l, "yk_use", &f[5], 0xff)?,
        },
        low: ranged(l, "yk_low", &f[6], 0xffff)?,
        high: ranged(l, "yk_high", &f[7], 0xff)?,
        nonce: nonce.to_string(),
        notes: Some(notes),
    })
}

/// A `yubikeys` row as `ykval-export` prints it, with its line ending.
pub fn write_yubikey(y: &Yubikey, out: &mut String) {
    out.push_str(&format!(
        "{},{},{},{},{},{},{},{},",
        u8::from(y.active),
        y.created,
        y.modified,
        y.public_name,
        y.counters.counter,
        y.counters.session_use,
        y.low,
        y.high,
    ));
    field(out, &y.nonce);
    out.push(',');
    field(out, y.notes.as_deref().unwrap_or(""));
    out.push('\n');
}

/// Checks a record of a `clients` file and gives the row. The key must be base64 (what
/// the validator can sign with); errors never show it.
pub fn parse_client(r: &Record) -> Result<Client, CsvError> {
    let (l, f) = (r.line, &r.fields);
    if f.len() != CLIENT_COLUMNS {
        let hint = if f.len() >= YUBIKEY_COLUMNS {
            ": this looks like a yubikeys line (leave out --clients)"
        } else {
            ": a field holding a comma must be quoted"
        };
        return Err(bad(
            l,
            format!(
                "{} fields; a clients line has {CLIENT_COLUMNS} (id,active,created,secret,\
                 email,notes,otp){hint}",
                f.len()
            ),
        ));
    }
    let id: i32 = int(l, "id", &f[0])?;
    if id <= 0 {
        return Err(bad(l, format!("id is {id}; client ids are 1 or more")));
    }
    let secret = f[3].trim();
    if secret.len() > 60 || ClientKey::from_base64(secret).is_none() {
        return Err(bad(
            l,
            "secret is not a base64 client key of up to 60 characters",
        ));
    }
    Ok(Client {
        id: i64::from(id),
        active: active(l, &f[1])?,
        created: time(l, "created", &f[2])?,
        secret: Zeroizing::new(secret.to_string()),
        email: Some(text(l, "email", &f[4], 255)?),
        notes: Some(text(l, "notes", &f[5], 100)?),
        otp: Some(text(l, "otp", &f[6], 100)?),
    })
}

/// A `clients` row as `ykval-export-clients` prints it, with its line ending. The key goes
/// straight into `out`, which is wiped as it grows and when dropped.
pub fn write_client(c: &Client, out: &mut Zeroizing<String>) {
    push_wiping(
        out,
        &format!("{},{},{},", c.id, u8::from(c.active), c.created),
    );
    push_wiping(out, c.secret.as_str());
    let mut rest = String::from(",");
    field(&mut rest, c.email.as_deref().unwrap_or(""));
    rest.push(',');
    field(&mut rest, c.notes.as_deref().unwrap_or(""));
    rest.push(',');
    field(&mut rest, c.otp.as_deref().unwrap_or(""));
    rest.push('\n');
    push_wiping(out, &rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn z(fields: &[&str]) -> Vec<Zeroizing<String>> {
        fields
            .iter()
            .map(|f| Zeroizing::new(f.to_string()))
            .collect()
    }

    /// Growing a buffer that holds a key copies it into a fresh one and wipes the old (the
    /// old is `Zeroizing`): the text comes out whole whatever the growth.
    #[test]
    fn a_wiping_buffer_grows_and_keeps_its_text() {
        let mut out = Zeroizing::new(String::new());
        let mut want = String::new();
        for i in 0..200 {
            let piece = format!("{i}-é,");
            push_wiping(&mut out, &piece);
            want.push_str(&piece);
        }
        assert_eq!(out.as_str(), want);
    }

    fn records(text: &str) -> Vec<Record> {
        Reader::new(text).collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn fgetcsv_rules_blank_and_hash_lines_skipped_quotes_undone() {
        let r = records("# comment,1\n\n1,\"a,b\",\"say \"\"hi\"\"\"\r\n\"x\ny\",2\nlast");
        assert_eq!(
            r,
            vec![
                Record {
                    line: 3,
                    fields: z(&["1", "a,b", "say \"hi\""])
                },
                Record {
                    line: 4,
                    fields: z(&["x\ny", "2"])
                },
                Record {
                    line: 6,
                    fields: z(&["last"])
                },
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_is_an_error_on_its_line() {
        let e: Vec<_> = Reader::new("1,2\n3,\"open\n4\n").collect();
        assert_eq!(e[1], Err(bad(2, "a quoted field is not closed")));
    }

    #[test]
    fn a_yubikeys_line_as_ykval_export_writes_it_reads_and_writes_back_the_same() {
        let line = "1,1700000000,1700000100,cccccccccccb,40,3,4660,86,0000000000000000,\n";
        let r = records(line);
        let row = parse_yubikey(&r[0]).unwrap();
        assert_eq!(row.counters.counter, 40);
        assert!(row.active);
        let mut out = String::new();
        write_yubikey(&row, &mut out);
        assert_eq!(out, line);
    }

    #[test]
    fn a_new_identity_row_with_minus_one_counters_is_taken() {
        let r = records("1,1700000000,-1,vvvvvvvvvvvv,-1,-1,-1,-1,0000000000000000,\n");
        assert_eq!(parse_yubikey(&r[0]).unwrap().counters.session_use, -1);
    }

    #[test]
    fn commas_in_notes_of_a_php_written_line_are_put_back() {
        let r = records("0,1,2,cccccccccccb,1,2,3,4,abc,one, two,three\n");
        let row = parse_yubikey(&r[0]).unwrap();
        assert_eq!(row.notes.as_deref(), Some("one, two,three"));
        let mut out = String::new();
        write_yubikey(&row, &mut out);
        assert_eq!(out, "0,1,2,cccccccccccb,1,2,3,4,abc,\"one, two,three\"\n");
    }

    #[test]
    fn bad_fields_are_named_with_their_line() {
        let cases = [
            ("2,1,2,cccccccccccb,1,2,3,4,abc,\n", "active is \"2\""),
            ("1,x,2,cccccccccccb,1,2,3,4,abc,\n", "created is \"x\""),
            ("1,1,2,CCCC,1,2,3,4,abc,\n", "yk_publicname \"CCCC\""),
            (
                "1,1,2,cccccccccccb,65536,2,3,4,abc,\n",
                "yk_counter is 65536",
            ),
            ("1,1,2,cccccccccccb,1,256,3,4,abc,\n", "yk_use is 256"),
            ("1,1,2,cccccccccccb,1,2,3,4,a-b,\n", "nonce \"a-b\""),
            ("1,1,2,cccccccccccb,1,2,3\n", "7 fields"),
        ];
        for (line, want) in cases {
            let r = records(&format!("# header\n{line}"));
            let e = parse_yubikey(&r[0]).unwrap_err();
            assert_eq!(e.line, 2, "{line}");
            assert!(e.to_string().contains(want), "{line}: {e}");
        }
        let r = records("1,1,2,cccccccccccb,1,2,3\n");
        assert!(parse_yubikey(&r[0])
            .unwrap_err()
            .reason
            .contains("clients line"));
    }

    #[test]
    fn a_clients_line_as_ykval_export_clients_writes_it_reads_and_writes_back_the_same() {
        let line = "7,1,1700000000,AAECAwQFBgcICQoLDA0ODxAREhM=,ops@example.org,,\n";
        let r = records(line);
        let row = parse_client(&r[0]).unwrap();
        assert_eq!(row.id, 7);
        let mut out = Zeroizing::new(String::new());
        write_client(&row, &mut out);
        assert_eq!(out.as_str(), line);
    }

    #[test]
    fn a_bad_client_key_is_refused_without_showing_it() {
        let r = records("7,1,1,not*base64*SECRETTEXT,,,\n");
        let e = parse_client(&r[0]).unwrap_err();
        assert!(!e.to_string().contains("SECRETTEXT"), "{e}");
        assert!(e.to_string().starts_with("line 1: secret"), "{e}");
        let row = parse_client(&records("7,1,1,QUJD,,,\n")[0]).unwrap();
        assert!(!format!("{row:?}").contains("QUJD"));
    }

    #[test]
    fn client_ids_are_positive_and_columns_exact() {
        let e = parse_client(&records("0,1,1,QUJD,,,\n")[0]).unwrap_err();
        assert!(e.reason.contains("id is 0"), "{e}");
        let e = parse_client(&records("1,1,1,QUJD,a,b,c,d\n")[0]).unwrap_err();
        assert!(e.reason.contains("8 fields"), "{e}");
    }
}
