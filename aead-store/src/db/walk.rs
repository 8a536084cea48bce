//! The walk over the database (`verify`, `stats`, the copies): every row of pyhsm's
//! `aead_table`, then of our `ksm_otp_aead`, a page at a time, each checked as a lookup
//! checks it. One paging loop serves both tables; what differs between them (the query, the
//! key column, how a row is checked) is the [`Table`] each row type implements.

use std::future::Future;
use std::path::PathBuf;

use otp_core::{KeyHandle, ObjectId, PublicId};

use super::sql::{self, kh_from_sql, Pool, RawOtpRow, RawRow};
use super::{check_otp_row, check_row, unavailable, DbStore, PAGE};
use crate::{AeadKey, AeadSource, NoncePolicy, StoreError, StoredAead, WalkEntry};

/// A table a walk pages through, named by the type of its rows.
pub(super) trait Table: Sized + Send + 'static {
    /// A page of the table can no longer move on: the walk stops with this.
    const STUCK: &'static str;

    /// A missing table is no rows rather than an error (a table a database whose `db-init`
    /// predates it does not have).
    const MAY_BE_MISSING: bool;

    /// Up to `limit` rows after `after` (public id, key), in key order.
    fn page<'a>(
        pool: &'a Pool,
        after: Option<(&'a str, i64)>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send + 'a;

    /// This row's place in key order, as the next page asks for it: a key that does not
    /// read counts as 0.
    fn key(&self) -> (String, i64);

    /// The row of `public_id` under key 0, and that key: where a failure that names no
    /// key is reported.
    fn keyless(public_id: &str) -> (AeadSource, AeadKey);

    /// The row as the walk reports it, checked under `policy`.
    fn entry(self, policy: NoncePolicy) -> WalkEntry;
}

impl Table for RawRow {
    const STUCK: &'static str = "the walk cannot go on: a public_id or keyhandle value is not text or an integer (are the columns pyhsm's?)";
    const MAY_BE_MISSING: bool = false;

    fn page<'a>(
        pool: &'a Pool,
        after: Option<(&'a str, i64)>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send + 'a {
        pool.page(after, limit)
    }

    fn key(&self) -> (String, i64) {
        (self.public_id.clone(), self.keyhandle.unwrap_or(0))
    }

    fn keyless(public_id: &str) -> (AeadSource, AeadKey) {
        (
            AeadSource::row(public_id, KeyHandle(0)),
            AeadKey::Handle(KeyHandle(0)),
        )
    }

    fn entry(self, policy: NoncePolicy) -> WalkEntry {
        let kh = self.keyhandle.and_then(kh_from_sql).map(KeyHandle);
        let k = kh.unwrap_or(KeyHandle(0));
        row_entry(
            AeadSource::row(&self.public_id, k),
            AeadKey::Handle(k),
            &self.public_id,
            kh.is_some(),
            "keyhandle is not a 32-bit key handle",
            policy,
            |id, policy| check_row(&self, k, id, policy),
        )
    }
}

impl Table for RawOtpRow {
    const STUCK: &'static str = "the walk cannot go on: a public_id or key_id value of ksm_otp_aead is not text or an integer";
    const MAY_BE_MISSING: bool = true;

    fn page<'a>(
        pool: &'a Pool,
        after: Option<(&'a str, i64)>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Self>, sqlx::Error>> + Send + 'a {
        pool.otp_page(after, limit)
    }

    fn key(&self) -> (String, i64) {
        (self.public_id.clone(), self.key_id.unwrap_or(0))
    }

    fn keyless(public_id: &str) -> (AeadSource, AeadKey) {
        (
            AeadSource::otp_row(public_id, ObjectId(0)),
            AeadKey::OtpKey(ObjectId(0)),
        )
    }

    fn entry(self, policy: NoncePolicy) -> WalkEntry {
        let key_id = self
            .key_id
            .and_then(|k| u16::try_from(k).ok())
            .filter(|k| *k != 0)
            .map(ObjectId);
        let k = key_id.unwrap_or(ObjectId(0));
        row_entry(
            AeadSource::otp_row(&self.public_id, k),
            AeadKey::OtpKey(k),
            &self.public_id,
            key_id.is_some(),
            "key_id is not a YubiHSM 2 object id (1 to 65535)",
            policy,
            |id, policy| check_otp_row(&self, k, id, policy),
        )
    }
}

/// Every row of table `T`, a page at a time: a walk over a million rows holds one page.
pub(super) struct Rows<'a, T> {
    store: &'a DbStore,
    after: Option<(String, i64)>,
    page: std::vec::IntoIter<T>,
    done: bool,
}

