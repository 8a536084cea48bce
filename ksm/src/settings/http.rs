//! The decode API's settings: where it is served, its limits and its TLS files, checked
//! before anything listens.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::settings::options::ServeOptions;
use crate::settings::parse::{seconds, set};
use crate::Error;

/// The daemon's own pages, served whatever the flags say (the decode and stats paths may
/// not take their place: checked in [`check_paths`]).
pub const FIXED_PAGES: [&str; 2] = ["/health", "/metrics"];

/// HTTP settings of the daemon, checked (see [`crate::settings`]; its `Default` is
/// `ksm serve`'s with no flags).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Path of the decode URL (`/wsapi/decrypt`); `…/` is served too.
    pub serve_path: String,
    /// Query parameter holding the OTP (`otp`).
    pub otp_param: String,
    /// pyhsm-style stats page path, if enabled.
    pub stats_path: Option<String>,
    /// Deadline for one decode (`--reqtimeout`).
    pub reqtimeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed, for logs only.
    pub proxies: Vec<IpAddr>,
    /// If non-empty, only these networks may talk to the daemon at all: the decode API and
    /// also `/health`, `/metrics` and the stats page. One list rather than a second one for
    /// monitoring: those pages tell an outsider which HSMs are up or locked, how many keys
    /// there are and how busy the KSM is, and a single boundary is one an operator can check
    /// at a glance (add the monitoring host to it). Checked per request before anything
    /// else, a body included, is read.
    pub allow: Vec<IpNet>,
    /// Most connections open at once. When all are taken, the longest-idle one is closed
    /// to make room (see [`crate::daemon::connections`]).
    pub max_connections: usize,
    /// Time a client has to send a whole request, headers and body, counted from when its
    /// connection began to wait for it (so it is also how long an idle keep-alive connection
    /// stays open).
    pub header_timeout: Duration,
    /// Serve over TLS with these files (see [`crate::daemon::tls`]); `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// Where the certificate, its key and (for mutual TLS) the validators' CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), its own certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1), mode 0600.
    pub key: PathBuf,
    /// CA certificates (PEM) a client's certificate must chain to; `None`: no client
    /// certificates are asked for.
    pub client_ca: Option<PathBuf>,
}

impl ServeOptions {
    /// The HTTP settings, checked.
    pub(super) fn http(&self) -> Result<HttpConfig, Error> {
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
}

impl Default for HttpConfig {
    /// The HTTP settings of `ksm serve` with no flags and no `ksm.toml`.
    fn default() -> Self {
        ServeOptions::default()
            .http()
            .expect("the default options are valid (unit-tested)")
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
    if FIXED_PAGES.contains(&decode) {
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
    if FIXED_PAGES.contains(&stats) || decode_pages.contains(&stats) {
        return Err(Error::Usage(format!(
            "--stats-url: {stats} is already served (the decode URL, /health or /metrics); choose another path"
        )));
    }
    Ok(())
}
