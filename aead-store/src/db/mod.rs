//! AEADs in a database: pyhsm's `aead_table` on PostgreSQL, MySQL/MariaDB or SQLite, behind
//! the same [`Store`] trait as the files.
//!
//! A row is untrusted input, as a file is: its nonce must be 6 bytes and (under the default
//! [`NoncePolicy`]) the public id, its AEAD 8 to 72 bytes (the daemon then asks for the
//! 30 bytes of a YubiKey AEAD, as for files); a bad row is an error naming the row, and only
//! that YubiKey is affected. With several key handles configured, the first one that has a
//! row for the id decides, good or bad, as the first key-handle directory does.
//!
//! The cache is correct first and fast second:
//!
//! - only rows found are cached, never an absence, so a new row decodes at once;
//! - on PostgreSQL a trigger (installed by [`DbStore::init`]) notifies channel `ksm_aead` of
//!   every new, changed or deleted row, and while this store LISTENs, a cached AEAD stays until
//!   its row changes. Each time the LISTEN is (re)established or lost the cache is emptied,
//!   since notices sent meanwhile are lost;
//! - a LISTEN is trusted only while it proves itself: every [`HEARTBEAT_EVERY`] the store
//!   notifies the channel with a heartbeat of its own (`#hb TOKEN MS VALUE`, never a public
//!   id), and cached AEADs are trusted only if a heartbeat sent at most [`HEARTBEAT_TRUST`]
//!   ago came back through the LISTEN. Notices reach a listener in commit order, so a
//!   heartbeat back means every change committed before it was sent has been heard. A LISTEN
//!   whose connection died or went silent trusts nothing after [`HEARTBEAT_TRUST`] (lookups
//!   go to the database) and is replaced after [`HEARTBEAT_GIVE_UP`];
//! - anyone who may connect to the database may LISTEN and NOTIFY on the channel too, so a
//!   heartbeat counts only if this store sent it and has not seen it back before: each
//!   carries a random 128-bit VALUE the store keeps until it returns, and the time of
//!   sending is the store's own record, never the notice's. A copy of a heartbeat, a made-up
//!   one, or anything on the channel that is neither a heartbeat nor a public id is ignored
//!   and counted ([`DbStore::ignored_notices`]); other KSMs' heartbeats (another TOKEN) are
//!   ignored;
//! - a heartbeat is sent only while every table the store reads (`aead_table`, and
//!   `ksm_otp_aead` when an otp-aead-key is configured) has `db-init`'s triggers for INSERT,
//!   UPDATE, DELETE and TRUNCATE, enabled ALWAYS: a trigger dropped, disabled or firing on
//!   origin only (which misses the changes of a `session_replication_role = replica`
//!   session) stops the trust as a silent connection does, is logged once and shown by
//!   [`DbStore::unwatched`];
//! - without a LISTEN (MySQL, SQLite, a PostgreSQL hot standby, which takes no LISTEN, or the
//!   listener lost), a cached AEAD is used for at most the TTL (`DbConfig::ttl`, 0.5 s)
//!   after it was read, then read again;
//! - a lookup that started before a change was noticed does not put what it read into the
//!   cache (an epoch counts the changes noticed).
//!
//! A query reads a `nonce` or `aead` value only if it is at most 128 bytes (longer reads as
//! a malformed row, and is never sent over), and at most 64 rows for one public id.
//!
//! When the database cannot be reached, a lookup fails with [`StoreError::Unavailable`]
//! within its deadline (`ERR Store unavailable`). A server that refuses connections is
//! known at once, where the driver would retry until the deadline: after a failure the
//! store tries a connection of its own beside each check, and while the server refuses,
//! lookups fail at once ("connection refused") until a check gets through. Cached AEADs keep decoding then only with
//! `serve_cached_when_down`: a row deleted during the outage is not noticed until it ends.
//! Connections left waiting on a server that vanished mid-query do not keep the pool from
//! reaching its standby: a pool whose connections stop coming free is replaced
//! ([`Replaceable`]).
//!
//! The store runs its own small tokio runtime (thread `ksm-db`): the daemon's lookups and
//! the tools' blocking calls both reach the database through it, and dropping the store
//! stops it wherever that happens.

mod sql;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trust_tests;
mod url;
mod walk;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use otp_core::{Aead, KeyHandle, Nonce, ObjectId, OtpAead, PublicId};
use tokio::runtime::Runtime;
use tracing::{info, warn};
use zeroize::Zeroizing;

pub use self::sql::{is_missing_table, Pool};
use self::sql::{kh_from_sql, Binary, RawOtpRow, RawRow};
pub use self::url::{DbUrl, Engine};
use self::walk::Rows;
use crate::{
    AeadKey, AeadSource, Lookup, NoncePolicy, Sealed, Store, StoreError, StoredAead, WalkEntry,
};

/// A database password given as a value (from a private `ksm.toml`): wiped when dropped,
/// never shown by `Debug`.
#[derive(Clone)]
pub struct DbPassword(Zeroizing<String>);

impl DbPassword {
    /// Takes the password.
    pub fn new(text: &str) -> DbPassword {
        DbPassword(Zeroizing::new(text.to_string()))
    }

    /// The password to connect with, by `--db-url`'s rules: from the private file (its
    /// first line), or the value given, or none (the driver's own mechanisms); both given
    /// is an error. Every database this project opens (the AEADs, the validator's
    /// counters) takes its password this one way.
    pub fn resolve(
        file: Option<&Path>,
        value: Option<&DbPassword>,
    ) -> Result<Option<Zeroizing<String>>, StoreError> {
        match (file, value) {
            (Some(_), Some(_)) => Err(StoreError::DbConfig(
                "the database password is given twice (a password file and a password): give one"
                    .into(),
            )),
            (Some(p), None) => Ok(Some(read_password(p)?)),
            (None, Some(p)) => Ok(Some(p.0.clone())),
            (None, None) => Ok(None),
        }
    }
}

