//! Whole tables in and out, for `ksm val export` and `ksm val import-ykval` (yubikey-val's
//! CSV files, [`crate::csv`]).
//!
//! An import is one transaction: a row the database refuses, or a client whose id is
//! there with another key, rolls back everything the file wrote, and the error names the
//! file's line. Rows of `yubikeys` follow `ykval-import`'s rule: a YubiKey not in the table
//! is added; one that is there takes the file's row only if the file's counters are ahead
//! of the table's (so an import never opens a replay window on a running validator), and is
//! left as it is otherwise. Rows of `clients` follow `ykval-import-clients`: a new id is
//! added, an id that is there is left alone, but only if its key is the file's: a site
//! that moves must not end up with a client whose key silently differs.

use std::fmt;

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::rows::RowLike;
use super::{on_pool, unavailable, Client, DbError, ValDb, Yubikey, YUBIKEY_COLUMNS};

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Rows that were not in the table.
    pub added: usize,
    /// `yubikeys` rows the file's higher counters replaced.
    pub advanced: usize,
    /// Rows left as the table had them (`yubikeys`: counters as high or higher there;
    /// `clients`: the same id and key there).
    pub kept: usize,
}

/// Why an import wrote nothing: what failed, and at which line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file's line whose row failed; `None` if the failure was not a row's (the
    /// database unreachable before the first row, or at the commit).
    pub line: Option<usize>,
    /// What failed.
    pub error: DbError,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {} (nothing was imported)", self.error),
            None => write!(f, "{} (nothing was imported)", self.error),
        }
    }
}

impl std::error::Error for ImportError {}

fn at(line: Option<usize>) -> impl Fn(DbError) -> ImportError {
    move |error| ImportError { line, error }
}

impl ValDb {
    /// Every `yubikeys` row, ordered by public id (as `ykval-export` lists them).
    pub async fn all_yubikeys(&self) -> Result<Vec<Yubikey>, DbError> {
        let sql = format!("SELECT {YUBIKEY_COLUMNS} FROM yubikeys ORDER BY yk_publicname");
        self.bounded(async {
            on_pool!(self.pool(), |p| {
                let rows = sqlx::query(&sql)
                    .fetch_all(p)
                    .await
                    .map_err(|e| unavailable(&e))?;
                rows.iter().map(Yubikey::read).collect()
            })
        })
        .await
    }

    /// Every `clients` row, ordered by id (as `ykval-export-clients` lists them).
    pub async fn all_clients(&self) -> Result<Vec<Client>, DbError> {
        let sql = "SELECT id, active, created, secret, email, notes, otp FROM clients ORDER BY id";
        self.bounded(async {
            on_pool!(self.pool(), |p| {
                let rows = sqlx::query(sql)
                    .fetch_all(p)
                    .await
                    .map_err(|e| unavailable(&e))?;
                rows.iter().map(Client::read).collect()
            })
        })
        .await
    }

    /// Imports `yubikeys` rows, each with the file line it came from, in one transaction
    /// (the module doc gives the rule). Each statement is bounded by the configured timeout.
    pub async fn import_yubikeys(
        &self,
        rows: &[(usize, Yubikey)],
    ) -> Result<Imported, ImportError> {
        let advance = self.sql(
            "UPDATE yubikeys SET active = ?, created = ?, modified = ?, yk_counter = ?, yk_use = ?, yk_low = ?, yk_high = ?, nonce = ?, notes = ? WHERE yk_publicname = ? AND (yk_counter, yk_use) < (?, ?)",
        );
        let exists = self.sql("SELECT 1 FROM yubikeys WHERE yk_publicname = ?");
        let insert = self.sql(&format!(
            "INSERT INTO yubikeys ({YUBIKEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ));
        let mut done = Imported::default();
        on_pool!(self.pool(), |p| {
            let mut tx = self
                .bounded(async { p.begin().await.map_err(|e| unavailable(&e)) })
                .await
                .map_err(at(None))?;
            for (line, y) in rows {
                let here = at(Some(*line));
                let changed = self
                    .bounded(async {
                        sqlx::query(&advance)
                            .bind(y.active)
                            .bind(y.created)
                            .bind(y.modified)
                            .bind(y.counters.counter)
                            .bind(y.counters.session_use)
                            .bind(y.low)
                            .bind(y.high)
                            .bind(&y.nonce)
                            .bind(y.notes.as_deref())
                            .bind(&y.public_name)
                            .bind(y.counters.counter)
                            .bind(y.counters.session_use)
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| unavailable(&e))
                    })
                    .await
                    .map_err(&here)?
                    .rows_affected();
                if changed > 0 {
                    done.advanced += 1;
                    continue;
                }
                let there = self
                    .bounded(async {
                        sqlx::query(&exists)
                            .bind(&y.public_name)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(|e| unavailable(&e))
                    })
                    .await
                    .map_err(&here)?;
                if there.is_some() {
                    done.kept += 1;
                    continue;
                }
                self.bounded(async {
                    sqlx::query(&insert)
                        .bind(y.active)
                        .bind(y.created)
                        .bind(y.modified)
                        .bind(&y.public_name)
                        .bind(y.counters.counter)
                        .bind(y.counters.session_use)
                        .bind(y.low)
                        .bind(y.high)
                        .bind(&y.nonce)
                        .bind(y.notes.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| unavailable(&e))
                })
                .await
                .map_err(&here)?;
                done.added += 1;
            }
            self.bounded(async { tx.commit().await.map_err(|e| unavailable(&e)) })
                .await
                .map_err(at(None))?;
        });
        Ok(done)
    }

    /// Imports `clients` rows, each with the file line it came from, in one transaction
    /// (the module doc gives the rule).
    pub async fn import_clients(&self, rows: &[(usize, Client)]) -> Result<Imported, ImportError> {
        let existing = self.sql("SELECT secret FROM clients WHERE id = ?");
        let insert = self.sql(
            "INSERT INTO clients (id, active, created, secret, email, notes, otp) VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        let mut done = Imported::default();
        on_pool!(self.pool(), |p| {
            let mut tx = self
                .bounded(async { p.begin().await.map_err(|e| unavailable(&e)) })
                .await
                .map_err(at(None))?;
            for (line, c) in rows {
                let here = at(Some(*line));
                let there = self
                    .bounded(async {
                        sqlx::query(&existing)
                            .bind(c.id)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(|e| unavailable(&e))
                    })
                    .await
                    .map_err(&here)?;
                if let Some(row) = there {
                    let secret =
                        Zeroizing::new(row.text_of("secret").ok().flatten().unwrap_or_default());
                    if bool::from(secret.as_bytes().ct_eq(c.secret.as_bytes())) {
                        done.kept += 1;
                        continue;
                    }
                    return Err(here(DbError::BadRow(format!(
                        "client {} is in the database with another key: remove or renumber one of the two",
                        c.id
                    ))));
                }
                self.bounded(async {
                    sqlx::query(&insert)
                        .bind(c.id)
                        .bind(c.active)
                        .bind(c.created)
                        .bind(c.secret.as_str())
                        .bind(c.email.as_deref())
                        .bind(c.notes.as_deref())
                        .bind(c.otp.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| unavailable(&e))
                })
                .await
                .map_err(&here)?;
                done.added += 1;
            }
            self.bounded(async { tx.commit().await.map_err(|e| unavailable(&e)) })
                .await
                .map_err(at(None))?;
        });
        Ok(done)
    }
}
