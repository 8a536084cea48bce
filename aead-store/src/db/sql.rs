//! The SQL itself, once per engine: pyhsm's `aead_table`, read and written in each engine's
//! dialect. Everything above this module speaks of [`RawRow`]s and never of an engine.
//!
//! Key handles are 32-bit unsigned, `keyhandle` is a signed SQL `INT`: a handle above
//! `0x7fffffff` is stored as the negative `INT` with the same bits (pyhsm's importer could not
//! store one at all on MySQL), and every integer that fits either reading is read back.

use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::Row as _;

use crate::db::url::DbUrl;

/// Connections of the LISTEN's own pool (see [`Pool::watch_pool`]).
pub(crate) const WATCH_CONNECTIONS: u32 = 3;

/// Longest `nonce` or `aead` value a query brings back, in bytes: a 6-byte nonce and an
/// AEAD of at most 72 bytes fit with room to spare. A longer value is left in the database
/// (the query sends only its length), so a row of many megabytes costs the daemon nothing
/// and reads as the malformed row it is.
pub(crate) const MAX_VALUE: i64 = 128;

/// Most rows a lookup reads for one public id. pyhsm's primary key allows one per key
/// handle; a table without it could hold any number, and more than this are refused
/// ([`Pool::rows_for`]) rather than read.
pub(crate) const MAX_ROWS_PER_ID: i64 = 64;

/// A binary column as a query gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binary {
    /// Its bytes, at most [`MAX_VALUE`] of them.
    Bytes(Vec<u8>),
    /// Longer than [`MAX_VALUE`]: not read.
    TooLong,
    /// NULL, or a value of another type.
    Other,
}

impl Binary {
    fn read(value: Option<Vec<u8>>, len: Option<i64>) -> Binary {
        match (value, len) {
            (Some(b), _) => Binary::Bytes(b),
            (None, Some(n)) if n > MAX_VALUE => Binary::TooLong,
            (None, _) => Binary::Other,
        }
    }
}

/// One row as the database gave it, before any check: a row is untrusted input.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub public_id: String,
    pub keyhandle: Option<i64>,
    pub nonce: Binary,
    pub aead: Binary,
}

/// One row of our YubiHSM 2 table (`ksm_otp_aead`) as the database gave it, unchecked.
#[derive(Debug, Clone)]
pub(crate) struct RawOtpRow {
    pub public_id: String,
    pub key_id: Option<i64>,
    pub aead: Binary,
}

// Our table of YubiHSM 2 AEADs, `ksm_otp_aead`, lies beside pyhsm's `aead_table`: pyhsm's
// table has a nonce column and an AEAD of a key handle, and a YubiHSM 2 row there would be
// read by pyhsm as a YubiHSM 1 AEAD under whatever handle its key id spelled. A table of
// its own keeps pyhsm (and its exports) blind to it.

/// A connection pool of the URL's engine, made by [`Pool::new`]: the one sqlx set-up every
/// database of this project goes through (the AEAD store here, the validator's counters in
/// `ykval`), so a URL means the same engine, parameters and TLS wherever it is given.
#[derive(Debug, Clone)]
pub enum Pool {
    /// PostgreSQL.
    Pg(PgPool),
    /// MySQL or MariaDB.
    My(MySqlPool),
    /// A SQLite file.
    Lite(SqlitePool),
}

/// The column list every read selects, in the engine's dialect (`len` its function for a
/// value's length in bytes, `int8` its cast to a 64-bit integer): the key widened so one
/// Rust type reads it whatever the column's declared width, and each binary value only if
/// it is at most [`MAX_VALUE`] bytes, with its length beside it (`nonce_len`, `aead_len`).
fn column_list(otp: bool, len: &str, int8: impl Fn(&str) -> String) -> String {
    let bounded = |c: &str| {
        format!(
            "CASE WHEN {len}({c}) <= {MAX_VALUE} THEN {c} END AS {c}, {} AS {c}_len",
            int8(&format!("{len}({c})"))
        )
    };
    match otp {
        false => format!(
            "public_id, {} AS keyhandle, {}, {}",
            int8("keyhandle"),
            bounded("nonce"),
            bounded("aead")
        ),
        true => format!(
            "public_id, {} AS key_id, {}",
            int8("key_id"),
            bounded("aead")
        ),
    }
}