impl<'a, T: Table> Rows<'a, T> {
    pub(super) fn new(store: &'a DbStore) -> Self {
        Rows {
            store,
            after: None,
            page: Vec::new().into_iter(),
            done: false,
        }
    }

    /// Ends the walk with an entry saying why, at `public_id`'s row.
    fn fail(&mut self, public_id: &str, why: StoreError) -> WalkEntry {
        self.done = true;
        let (source, dir_key) = T::keyless(public_id);
        WalkEntry {
            source,
            dir_key,
            id: None,
            result: Err(why),
            misplaced: Vec::new(),
            nonce_differs: false,
        }
    }
}

impl<T: Table> Iterator for Rows<'_, T> {
    type Item = WalkEntry;

    fn next(&mut self) -> Option<WalkEntry> {
        loop {
            if let Some(row) = self.page.next() {
                return Some(row.entry(self.store.inner.cfg.nonce_policy));
            }
            if self.done {
                return None;
            }
            let inner = self.store.inner.clone();
            let after = self.after.clone();
            let r = self.store.block(async move {
                let pool = inner.pool.get();
                match T::page(&pool, after.as_ref().map(|(id, k)| (id.as_str(), *k)), PAGE).await {
                    Err(e) if T::MAY_BE_MISSING && sql::is_missing_table(&e) => Ok(Vec::new()),
                    r => r.map_err(|e| unavailable(&e)),
                }
            });
            let rows = match r {
                Ok(rows) => rows,
                Err(e) => return Some(self.fail("", e)),
            };
            self.done = rows.len() < PAGE as usize;
            if let Some(last) = rows.last() {
                let next = last.key();
                // A key that could not be read (a column of another type than expected)
                // reads as the same key again: the next page would be this one, for ever.
                // Stop and say so.
                if self.after.as_ref() == Some(&next) {
                    return Some(self.fail(&next.0, StoreError::DbConfig(T::STUCK.into())));
                }
                self.after = Some(next);
            }
            self.page = rows.into_iter();
        }
    }
}

/// A row of either table as a walk reports it: malformed if its public id or its key
/// (`key_ok`, else `bad_key` says why) does not read, else as `check` finds it under the
/// store's nonce rule, noting apart a nonce that is not the public id.
fn row_entry(
    source: AeadSource,
    dir_key: AeadKey,
    public_id: &str,
    key_ok: bool,
    bad_key: &'static str,
    policy: NoncePolicy,
    check: impl Fn(&PublicId, NoncePolicy) -> Result<StoredAead, StoreError>,
) -> WalkEntry {
    let id = PublicId::new(public_id).ok();
    let malformed = |reason| StoreError::Malformed {
        path: PathBuf::from(source.to_string()),
        reason,
    };
    let (result, nonce_differs) = match &id {
        None => (Err(malformed("public_id is not a modhex public id")), false),
        Some(_) if !key_ok => (Err(malformed(bad_key)), false),
        Some(id) => {
            let any = check(id, NoncePolicy::Any);
            let differs = any
                .as_ref()
                .is_ok_and(|s| !NoncePolicy::binds(id, &s.nonce()));
            let result = match any {
                Ok(_) => check(id, policy),
                e => e,
            };
            (result, differs)
        }
    };
    WalkEntry {
        source,
        dir_key,
        id,
        result,
        misplaced: Vec::new(),
        nonce_differs,
    }
}
