//! `ksm serve`'s options, written once: [`ServeOptions`] is read by clap (the flags) and by
//! serde (`ksm.toml`, the same names), its [`Default`] is the one place the defaults are
//! written (`--help` shows them from there), and [`ServeArgs::settings`] puts flags over the
//! file over the defaults and checks the result into the typed [`Settings`].

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aead_store::{AeadKey, NoncePolicy};
use clap::Args;
use ipnet::IpNet;
use otp_core::{keyfile, redact, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::daemon::serve::{DbSettings, Hsm2Settings, Reload, Settings};
use crate::daemon::server::HttpConfig;
use crate::daemon::tls::TlsFiles;
use crate::daemon::tool_frame::SocketPolicy;
use crate::demo_aeads::DemoAeads;
use crate::device::sharing::DEFAULT_SOCKET;
use crate::device::DEFAULT_DEVICE;
use crate::tools::DEFAULT_AEAD_DIR;
use crate::Error;

/// `--socket` value (and `socket` key) that turns the sharing socket off.
const NO_SOCKET: &str = "none";

/// `ksm serve` flags: pyhsm's `yhsm-yubikey-ksm` flags, plus ours. Every flag but these few
/// is also a key of `--config ksm.toml` ([`ServeOptions`]); flags win.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// ksm.toml with defaults for every flag.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Use the built-in demo: a soft HSM with the public test keys and their AEADs, both
    /// compiled into the binary (it reads no other file).
    #[arg(long)]
    pub demo: bool,
    /// The flags that are also `ksm.toml` keys.
    #[command(flatten)]
    pub options: ServeOptions,
    /// Accepted for pyhsm compatibility and ignored: run under systemd instead.
    #[arg(short = 'd', long = "daemon", hide = true)]
    pub daemon: bool,
}