/// The PostgreSQL channel the trigger installed by `db-init` notifies: the payload is the
/// public id of a row inserted, changed or deleted, or empty after a `TRUNCATE`.
pub(crate) const CHANNEL: &str = "ksm_aead";

/// Of the tables bound as `$1` (a text array: `aead_table`, and `ksm_otp_aead` when it is
/// read), those whose changes would not all be announced, as one comma-separated text
/// (NULL when every one would). A table announces every change when it has (the one the
/// search path finds now, by oid) a row trigger and a TRUNCATE trigger calling
/// `ksm_aead_notify()`, after the change, for every row (no `WHEN`, no column list), with
/// the row trigger on INSERT, UPDATE and DELETE (`tgtype` bits 1, 4, 8 and 16, not 2,
/// BEFORE), and both enabled ALWAYS (`tgenabled` `A`, as `db-init` makes them): a trigger
/// enabled the default way (`O`) does not fire in a `session_replication_role = replica`
/// session (logical replication, restore tools), whose changes would go unannounced.
const SILENT_TABLES: &str = "SELECT string_agg(t.name, ', ' ORDER BY t.name) AS silent FROM unnest($1::text[]) AS t(name) WHERE NOT (
  EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = to_regclass(t.name) AND g.tgfoid = to_regproc('ksm_aead_notify') AND g.tgenabled = 'A' AND g.tgqual IS NULL AND g.tgattr::text = '' AND g.tgtype::int & 31 = 29)
  AND EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = to_regclass(t.name) AND g.tgfoid = to_regproc('ksm_aead_notify') AND g.tgenabled = 'A' AND g.tgqual IS NULL AND g.tgtype::int & 32 = 32))";

/// The tables of `$1` whose changes would not all be announced (column `silent`, see
/// [`SILENT_TABLES`]).
pub(crate) fn silent_tables() -> &'static str {
    SILENT_TABLES
}

/// A heartbeat: a notice on [`CHANNEL`] with the payload bound as `$2`, sent only while
/// every table of `$1` announces its changes, so that a LISTEN is not trusted past its
/// triggers; column `silent` names the tables that would not (and then nothing was sent).
pub(crate) fn heartbeat() -> String {
    format!("SELECT s.silent, CASE WHEN s.silent IS NULL THEN pg_notify('ksm_aead', $2)::text END AS sent FROM ({SILENT_TABLES}) AS s")
}

/// More rows for one public id than a lookup reads ([`MAX_ROWS_PER_ID`]): a table without
/// pyhsm's primary key, filled wrongly. An error of the query, so the lookup fails with it
/// rather than choosing among rows it did not all read.
#[derive(Debug)]
pub(crate) struct TooManyRows(pub &'static str);

impl std::fmt::Display for TooManyRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} has more than {MAX_ROWS_PER_ID} rows for one public_id (is its primary key (public_id, key) missing?)",
            self.0
        )
    }
}

impl std::error::Error for TooManyRows {}

/// Which table had too many rows, if that is what `e` is.
pub(crate) fn too_many_rows(e: &sqlx::Error) -> Option<&'static str> {
    match e {
        sqlx::Error::Decode(e) => e.downcast_ref::<TooManyRows>().map(|t| t.0),
        _ => None,
    }
}

impl TooManyRows {
    fn check<T>(rows: Vec<T>, table: &'static str) -> Result<Vec<T>, sqlx::Error> {
        match rows.len() as i64 > MAX_ROWS_PER_ID {
            true => Err(sqlx::Error::Decode(Box::new(TooManyRows(table)))),
            false => Ok(rows),
        }
    }
}

/// Keeps what a column gives only if it is the type we expect; a wrongly typed value is a
/// bad row, not a failed query.
fn col<T>(r: Result<Option<T>, sqlx::Error>) -> Option<T> {
    r.ok().flatten()
}