impl std::fmt::Debug for DbPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbPassword(redacted)")
    }
}

/// How the database store is set up.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The database.
    pub url: DbUrl,
    /// A private file holding the password (first line), if the driver's own mechanisms
    /// do not provide one.
    pub password_file: Option<PathBuf>,
    /// The password itself (from a private `ksm.toml`); at most one of this and
    /// `password_file`.
    pub password: Option<DbPassword>,
    /// Keys to try, in order: YubiHSM 1 key handles (rows of `aead_table`) and YubiHSM 2
    /// otp-aead-keys (rows of `ksm_otp_aead`). `ksm_otp_aead` is read only if an
    /// otp-aead-key is configured, so a database whose `db-init` predates it works as it did.
    pub keys: Vec<AeadKey>,
    /// Which nonces rows may carry.
    pub nonce_policy: NoncePolicy,
    /// Most connections the lookups open at once (on PostgreSQL the LISTEN and its
    /// heartbeat have a small pool of their own besides, see `WATCH_CONNECTIONS`).
    pub pool_size: u32,
    /// Longest wait for a connection or an answer, for the tools; the daemon's lookups are
    /// bounded by their own deadline.
    pub timeout: Duration,
    /// Cache lookups, and keep the cache true (the daemon). Off, every lookup asks the
    /// database (the tools).
    pub cache: bool,
    /// Longest a cached AEAD is used without a LISTEN to tell of changes, counted from
    /// before the query that read it.
    pub ttl: Duration,
    /// Keep decoding cached AEADs while the database cannot be reached.
    pub serve_cached_when_down: bool,
}

impl DbConfig {
    /// Defaults for `url` and `key_handles`: pool of 8, 5 s, no cache.
    pub fn new(url: DbUrl, key_handles: Vec<KeyHandle>) -> DbConfig {
        DbConfig::with_keys(url, key_handles.into_iter().map(AeadKey::from).collect())
    }

    /// [`DbConfig::new`] with keys of either kind, in lookup order.
    pub fn with_keys(url: DbUrl, keys: Vec<AeadKey>) -> DbConfig {
        DbConfig {
            url,
            password_file: None,
            password: None,
            keys,
            nonce_policy: NoncePolicy::default(),
            pool_size: 8,
            timeout: Duration::from_secs(5),
            cache: false,
            ttl: Duration::from_millis(500),
            serve_cached_when_down: false,
        }
    }
}

/// Cached AEADs, with the count of changes noticed (see the module doc).
#[derive(Default)]
struct Cache {
    map: HashMap<String, (StoredAead, Instant)>,
    epoch: u64,
}

impl Cache {
    fn clear(&mut self) {
        self.map.clear();
        self.epoch += 1;
    }
}

/// Most AEADs cached; past it the cache starts over (a million fit in about 100 MB).
const MAX_CACHED: usize = 2_000_000;
/// How often the store checks that the database answers.
const PING_EVERY: Duration = Duration::from_millis(500);
/// How often, on PostgreSQL, the store checks that the database answers by sending a
/// heartbeat through its own LISTEN.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(300);
/// Longest since the newest heartbeat that came back was sent for the LISTEN to be trusted.
const HEARTBEAT_TRUST: Duration = Duration::from_millis(800);
/// Longest without a heartbeat back before the LISTEN is replaced.
const HEARTBEAT_GIVE_UP: Duration = Duration::from_secs(2);
/// What starts a heartbeat's payload; a public id is modhex and never starts so.
const HEARTBEAT_TAG: &str = "#hb ";
/// How long a heartbeat sent is remembered while it has not come back: one back later
/// would not make the LISTEN trusted anyway, and is counted as not ours.
const HEARTBEAT_FORGET: Duration = Duration::from_secs(10);
/// Most heartbeats remembered (more than [`HEARTBEAT_FORGET`] holds at [`HEARTBEAT_EVERY`]).
const HEARTBEATS_KEPT: usize = 64;
/// Rows per page of a walk.
const PAGE: i64 = 5_000;
/// How old a pool must be before it is replaced for want of a free connection
/// ([`Replaceable`]): connections a busy database is slow to give back are not thrown away
/// every few requests.
const REPLACE_AFTER: Duration = Duration::from_secs(5);

/// A pool that is replaced by a fresh one when its connections stop coming free.
///
/// A query given up at its deadline leaves its connection waiting for the answer, and sqlx
/// waits for that answer (and, over TLS, for the server's part of the goodbye) before the
/// connection is free again. When the server is gone without a word (powered off, its
/// address moved to a standby, a firewall dropping packets) that answer never comes: the
/// connection keeps its place in the pool until the kernel gives up on the socket, which
/// takes a quarter of an hour, and once every place is held every lookup fails even though
/// the database (or its standby) answers fresh connections. sqlx offers no TCP keepalive or
/// timeout on its sockets, so the store replaces the whole pool instead: when a lookup or a
/// heartbeat found every connection busy for its whole deadline, and the pool is older than
/// [`REPLACE_AFTER`], a fresh pool takes its place and the old one is closed as its
/// connections come back, or abandoned with them.
struct Replaceable {
    what: &'static str,
    current: Mutex<(Pool, Instant)>,
}

impl Replaceable {
    fn new(what: &'static str, pool: Pool) -> Replaceable {
        Replaceable {
            what,
            current: Mutex::new((pool, Instant::now())),
        }
    }

    /// The pool to use now (a handle: cheap).
    fn get(&self) -> Pool {
        lock(&self.current).0.clone()
    }

