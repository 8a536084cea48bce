//! `ksm serve`'s options, written once: [`ServeOptions`] is read by clap (the flags) and by
//! serde (`ksm.toml`, the same names), and its [`Default`] is the one place the defaults are
//! written (`--help` shows them from there). [`crate::settings::serve`] checks them into the
//! typed settings the daemon runs with.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use ipnet::IpNet;
use otp_core::{keyfile, redact, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::demo_aeads::DemoAeads;
use crate::device::sharing::DEFAULT_SOCKET;
use crate::device::DEFAULT_DEVICE;
use crate::settings::socket_policy::SocketPolicy;
use crate::Error;

/// pyhsm's default AEAD directory (`-B` of the daemon, `-B` and `-O` of the tools).
pub const DEFAULT_AEAD_DIR: &str = "/var/cache/yubikey-ksm/aeads";

/// `--socket` value (and `socket` key) that turns the sharing socket off.
pub const NO_SOCKET: &str = "none";

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
    /// Also serve the YK-VAL verify API (`/wsapi/2.0/verify`, `/wsapi/verify`), with the
    /// counters in yubikey-val's tables in this database: postgresql://USER@HOST/DB,
    /// mysql://USER@HOST/DB or sqlite:///PATH (`ksm val db-init` makes them). No password in
    /// it: see --val-db-password-file.
    #[arg(long)]
    pub val_db_url: Option<String>,
    /// A private file (mode 0600) whose first line is the counter database's password.
    #[arg(long)]
    pub val_db_password_file: Option<PathBuf>,
    /// Most connections to the counter database at once.
    #[arg(long)]
    pub val_db_pool_size: Option<u32>,
    /// Decode verify requests' OTPs with these KSMs (their decrypt URL, yubikey-val's
    /// otp2ksmurls; repeat for several: asked together, the first OK wins) instead of this
    /// daemon's own HSMs.
    #[arg(long = "val-ksm-url", num_args = 1..)]
    pub val_ksm_url: Option<Vec<String>>,
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
    /// The counter database's password, as a `ksm.toml` key only, in a private `ksm.toml`
    /// (as `db-password`).
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub val_db_password: Option<SecretString>,
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
    /// Drain each YubiHSM 2's audit log into this append-only file (one JSON line per
    /// entry, the digest chain checked) and move the device's log index on, so a device
    /// with force-audit on keeps serving. Without it the log is only watched (/health
    /// warns as it nears full).
    #[arg(long)]
    pub hsm2_audit_log: Option<PathBuf>,
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
            val_db_url: None,
            val_db_password_file: None,
            val_db_pool_size: Some(ykval::db::DEFAULT_POOL_SIZE),
            val_ksm_url: None,
            val_db_password: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            hsm2_auth_key: None,
            hsm2_password_file: None,
            hsm2_sessions: Some(2),
            hsm2_keepalive: Some(10.0),
            hsm2_audit_log: None,
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
            ("val-db-password", opts.val_db_password.is_some()),
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
            val_db_url: self.val_db_url.or(other.val_db_url),
            val_db_password_file: self.val_db_password_file.or(other.val_db_password_file),
            val_db_pool_size: self.val_db_pool_size.or(other.val_db_pool_size),
            val_ksm_url: self.val_ksm_url.or(other.val_ksm_url),
            val_db_password: self.val_db_password.or(other.val_db_password),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            tls_client_ca: self.tls_client_ca.or(other.tls_client_ca),
            hsm2_auth_key: self.hsm2_auth_key.or(other.hsm2_auth_key),
            hsm2_password_file: self.hsm2_password_file.or(other.hsm2_password_file),
            hsm2_sessions: self.hsm2_sessions.or(other.hsm2_sessions),
            hsm2_keepalive: self.hsm2_keepalive.or(other.hsm2_keepalive),
            hsm2_audit_log: self.hsm2_audit_log.or(other.hsm2_audit_log),
            hsm2_password: self.hsm2_password.or(other.hsm2_password),
        }
    }

    /// The demo's own defaults, where `self` says nothing: its AEADs (`aeads`, the copy of
    /// the compiled-in ones) under their key handles, and no sharing socket (its soft HSM is
    /// never locked, and /run/ksm may not be writable for whoever tries it).
    pub(super) fn or_demo(mut self, aeads: Option<&DemoAeads>) -> ServeOptions {
        if let Some(aeads) = aeads {
            self.aead_dir
                .get_or_insert_with(|| aeads.path().to_path_buf());
        }
        self.key_handles
            .get_or_insert_with(|| vec!["0x20".into(), "0x21".into()]);
        self.socket.get_or_insert_with(|| PathBuf::from(NO_SOCKET));
        self
    }
}