/// The options of `ksm serve` that are both flags and `ksm.toml` keys (the key is the long
/// flag's name). `None` is "not said here"; [`ServeOptions::or`] fills it from the next
/// source, and [`Default`] is the last source.
#[derive(Debug, Clone, PartialEq, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(mut_args = defaults_in_help())]
pub struct ServeOptions {
    /// YubiHSM device (repeat for several), or a soft-HSM key file.
    #[arg(short = 'D', long = "device")]
    pub device: Option<Vec<PathBuf>>,
    /// AEAD directory.
    #[arg(short = 'B', long = "aead-dir")]
    pub aead_dir: Option<PathBuf>,
    /// Key handles to look AEADs up under, in order (repeat or comma-separate).
    #[arg(long = "key-handles", alias = "key-handle", num_args = 1..)]
    pub key_handles: Option<Vec<String>>,
    /// Decode URL, pyhsm style.
    #[arg(short = 'U', long = "serve-url")]
    pub serve_url: Option<String>,
    /// Stats URL (pyhsm's counters page); off unless given.
    #[arg(short = 'S', long = "stats-url")]
    pub stats_url: Option<String>,
    /// Address to listen on.
    #[arg(long)]
    pub addr: Option<IpAddr>,
    /// Port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds one decode may take before it answers `ERR Timeout`.
    #[arg(long)]
    pub reqtimeout: Option<f64>,
    /// Write the daemon's PID here.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Proxies whose X-Forwarded-For is logged as the client.
    #[arg(long = "proxies", alias = "proxy", num_args = 1..)]
    pub proxies: Option<Vec<IpAddr>>,
    /// Only these networks (CIDR) may talk to the daemon: the decode API, /health, /metrics
    /// and the stats page. Checked before anything of a request is read.
    #[arg(long, num_args = 1..)]
    pub allow: Option<Vec<IpNet>>,
    /// Sharing socket for operator tools ("none" to disable; none with --demo).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Requests that may wait per HSM before new ones are refused.
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// Most HTTP connections open at once; when all are taken, the one that has waited
    /// longest for its request (idle, or still receiving it) is closed to make room, and if
    /// all are answering requests the newcomer is closed at once.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a whole request, headers and body (else 408), and that
    /// an idle keep-alive connection stays open.
    #[arg(long)]
    pub header_timeout: Option<f64>,
    /// Commands the sharing socket forwards: `tools` (what the ksm tools send) or `all`
    /// (also raw AES-ECB, HMAC, temp keys, ...).
    #[arg(long, value_enum)]
    pub socket_policy: Option<SocketPolicy>,
    /// Serve version-1 AEADs whose nonce is not their public id, as made by
    /// `generate-keys`/`import-keys --random-nonce`. Off by default: such a file is answered
    /// `ERR Corrupt AEAD`, since it may be another YubiKey's AEAD copied to this id's place.
    // A flag without a value that is still "not said" when absent, so ksm.toml's `true`
    // stands unless the flag is given.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub random_nonce_aeads: Option<bool>,
    /// AEADs in this database instead of -B (pyhsm's --db-url): postgresql://USER@HOST/DB,
    /// mysql://USER@HOST/DB or sqlite:///PATH. No password in it: see --db-password-file.
    #[arg(long)]
    pub db_url: Option<String>,
    /// A private file (mode 0600) whose first line is the database password, where the
    /// driver's own ways (PGPASSFILE, ~/.pgpass, unix-socket peer auth) do not serve.
    #[arg(long)]
    pub db_password_file: Option<PathBuf>,
    /// Most database connections the lookups open at once (on PostgreSQL the LISTEN and
    /// its heartbeat have up to 3 more of their own).
    #[arg(long)]
    pub db_pool_size: Option<u32>,
    /// While the database cannot be reached, keep decoding the AEADs already cached. Off by
    /// default: a row deleted during the outage (a revoked YubiKey) would keep decoding
    /// until the database is back.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub db_serve_cached_when_down: Option<bool>,
    /// Serve the decode API over TLS with this certificate chain (PEM, the server's
    /// certificate first); needs --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM), a file only its owner may read (mode 0600).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: serve only clients whose certificate chains to a CA of this PEM file.
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// The database password, as a `ksm.toml` key only: a flag would put it in argv, and a
    /// `ksm.toml` holding it must be private (mode 0600), as key files are.
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub db_password: Option<SecretString>,
    /// The YubiHSM 2 authentication key (object id) the daemon's sessions use on every
    /// YubiHSM 2 device (`-D http://HOST:PORT`, a yubihsm-connector). Decimal or 0x hex.
    #[arg(long, value_parser = crate::device::hsm2::object_id_arg)]
    pub hsm2_auth_key: Option<u16>,
    /// A private file (mode 0600) whose first line is that key's password, for unattended
    /// starts. Without it YubiHSM 2 devices answer `ERR HSM locked` until
    /// `ksm keystore-unlock` hands the password to the daemon.
    #[arg(long)]
    pub hsm2_password_file: Option<PathBuf>,
    /// YubiHSM 2 sessions the daemon keeps open per device (1 to 4: the device's 16 slots
    /// are shared with the tools, yubihsm-shell and other clients).
    #[arg(long)]
    pub hsm2_sessions: Option<usize>,
    /// Seconds a YubiHSM 2 session of the daemon may sit idle before the daemon sends an
    /// authenticated no-op in it, so the device (which drops a session idle for 30 s) never
    /// frees its slot for another client of the connector to take.
    #[arg(long)]
    pub hsm2_keepalive: Option<f64>,
    /// The YubiHSM 2 password, as a `ksm.toml` key only, in a private `ksm.toml` (as
    /// `db-password`).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub hsm2_password: Option<SecretString>,
}