    /// Replaces the pool if every connection of it is busy and it is old enough. Runs
    /// inside the store's runtime.
    fn starved(&self) {
        let mut c = lock(&self.current);
        if !c.0.saturated() || c.1.elapsed() < REPLACE_AFTER {
            return;
        }
        warn!(
            pool = self.what,
            "no database connection came free within the deadline: opening fresh ones (those held may wait on a server that is gone)"
        );
        let fresh = c.0.fresh();
        let old = std::mem::replace(&mut *c, (fresh, Instant::now()));
        old.0.close_in_background();
    }
}

/// What the runtime's tasks and the lookups share.
struct Inner {
    pool: Replaceable,
    /// The LISTEN's and the heartbeat's own connections (PostgreSQL).
    watch_pool: Option<Replaceable>,
    cfg: DbConfig,
    cache: Mutex<Cache>,
    /// A LISTEN is in place: cached AEADs stay until notified, while heartbeats come back.
    listening: AtomicBool,
    /// When the store started, the origin of the heartbeats' times.
    born: Instant,
    /// Tells this store's heartbeats from other KSMs' on the same channel (not a secret:
    /// every listener sees it).
    token: u64,
    /// The heartbeats sent and not seen back yet: their random value, and when (ms after
    /// `born`) each was sent. The one secret of a heartbeat is its value, so only this
    /// store can make a notice that counts.
    sent: Mutex<VecDeque<(u128, u64)>>,
    /// When (ms after `born`) the newest heartbeat that came back was sent, or the LISTEN
    /// started.
    heartbeat: AtomicU64,
    /// Notices on the channel ignored: heartbeats under this store's token it did not send
    /// or had seen back already, and payloads that are neither a heartbeat nor a public id.
    ignored_notices: AtomicU64,
    /// The tables read whose changes would not all be announced (their triggers missing,
    /// disabled or not enabled ALWAYS), when the last check found any: no LISTEN is trusted.
    silent_tables: Mutex<Option<String>>,
    /// The server refused the store's last connection (and no check got through since):
    /// lookups fail at once instead of waiting on the driver's retries.
    refused: tokio::sync::watch::Sender<bool>,
    /// The LISTEN's server process (0: none), for the logs and the tests.
    listener_pid: AtomicI32,
    /// Why the database was last found unreachable, if it was (cleared by the next success).
    down: Mutex<Option<String>>,
    /// Lookups that reached the database (for tests and `/metrics`).
    queries: AtomicU64,
}

/// pyhsm's `aead_table` in a database (see the module doc).
pub struct DbStore {
    inner: Arc<Inner>,
    rt: Option<Runtime>,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbStore")
            .field("engine", &self.inner.cfg.url.engine())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(match e {
        sqlx::Error::PoolTimedOut => "no connection to the database".to_string(),
        // `aead_table`, or `ksm_otp_aead` in a database set up before YubiHSM 2 keys were.
        e if sql::is_missing_table(e) => format!("{e} (run `ksm store db-init`)"),
        e => e.to_string(),
    })
}

/// Why lookups fail while the server refuses connections.
const REFUSED: &str = "connection refused by the database server";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl DbStore {
    /// Opens the store. Nothing is connected yet (a daemon starts while its database is
    /// down); with `cache`, the watch starts at once.
    pub fn open(cfg: DbConfig) -> Result<DbStore, StoreError> {
        if cfg.pool_size == 0 {
            return Err(StoreError::DbConfig(
                "the pool needs at least one connection".into(),
            ));
        }
        let password = DbPassword::resolve(cfg.password_file.as_deref(), cfg.password.as_ref())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ksm-db")
            .enable_all()
            .build()
            .map_err(|e| StoreError::DbConfig(format!("cannot start its runtime: {e}")))?;
        let (pool, watch_pool) = {
            let _in = rt.enter();
            let password = password.as_deref().map(|s| s.as_str());
            (
                Pool::new(&cfg.url, password, cfg.pool_size, cfg.timeout),
                Pool::watch_pool(&cfg.url, password, cfg.timeout),
            )
        };
        let inner = Arc::new(Inner {
            pool: Replaceable::new("lookups", pool),
            watch_pool: watch_pool.map(|p| Replaceable::new("watch", Pool::Pg(p))),
            cfg,
            cache: Mutex::default(),
            listening: AtomicBool::new(false),
            born: Instant::now(),
            token: {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            },
            sent: Mutex::default(),
            heartbeat: AtomicU64::new(0),
            ignored_notices: AtomicU64::new(0),
            silent_tables: Mutex::new(None),
            refused: tokio::sync::watch::Sender::new(false),
            listener_pid: AtomicI32::new(0),
            down: Mutex::new(None),
            queries: AtomicU64::new(0),
        });
        if inner.cfg.cache {
            rt.spawn(watch(inner.clone()));
        }
        Ok(DbStore {
            inner,
            rt: Some(rt),
        })
    }

    fn rt(&self) -> &Runtime {
        // Only `drop` takes it.
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the store")
    }

    /// Runs `fut` on the store's runtime and waits for it, from any thread (the tools), at
    /// most the configured timeout and a bit.
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let task = self.rt().spawn(async move {
            let _ = tx.send(fut.await);
        });
        let r = rx.recv_timeout(self.inner.cfg.timeout + Duration::from_secs(1));
        task.abort();
        r.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "no answer from the database in time".into(),
            ))
        })
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.inner.cfg.url.engine()
    }

    /// `ksm store db-init`: creates `aead_table` if it is missing and, on PostgreSQL, the
    /// trigger that notifies KSMs of changed rows.
    pub fn init(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.block(async move { inner.pool.get().init().await.map_err(|e| unavailable(&e)) })
    }

    /// Whether a LISTEN keeps the cache true now (PostgreSQL): in place, and its
    /// heartbeats coming back.
    pub fn is_listening(&self) -> bool {
        self.inner.listen_trusted() == Some(true)
    }

    /// Lookups that went to the database rather than the cache.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }

    /// Notices on the change channel ignored so far: heartbeats that claimed to be this
    /// store's but were not sent by it, or came back a second time (copies, forgeries), and
    /// payloads that are neither a heartbeat nor a public id.
    pub fn ignored_notices(&self) -> u64 {
        self.inner.ignored_notices.load(Ordering::Relaxed)
    }

    /// Why no LISTEN is trusted although one could be (PostgreSQL): the tables read whose
    /// triggers would not announce every change.
    pub fn unwatched(&self) -> Option<String> {
        lock(&self.inner.silent_tables).as_ref().map(|t| {
            format!("change trigger missing, disabled or not enabled ALWAYS on {t} (run `ksm store db-init`)")
        })
    }

    /// The AEAD for `id`, waiting for the database at most until `deadline`.
    pub async fn lookup_by(
        &self,
        id: &PublicId,
        deadline: Instant,
    ) -> Result<Option<StoredAead>, StoreError> {
        if let Some(hit) = self.inner.cached(id, false) {
            return Ok(Some(hit));
        }
        if let Some(hit) = self.inner.cached_while_down(id) {
            return Ok(Some(hit));
        }
        let mut refused = self.inner.refused.subscribe();
        if *refused.borrow_and_update() {
            return self
                .inner
                .or_stale(id, Err(StoreError::Unavailable(REFUSED.into())));
        }
        let inner = self.inner.clone();
        let key = id.clone();
        let mut task = self.rt().spawn(async move { inner.fetch(&key).await });
        let r = tokio::select! {
            r = &mut task => r.unwrap_or_else(|_| Err(StoreError::Unavailable("lookup failed".into()))),
            // The server refuses connections: the driver would retry until the deadline.
            Ok(_) = refused.wait_for(|r| *r) => {
                task.abort();
                Err(StoreError::Unavailable(REFUSED.into()))
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                task.abort();
                let inner = self.inner.clone();
                self.rt().spawn(async move { inner.pool.starved() });
                self.inner.set_down("no answer from the database within the request's deadline");
                Err(StoreError::Unavailable("no answer within the request's deadline".into()))
            }
        };
        self.inner.or_stale(id, r)
    }
}

