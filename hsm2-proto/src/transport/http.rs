//! yubihsm-connector's HTTP API: `POST /connector/api` with one raw frame, answered with one
//! raw frame; `GET /connector/status` with `key=value` lines (shared protocol notes §1.1).

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use tracing::trace;

use super::Transport;
use crate::codec::{Frame, HEADER_LEN, MAX_DATA};
use crate::{Error, Result};

/// Where yubihsm-connector listens unless told otherwise (python-yubihsm's default URL).
pub const DEFAULT_URL: &str = "http://localhost:12345";

/// The status page is a handful of short lines; anything longer is not a connector.
const MAX_STATUS_LEN: u64 = 4096;

/// How long the connector transport waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// To open a TCP connection to the connector.
    pub connect: Duration,
    /// For a whole request, from sending it to the last byte of the answer.
    /// python-yubihsm allows 600 s; a KSM answering validators cannot, and no command it
    /// sends takes the device more than a moment.
    pub answer: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(5),
            answer: Duration::from_secs(10),
        }
    }
}

/// What `GET /connector/status` says, one field per line it knows (`status`, `serial`,
/// `version`, `pid`, `address`, `port`); a line it does not know is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectorStatus {
    /// `OK` when the connector has a device, `NO_DEVICE` otherwise.
    pub status: Option<String>,
    /// `*`, or the serial number the connector is pinned to.
    pub serial: Option<String>,
    /// The connector's version, `X.Y.Z`.
    pub version: Option<String>,
    /// Its process id.
    pub pid: Option<String>,
    /// The address it listens on.
    pub address: Option<String>,
    /// The port it listens on.
    pub port: Option<String>,
}

impl ConnectorStatus {
    /// Every field with its key, in the page's order: the one place the keys are spelled.
    fn fields(&mut self) -> [(&'static str, &mut Option<String>); 6] {
        [
            ("status", &mut self.status),
            ("serial", &mut self.serial),
            ("version", &mut self.version),
            ("pid", &mut self.pid),
            ("address", &mut self.address),
            ("port", &mut self.port),
        ]
    }

    /// Parses the page's `key=value` lines.
    pub fn parse(text: &str) -> ConnectorStatus {
        let mut s = ConnectorStatus::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            if let Some((_, slot)) = s.fields().into_iter().find(|(k, _)| *k == key) {
                *slot = Some(value.to_string());
            }
        }
        s
    }

    /// The page: one `key=value` line per field that is set, in yubihsm-connector's order.
    /// [`ConnectorStatus::parse`] reads it back.
    pub fn render(&self) -> String {
        let mut copy = self.clone();
        copy.fields()
            .into_iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| format!("{key}={v}\n")))
            .collect()
    }

    /// The reported status as a fixed string, for error texts: a known value, or
    /// `missing` / `unrecognised`, never the connector's own bytes.
    fn known_status(&self) -> &'static str {
        match self.status.as_deref() {
            None => "missing",
            Some("OK") => "OK",
            Some("NO_DEVICE") => "NO_DEVICE",
            Some(_) => "unrecognised",
        }
    }

    /// True when the connector reports a device (`status=OK`, exactly, as libyubihsm
    /// requires).
    pub fn has_device(&self) -> bool {
        self.status.as_deref() == Some("OK")
    }
}