impl Default for ServeOptions {
    /// The defaults of `ksm serve`, as `--help` and `ksm/dist/ksm.toml` show them.
    fn default() -> Self {
        ServeOptions {
            device: Some(vec![PathBuf::from(DEFAULT_DEVICE)]),
            aead_dir: Some(PathBuf::from(DEFAULT_AEAD_DIR)),
            key_handles: None,
            serve_url: Some("/wsapi/decrypt?otp=".into()),
            stats_url: None,
            addr: Some(IpAddr::from([127, 0, 0, 1])),
            port: Some(8002),
            reqtimeout: Some(5.0),
            pid_file: None,
            proxies: None,
            allow: None,
            socket: Some(PathBuf::from(DEFAULT_SOCKET)),
            queue_depth: Some(256),
            max_connections: Some(2048),
            header_timeout: Some(5.0),
            socket_policy: Some(SocketPolicy::Tools),
            random_nonce_aeads: Some(false),
            db_url: None,
            db_password_file: None,
            db_pool_size: Some(8),
            db_serve_cached_when_down: Some(false),
            db_password: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            hsm2_auth_key: None,
            hsm2_password_file: None,
            hsm2_sessions: Some(2),
            hsm2_keepalive: Some(10.0),
            hsm2_password: None,
        }
    }
}

/// Appends each option's default, from [`ServeOptions::default`], to its help line.
fn defaults_in_help() -> impl FnMut(clap::Arg) -> clap::Arg {
    let defaults = toml::Table::try_from(ServeOptions::default()).unwrap_or_default();
    move |arg| {
        let shown = arg
            .get_long()
            .and_then(|long| defaults.get(long))
            .and_then(help_text);
        match (shown, arg.get_help()) {
            (Some(shown), Some(help)) => {
                let help = format!("{help} [default: {shown}]");
                arg.help(help)
            }
            _ => arg,
        }
    }
}

/// A default as `--help` shows it; a flag's `false` is not shown.
fn help_text(v: &toml::Value) -> Option<String> {
    Some(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Array(a) => a.iter().filter_map(help_text).collect::<Vec<_>>().join(","),
        _ => return None,
    })
}