impl Drop for DbStore {
    fn drop(&mut self) {
        // May be dropped inside another runtime (the daemon's), where a blocking shutdown
        // would panic.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn read_password(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    let text = otp_core::keyfile::read_private(path)
        .map_err(|e| StoreError::DbConfig(format!("password file: {e}")))?;
    let first = text.lines().next().unwrap_or_default();
    if first.is_empty() {
        return Err(StoreError::DbConfig(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(first.to_string()))
}

impl Inner {
    fn set_down(&self, why: &str) {
        let mut d = lock(&self.down);
        if d.is_none() {
            warn!(reason = why, "AEAD database unavailable");
        }
        *d = Some(why.to_string());
    }

    fn set_up(&self) {
        if lock(&self.down).take().is_some() {
            info!("AEAD database reachable again");
        }
    }

    /// Milliseconds since the store started.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long since the newest heartbeat that came back was sent.
    fn heartbeat_age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.heartbeat.load(Ordering::SeqCst)),
        )
    }

    /// `None` without a LISTEN; with one, whether it is trusted: a heartbeat came back
    /// recently enough.
    fn listen_trusted(&self) -> Option<bool> {
        self.listening
            .load(Ordering::SeqCst)
            .then(|| self.heartbeat_age() < HEARTBEAT_TRUST)
    }

    /// A cached AEAD still to be trusted, or with `stale`, any cached AEAD.
    fn cached(&self, id: &PublicId, stale: bool) -> Option<StoredAead> {
        if !self.cfg.cache {
            return None;
        }
        let c = lock(&self.cache);
        let (s, at) = c.map.get(id.as_str())?;
        let fresh = stale
            || match self.listen_trusted() {
                Some(trusted) => trusted,
                // What was cached under a LISTEN went with it (see `lost_listener`).
                None => at.elapsed() < self.cfg.ttl,
            };
        fresh.then(|| s.clone())
    }

    /// With `serve_cached_when_down`, while the database is known to be down: any cached
    /// AEAD, at once. Asking a database that does not answer first would spend the request's
    /// deadline and leave the HSM no time to decode.
    fn cached_while_down(&self, id: &PublicId) -> Option<StoredAead> {
        if !self.cfg.serve_cached_when_down || lock(&self.down).is_none() {
            return None;
        }
        self.cached(id, true)
    }

    /// A failed lookup falls back on the cache when so configured.
    fn or_stale(
        &self,
        id: &PublicId,
        r: Result<Option<StoredAead>, StoreError>,
    ) -> Result<Option<StoredAead>, StoreError> {
        match r {
            Err(StoreError::Unavailable(why)) if self.cfg.serve_cached_when_down => {
                match self.cached(id, true) {
                    Some(s) => Ok(Some(s)),
                    None => Err(StoreError::Unavailable(why)),
                }
            }
            r => r,
        }
    }

