//! The counter database: yubikey-val's `clients` and `yubikeys` tables on PostgreSQL,
//! MySQL/MariaDB or SQLite.
//!
//! The connection goes through the AEAD store's set-up ([`aead_store::db::Pool`]): the same
//! URL spellings, parameters, TLS and password rules as `--db-url`, written once.
//!
//! **One `OK` per OTP across every validator on the database.** A counter advance is one
//! conditional statement ([`ValDb::record`]): `UPDATE yubikeys SET … WHERE yk_publicname = ?
//! AND active AND (yk_counter, yk_use) < (?, ?)`. Each engine runs a single UPDATE
//! atomically against the row's latest committed version (PostgreSQL re-checks the WHERE
//! on a row another transaction changed meanwhile, InnoDB reads the row under its lock,
//! SQLite has one writer), so of two validators given the same OTP at once exactly one
//! sees a row changed; the other finds its counters already there and answers
//! `REPLAYED_OTP` (or `REPLAYED_REQUEST`, same nonce). A YubiKey seen for the first time
//! gets its row from an insert that does nothing if another validator made it first, then
//! the same conditional update.

mod admin;
mod rows;
pub mod schema;
mod transfer;
mod write;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aead_store::db::Pool;
use aead_store::{DbPassword, DbUrl, Engine, StoreError};

pub use self::admin::NewClient;
pub use self::rows::{Client, Counters, Yubikey};
pub use self::transfer::{ImportError, Imported};
pub use self::write::{Accepted, Recorded};

/// What can go wrong with the counter database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The URL, password or pool settings are wrong (nothing was tried).
    #[error("validation database: {0}")]
    Config(String),
    /// The database could not be reached, failed the statement, or did not answer in time.
    #[error("validation database unavailable: {0}")]
    Unavailable(String),
    /// A row holds what its column cannot mean.
    #[error("validation database: {0}")]
    BadRow(String),
    /// The database answers but refuses to write: no counter can advance, so every
    /// verification is `BACKEND_ERROR` while reads still work.
    #[error(
        "validation database takes no writes: a standby? validators write to the primary ({0})"
    )]
    ReadOnly(String),
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> DbError {
        match e {
            StoreError::DbConfig(m) => DbError::Config(m),
            other => DbError::Config(other.to_string()),
        }
    }
}

pub(crate) fn unavailable(e: &sqlx::Error) -> DbError {
    if refuses_writes(e) {
        return DbError::ReadOnly(e.to_string());
    }
    DbError::Unavailable(match e {
        sqlx::Error::PoolTimedOut => "no connection to the database".to_string(),
        e if aead_store::db::is_missing_table(e) => format!("{e} (run `ksm val db-init`)"),
        e => e.to_string(),
    })
}

/// Whether the database refused a statement for taking no writes: SQLSTATE `25006` (a
/// read-only transaction: a PostgreSQL standby or `default_transaction_read_only`; MySQL's
/// and MariaDB's error 1792 for a `READ ONLY` session), or MySQL's and MariaDB's error 1290
/// for `read_only`/`super_read_only` (whose SQLSTATE, `HY000`, says nothing by itself).
fn refuses_writes(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some("25006")
            || d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|m| m.number() == 1290 && m.message().contains("read-only"))
    })
}

/// A write that changes nothing (no row is `1 = 0`), made in a transaction rolled back so
/// that not even an empty statement reaches a binary log: refused exactly when this
/// connection cannot write `yubikeys`.
const WRITE_PROBE: &str = "UPDATE yubikeys SET active = active WHERE 1 = 0";

/// The `yubikeys` columns, in yubikey-val's `ykval-db.sql` order: every statement that
/// reads or writes a whole row names them so.
pub(crate) const YUBIKEY_COLUMNS: &str =
    "active, created, modified, yk_publicname, yk_counter, yk_use, yk_low, yk_high, nonce, notes";

/// yubikey-val's row for a YubiKey it has not seen: counters and timestamp -1 (below every
/// OTP), `modified` -1, nonce sixteen zeros; `active` as given (`revoke` makes it inactive),
/// then the engine's `conflict` clause. Parameters: `created`, then the public id.
pub(crate) fn new_row(active: bool, conflict: &str) -> String {
    let active = if active { "TRUE" } else { "FALSE" };
    format!(
        "INSERT INTO yubikeys ({YUBIKEY_COLUMNS}) VALUES ({active}, ?, -1, ?, -1, -1, -1, -1, '0000000000000000', '') {conflict}"
    )
}

/// Connections a validator's pool opens at most unless told otherwise
/// (`--val-db-pool-size`).
pub const DEFAULT_POOL_SIZE: u32 = 16;

/// How the counter database is reached.
#[derive(Debug, Clone)]
pub struct ValDbConfig {
    /// The database (SQLAlchemy's spelling, as `--db-url` takes it).
    pub url: DbUrl,
    /// A private file holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// The password itself (from a private `ksm.toml`); at most one of this and the file.
    pub password: Option<DbPassword>,
    /// Most connections open at once.
    pub pool_size: u32,
    /// Longest wait for a connection or an answer: past it a verification is
    /// `BACKEND_ERROR`.
    pub timeout: Duration,
}

impl ValDbConfig {
    /// Defaults for `url`: a pool of [`DEFAULT_POOL_SIZE`], 2 s.
    pub fn new(url: DbUrl) -> ValDbConfig {
        ValDbConfig {
            url,
            password_file: None,
            password: None,
            pool_size: DEFAULT_POOL_SIZE,
            timeout: Duration::from_secs(2),
        }
    }
}

/// The counter database (see the module doc).
#[derive(Debug, Clone)]
pub struct ValDb {
    pool: Pool,
    timeout: Duration,
}