impl ServeOptions {
    /// Reads `ksm.toml`; a file that cannot be read is as wrong as one that does not parse.
    /// Parse errors give line, column and key, never the text (it may hold `db-password`),
    /// and a file that holds `db-password` is refused unless only its owner may read it.
    pub fn load(path: &Path) -> Result<ServeOptions, Error> {
        let config_error = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| config_error(e.to_string()))?);
        let opts: ServeOptions =
            toml::from_str(&text).map_err(|e| config_error(redact::toml_error(&e, &text)))?;
        for (key, held) in [
            ("db-password", opts.db_password.is_some()),
            ("hsm2-password", opts.hsm2_password.is_some()),
        ] {
            if !held {
                continue;
            }
            let mode = std::fs::metadata(path)
                .map_err(|e| config_error(e.to_string()))?
                .permissions()
                .mode();
            keyfile::check_private(path, mode).map_err(|_| {
                config_error(format!(
                    "holds {key} but has mode {:04o}, so other users may read it; run `chmod 600 {}` (or use {key}-file)",
                    mode & 0o7777,
                    path.display()
                ))
            })?;
        }
        Ok(opts)
    }

    /// `self`, with what it leaves unsaid taken from `other`.
    pub fn or(self, other: ServeOptions) -> ServeOptions {
        ServeOptions {
            device: self.device.or(other.device),
            aead_dir: self.aead_dir.or(other.aead_dir),
            key_handles: self.key_handles.or(other.key_handles),
            serve_url: self.serve_url.or(other.serve_url),
            stats_url: self.stats_url.or(other.stats_url),
            addr: self.addr.or(other.addr),
            port: self.port.or(other.port),
            reqtimeout: self.reqtimeout.or(other.reqtimeout),
            pid_file: self.pid_file.or(other.pid_file),
            proxies: self.proxies.or(other.proxies),
            allow: self.allow.or(other.allow),
            socket: self.socket.or(other.socket),
            queue_depth: self.queue_depth.or(other.queue_depth),
            max_connections: self.max_connections.or(other.max_connections),
            header_timeout: self.header_timeout.or(other.header_timeout),
            socket_policy: self.socket_policy.or(other.socket_policy),
            random_nonce_aeads: self.random_nonce_aeads.or(other.random_nonce_aeads),
            db_url: self.db_url.or(other.db_url),
            db_password_file: self.db_password_file.or(other.db_password_file),
            db_pool_size: self.db_pool_size.or(other.db_pool_size),
            db_serve_cached_when_down: self
                .db_serve_cached_when_down
                .or(other.db_serve_cached_when_down),
            db_password: self.db_password.or(other.db_password),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            tls_client_ca: self.tls_client_ca.or(other.tls_client_ca),
            hsm2_auth_key: self.hsm2_auth_key.or(other.hsm2_auth_key),
            hsm2_password_file: self.hsm2_password_file.or(other.hsm2_password_file),
            hsm2_sessions: self.hsm2_sessions.or(other.hsm2_sessions),
            hsm2_keepalive: self.hsm2_keepalive.or(other.hsm2_keepalive),
            hsm2_password: self.hsm2_password.or(other.hsm2_password),
        }
    }

    /// The demo's own defaults, where `self` says nothing: its AEADs (`aeads`, the copy of
    /// the compiled-in ones) under their key handles, and no sharing socket (its soft HSM is
    /// never locked, and /run/ksm may not be writable for whoever tries it).
    fn or_demo(mut self, aeads: Option<&DemoAeads>) -> ServeOptions {
        if let Some(aeads) = aeads {
            self.aead_dir
                .get_or_insert_with(|| aeads.path().to_path_buf());
        }
        self.key_handles
            .get_or_insert_with(|| vec!["0x20".into(), "0x21".into()]);
        self.socket.get_or_insert_with(|| PathBuf::from(NO_SOCKET));
        self
    }

    /// The HTTP settings, checked.
    fn http(&self) -> Result<HttpConfig, Error> {
        let (serve_path, otp_param) = split_serve_url(&set(&self.serve_url, "serve-url")?)?;
        check_paths(&serve_path, self.stats_url.as_deref())?;
        Ok(HttpConfig {
            serve_path,
            otp_param,
            stats_path: self.stats_url.clone(),
            reqtimeout: seconds(&self.reqtimeout, "reqtimeout", 0.05..=60.0)?,
            proxies: self.proxies.clone().unwrap_or_default(),
            allow: self.allow.clone().unwrap_or_default(),
            max_connections: set(&self.max_connections, "max-connections")?,
            header_timeout: seconds(&self.header_timeout, "header-timeout", 0.1..=300.0)?,
            tls: self.tls()?,
        })
    }

    /// The TLS files, if the API is served over TLS: a certificate and its key go together,
    /// and a client CA needs both.
    fn tls(&self) -> Result<Option<TlsFiles>, Error> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (None, None) => Err(Error::Usage(
                "--tls-client-ca needs --tls-cert and --tls-key".into(),
            )),
            (Some(_), None) => Err(Error::Usage("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => Err(Error::Usage("--tls-key needs --tls-cert".into())),
        }
    }

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
            hsm2: self.hsm2()?,
            reload: None,
            demo_aeads: None,
        })
    }

    /// The YubiHSM 2 settings, checked (the password file is read when the daemon starts).
    fn hsm2(&self) -> Result<Hsm2Settings, Error> {
        let sessions = set(&self.hsm2_sessions, "hsm2-sessions")?;
        // A YubiHSM 2 has 16 session slots, shared with the tools, yubihsm-shell and a
        // second daemon during an upgrade; a few serve a one-command-at-a-time device fully.
        let max = crate::daemon::hsm2_owner::MAX_SESSIONS;
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
    fn db(&self) -> Result<Option<DbSettings>, Error> {
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

/// An option's value once the defaults are under it; only options without a default (which
/// `settings` does not ask for this way) could be missing.
fn set<T: Clone>(value: &Option<T>, key: &str) -> Result<T, Error> {
    value
        .clone()
        .ok_or_else(|| Error::Usage(format!("--{key} has no value")))
}

/// An option in seconds, within `range`.
fn seconds(value: &Option<f64>, key: &str, range: RangeInclusive<f64>) -> Result<Duration, Error> {
    let secs = set(value, key)?;
    if !range.contains(&secs) {
        return Err(Error::Usage(format!(
            "--{key} must be between {} and {} seconds",
            range.start(),
            range.end()
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Default for HttpConfig {
    /// The HTTP settings of `ksm serve` with no flags and no `ksm.toml`.
    fn default() -> Self {
        ServeOptions::default()
            .http()
            .expect("the default options are valid (unit-tested)")
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

/// Parses `--key-handles` for the daemon: each argument may be comma-separated, each key a
/// YubiHSM 1 key handle in any pyhsm spelling (`0x20`, `32`, `KSM1`) or a YubiHSM 2
/// otp-aead-key (`otp-aead-key:0x0120`, `otp-aead-key:288`), tried in the order given.
pub fn aead_keys(args: &[String]) -> Result<Vec<AeadKey>, Error> {
    let mut out = Vec::new();
    for a in args {
        for part in a.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let key = match AeadKey::parse(part) {
                Some(k) => k,
                None if part.starts_with("otp-aead-key") => {
                    return Err(Error::Usage(format!(
                    "--key-handles {part:?}: a YubiHSM 2 key is otp-aead-key:N, N from 1 to 0xffff"
                )))
                }
                // pyhsm's spellings, with the key-handle parser's own message.
                None => AeadKey::from(hsm_proto::KeyHandle::parse(part)?),
            };
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(
            "at least one key handle is needed (--key-handles)".into(),
        ));
    }
    Ok(out)
}

/// A `--db-url`, read as pyhsm's users write it; a bad one is a usage error that never
/// repeats the URL (it may hold a password).
pub fn db_url(url: &str) -> Result<aead_store::DbUrl, Error> {
    aead_store::DbUrl::parse(url).map_err(|e| Error::Usage(format!("--db-url: {e}")))
}

/// The store's nonce rule for `--random-nonce-aeads`.
pub fn nonce_policy(random_nonce_aeads: bool) -> NoncePolicy {
    if random_nonce_aeads {
        NoncePolicy::Any
    } else {
        NoncePolicy::PublicId
    }
}

/// Splits pyhsm's `--serve-url` (`/wsapi/decrypt?otp=`) into path and parameter name. pyhsm
/// matched the URL as a raw prefix, so `/yhsm/validate?` (the OTP straight after `?`) gives
/// an empty name: the whole query is the OTP.
pub fn split_serve_url(url: &str) -> Result<(String, String), Error> {
    let (path, query) = url.split_once('?').unwrap_or((url, "otp="));
    let param = query.trim_end_matches('=');
    if !path.starts_with('/') || param.contains(['&', '=']) {
        return Err(Error::Usage(format!(
            "--serve-url {url:?} must look like /wsapi/decrypt?otp="
        )));
    }
    Ok((path.to_string(), param.to_string()))
}

/// Checks the decode path (from `--serve-url`) and the stats page (`--stats-url`) before
/// anything listens: each must be a plain absolute path (letters, digits, `-._~/`; the
/// router reads `{`, `}`, `:` and `*` as patterns) and none may take another page's place
/// (`/health`, `/metrics`, the decode path and the decode path with `/`). The router would
/// otherwise refuse the overlap by panicking once the daemon is already up.
fn check_paths(serve_path: &str, stats_path: Option<&str>) -> Result<(), Error> {
    let plain = |flag: &str, path: &str| {
        let ok = path.starts_with('/')
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/'));
        if ok {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "--{flag}: the path must start with / and hold only letters, digits and -._~/"
            )))
        }
    };
    plain("serve-url", serve_path)?;
    let decode = serve_path.trim_end_matches('/');
    if crate::daemon::server::FIXED_PAGES.contains(&decode) {
        return Err(Error::Usage(format!(
            "--serve-url: {decode} is the daemon's own page; choose another decode path"
        )));
    }
    let Some(stats) = stats_path else {
        return Ok(());
    };
    plain("stats-url", stats)?;
    let decode_pages = [
        if decode.is_empty() { "/" } else { decode },
        &format!("{decode}/"),
    ];
    if crate::daemon::server::FIXED_PAGES.contains(&stats) || decode_pages.contains(&stats) {
        return Err(Error::Usage(format!(
            "--stats-url: {stats} is already served (the decode URL, /health or /metrics); choose another path"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn flags(args: &[&str]) -> ServeArgs {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let m = cmd
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .unwrap();
        ServeArgs::from_arg_matches(&m).unwrap()
    }

    #[test]
    fn the_example_config_shows_the_defaults() {
        let c: ServeOptions =
            toml::from_str(include_str!("../../dist/ksm.toml")).expect("ksm/dist/ksm.toml");
        assert_eq!(c.port, Some(8002));
        // The package has no key handles until the operator gives them.
        assert_eq!(c.key_handles, None);
        assert_eq!(c.random_nonce_aeads, Some(false));
        // "the values shown are the defaults unless marked example"
        assert_eq!(c, ServeOptions::default());
        // The packaged socket unit listens where the example says the daemon does.
        let socket_unit = include_str!("../../dist/ksm.socket");
        let listen = format!(
            "ListenStream={}",
            SocketAddr::new(c.addr.unwrap(), c.port.unwrap())
        );
        assert!(
            socket_unit.lines().any(|l| l == listen),
            "ksm/dist/ksm.socket lacks {listen}"
        );
    }

    #[test]
    fn the_demo_flag_says_its_aeads_are_compiled_in() {
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        let demo = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some("demo"))
            .unwrap();
        let help = demo.get_help().unwrap().to_string();
        assert!(help.contains("compiled into the binary"), "{help}");
        assert!(!help.contains("fixtures/"), "{help}");
    }

    #[test]
    fn every_option_is_a_key_of_its_long_name() {
        let cmd = ServeOptions::augment_args(clap::Command::new("serve"));
        for arg in cmd.get_arguments() {
            let long = arg.get_long().unwrap();
            let err = toml::from_str::<ServeOptions>(&format!("{long} = {{}}")).unwrap_err();
            assert!(!err.to_string().contains("unknown field"), "{long}: {err}");
        }
        assert!(toml::from_str::<ServeOptions>("demo = true").is_err());
    }

    /// A password typed into the wrong key is still a password: a letters-only one reads
    /// like a name to a parser, and the error names its line and column, never the value.
    #[test]
    fn a_letters_only_secret_in_another_key_is_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ksm.toml");
        for line in [
            "socket-policy = \"Hunterpassword\"",
            "addr = \"Hunterpassword\"",
            "port = \"Hunterpassword\"",
            "key-handles = \"Hunterpassword\"",
            "random-nonce-aeads = \"Hunterpassword\"",
        ] {
            std::fs::write(&file, format!("aead-dir = \"/x\"\n{line}\n")).unwrap();
            let err = ServeOptions::load(&file).unwrap_err().to_string();
            assert!(err.contains("line 2"), "{line}: {err}");
            assert!(!err.to_lowercase().contains("hunter"), "{line}: {err}");
        }
    }

    #[test]
    fn a_db_password_needs_a_private_ksm_toml_and_is_never_quoted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ksm.toml");
        let text = "db-url = \"mysql://ksm@db1/ksm\"\ndb-password = \"Hunter2pw\"\n";
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ServeOptions::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("db-password") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("Hunter2pw"), "{err}");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let opts = ServeOptions::load(&file).unwrap();
        assert_eq!(
            opts.db_password.as_ref().map(|p| p.expose()),
            Some("Hunter2pw")
        );
        assert!(!format!("{opts:?}").contains("Hunter2pw"));
        let db = opts.or(ServeOptions::default()).db().unwrap().unwrap();
        assert_eq!(db.password.as_ref().map(|p| p.expose()), Some("Hunter2pw"));

        // A malformed line is located, not shown (toml's own message prints the line).
        std::fs::write(&file, "db-password = Hunter2pw\n").unwrap();
        let err = ServeOptions::load(&file).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains("Hunter2pw"), "{err}");
        // Without db-password the mode is not the file's business.
        std::fs::write(&file, "port = 9000\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(ServeOptions::load(&file).unwrap().port, Some(9000));
    }

    #[test]
    fn the_yubihsm2_password_is_never_in_argv_and_only_in_private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // No flag takes the password itself.
        let cmd = ServeOptions::augment_args(clap::Command::new("serve"));
        assert!(cmd
            .get_arguments()
            .all(|a| a.get_long() != Some("hsm2-password")));
        // In ksm.toml only if that file is private, and never quoted.
        let file = dir.path().join("ksm.toml");
        std::fs::write(
            &file,
            "key-handles = [\"0x20\"]\nhsm2-auth-key = 2\nhsm2-password = \"Hunter2pw\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = ServeOptions::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("hsm2-password") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("Hunter2pw"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = ServeOptions::load(&file)
            .unwrap()
            .or(ServeOptions::default())
            .settings(false)
            .unwrap();
        assert_eq!(s.hsm2.auth_key, Some(hsm2_proto::ObjectId(2)));
        assert_eq!(s.hsm2.sessions, 2);
        assert!(!format!("{s:?}").contains("Hunter2pw"));
        let from_toml = s.hsm2.auth().unwrap().unwrap();
        assert_eq!(from_toml.key_id, hsm2_proto::ObjectId(2));
        // A password file: refused unless private; its first line is the password.
        let pw = dir.path().join("hsm2-password");
        std::fs::write(&pw, "Hunter2pw\nignored\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let with_file = crate::daemon::serve::Hsm2Settings {
            auth_key: Some(hsm2_proto::ObjectId(2)),
            password_file: Some(pw.clone()),
            ..Default::default()
        };
        let err = with_file.auth().unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("Hunter2pw"), "{err}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_file = with_file.auth().unwrap().unwrap();
        assert_eq!(from_file.auth_key().enc(), from_toml.auth_key().enc());
        assert_eq!(from_file.auth_key().mac(), from_toml.auth_key().mac());
        // A password without the key it is for is a configuration error.
        let no_id = crate::daemon::serve::Hsm2Settings {
            auth_key: None,
            ..with_file
        };
        assert!(no_id.auth().is_err());
        // Out-of-range settings are refused.
        let bad = |text: &str| {
            std::fs::write(&file, text).unwrap();
            ServeOptions::load(&file)
                .unwrap()
                .or(ServeOptions::default())
                .settings(false)
                .is_err()
        };
        assert!(!bad("key-handles = [\"0x20\"]\nhsm2-sessions = 4\n"));
        assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 5\n"));
        assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 16\n"));
        assert!(bad("key-handles = [\"0x20\"]\nhsm2-sessions = 0\n"));
        assert!(bad("key-handles = [\"0x20\"]\nhsm2-auth-key = 0\n"));
    }

    #[test]
    fn flags_over_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ksm.toml");
        std::fs::write(
            &file,
            "port = 9000\nqueue-depth = 7\nrandom-nonce-aeads = true\nkey-handles = [\"0x20\"]\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let s = flags(&["--config", config, "--port", "9001"])
            .settings()
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(s.queue_depth, 7);
        assert_eq!(
            s.nonce_policy,
            NoncePolicy::Any,
            "no flag: the file's true stands"
        );
        assert_eq!(s.http.reqtimeout, Duration::from_secs(5));
        assert_eq!(s.socket.as_deref(), Some(Path::new(DEFAULT_SOCKET)));
        assert_eq!(
            flags(&["--hsm2-auth-key", "0x0a"]).options.hsm2_auth_key,
            Some(10)
        );
        let no_file = flags(&["--random-nonce-aeads", "--key-handles", "1"]);
        assert_eq!(no_file.options.random_nonce_aeads, Some(true));
        assert_eq!(flags(&[]).options.random_nonce_aeads, None);
        assert!(flags(&["--reqtimeout", "61", "--key-handles", "1"])
            .settings()
            .is_err());
    }

    #[test]
    fn tls_files_come_from_flags_or_ksm_toml_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ksm.toml");
        std::fs::write(
            &file,
            "tls-cert = \"/etc/ksm/cert.pem\"\ntls-key = \"/etc/ksm/key.pem\"\n",
        )
        .unwrap();
        let config = file.to_str().unwrap();
        let s = flags(&[
            "--demo",
            "--config",
            config,
            "--tls-client-ca",
            "/etc/ksm/val-ca.pem",
        ])
        .settings()
        .unwrap();
        assert_eq!(
            s.http.tls,
            Some(TlsFiles {
                cert: "/etc/ksm/cert.pem".into(),
                key: "/etc/ksm/key.pem".into(),
                client_ca: Some("/etc/ksm/val-ca.pem".into()),
            })
        );
        assert_eq!(flags(&["--demo"]).settings().unwrap().http.tls, None);
        for (args, needs) in [
            (&["--tls-cert", "c.pem"][..], "--tls-cert needs --tls-key"),
            (&["--tls-key", "k.pem"][..], "--tls-key needs --tls-cert"),
            (&["--tls-client-ca", "ca.pem"][..], "--tls-client-ca needs"),
        ] {
            let all = [&["--demo"][..], args].concat();
            let err = flags(&all).settings().unwrap_err();
            assert!(err.to_string().contains(needs), "{err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn the_demo_has_its_own_defaults() {
        let s = flags(&["--demo"]).settings().unwrap();
        assert_eq!(s.socket, None);
        assert_eq!(
            s.key_handles,
            vec![
                AeadKey::from(hsm_proto::KeyHandle(0x20)),
                AeadKey::from(hsm_proto::KeyHandle(0x21))
            ]
        );
        // Both kinds, in the order given, any pyhsm spelling for a key handle.
        assert_eq!(
            aead_keys(&["otp-aead-key:0x0120,32".into(), "otp-aead-key:289".into()]).unwrap(),
            vec![
                AeadKey::OtpKey(hsm2_proto::ObjectId(0x120)),
                AeadKey::from(hsm_proto::KeyHandle(0x20)),
                AeadKey::OtpKey(hsm2_proto::ObjectId(0x121)),
            ]
        );
        let err = aead_keys(&["otp-aead-key:x".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("otp-aead-key:N"), "{err}");
        let demo = s.demo_aeads.as_ref().expect("the demo's AEADs");
        assert_eq!(s.aead_dir, demo.path());
        assert!(s.aead_dir.join("0x20").is_dir());
        let s = flags(&["--demo", "--socket", "/tmp/x.sock"])
            .settings()
            .unwrap();
        assert_eq!(s.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
    }

    #[test]
    fn help_shows_the_defaults() {
        let help = crate::cli::Cli::command()
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        for shown in [
            "[default: 8002]",
            "[default: 5]",
            "[default: 256]",
            "[default: 2048]",
            "[default: /wsapi/decrypt?otp=]",
            "[default: /run/ksm/ksm.sock]",
            "[default: /dev/ttyACM0]",
            "[default: 127.0.0.1]",
            "[default: tools]",
        ] {
            assert!(help.contains(shown), "{shown} in {help}");
        }
        assert!(!help.contains("[default: false]"), "{help}");
        assert_eq!(HttpConfig::default().max_connections, 2048);
    }

    #[test]
    fn serve_url_is_split_like_pyhsm() {
        assert_eq!(
            split_serve_url("/wsapi/decrypt?otp=").unwrap(),
            ("/wsapi/decrypt".into(), "otp".into())
        );
        assert_eq!(
            split_serve_url("/yhsm/validate?").unwrap(),
            ("/yhsm/validate".into(), String::new())
        );
        assert!(split_serve_url("wsapi").is_err());
    }
}
