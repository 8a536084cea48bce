//! The settings `ksm serve` runs with: flags over `ksm.toml` over the defaults
//! ([`ServeArgs::settings`]), checked into types.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aead_store::{AeadKey, NoncePolicy};

use crate::demo_aeads::DemoAeads;
use crate::device::hsm2::Hsm2Auth;
use crate::settings::http::HttpConfig;
use crate::settings::options::{ServeArgs, ServeOptions, NO_SOCKET};
use crate::settings::parse::{aead_keys, db_url, nonce_policy, seconds, set};
use crate::settings::socket_policy::SocketPolicy;
use crate::Error;

/// Everything `ksm serve` runs with, after flags and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Devices, or empty for the demo soft HSM.
    pub devices: Vec<PathBuf>,
    /// Use the built-in demo soft HSM and the AEADs compiled in with it.
    pub demo: bool,
    /// AEAD directory.
    pub aead_dir: PathBuf,
    /// The demo's compiled-in AEADs, written out for this daemon (then `aead_dir`): kept
    /// here so the directory lives as long as the settings that name it.
    pub demo_aeads: Option<Arc<crate::demo_aeads::DemoAeads>>,
    /// Keys AEADs are looked up under, in order: YubiHSM 1 key handles and YubiHSM 2
    /// otp-aead-keys (`--key-handles 0x20` / `otp-aead-key:0x0120`).
    pub key_handles: Vec<AeadKey>,
    /// HTTP settings.
    pub http: HttpConfig,
    /// Listen address.
    pub listen: SocketAddr,
    /// PID file.
    pub pid_file: Option<PathBuf>,
    /// Sharing socket (`None`: off).
    pub socket: Option<PathBuf>,
    /// Queue depth per device.
    pub queue_depth: usize,
    /// Which commands the sharing socket forwards.
    pub socket_policy: SocketPolicy,
    /// Which AEAD nonces are served (`--random-nonce-aeads`: any).
    pub nonce_policy: NoncePolicy,
    /// AEADs in a database (`--db-url`) rather than `aead_dir`.
    pub db: Option<DbSettings>,
    /// The YK-VAL verify API and its counter database (`--val-db-url`), if served.
    pub val: Option<ValSettings>,
    /// How YubiHSM 2 devices are authenticated to.
    pub hsm2: Hsm2Settings,
    /// How to read the settings again (SIGHUP): the same flags over `ksm.toml` as it is
    /// now. `None`: nothing to reload (settings made in code).
    pub reload: Option<Reload>,
}

/// Where and how the daemon reads AEADs from a database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// The database.
    pub url: aead_store::DbUrl,
    /// Private file with its password.
    pub password_file: Option<PathBuf>,
    /// The password itself, from a private `ksm.toml`.
    pub password: Option<otp_core::SecretString>,
    /// Most connections.
    pub pool_size: u32,
    /// Keep decoding cached AEADs while the database cannot be reached.
    pub serve_cached_when_down: bool,
}

impl DbSettings {
    /// The store's configuration for the daemon: cached and kept true, each wait bounded by
    /// the request timeout.
    pub fn store_config(
        &self,
        key_handles: Vec<AeadKey>,
        nonce_policy: NoncePolicy,
        timeout: std::time::Duration,
    ) -> aead_store::DbConfig {
        let mut c = aead_store::DbConfig::with_keys(self.url.clone(), key_handles);
        c.password_file = self.password_file.clone();
        c.password = self
            .password
            .as_ref()
            .map(|p| aead_store::DbPassword::new(p.expose()));
        c.nonce_policy = nonce_policy;
        c.pool_size = self.pool_size;
        c.timeout = timeout;
        c.cache = true;
        c.serve_cached_when_down = self.serve_cached_when_down;
        c
    }
}

/// The validation server's settings (`--val-db-url` and its companions).
#[derive(Debug, Clone)]
pub struct ValSettings {
    /// The counter database.
    pub url: aead_store::DbUrl,
    /// Private file with its password.
    pub password_file: Option<PathBuf>,
    /// The password itself, from a private `ksm.toml`.
    pub password: Option<otp_core::SecretString>,
    /// Most connections.
    pub pool_size: u32,
    /// Remote KSMs' decrypt URLs (`--val-ksm-url`); empty: this daemon's own HSMs.
    pub ksm_urls: Vec<String>,
}