    /// Reads `id`'s rows, picks and checks one, and caches it unless a change was noticed
    /// meanwhile. Its age is counted from before the query: what it read may be that old.
    async fn fetch(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        let epoch = lock(&self.cache).epoch;
        let asked = Instant::now();
        self.queries.fetch_add(1, Ordering::Relaxed);
        let wants_otp = self
            .cfg
            .keys
            .iter()
            .any(|k| matches!(k, AeadKey::OtpKey(_)));
        let rows = async {
            let pool = self.pool.get();
            let rows = pool.rows_for(id.as_str()).await?;
            let otp_rows = if wants_otp {
                pool.otp_rows_for(id.as_str()).await?
            } else {
                Vec::new()
            };
            Ok::<_, sqlx::Error>((rows, otp_rows))
        };
        let (rows, otp_rows) = match rows.await {
            Ok(rows) => rows,
            Err(e) if sql::too_many_rows(&e).is_some() => {
                self.set_up();
                return Err(StoreError::Malformed {
                    path: PathBuf::from(format!(
                        "{} rows (public_id {id})",
                        sql::too_many_rows(&e).unwrap_or_default()
                    )),
                    reason: "more rows for one public id than a lookup reads",
                });
            }
            Err(e) => {
                if matches!(e, sqlx::Error::PoolTimedOut) {
                    self.pool.starved();
                }
                let e = unavailable(&e);
                if let StoreError::Unavailable(why) = &e {
                    self.set_down(why);
                }
                return Err(e);
            }
        };
        self.set_up();
        let found = choose(&rows, &otp_rows, id, &self.cfg.keys, self.cfg.nonce_policy)?;
        if let (true, Some(s)) = (self.cfg.cache, &found) {
            let mut c = lock(&self.cache);
            if c.epoch == epoch {
                if c.map.len() >= MAX_CACHED {
                    c.map.clear();
                }
                c.map.insert(id.as_str().to_string(), (s.clone(), asked));
            }
        }
        Ok(found)
    }

    /// The fallbacks for `id` after key `after` ([`Store::fallbacks`]), from the
    /// database itself (the cache holds each id's first AEAD only).
    async fn fetch_fallbacks(
        &self,
        id: &PublicId,
        after: AeadKey,
    ) -> Result<Vec<StoredAead>, StoreError> {
        let Some(pos) = self.cfg.keys.iter().position(|k| *k == after) else {
            return Ok(Vec::new());
        };
        let later = &self.cfg.keys[pos + 1..];
        if later.is_empty() {
            return Ok(Vec::new());
        }
        let wants_otp = later.iter().any(|k| matches!(k, AeadKey::OtpKey(_)));
        let pool = self.pool.get();
        let rows = pool.rows_for(id.as_str()).await;
        let otp_rows = match (&rows, wants_otp) {
            (Ok(_), true) => pool.otp_rows_for(id.as_str()).await,
            _ => Ok(Vec::new()),
        };
        let (rows, otp_rows) = match (rows, otp_rows) {
            (Ok(r), Ok(o)) => (r, o),
            (Err(e), _) | (_, Err(e)) => return Err(unavailable(&e)),
        };
        Ok(later
            .iter()
            .filter_map(
                |key| match choose(&rows, &otp_rows, id, &[*key], self.cfg.nonce_policy) {
                    Ok(found) => found,
                    Err(e) => {
                        warn!(public_id = %id, error = %e, "a fallback AEAD is unusable; left out");
                        None
                    }
                },
            )
            .collect())
    }

    /// A heartbeat's payload and the time it carries, remembered as sent (before it is: it
    /// may come back before the query that sends it returns).
    fn new_heartbeat(&self) -> (String, u64) {
        let value: u128 = rand::random();
        let now = self.now_ms();
        let mut sent = lock(&self.sent);
        let forget = u64::try_from(HEARTBEAT_FORGET.as_millis()).unwrap_or(u64::MAX);
        while sent
            .front()
            .is_some_and(|(_, at)| now.saturating_sub(*at) > forget)
            || sent.len() >= HEARTBEATS_KEPT
        {
            sent.pop_front();
        }
        sent.push_back((value, now));
        (
            format!("{HEARTBEAT_TAG}{:016x} {now} {value:032x}", self.token),
            now,
        )
    }

    /// A heartbeat that came back (`hb`: the payload after the tag): if it is one this
    /// store sent and has not seen back, the LISTEN has heard everything committed before
    /// it was sent. Other KSMs' are no concern of this one; anything else under this
    /// store's token is a copy or a forgery, ignored and counted.
    fn heartbeat_back(&self, hb: &str) {
        let mut words = hb.split(' ');
        if words.next().and_then(|t| u64::from_str_radix(t, 16).ok()) != Some(self.token) {
            return;
        }
        let sent_at = words.next().and_then(|w| w.parse::<u64>().ok());
        let value = words.next().and_then(|w| u128::from_str_radix(w, 16).ok());
        let ours = match (sent_at, value, words.next()) {
            (Some(sent_at), Some(value), None) => {
                let mut sent = lock(&self.sent);
                let pos = sent.iter().position(|s| *s == (value, sent_at));
                pos.and_then(|i| sent.remove(i))
            }
            _ => None,
        };
        match ours {
            Some((_, sent_at)) => {
                self.heartbeat.fetch_max(sent_at, Ordering::SeqCst);
            }
            None => self.ignored_notice(),
        }
    }

    fn ignored_notice(&self) {
        if self.ignored_notices.fetch_add(1, Ordering::Relaxed) == 0 {
            warn!("a notice on the AEAD change channel that this KSM did not send (a copied or made-up heartbeat?): ignored, and counted");
        }
    }

    /// Records which tables read would not announce every change (`None`: all would),
    /// logging when that changes rather than at every check.
    fn set_silent_tables(&self, silent: Option<String>) {
        let mut s = lock(&self.silent_tables);
        if *s == silent {
            return;
        }
        match &silent {
            Some(t) => {
                warn!(tables = %t, "change trigger missing, disabled or not enabled ALWAYS for INSERT, UPDATE, DELETE and TRUNCATE (run `ksm store db-init`): no LISTEN is trusted, cached AEADs are used for at most {} ms", self.cfg.ttl.as_millis())
            }
            None => info!("change triggers in place on every table read"),
        }
        *s = silent;
    }