/// A yubihsm-connector (or anything serving its API, such as `ksm emulate --hsm2`).
///
/// Keeps its HTTP connection alive between requests, as python-yubihsm does. Every
/// request is bounded by [`HttpTimeouts`].
pub struct Connector {
    url: String,
    agent: ureq::Agent,
    timeouts: HttpTimeouts,
    /// Set by [`Transport::set_deadline`]: API requests end by then.
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.url)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// A connector at `base_url` (`http://host:port`, no path); nothing is sent yet.
    pub fn new(base_url: &str, timeouts: HttpTimeouts) -> Connector {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.answer))
            .http_status_as_error(false)
            .max_redirects(0)
            // Never through a proxy, whatever HTTP(S)_PROXY / ALL_PROXY say: the connector
            // is local, and a proxy would see every frame.
            .proxy(None)
            .build();
        Connector {
            url: base_url.trim_end_matches('/').to_string(),
            agent: config.into(),
            timeouts,
            deadline: None,
        }
    }

    /// A connector at `base_url` whose status page reports a device: what libyubihsm checks
    /// before its first command. [`Error::NoDevice`] if it has none.
    pub fn open(base_url: &str, timeouts: HttpTimeouts) -> Result<Connector> {
        let c = Connector::new(base_url, timeouts);
        let status = c.status()?;
        if !status.has_device() {
            return Err(Error::NoDevice {
                url: c.url,
                status: status.known_status(),
            });
        }
        Ok(c)
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads `GET /connector/status`.
    pub fn status(&self) -> Result<ConnectorStatus> {
        let mut resp = self
            .agent
            .get(format!("{}/connector/status", self.url))
            .call()
            .map_err(|e| self.error(e))?;
        self.check_status(resp.status().as_u16())?;
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_STATUS_LEN)
            .read_to_vec()
            .map_err(|e| self.error(e))?;
        Ok(ConnectorStatus::parse(&String::from_utf8_lossy(&body)))
    }

    fn check_status(&self, status: u16) -> Result<()> {
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(Error::ConnectorHttp {
                url: self.url.clone(),
                status,
            })
        }
    }

    /// Maps what the HTTP client says to this crate's errors. Only fixed strings and known
    /// values go into them: ureq's own texts can quote what the peer sent (a header, a
    /// proxy's status line), and error texts go to logs.
    fn error(&self, e: ureq::Error) -> Error {
        let unreachable = |reason: &str| Error::ConnectorUnreachable {
            url: self.url.clone(),
            reason: reason.to_string(),
        };
        match e {
            ureq::Error::Timeout(_) => Error::Timeout {
                peer: format!("yubihsm-connector at {}", self.url),
                after: self.timeouts.answer,
            },
            ureq::Error::Io(io) if io.kind() == ErrorKind::TimedOut => Error::Timeout {
                peer: format!("yubihsm-connector at {}", self.url),
                after: self.timeouts.answer,
            },
            // The kind's text is std's own fixed description ("connection refused", …).
            ureq::Error::Io(io) => unreachable(&io.kind().to_string()),
            ureq::Error::ConnectionFailed => unreachable("connection failed"),
            ureq::Error::HostNotFound => unreachable("host not found"),
            ureq::Error::StatusCode(status) => Error::ConnectorHttp {
                url: self.url.clone(),
                status,
            },
            ureq::Error::BodyExceedsLimit(limit) => Error::TooLong {
                what: "connector answer",
                len: usize::try_from(limit)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
                max: usize::try_from(limit).unwrap_or(usize::MAX),
            },
            ureq::Error::BadUri(_) => unreachable("not an http:// URL"),
            ureq::Error::Protocol(_) => unreachable("the answer is not valid HTTP"),
            ureq::Error::LargeResponseHeader(..) => {
                unreachable("the answer's HTTP header is too large")
            }
            _ => unreachable("HTTP failure"),
        }
    }
}

impl Transport for Connector {
    fn exchange(&mut self, request: &Frame) -> Result<Frame> {
        trace!(
            cmd = request.cmd(),
            len = request.as_bytes().len(),
            "connector request"
        );
        let mut req = self
            .agent
            .post(format!("{}/connector/api", self.url))
            .header("Content-Type", "application/octet-stream");
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    peer: format!("yubihsm-connector at {}", self.url),
                    after: Duration::ZERO,
                });
            }
            if left < self.timeouts.answer {
                req = req.config().timeout_global(Some(left)).build();
            }
        }
        let mut resp = req.send(request.as_bytes()).map_err(|e| self.error(e))?;
        self.check_status(resp.status().as_u16())?;
        let body = zeroize::Zeroizing::new(
            resp.body_mut()
                .with_config()
                .limit((HEADER_LEN + MAX_DATA) as u64)
                .read_to_vec()
                .map_err(|e| self.error(e))?,
        );
        trace!(len = body.len(), "connector answer");
        Frame::parse(&body)
    }

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}