impl ValSettings {
    /// The counter database's configuration, each wait bounded by `timeout` (the request
    /// timeout: past it a verification answers `BACKEND_ERROR`).
    pub fn db_config(&self, timeout: std::time::Duration) -> ykval::ValDbConfig {
        let mut c = ykval::ValDbConfig::new(self.url.clone());
        c.password_file = self.password_file.clone();
        c.password = self
            .password
            .as_ref()
            .map(|p| aead_store::DbPassword::new(p.expose()));
        c.pool_size = self.pool_size;
        c.timeout = timeout;
        c
    }
}

/// How the daemon authenticates to its YubiHSM 2 devices.
#[derive(Debug, Clone)]
pub struct Hsm2Settings {
    /// The authentication key's object id (required once a YubiHSM 2 is configured).
    pub auth_key: Option<hsm2_proto::ObjectId>,
    /// Private file whose first line is its password.
    pub password_file: Option<PathBuf>,
    /// The password itself, from a private `ksm.toml`.
    pub password: Option<otp_core::SecretString>,
    /// Sessions kept open per device.
    pub sessions: usize,
    /// Idle time after which a session gets a keep-alive command.
    pub keepalive: std::time::Duration,
}

impl Default for Hsm2Settings {
    /// The YubiHSM 2 settings of `ksm serve` with no flags and no `ksm.toml` (the defaults
    /// are written once, in [`ServeOptions::default`]).
    fn default() -> Self {
        ServeOptions::default()
            .hsm2()
            .expect("the default options are valid (unit-tested)")
    }
}

impl Hsm2Settings {
    /// Wipes the password given in `ksm.toml` (its keys are derived by then): no copy of it
    /// stays in the settings for the daemon's life.
    pub fn forget_password(&mut self) {
        self.password = None;
    }

    /// The authentication key and the session keys its configured password stands for;
    /// `None` if no password is configured (the devices start locked). A password file must
    /// be private; its first line is the password ([`Hsm2Auth::from_file`], as the tools
    /// read theirs).
    pub fn auth(&self) -> Result<Option<Hsm2Auth>, Error> {
        let id = || {
            self.auth_key.ok_or_else(|| {
                Error::Usage(
                    "a YubiHSM 2 password is configured but not the key it is for: set hsm2-auth-key".into(),
                )
            })
        };
        if let Some(p) = &self.password {
            return Ok(Some(Hsm2Auth::from_password(id()?, p.expose().as_bytes())));
        }
        match &self.password_file {
            Some(path) => Ok(Some(Hsm2Auth::from_file(id()?, path)?)),
            None => Ok(None),
        }
    }
}

/// Merges the settings again from their sources.
#[derive(Clone)]
pub struct Reload(pub Arc<dyn Fn() -> Result<Settings, Error> + Send + Sync>);

impl std::fmt::Debug for Reload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reload")
    }
}

/// Most sessions a daemon keeps per YubiHSM 2. The device has 16 slots, shared with
/// `ksm` tools, yubihsm-shell and a second daemon during an upgrade, and a session the
/// daemon loses track of (a lost answer, a crash) keeps its slot until it expires: a few
/// sessions serve the one-command-at-a-time device as well as many.
pub const MAX_SESSIONS: usize = 4;

impl ServeOptions {
    /// Every setting, checked: `self` with the defaults already under it.
    pub(crate) fn settings(&self, demo: bool) -> Result<Settings, Error> {
        let socket = set(&self.socket, "socket")?;
        Ok(Settings {
            devices: set(&self.device, "device")?,
            demo,
            aead_dir: set(&self.aead_dir, "aead-dir")?,
            key_handles: aead_keys(self.key_handles.as_deref().unwrap_or_default())?,
            http: self.http()?,
            listen: SocketAddr::new(set(&self.addr, "addr")?, set(&self.port, "port")?),
            pid_file: self.pid_file.clone(),
            socket: (socket != Path::new(NO_SOCKET)).then_some(socket),
            queue_depth: set(&self.queue_depth, "queue-depth")?.max(1),
            socket_policy: set(&self.socket_policy, "socket-policy")?,
            nonce_policy: nonce_policy(set(&self.random_nonce_aeads, "random-nonce-aeads")?),
            db: self.db()?,
            val: self.val()?,
            hsm2: self.hsm2()?,
            reload: None,
            demo_aeads: None,
        })
    }