macro_rules! raw {
    ($row:expr) => {
        RawRow {
            public_id: col($row.try_get::<Option<String>, _>("public_id")).unwrap_or_default(),
            keyhandle: col($row.try_get::<Option<i64>, _>("keyhandle")),
            nonce: Binary::read(
                col($row.try_get::<Option<Vec<u8>>, _>("nonce")),
                col($row.try_get::<Option<i64>, _>("nonce_len")),
            ),
            aead: Binary::read(
                col($row.try_get::<Option<Vec<u8>>, _>("aead")),
                col($row.try_get::<Option<i64>, _>("aead_len")),
            ),
        }
    };
}

macro_rules! raw_otp {
    ($row:expr) => {
        RawOtpRow {
            public_id: col($row.try_get::<Option<String>, _>("public_id")).unwrap_or_default(),
            key_id: col($row.try_get::<Option<i64>, _>("key_id")),
            aead: Binary::read(
                col($row.try_get::<Option<Vec<u8>>, _>("aead")),
                col($row.try_get::<Option<i64>, _>("aead_len")),
            ),
        }
    };
}

/// Runs `$body` with `$p` bound to whichever engine's pool `$pool` is (three pool types, so a
/// macro rather than a function): for what is the same call on every engine. With `$wrap`,
/// that engine's [`Pool`] variant is bound too, to wrap a new pool of the same engine.
/// Exported: the validation crate's tables live on the same pools.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, |$p:ident $(, $wrap:ident)?| $body:expr) => {
        match $pool {
            $crate::db::Pool::Pg($p) => {
                $(let $wrap = $crate::db::Pool::Pg;)?
                $body
            }
            $crate::db::Pool::My($p) => {
                $(let $wrap = $crate::db::Pool::My;)?
                $body
            }
            $crate::db::Pool::Lite($p) => {
                $(let $wrap = $crate::db::Pool::Lite;)?
                $body
            }
        }
    };
}

/// Runs a row SELECT on whichever pool this is: `{cols}` in `sql` becomes the engine's
/// column list (pyhsm's table's, or with `otp` first, ours), and its `?` parameters are
/// bound in order.
macro_rules! select_rows {
    (otp, $pool:expr, $sql:expr $(, $bind:expr)*) => {
        select_rows!(@ $pool, true, raw_otp, $sql $(, $bind)*)
    };
    ($pool:expr, $sql:expr $(, $bind:expr)*) => {
        select_rows!(@ $pool, false, raw, $sql $(, $bind)*)
    };
    (@ $pool:expr, $otp:expr, $conv:ident, $sql:expr $(, $bind:expr)*) => {{
        let sql = $pool.dialect($sql.replace("{cols}", &$pool.columns($otp)));
        on_pool!($pool, |p| sqlx::query(&sql)
            $(.bind($bind))*
            .fetch_all(p)
            .await?
            .iter()
            .map(|r| $conv!(r))
            .collect::<Vec<_>>())
    }};
}

/// `sql` with its `?` parameters numbered `$1`, `$2`, … as PostgreSQL wants them.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether the database said the table queried does not exist (PostgreSQL `42P01`,
/// MySQL/MariaDB `42S02`, SQLite's "no such table").
pub fn is_missing_table(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        matches!(d.code().as_deref(), Some("42P01" | "42S02"))
            || d.message().starts_with("no such table")
    })
}

/// The `INT` a key handle is stored as.
pub(crate) fn kh_to_sql(kh: u32) -> i32 {
    i32::from_ne_bytes(kh.to_ne_bytes())
}

/// The key handle an `INT` read back means, if it can be one.
pub(crate) fn kh_from_sql(v: i64) -> Option<u32> {
    if let Ok(u) = u32::try_from(v) {
        return Some(u);
    }
    i32::try_from(v)
        .ok()
        .map(|i| u32::from_ne_bytes(i.to_ne_bytes()))
}