/// The AEAD store's: `$body` with `$p` bound to whichever engine's pool `$pool` is.
pub(crate) use aead_store::on_pool;

impl ValDb {
    /// Opens the pool; nothing is connected yet (a daemon starts while its database is
    /// down). Called inside a tokio runtime.
    pub fn open(cfg: &ValDbConfig) -> Result<ValDb, DbError> {
        if cfg.pool_size == 0 {
            return Err(DbError::Config(
                "the pool needs at least one connection".into(),
            ));
        }
        let password = DbPassword::resolve(cfg.password_file.as_deref(), cfg.password.as_ref())?;
        let pool = Pool::new(
            &cfg.url,
            password.as_deref().map(|s| s.as_str()),
            cfg.pool_size,
            cfg.timeout,
        );
        Ok(ValDb {
            pool,
            timeout: cfg.timeout,
        })
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        match self.pool {
            Pool::Pg(_) => Engine::Postgres,
            Pool::My(_) => Engine::MySql,
            Pool::Lite(_) => Engine::Sqlite,
        }
    }

    /// `sql` written with `?` parameters, in this engine's spelling.
    pub(crate) fn sql(&self, sql: &str) -> String {
        self.pool.dialect(sql.to_string())
    }

    /// Runs `fut` within the configured timeout: past it, `Unavailable`.
    pub(crate) async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        self.until(Instant::now() + self.timeout, fut).await
    }

    /// Runs `fut` until `deadline` at the latest, and for no longer than the configured
    /// timeout: past either, `Unavailable`. A verification passes its own deadline, so that
    /// every step of it shares one budget rather than each getting a fresh one.
    pub(crate) async fn until<T>(
        &self,
        deadline: Instant,
        fut: impl std::future::Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let deadline = deadline.min(Instant::now() + self.timeout);
        tokio::time::timeout_at(deadline.into(), fut)
            .await
            .unwrap_or_else(|_| {
                Err(DbError::Unavailable(
                    "no answer from the database in time".into(),
                ))
            })
    }

    /// `ksm val db-init`: creates `clients` and `yubikeys` if they are missing.
    pub async fn init(&self) -> Result<(), DbError> {
        self.bounded(async {
            for create in [schema::CLIENTS, schema::YUBIKEYS] {
                on_pool!(&self.pool, |p| sqlx::query(create)
                    .execute(p)
                    .await
                    .map_err(|e| unavailable(&e))?
                    .rows_affected());
            }
            Ok(())
        })
        .await
    }

    /// Whether the database answers a query on `yubikeys` and takes writes to it (for
    /// `/health`). One that reads but cannot write (a PostgreSQL standby, an old primary
    /// after a failover, a MySQL/MariaDB with `read_only`) answers every verification
    /// `BACKEND_ERROR`, so it is [`DbError::ReadOnly`] here, not healthy. The check is a
    /// write ([`WRITE_PROBE`]) rather than a setting read back, because no one setting tells
    /// on every engine: MySQL's and MariaDB's session `transaction_read_only`/`tx_read_only`
    /// stay off on a `read_only` server, and whether `read_only` stops this user depends on
    /// its privileges. SQLite is only read: it has no standby, and a write there would take
    /// the file's one write lock from the verifications.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.bounded(async {
            let sql = "SELECT COUNT(*) FROM yubikeys WHERE 1 = 0";
            on_pool!(&self.pool, |p| sqlx::query(sql)
                .execute(p)
                .await
                .map_err(|e| unavailable(&e))?
                .rows_affected());
            if self.engine() == Engine::Sqlite {
                return Ok(());
            }
            on_pool!(&self.pool, |p| {
                let mut tx = p.begin().await.map_err(|e| unavailable(&e))?;
                sqlx::query(WRITE_PROBE)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| unavailable(&e))?;
                tx.rollback().await.map_err(|e| unavailable(&e))?;
            });
            Ok(())
        })
        .await
    }

    /// The client `id`, active or not.
    pub async fn client(&self, id: i64) -> Result<Option<Client>, DbError> {
        self.client_until(id, Instant::now() + self.timeout).await
    }

    /// [`ValDb::client`] answered by `deadline` (and within the configured timeout).
    pub async fn client_until(
        &self,
        id: i64,
        deadline: Instant,
    ) -> Result<Option<Client>, DbError> {
        let sql = self
            .sql("SELECT id, active, created, secret, email, notes, otp FROM clients WHERE id = ?");
        self.until(deadline, async {
            on_pool!(&self.pool, |p| {
                let row = sqlx::query(&sql)
                    .bind(id)
                    .fetch_optional(p)
                    .await
                    .map_err(|e| unavailable(&e))?;
                row.as_ref().map(Client::read).transpose()
            })
        })
        .await
    }

    /// The `yubikeys` row of `public_name`, if there is one.
    pub async fn yubikey(&self, public_name: &str) -> Result<Option<Yubikey>, DbError> {
        self.bounded(self.yubikey_unbounded(public_name)).await
    }

    pub(crate) async fn yubikey_unbounded(
        &self,
        public_name: &str,
    ) -> Result<Option<Yubikey>, DbError> {
        let sql = self.sql(&format!(
            "SELECT {YUBIKEY_COLUMNS} FROM yubikeys WHERE yk_publicname = ?"
        ));
        on_pool!(&self.pool, |p| {
            let row = sqlx::query(&sql)
                .bind(public_name)
                .fetch_optional(p)
                .await
                .map_err(|e| unavailable(&e))?;
            row.as_ref().map(Yubikey::read).transpose()
        })
    }

    /// The pool (for the admin functions and the tests).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// The time now as the tables keep it (Unix seconds).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