    /// The tables lookups read, for the trigger check.
    fn tables(&self) -> Vec<String> {
        let mut t = vec!["aead_table".to_string()];
        if self
            .cfg
            .keys
            .iter()
            .any(|k| matches!(k, AeadKey::OtpKey(_)))
        {
            t.push("ksm_otp_aead".to_string());
        }
        t
    }

    /// A notice: `""` means every row (a TRUNCATE), a heartbeat is no change, and what is
    /// neither a heartbeat nor a public id is ignored (and counted).
    fn changed(&self, public_id: &str) {
        if let Some(hb) = public_id.strip_prefix(HEARTBEAT_TAG) {
            self.heartbeat_back(hb);
            return;
        }
        if !public_id.is_empty() && PublicId::new(public_id).is_err() {
            self.ignored_notice();
            return;
        }
        let mut c = lock(&self.cache);
        if public_id.is_empty() {
            c.clear();
        } else {
            c.map.remove(public_id);
            c.epoch += 1;
        }
    }
}

/// The row of the first configured key that has one (in pyhsm's table for a key handle,
/// in ours for an otp-aead-key), checked.
fn choose(
    rows: &[RawRow],
    otp_rows: &[RawOtpRow],
    id: &PublicId,
    keys: &[AeadKey],
    policy: NoncePolicy,
) -> Result<Option<StoredAead>, StoreError> {
    for key in keys {
        match key {
            AeadKey::Handle(kh) => {
                let row = rows
                    .iter()
                    .find(|r| r.keyhandle.and_then(kh_from_sql) == Some(kh.0));
                if let Some(row) = row {
                    return check_row(row, *kh, id, policy).map(Some);
                }
            }
            AeadKey::OtpKey(key_id) => {
                let row = otp_rows
                    .iter()
                    .find(|r| r.key_id == Some(i64::from(key_id.0)));
                if let Some(row) = row {
                    return check_otp_row(row, *key_id, id, policy).map(Some);
                }
            }
        }
    }
    Ok(None)
}

/// [`check_row`] for a row of our YubiHSM 2 table: 36 bytes, then the nonce rule on the
/// AEAD's own nonce (its first 6 bytes), as for a version-2 file.
fn check_otp_row(
    row: &RawOtpRow,
    key_id: ObjectId,
    id: &PublicId,
    policy: NoncePolicy,
) -> Result<StoredAead, StoreError> {
    let source = AeadSource::otp_row(id.as_str(), key_id);
    let place = PathBuf::from(source.to_string());
    let malformed = |reason| StoreError::Malformed {
        path: place.clone(),
        reason,
    };
    let aead = match &row.aead {
        Binary::Bytes(b) => <[u8; OtpAead::LEN]>::try_from(b.as_slice())
            .map(OtpAead)
            .map_err(|_| malformed("AEAD is not 36 bytes"))?,
        Binary::TooLong => return Err(malformed("AEAD is not 36 bytes")),
        Binary::Other => return Err(malformed("AEAD is NULL or not binary")),
    };
    let sealed = Sealed::Hsm2 { key_id, aead };
    policy.check(&place, id, &sealed.nonce())?;
    Ok(StoredAead { sealed, source })
}

/// What files get from `format` and `NoncePolicy`, for a row: lengths, then the nonce rule.
fn check_row(
    row: &RawRow,
    kh: KeyHandle,
    id: &PublicId,
    policy: NoncePolicy,
) -> Result<StoredAead, StoreError> {
    let source = AeadSource::row(id.as_str(), kh);
    let place = PathBuf::from(source.to_string());
    let malformed = |reason| StoreError::Malformed {
        path: place.clone(),
        reason,
    };
    let nonce = match &row.nonce {
        Binary::Bytes(b) => <[u8; 6]>::try_from(b.as_slice())
            .map(Nonce)
            .map_err(|_| malformed("nonce is not 6 bytes"))?,
        Binary::TooLong => return Err(malformed("nonce is not 6 bytes")),
        Binary::Other => return Err(malformed("nonce is NULL or not binary")),
    };
    let aead = match &row.aead {
        Binary::Bytes(b) => Aead::new(b).map_err(|_| malformed("AEAD is not 8 to 72 bytes"))?,
        Binary::TooLong => return Err(malformed("AEAD is not 8 to 72 bytes")),
        Binary::Other => return Err(malformed("AEAD is NULL or not binary")),
    };
    policy.check(&place, id, &nonce)?;
    Ok(StoredAead {
        sealed: Sealed::Hsm1 {
            key_handle: kh,
            nonce,
            aead,
        },
        source,
    })
}

/// Whether a connection error is the server refusing it.
fn is_refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// How one check of [`watch`] ended.
enum Check {
    /// The ping (on PostgreSQL the heartbeat) answered: with the tables read whose changes
    /// would not all be announced, if any (then no heartbeat was sent).
    Answered(Option<String>),
    /// The ping failed.
    Failed(sqlx::Error),
    /// No answer in time.
    NoAnswer,
    /// The server refused a connection of the store's own.
    Refused,
}

