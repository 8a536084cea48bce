//! Writing `clients` and the `active` flag of `yubikeys`: what the operator's tools
//! (`ksm val add-client`, `revoke`, `--enable`) need, kept apart from the verification
//! path. A revoke of a YubiKey not seen yet makes its row, inactive.

use super::{new_row, on_pool, unavailable, unix_now, DbError, ValDb};

/// A client to add to `clients`.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    /// Its id; `None` takes the next after the highest there.
    pub id: Option<i64>,
    /// Contact address; none is stored as `''`, as `ykval-gen-clients` stores it.
    pub email: Option<String>,
    /// Free text.
    pub notes: Option<String>,
}

impl ValDb {
    /// Adds an active client with `secret` (its key in base64, as yubikey-val keeps it);
    /// returns its id. An id that exists is an error (the database's).
    pub async fn insert_client(&self, new: &NewClient, secret: &str) -> Result<i64, DbError> {
        self.bounded(async {
            let id = match new.id {
                Some(id) => id,
                None => {
                    // Widened so one Rust type reads it on every engine.
                    let sql = match self.engine() {
                        aead_store::Engine::MySql => {
                            "SELECT CAST(COALESCE(MAX(id), 0) + 1 AS SIGNED) FROM clients"
                        }
                        _ => "SELECT CAST(COALESCE(MAX(id), 0) + 1 AS BIGINT) FROM clients",
                    };
                    on_pool!(self.pool(), |p| sqlx::query_scalar::<_, i64>(sql)
                        .fetch_one(p)
                        .await
                        .map_err(|e| unavailable(&e))?)
                }
            };
            let sql = self.sql(
                "INSERT INTO clients (id, active, created, secret, email, notes, otp) VALUES (?, TRUE, ?, ?, ?, ?, '')",
            );
            on_pool!(self.pool(), |p| sqlx::query(&sql)
                .bind(id)
                .bind(unix_now())
                .bind(secret)
                .bind(new.email.as_deref().unwrap_or(""))
                .bind(new.notes.as_deref().unwrap_or(""))
                .execute(p)
                .await
                .map_err(|e| unavailable(&e))?
                .rows_affected());
            Ok(id)
        })
        .await
    }

    /// Sets `active` on the YubiKey `public_name` (revoke: false; `--enable`: true) on
    /// every validator at once, since they all read this row. Returns whether a row was
    /// there.
    pub async fn set_yubikey_active(
        &self,
        public_name: &str,
        active: bool,
    ) -> Result<bool, DbError> {
        let sql = self.sql("UPDATE yubikeys SET active = ? WHERE yk_publicname = ?");
        self.bounded(async {
            let n = on_pool!(self.pool(), |p| sqlx::query(&sql)
                .bind(active)
                .bind(public_name)
                .execute(p)
                .await
                .map_err(|e| unavailable(&e))?
                .rows_affected());
            // MySQL counts rows changed, not matched: a row already so reads as 0.
            Ok(n > 0 || self.yubikey_unbounded(public_name).await?.is_some())
        })
        .await
    }

    /// Revokes `public_name` in one statement: its row made inactive, or, if the table has
    /// no row for it yet, a new one as yubikey-val makes for a YubiKey it has not seen
    /// (counters -1) but inactive, so that its first OTP is refused too.
    pub async fn revoke(&self, public_name: &str) -> Result<(), DbError> {
        let conflict = match self.engine() {
            aead_store::Engine::MySql => "ON DUPLICATE KEY UPDATE active = FALSE",
            _ => "ON CONFLICT (yk_publicname) DO UPDATE SET active = FALSE",
        };
        let sql = self.sql(&new_row(false, conflict));
        self.bounded(async {
            on_pool!(self.pool(), |p| sqlx::query(&sql)
                .bind(unix_now())
                .bind(public_name)
                .execute(p)
                .await
                .map(|_| ())
                .map_err(|e| unavailable(&e))?);
            Ok(())
        })
        .await
    }
}