    /// The YubiHSM 2 settings, checked (the password file is read when the daemon starts).
    pub(super) fn hsm2(&self) -> Result<Hsm2Settings, Error> {
        let sessions = set(&self.hsm2_sessions, "hsm2-sessions")?;
        // A YubiHSM 2 has 16 session slots, shared with the tools, yubihsm-shell and a
        // second daemon during an upgrade; a few serve a one-command-at-a-time device fully.
        let max = MAX_SESSIONS;
        if !(1..=max).contains(&sessions) {
            return Err(Error::Usage(format!(
                "--hsm2-sessions must be 1 to {max} (a YubiHSM 2's 16 session slots are shared with the tools and other clients)"
            )));
        }
        if self.hsm2_auth_key == Some(0) {
            return Err(Error::Usage("--hsm2-auth-key must be 1 to 65535".into()));
        }
        Ok(Hsm2Settings {
            auth_key: self.hsm2_auth_key.map(hsm2_proto::ObjectId),
            password_file: self.hsm2_password_file.clone(),
            password: self.hsm2_password.clone(),
            sessions,
            // Well inside the device's 30 s, with room for the owner's 1 s tick and a slow
            // answer.
            keepalive: seconds(&self.hsm2_keepalive, "hsm2-keepalive", 0.1..=20.0)?,
        })
    }

    /// The database settings, if AEADs are in a database.
    pub(super) fn db(&self) -> Result<Option<DbSettings>, Error> {
        let Some(url) = &self.db_url else {
            return Ok(None);
        };
        let pool_size = set(&self.db_pool_size, "db-pool-size")?;
        if pool_size == 0 {
            return Err(Error::Usage("--db-pool-size must be at least 1".into()));
        }
        Ok(Some(DbSettings {
            url: db_url(url)?,
            password_file: self.db_password_file.clone(),
            password: self.db_password.clone(),
            pool_size,
            serve_cached_when_down: set(
                &self.db_serve_cached_when_down,
                "db-serve-cached-when-down",
            )?,
        }))
    }
}

impl ServeOptions {
    /// The validation server's settings, if it is on.
    pub(super) fn val(&self) -> Result<Option<ValSettings>, Error> {
        let Some(url) = &self.val_db_url else {
            if self.val_ksm_url.is_some() {
                return Err(Error::Usage(
                    "--val-ksm-url is for the validation server: give --val-db-url too".into(),
                ));
            }
            return Ok(None);
        };
        let pool_size = set(&self.val_db_pool_size, "val-db-pool-size")?;
        if pool_size == 0 {
            return Err(Error::Usage("--val-db-pool-size must be at least 1".into()));
        }
        let ksm_urls = self.val_ksm_url.clone().unwrap_or_default();
        for u in &ksm_urls {
            if !u.starts_with("http://") {
                return Err(Error::Usage(format!(
                    "--val-ksm-url {u:?}: a KSM's decrypt URL, http://HOST:PORT/wsapi/decrypt?otp= (https is not supported)"
                )));
            }
        }
        Ok(Some(ValSettings {
            url: aead_store::DbUrl::parse(url)
                .map_err(|e| Error::Usage(format!("--val-db-url: {e}")))?,
            password_file: self.val_db_password_file.clone(),
            password: self.val_db_password.clone(),
            pool_size,
            ksm_urls,
        }))
    }
}

impl ServeArgs {
    /// Merges flags over `ksm.toml` over defaults, and keeps the flags to do it again on
    /// SIGHUP.
    pub fn settings(self) -> Result<Settings, Error> {
        let again = self.clone();
        let mut s = self.resolve()?;
        s.reload = Some(Reload(Arc::new(move || again.resolve())));
        Ok(s)
    }

    /// Flags over `ksm.toml` over (with `--demo`) the demo's defaults over the defaults.
    fn resolve(&self) -> Result<Settings, Error> {
        let mut o = self.options.clone();
        if let Some(path) = &self.config {
            o = o.or(ServeOptions::load(path)?);
        }
        // The demo's compiled-in AEADs, unless an AEAD directory is named.
        let demo_aeads = match (self.demo, &o.aead_dir) {
            (true, None) => Some(Arc::new(DemoAeads::write()?)),
            _ => None,
        };
        if self.demo {
            o = o.or_demo(demo_aeads.as_deref());
        }
        let mut s = o.or(ServeOptions::default()).settings(self.demo)?;
        s.demo_aeads = demo_aeads;
        Ok(s)
    }
}