/// Keeps the cache true: checks every [`PING_EVERY`] that the database answers and, on
/// PostgreSQL, keeps a LISTEN for the trigger's notices in place.
async fn watch(inner: Arc<Inner>) {
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut listen_failures = 0u32;
    let pg = matches!(inner.pool.get(), Pool::Pg(_));
    // When the oldest heartbeat sent since the newest that came back was sent (ms).
    let mut unanswered: Option<u64> = None;
    // Whether the last check got through: until one has, a connection of the store's own
    // goes beside each check, to tell a refusal at once.
    let mut answered = false;
    loop {
        let (payload, sent_at) = match pg {
            true => inner.new_heartbeat(),
            false => (String::new(), inner.now_ms()),
        };
        let ping = tokio::time::timeout(
            PING_EVERY.max(inner.cfg.timeout.min(Duration::from_secs(2))),
            async {
                match (inner.pool.get(), inner.watch_pool.as_ref().map(|w| w.get())) {
                    (Pool::Pg(_), Some(Pool::Pg(p))) => {
                        // The ping is the heartbeat; none is sent unless every table read
                        // announces its changes.
                        // Its first column: the tables that would not announce changes.
                        sqlx::query_scalar::<_, Option<String>>(&sql::heartbeat())
                            .bind(inner.tables())
                            .bind(payload)
                            .fetch_one(&p)
                            .await
                    }
                    (pool, _) => pool.ping().await.map(|()| None),
                }
            },
        );
        let refused = async {
            if answered {
                return std::future::pending().await;
            }
            match inner.pool.get().connect_once().await {
                Err(e) if is_refused(&e) => (),
                _ => std::future::pending().await,
            }
        };
        let check = tokio::select! {
            r = ping => match r {
                Ok(Ok(silent)) => Check::Answered(silent),
                Ok(Err(e)) => Check::Failed(e),
                Err(_) => Check::NoAnswer,
            },
            () = refused => Check::Refused,
        };
        answered = matches!(check, Check::Answered(_));
        inner.refused.send_replace(matches!(check, Check::Refused));
        match check {
            Check::Answered(silent) => {
                inner.set_up();
                if let Some(Pool::Pg(pg)) = inner.watch_pool.as_ref().map(|w| w.get()) {
                    let sent = silent.is_none();
                    inner.set_silent_tables(silent);
                    let listening = inner.listening.load(Ordering::SeqCst);
                    let back = inner.heartbeat.load(Ordering::SeqCst);
                    if !listening || unanswered.is_some_and(|u| back >= u) {
                        unanswered = None;
                    }
                    if sent && listening && unanswered.is_none() {
                        unanswered = Some(sent_at);
                    }
                    let silent = unanswered.is_some_and(|u| {
                        Duration::from_millis(inner.now_ms().saturating_sub(u)) > HEARTBEAT_GIVE_UP
                    });
                    if listening && (silent || !sent) {
                        if silent {
                            warn!("no heartbeat back through the LISTEN for AEAD changes: replacing it; cached AEADs are not used meanwhile");
                        }
                        if let Some(l) = listener.take() {
                            l.abort();
                        }
                        lost_listener(&inner, true);
                        unanswered = None;
                        listen_failures += 1;
                    }
                    if listener.as_ref().map_or(true, |l| l.is_finished()) {
                        if listener.take().is_some() {
                            listen_failures += 1;
                        }
                        listener = Some(tokio::spawn(listen(
                            inner.clone(),
                            pg.clone(),
                            listen_failures,
                        )));
                    }
                }
            }
            Check::Failed(e) => {
                if matches!(e, sqlx::Error::PoolTimedOut) {
                    inner.watch_pool.as_ref().unwrap_or(&inner.pool).starved();
                }
                inner.set_down(&unavailable(&e).to_string());
                drop_listener(&inner, &mut listener);
            }
            Check::NoAnswer => {
                inner.watch_pool.as_ref().unwrap_or(&inner.pool).starved();
                inner.set_down("no answer to a ping");
                drop_listener(&inner, &mut listener);
            }
            Check::Refused => {
                inner.set_down(REFUSED);
                drop_listener(&inner, &mut listener);
            }
        }
        tokio::time::sleep(if pg { HEARTBEAT_EVERY } else { PING_EVERY }).await;
    }
}

fn drop_listener(inner: &Inner, listener: &mut Option<tokio::task::JoinHandle<()>>) {
    if let Some(l) = listener.take() {
        l.abort();
    }
    lost_listener(inner, !inner.cfg.serve_cached_when_down);
}

/// The LISTEN is gone: what was cached under it is no longer kept true, so it goes (unless
/// the database is down and cached AEADs are to outlive the outage).
fn lost_listener(inner: &Inner, clear: bool) {
    let mut c = lock(&inner.cache);
    inner.listening.store(false, Ordering::SeqCst);
    inner.listener_pid.store(0, Ordering::SeqCst);
    if clear {
        c.clear();
    }
}

/// One LISTEN, until its connection is lost.
async fn listen(inner: Arc<Inner>, pool: sqlx::PgPool, failures: u32) {
    let connect = async {
        let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
        l.eager_reconnect(false);
        l.listen(sql::CHANNEL).await?;
        // A LISTEN without the triggers (a table made by hand, db-init not run) would hear
        // nothing and keep revoked AEADs cached for ever: then it is no LISTEN at all.
        let silent: Option<String> = sqlx::query_scalar(sql::silent_tables())
            .bind(inner.tables())
            .fetch_one(&mut l)
            .await?;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut l)
            .await?;
        Ok::<_, sqlx::Error>((l, silent, pid))
    };
    let mut l = match tokio::time::timeout(inner.cfg.timeout, connect).await {
        Ok(Ok((l, None, pid))) => {
            inner.set_silent_tables(None);
            inner.listener_pid.store(pid, Ordering::SeqCst);
            l
        }
        Ok(Ok((_, silent, _))) => {
            inner.set_silent_tables(silent);
            // Asked again at the next check: db-init may run meanwhile.
            tokio::time::sleep(Duration::from_secs(5)).await;
            return;
        }
        Ok(Err(e)) => {
            if failures == 0 {
                warn!(error = %e, "no LISTEN on the AEAD database (a hot standby?): cached AEADs are used for at most {} ms", inner.cfg.ttl.as_millis());
            }
            return;
        }
        Err(_) => return,
    };
    {
        // Whatever changed before the LISTEN was not notified. From now on every change is
        // heard, as after a heartbeat.
        let mut c = lock(&inner.cache);
        c.clear();
        inner.heartbeat.store(inner.now_ms(), Ordering::SeqCst);
        inner.listening.store(true, Ordering::SeqCst);
    }
    info!(
        backend_pid = inner.listener_pid.load(Ordering::SeqCst),
        "listening for AEAD changes"
    );
    while let Ok(Some(n)) = l.try_recv().await {
        inner.changed(n.payload());
    }
    lost_listener(&inner, !inner.cfg.serve_cached_when_down);
    warn!("lost the LISTEN for AEAD changes; cached AEADs are used for at most the TTL until it is back");
}