/// What an INSERT of [`Pool::put`] or [`Pool::put_otp`] came to: whether the table changed.
/// Without `replace` the statement is a plain INSERT whose duplicate key is the answer
/// "exists" (an upsert that changes nothing cannot say so on MySQL, whose driver counts the
/// rows matched, not changed).
fn inserted(r: Result<(), sqlx::Error>) -> Result<bool, sqlx::Error> {
    match r {
        Ok(()) => Ok(true),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

impl Pool {
    /// The column list every read selects ([`column_list`]), in this pool's dialect.
    fn columns(&self, otp: bool) -> String {
        match self {
            Pool::Pg(_) => column_list(otp, "octet_length", |e| format!("({e})::int8")),
            Pool::My(_) => column_list(otp, "OCTET_LENGTH", |e| format!("CAST({e} AS SIGNED)")),
            // SQLite's `length` counts the bytes of a blob (without reading it) and the
            // characters of a text, which is never a good value anyway.
            Pool::Lite(_) => column_list(otp, "length", |e| format!("CAST({e} AS INTEGER)")),
        }
    }

    /// `sql`, written with `?` parameters, as this pool's engine takes it: PostgreSQL's
    /// numbered (see [`numbered`]), the others' as they are.
    pub fn dialect(&self, sql: String) -> String {
        match self {
            Pool::Pg(_) => numbered(&sql),
            Pool::My(_) | Pool::Lite(_) => sql,
        }
    }

    /// A pool of at most `size` connections that connects lazily (a daemon starts while its
    /// database is down) and waits at most `acquire` for a connection. Called inside a tokio
    /// runtime (sqlx starts the pool's upkeep on it).
    pub fn new(url: &DbUrl, password: Option<&str>, size: u32, acquire: Duration) -> Pool {
        match url {
            DbUrl::Postgres(o) => {
                let o = match password {
                    Some(p) => o.clone().password(p),
                    None => o.clone(),
                };
                Pool::Pg(
                    PgPoolOptions::new()
                        .max_connections(size)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(o),
                )
            }
            DbUrl::MySql(o) => {
                let o = match password {
                    Some(p) => o.clone().password(p),
                    None => o.clone(),
                };
                Pool::My(
                    MySqlPoolOptions::new()
                        .max_connections(size)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(o),
                )
            }
            DbUrl::Sqlite(path) => Pool::Lite(
                SqlitePoolOptions::new()
                    .max_connections(size)
                    .acquire_timeout(acquire)
                    .connect_lazy_with(
                        SqliteConnectOptions::new()
                            .filename(path)
                            .create_if_missing(true)
                            .busy_timeout(acquire),
                    ),
            ),
        }
    }

    /// A pool with this one's settings and no connection yet, to take its place (see
    /// `Replaceable` in the module above). Made inside the store's runtime.
    pub(crate) fn fresh(&self) -> Pool {
        on_pool!(self, |p, wrap| wrap(
            p.options()
                .clone()
                .connect_lazy_with((*p.connect_options()).clone())
        ))
    }

    /// Every connection the pool may have is open (or opening) and none is free.
    pub(crate) fn saturated(&self) -> bool {
        on_pool!(self, |p| p.size() >= p.options().get_max_connections()
            && p.num_idle() == 0)
    }

    /// Closes the pool without waiting: connections still out are closed as they come back,
    /// and one that never comes back is given up with its socket, by the kernel.
    pub(crate) fn close_in_background(self) {
        tokio::spawn(async move { on_pool!(self, |p| p.close().await) });
    }

    /// On PostgreSQL, the small pool the LISTEN and its heartbeat use, so that they take no
    /// connection of the lookups': the LISTEN, the heartbeat, and a LISTEN being let go
    /// (whose `UNLISTEN` waits on a silent connection until the network gives up).
    pub(crate) fn watch_pool(
        url: &DbUrl,
        password: Option<&str>,
        acquire: Duration,
    ) -> Option<PgPool> {
        match url {
            DbUrl::Postgres(o) => {
                let mut o = match password {
                    Some(p) => o.clone().password(p),
                    None => o.clone(),
                };
                // Named for the operator's `pg_stat_activity`, unless the URL names it.
                if o.get_application_name().is_none() {
                    o = o.application_name("ksm aead watch");
                }
                Some(
                    PgPoolOptions::new()
                        .max_connections(WATCH_CONNECTIONS)
                        .acquire_timeout(acquire)
                        .connect_lazy_with(o),
                )
            }
            _ => None,
        }
    }

    /// Every row for `public_id`, or [`TooManyRows`] when it has more than
    /// [`MAX_ROWS_PER_ID`] (of which one more than that is read, and no more).
    pub(crate) async fn rows_for(&self, public_id: &str) -> Result<Vec<RawRow>, sqlx::Error> {
        let rows = select_rows!(
            self,
            "SELECT {cols} FROM aead_table WHERE public_id = ? ORDER BY keyhandle LIMIT ?",
            public_id,
            MAX_ROWS_PER_ID + 1
        );
        TooManyRows::check(rows, "aead_table")
    }

    /// Up to `limit` rows after (`public_id`, `keyhandle`) in key order: a walk over a
    /// million rows holds one page at a time.
    pub(crate) async fn page(
        &self,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> Result<Vec<RawRow>, sqlx::Error> {
        // The first page takes rows from the very start (no key is below every other).
        let first = after.is_none();
        let (id, kh) = after.unwrap_or(("", 0));
        Ok(select_rows!(
            self,
            "SELECT {cols} FROM aead_table WHERE ? OR (public_id, keyhandle) > (?, ?) ORDER BY public_id, keyhandle LIMIT ?",
            first,
            id,
            kh,
            limit
        ))
    }

    /// Inserts a row; if one exists for (`public_id`, `keyhandle`) it is replaced when
    /// `replace`, else left alone. Returns whether the table changed.
    pub(crate) async fn put(
        &self,
        public_id: &str,
        kh: u32,
        nonce: &[u8],
        aead: &[u8],
        replace: bool,
    ) -> Result<bool, sqlx::Error> {
        let kh = kh_to_sql(kh);
        let on = match (replace, self) {
            (false, _) => "",
            (true, Pool::My(_)) => " ON DUPLICATE KEY UPDATE nonce = VALUES(nonce), aead = VALUES(aead)",
            (true, Pool::Pg(_) | Pool::Lite(_)) => " ON CONFLICT (public_id, keyhandle) DO UPDATE SET nonce = excluded.nonce, aead = excluded.aead",
        };
        let sql = self.dialect(format!(
            "INSERT INTO aead_table (public_id, keyhandle, nonce, aead) VALUES (?, ?, ?, ?){on}"
        ));
        inserted(on_pool!(self, |p| sqlx::query(&sql)
            .bind(public_id)
            .bind(kh)
            .bind(nonce)
            .bind(aead)
            .execute(p)
            .await
            .map(|_| ())))
    }

    /// Every row of our YubiHSM 2 table for `public_id`.
    pub(crate) async fn otp_rows_for(
        &self,
        public_id: &str,
    ) -> Result<Vec<RawOtpRow>, sqlx::Error> {
        let rows = select_rows!(
            otp,
            self,
            "SELECT {cols} FROM ksm_otp_aead WHERE public_id = ? ORDER BY key_id LIMIT ?",
            public_id,
            MAX_ROWS_PER_ID + 1
        );
        TooManyRows::check(rows, "ksm_otp_aead")
    }

    /// [`Pool::page`] of our YubiHSM 2 table, in (`public_id`, `key_id`) order.
    pub(crate) async fn otp_page(
        &self,
        after: Option<(&str, i64)>,
        limit: i64,
    ) -> Result<Vec<RawOtpRow>, sqlx::Error> {
        let first = after.is_none();
        let (id, key) = after.unwrap_or(("", 0));
        Ok(select_rows!(
            otp,
            self,
            "SELECT {cols} FROM ksm_otp_aead WHERE ? OR (public_id, key_id) > (?, ?) ORDER BY public_id, key_id LIMIT ?",
            first,
            id,
            key,
            limit
        ))
    }

    /// [`Pool::put`] for our YubiHSM 2 table.
    pub(crate) async fn put_otp(
        &self,
        public_id: &str,
        key_id: u16,
        aead: &[u8],
        replace: bool,
    ) -> Result<bool, sqlx::Error> {
        let key = i32::from(key_id);
        let on = match (replace, self) {
            (false, _) => "",
            (true, Pool::My(_)) => " ON DUPLICATE KEY UPDATE aead = VALUES(aead)",
            (true, Pool::Pg(_) | Pool::Lite(_)) => {
                " ON CONFLICT (public_id, key_id) DO UPDATE SET aead = excluded.aead"
            }
        };
        let sql = self.dialect(format!(
            "INSERT INTO ksm_otp_aead (public_id, key_id, aead) VALUES (?, ?, ?){on}"
        ));
        inserted(on_pool!(self, |p| sqlx::query(&sql)
            .bind(public_id)
            .bind(key)
            .bind(aead)
            .execute(p)
            .await
            .map(|_| ())))
    }

    /// One connection of its own, outside the pool, opened and closed. The pool takes a
    /// refused connection for a server starting up and retries until its deadline; this
    /// says at once whether the server refuses (a SQLite file refuses nothing).
    pub(crate) async fn connect_once(&self) -> Result<(), sqlx::Error> {
        use sqlx::{ConnectOptions as _, Connection as _};
        match self {
            Pool::Pg(p) => p.connect_options().connect().await?.close().await,
            Pool::My(p) => p.connect_options().connect().await?.close().await,
            Pool::Lite(_) => Ok(()),
        }
    }

    /// A round trip.
    pub(crate) async fn ping(&self) -> Result<(), sqlx::Error> {
        let sql = match self {
            Pool::Pg(_) | Pool::My(_) => "SELECT 1",
            Pool::Lite(_) => "SELECT 1 FROM aead_table LIMIT 1",
        };
        on_pool!(self, |p| sqlx::query(sql).execute(p).await.map(|_| ()))
    }

    /// `ksm store db-init`: pyhsm's table as `doc/db_schema` has it (on PostgreSQL, which
    /// has no `BLOB`, `bytea` as SQLAlchemy's `LargeBinary` makes it) and our YubiHSM 2
    /// table beside it, then on PostgreSQL the triggers that notify every listening KSM of
    /// a changed row of either. Nothing is changed in a table that exists: a table pyhsm's
    /// users made keeps its columns.
    pub(crate) async fn init(&self) -> Result<(), sqlx::Error> {
        match self {
            Pool::Pg(p) => {
                let mut tx = p.begin().await?;
                for stmt in PG_INIT.iter().chain(&PG_INIT_OTP) {
                    sqlx::query(stmt).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
            Pool::My(p) => {
                sqlx::query(TABLE_BLOB).execute(p).await?;
                sqlx::query(OTP_TABLE_BLOB).execute(p).await.map(|_| ())
            }
            Pool::Lite(p) => {
                sqlx::query(TABLE_BLOB).execute(p).await?;
                sqlx::query(OTP_TABLE_BLOB).execute(p).await.map(|_| ())
            }
        }
    }
}

/// pyhsm's `doc/db_schema`, word for word but `IF NOT EXISTS`.
const TABLE_BLOB: &str = "CREATE TABLE IF NOT EXISTS aead_table (
  public_id varchar(16) NOT NULL,
  keyhandle INT NOT NULL,
  nonce BLOB(6) NOT NULL,
  aead BLOB(32) NOT NULL,
  PRIMARY KEY (public_id, keyhandle)
)";

/// Our YubiHSM 2 table: the otp-aead-key's id (a YubiHSM 2 object id, 1 to 65535) and the
/// 36-byte AEAD, its nonce first (so no nonce column).
const OTP_TABLE_BLOB: &str = "CREATE TABLE IF NOT EXISTS ksm_otp_aead (
  public_id varchar(16) NOT NULL,
  key_id INT NOT NULL,
  aead BLOB(36) NOT NULL,
  PRIMARY KEY (public_id, key_id)
)";

/// The same on PostgreSQL, with the same notices as `aead_table` (the function is shared:
/// it names the row's public id, which both tables have).
const PG_INIT_OTP: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS ksm_otp_aead (
  public_id varchar(16) NOT NULL,
  key_id INT NOT NULL,
  aead bytea NOT NULL,
  PRIMARY KEY (public_id, key_id)
)",
    "DROP TRIGGER IF EXISTS ksm_otp_aead_notify ON ksm_otp_aead",
    "CREATE TRIGGER ksm_otp_aead_notify AFTER INSERT OR UPDATE OR DELETE ON ksm_otp_aead FOR EACH ROW EXECUTE FUNCTION ksm_aead_notify()",
    "CREATE OR REPLACE TRIGGER ksm_otp_aead_truncate AFTER TRUNCATE ON ksm_otp_aead FOR EACH STATEMENT EXECUTE FUNCTION ksm_aead_notify()",
    "ALTER TABLE ksm_otp_aead ENABLE ALWAYS TRIGGER ksm_otp_aead_notify",
    "ALTER TABLE ksm_otp_aead ENABLE ALWAYS TRIGGER ksm_otp_aead_truncate",
];

const PG_INIT: [&str; 7] = [
    "CREATE TABLE IF NOT EXISTS aead_table (
  public_id varchar(16) NOT NULL,
  keyhandle INT NOT NULL,
  nonce bytea NOT NULL,
  aead bytea NOT NULL,
  PRIMARY KEY (public_id, keyhandle)
)",
    // A new, changed or deleted row names its public id (the old one, and the new one if an
    // UPDATE moved it). A new row needs a notice too: no KSM caches an absence, but with
    // several key handles one may cache the row of a later handle, which a new row of an
    // earlier handle must replace.
    "CREATE OR REPLACE FUNCTION ksm_aead_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_notify('ksm_aead', '');
  ELSIF TG_OP = 'INSERT' THEN
    PERFORM pg_notify('ksm_aead', NEW.public_id);
  ELSE
    PERFORM pg_notify('ksm_aead', OLD.public_id);
    IF TG_OP = 'UPDATE' AND NEW.public_id <> OLD.public_id THEN
      PERFORM pg_notify('ksm_aead', NEW.public_id);
    END IF;
  END IF;
  RETURN NULL;
END $$",
    // Replaces an older db-init's trigger (UPDATE and DELETE only).
    "DROP TRIGGER IF EXISTS ksm_aead_notify ON aead_table",
    "CREATE TRIGGER ksm_aead_notify AFTER INSERT OR UPDATE OR DELETE ON aead_table FOR EACH ROW EXECUTE FUNCTION ksm_aead_notify()",
    "CREATE OR REPLACE TRIGGER ksm_aead_truncate AFTER TRUNCATE ON aead_table FOR EACH STATEMENT EXECUTE FUNCTION ksm_aead_notify()",
    // Firing in replica sessions too (`session_replication_role`, as logical replication
    // and some restore tools set it): a change must never go unannounced.
    "ALTER TABLE aead_table ENABLE ALWAYS TRIGGER ksm_aead_notify",
    "ALTER TABLE aead_table ENABLE ALWAYS TRIGGER ksm_aead_truncate",
];

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_numbered_for_postgresql_in_order() {
        assert_eq!(
            super::numbered("WHERE ? OR (a, b) > (?, ?) LIMIT ?"),
            "WHERE $1 OR (a, b) > ($2, $3) LIMIT $4"
        );
    }

    use super::*;

    #[test]
    fn key_handles_round_trip_through_a_signed_int() {
        for kh in [
            0,
            1,
            0x20,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ] {
            assert_eq!(kh_from_sql(i64::from(kh_to_sql(kh))), Some(kh));
        }
        assert_eq!(kh_from_sql(0x1_0000_0000), None);
        assert_eq!(kh_from_sql(i64::from(i32::MIN) - 1), None);
    }
}
