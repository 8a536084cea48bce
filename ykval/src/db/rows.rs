//! The rows of the two tables as types, read from whatever the database gave: a row is
//! untrusted input (a hand-edited or imported table may hold anything), so each column is
//! checked and a bad one is an error naming the row, never a panic.

use std::fmt;

use sqlx::Row as _;
use zeroize::Zeroizing;

use super::DbError;

/// A row of `clients`.
#[derive(Clone, PartialEq, Eq)]
pub struct Client {
    /// The client id requests carry as `id`.
    pub id: i64,
    /// Whether it may verify OTPs.
    pub active: bool,
    /// When it was made (Unix time).
    pub created: i64,
    /// Its HMAC-SHA1 key, base64, as yubikey-val keeps it (wiped when dropped, never shown).
    pub secret: Zeroizing<String>,
    /// Contact address.
    pub email: Option<String>,
    /// Free text.
    pub notes: Option<String>,
    /// yubikey-val's record of the OTP that asked for the key (free text to us).
    pub otp: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("active", &self.active)
            .field("created", &self.created)
            .field("secret", &"(redacted)")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A row of `yubikeys`: what the validator last accepted from one YubiKey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yubikey {
    /// Whether its OTPs are accepted (false: revoked).
    pub active: bool,
    /// When the row was made (Unix time).
    pub created: i64,
    /// When an OTP was last accepted (Unix time; -1 never).
    pub modified: i64,
    /// The public id (modhex).
    pub public_name: String,
    /// Last accepted counters: the non-volatile counter and the session use (-1 never).
    pub counters: Counters,
    /// Timestamp of the last accepted OTP, low 16 bits (-1 never).
    pub low: i64,
    /// Timestamp of the last accepted OTP, high 8 bits (-1 never).
    pub high: i64,
    /// The nonce of the request that was accepted last.
    pub nonce: String,
    /// Free text.
    pub notes: Option<String>,
}

/// A YubiKey's pair of counters as the table holds them (`yk_counter`, `yk_use`), ordered
/// as the YubiKey advances them: the non-volatile counter first, the session use second.
/// A new row holds (-1, -1), below every OTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Counters {
    /// `yk_counter`: the non-volatile use counter.
    pub counter: i64,
    /// `yk_use`: the session use counter.
    pub session_use: i64,
}

/// An integer column whatever its declared width (yubikey-val's `INT`, or a wider one in a
/// table made otherwise).
fn int(row: &impl RowLike, col: &str) -> Option<i64> {
    row.i64_of(col)
}

/// What reading a column needs, over the three engines' row types.
pub(super) trait RowLike {
    fn i64_of(&self, col: &str) -> Option<i64>;
    fn bool_of(&self, col: &str) -> Option<bool>;
    fn text_of(&self, col: &str) -> Result<Option<String>, ()>;
}

macro_rules! row_like {
    ($t:ty) => {
        impl RowLike for $t {
            fn i64_of(&self, col: &str) -> Option<i64> {
                // The widest first: SQLite gives any stored integer as an i32 too, cut to
                // its low 32 bits.
                if let Ok(v) = self.try_get::<Option<i64>, _>(col) {
                    return v;
                }
                if let Ok(v) = self.try_get::<Option<i32>, _>(col) {
                    return v.map(i64::from);
                }
                self.try_get::<Option<i16>, _>(col)
                    .ok()
                    .flatten()
                    .map(i64::from)
            }
            fn bool_of(&self, col: &str) -> Option<bool> {
                if let Ok(v) = self.try_get::<Option<bool>, _>(col) {
                    return v;
                }
                // MySQL's BOOLEAN is a TINYINT, which a dump may widen.
                self.i64_of(col).map(|v| v != 0)
            }
            fn text_of(&self, col: &str) -> Result<Option<String>, ()> {
                self.try_get::<Option<String>, _>(col).map_err(|_| ())
            }
        }
    };
}
row_like!(sqlx::postgres::PgRow);
row_like!(sqlx::mysql::MySqlRow);
row_like!(sqlx::sqlite::SqliteRow);

fn bad(table: &str, key: &str, what: &str) -> DbError {
    DbError::BadRow(format!("{table} row {key:?}: {what}"))
}

impl Client {
    /// Reads a `clients` row.
    pub(super) fn read(row: &impl RowLike) -> Result<Client, DbError> {
        let id = int(row, "id").ok_or_else(|| bad("clients", "?", "id is not an integer"))?;
        let key = id.to_string();
        let text = |c: &str| {
            row.text_of(c)
                .map_err(|_| bad("clients", &key, &format!("{c} is not text")))
        };
        Ok(Client {
            id,
            // yubikey-val's column defaults to TRUE; NULL there reads as not active, as
            // its `active='1'` test reads it.
            active: row.bool_of("active").unwrap_or(false),
            created: int(row, "created").unwrap_or(0),
            secret: Zeroizing::new(text("secret")?.unwrap_or_default()),
            email: text("email")?,
            notes: text("notes")?,
            otp: text("otp")?,
        })
    }
}

impl Yubikey {
    /// Reads a `yubikeys` row.
    pub(super) fn read(row: &impl RowLike) -> Result<Yubikey, DbError> {
        let public_name = row
            .text_of("yk_publicname")
            .ok()
            .flatten()
            .ok_or_else(|| bad("yubikeys", "?", "yk_publicname is not text"))?;
        // Each within what its field can hold (-1: never), so that the counter and clock
        // arithmetic on them cannot overflow whatever a hand-made table's columns hold.
        let need = |c: &str, range: std::ops::RangeInclusive<i64>| {
            let v = int(row, c)
                .ok_or_else(|| bad("yubikeys", &public_name, &format!("{c} is not an integer")))?;
            if !range.contains(&v) {
                return Err(bad(
                    "yubikeys",
                    &public_name,
                    &format!("{c} is {v}, outside {} to {}", range.start(), range.end()),
                ));
            }
            Ok(v)
        };
        let time = i64::from(i32::MIN)..=i64::from(i32::MAX);
        Ok(Yubikey {
            active: row.bool_of("active").unwrap_or(false),
            created: int(row, "created").unwrap_or(0),
            modified: need("modified", time)?,
            counters: Counters {
                counter: need("yk_counter", -1..=0xffff)?,
                session_use: need("yk_use", -1..=0xff)?,
            },
            low: need("yk_low", -1..=0xffff)?,
            high: need("yk_high", -1..=0xff)?,
            nonce: row.text_of("nonce").ok().flatten().unwrap_or_default(),
            notes: row.text_of("notes").ok().flatten(),
            public_name,
        })
    }
}