impl Store for DbStore {
    fn lookup(&self, id: &PublicId) -> Result<Option<StoredAead>, StoreError> {
        if let Some(hit) = self.inner.cached(id, false) {
            return Ok(Some(hit));
        }
        if let Some(hit) = self.inner.cached_while_down(id) {
            return Ok(Some(hit));
        }
        let inner = self.inner.clone();
        let key = id.clone();
        let r = self.block(async move { inner.fetch(&key).await });
        self.inner.or_stale(id, r)
    }

    fn lookup_until<'a>(&'a self, id: &'a PublicId, deadline: Instant) -> Lookup<'a> {
        Box::pin(self.lookup_by(id, deadline))
    }

    fn fallbacks(&self, id: &PublicId, after: AeadKey) -> Result<Vec<StoredAead>, StoreError> {
        let inner = self.inner.clone();
        let key = id.clone();
        self.block(async move { inner.fetch_fallbacks(&key, after).await })
    }

    /// Gives up at `deadline` with [`StoreError::Unavailable`]; a fallback not found in time
    /// changes nothing about the database's health (the first lookup answered).
    fn fallbacks_until<'a>(
        &'a self,
        id: &'a PublicId,
        after: AeadKey,
        deadline: Instant,
    ) -> crate::Fallbacks<'a> {
        Box::pin(async move {
            let inner = self.inner.clone();
            let key = id.clone();
            let mut task = self
                .rt()
                .spawn(async move { inner.fetch_fallbacks(&key, after).await });
            tokio::select! {
                r = &mut task => r.unwrap_or_else(|_| Err(StoreError::Unavailable("lookup failed".into()))),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    task.abort();
                    Err(StoreError::Unavailable("no answer within the request's deadline".into()))
                }
            }
        })
    }

    /// A YubiHSM 1 AEAD goes to pyhsm's `aead_table`, a YubiHSM 2 one to `ksm_otp_aead`.
    fn put(&self, id: &PublicId, sealed: &Sealed, force: bool) -> Result<AeadSource, StoreError> {
        let inner = self.inner.clone();
        let key = id.as_str().to_string();
        let source = match sealed {
            Sealed::Hsm1 { key_handle, .. } => AeadSource::row(id.as_str(), *key_handle),
            Sealed::Hsm2 { key_id, .. } => AeadSource::otp_row(id.as_str(), *key_id),
        };
        let sealed = sealed.clone();
        let changed = self.block(async move {
            let pool = inner.pool.get();
            match sealed {
                Sealed::Hsm1 {
                    key_handle,
                    nonce,
                    aead,
                } => {
                    pool.put(&key, key_handle.0, &nonce.0, aead.as_bytes(), force)
                        .await
                }
                Sealed::Hsm2 { key_id, aead } => pool.put_otp(&key, key_id.0, &aead.0, force).await,
            }
            .map_err(|e| unavailable(&e))
        })?;
        if !changed && !force {
            return Err(StoreError::AlreadyExists(PathBuf::from(source.to_string())));
        }
        Ok(source)
    }

    fn exists_under(&self, key: AeadKey, id: &PublicId) -> Result<bool, StoreError> {
        let key_id = match key {
            AeadKey::Handle(kh) => return self.exists(kh, id),
            AeadKey::OtpKey(key_id) => key_id,
        };
        let inner = self.inner.clone();
        let public_id = id.as_str().to_string();
        let rows = self.block(async move {
            inner
                .pool
                .get()
                .otp_rows_for(&public_id)
                .await
                .map_err(|e| unavailable(&e))
        })?;
        Ok(rows.iter().any(|r| r.key_id == Some(i64::from(key_id.0))))
    }

    fn exists(&self, kh: KeyHandle, id: &PublicId) -> Result<bool, StoreError> {
        let inner = self.inner.clone();
        let key = id.as_str().to_string();
        let rows = self.block(async move {
            inner
                .pool
                .get()
                .rows_for(&key)
                .await
                .map_err(|e| unavailable(&e))
        })?;
        Ok(rows
            .iter()
            .any(|r| r.keyhandle.and_then(kh_from_sql) == Some(kh.0)))
    }

    fn entries(&self) -> Box<dyn Iterator<Item = WalkEntry> + '_> {
        Box::new(Rows::<RawRow>::new(self).chain(Rows::<RawOtpRow>::new(self)))
    }

    fn len(&self) -> Option<usize> {
        self.inner
            .cfg
            .cache
            .then(|| lock(&self.inner.cache).map.len())
    }

    fn watching(&self) -> Option<bool> {
        (self.inner.cfg.cache && self.engine() == Engine::Postgres).then(|| self.is_listening())
    }

    fn ignored_notices(&self) -> Option<u64> {
        (self.inner.cfg.cache && self.engine() == Engine::Postgres)
            .then(|| DbStore::ignored_notices(self))
    }

    fn unwatched(&self) -> Option<String> {
        DbStore::unwatched(self)
    }

    fn check(&self) -> Result<(), StoreError> {
        match lock(&self.inner.down).clone() {
            Some(why) => Err(StoreError::Unavailable(why)),
            None => Ok(()),
        }
    }
}
