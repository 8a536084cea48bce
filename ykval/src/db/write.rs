//! The counter write: the one statement that turns a decoded OTP into an `OK`.

use std::time::Instant;

use super::{new_row, on_pool, unavailable, unix_now, Counters, DbError, ValDb, Yubikey};
use crate::counter::{judge, Verdict};

/// What [`ValDb::record`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// This call advanced the row: the OTP is accepted, once.
    Accepted(Accepted),
    /// Refused, with the row as it was read when refusing.
    Refused(Verdict, Yubikey),
}

/// An accepted OTP: the row as it was before this call advanced it (for the timestamp
/// check, which compares with the previous OTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The row before.
    pub previous: Yubikey,
}

/// Reads an `INT` column's value from a number of ours that always fits (counters are at
/// most 16 bits); times past 2038 are clamped, as an `INT` column holds no more.
fn int32(v: i64) -> i32 {
    i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX })
}

/// The advance: matched only while the row is active and below the OTP's counters, so
/// whichever validator's statement reaches the row first changes it and every later one
/// (or a concurrent one the engine ordered after it) changes nothing.
const ADVANCE: &str = "UPDATE yubikeys SET modified = ?, yk_counter = ?, yk_use = ?, yk_low = ?, yk_high = ?, nonce = ? WHERE yk_publicname = ? AND active AND (yk_counter, yk_use) < (?, ?)";

impl ValDb {
    /// Records an OTP of `public_name` with `otp` counters and timestamp `high`/`low`, sent
    /// with `nonce`: accepted if this call advanced the row, else refused with the reason
    /// ([`judge`]'s). A row is made for an unknown public id first. Bounded by the
    /// configured timeout; a failure or a timeout is an error, never an acceptance (the
    /// write may still have committed: the OTP is then spent, not accepted).
    pub async fn record(
        &self,
        public_name: &str,
        otp: Counters,
        high: u8,
        low: u16,
        nonce: &str,
    ) -> Result<Recorded, DbError> {
        let deadline = Instant::now() + self.timeout;
        self.record_until(public_name, otp, high, low, nonce, deadline)
            .await
    }

    /// [`ValDb::record`] finished by `deadline` (and within the configured timeout): past
    /// it, an error, never an acceptance.
    pub async fn record_until(
        &self,
        public_name: &str,
        otp: Counters,
        high: u8,
        low: u16,
        nonce: &str,
        deadline: Instant,
    ) -> Result<Recorded, DbError> {
        self.until(deadline, async {
            let now = unix_now();
            let mut row = match self.yubikey_unbounded(public_name).await? {
                Some(row) => row,
                None => {
                    self.insert_new(public_name, now).await?;
                    self.reread(public_name).await?
                }
            };
            // Twice at most: a row changed by another validator between this read and the
            // write is read again and judged on what it holds now.
            for _ in 0..2 {
                match judge(&row, otp, nonce) {
                    Verdict::Advance => {}
                    refused => return Ok(Recorded::Refused(refused, row)),
                }
                if self
                    .advance(public_name, otp, high, low, nonce, now)
                    .await?
                {
                    return Ok(Recorded::Accepted(Accepted { previous: row }));
                }
                row = self.reread(public_name).await?;
            }
            Ok(Recorded::Refused(Verdict::ReplayedOtp, row))
        })
        .await
    }

    async fn reread(&self, public_name: &str) -> Result<Yubikey, DbError> {
        self.yubikey_unbounded(public_name).await?.ok_or_else(|| {
            DbError::Unavailable(format!("the yubikeys row of {public_name} vanished"))
        })
    }

    /// The conditional update; whether it changed the row.
    async fn advance(
        &self,
        public_name: &str,
        otp: Counters,
        high: u8,
        low: u16,
        nonce: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let sql = self.sql(ADVANCE);
        let (counter, session_use) = (int32(otp.counter), int32(otp.session_use));
        let changed = on_pool!(self.pool(), |p| sqlx::query(&sql)
            .bind(int32(now))
            .bind(counter)
            .bind(session_use)
            .bind(i32::from(low))
            .bind(i32::from(high))
            .bind(nonce)
            .bind(public_name)
            .bind(counter)
            .bind(session_use)
            .execute(p)
            .await
            .map_err(|e| unavailable(&e))?
            .rows_affected());
        Ok(changed == 1)
    }

    /// Makes the row of a YubiKey seen for the first time, unless another validator just
    /// did.
    async fn insert_new(&self, public_name: &str, now: i64) -> Result<(), DbError> {
        let conflict = match self.engine() {
            aead_store::Engine::MySql => "ON DUPLICATE KEY UPDATE yk_publicname = yk_publicname",
            aead_store::Engine::Postgres | aead_store::Engine::Sqlite => "ON CONFLICT DO NOTHING",
        };
        // Active, as yubikey-val makes it; unless another validator made it first.
        let sql = self.sql(&new_row(true, conflict));
        on_pool!(self.pool(), |p| sqlx::query(&sql)
            .bind(int32(now))
            .bind(public_name)
            .execute(p)
            .await
            .map_err(|e| unavailable(&e))?
            .rows_affected());
        Ok(())
    }
}
