//! The decode API validators call, on a real HTTP/1.1 server.
//!
//! `run` takes a bound listener, the shared state and a shutdown future, so tests start the
//! whole daemon on `127.0.0.1:0`. Connections are served by hyper with small buffers, a
//! header-read deadline and a cap on open connections, so a slow or abusive client costs
//! little; requests are routed by an axum router.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aead_store::Store;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hsm_proto::otp::Otp;
use hsm_proto::{Error as HsmError, Status};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::answer::Outcome;
use crate::connections::Connections;
use crate::metrics::Metrics;
use crate::pool::{DeviceState, Pool, PoolError};

/// HTTP settings of the daemon.
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
    /// If non-empty, only these networks may call the decode API.
    pub allow: Vec<IpNet>,
    /// Most connections open at once. When all are taken, the longest-idle one is closed
    /// to make room (see [`crate::connections`]).
    pub max_connections: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            serve_path: "/wsapi/decrypt".into(),
            otp_param: "otp".into(),
            stats_path: None,
            reqtimeout: Duration::from_secs(5),
            proxies: Vec::new(),
            allow: Vec::new(),
            max_connections: 2048,
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything a request handler needs.
pub struct AppState {
    /// The HSMs. The only way to a device: each has one owner thread behind a queue.
    pub pool: Arc<Pool>,
    /// Where AEADs come from (a watched directory, kept current by rsync).
    pub store: Arc<dyn Store + Send + Sync>,
    /// HTTP settings.
    pub http: HttpConfig,
    /// Counters.
    pub metrics: Metrics,
    /// Connection slots (`max_connections`), open and evicted counts.
    pub connections: Arc<Connections>,
}

impl AppState {
    /// State for serving `pool` and `store` with `http` settings.
    pub fn new(pool: Arc<Pool>, store: Arc<dyn Store + Send + Sync>, http: HttpConfig) -> AppState {
        AppState {
            pool,
            store,
            connections: Connections::new(http.max_connections),
            http,
            metrics: Metrics::default(),
        }
    }
}

#[derive(Clone, Copy)]
struct Peer(SocketAddr);

/// Marks `req` as coming from `peer`, as [`run`] does for every request; the handlers of
/// [`router`] need it. For callers that drive the router without a socket (the fuzz target
/// `fuzz/fuzz_targets/http_query.rs`).
#[doc(hidden)]
pub fn with_peer<B>(mut req: Request<B>, peer: SocketAddr) -> Request<B> {
    req.extensions_mut().insert(Peer(peer));
    req
}

/// The longest request body (POST form) taken.
const MAX_BODY: usize = 4096;

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let p = state.http.serve_path.trim_end_matches('/').to_string();
    let mut r = Router::new()
        .route(&p, get(decode_get).post(decode_post))
        .route(&format!("{p}/"), get(decode_get).post(decode_post))
        .route("/health", get(health))
        .route("/metrics", get(metrics));
    if let Some(s) = &state.http.stats_path {
        r = r.route(s, get(stats));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
/// (up to the request timeout) and returns.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = state.connections.admit() => Arc::new(s),
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let state = state.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let in_service = slot.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let working = in_service.request();
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(Peer(peer));
                let call = app.clone().oneshot(req);
                async move {
                    let response = call.await;
                    drop(working);
                    response
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.http.header_timeout)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => { if let Err(e) = r { debug!(error = %e, "connection ended"); } }
                // The Ref that wait_for returns must not live across the await below.
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                // Closed to make room: dropped at once if idle, after its answer if not.
                _ = slot.evicted() => {
                    if slot.busy() {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            drop(slot);
        });
    }
    info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + state.http.reqtimeout + Duration::from_secs(1);
    while state.connections.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn client_of(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> String {
    if state.http.proxies.contains(&peer.ip()) {
        if let Some(xff) = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            return xff.chars().take(100).collect();
        }
    }
    peer.ip().to_string()
}

fn allowed(state: &AppState, peer: SocketAddr) -> bool {
    state.http.allow.is_empty() || state.http.allow.iter().any(|n| n.contains(&peer.ip()))
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn decode_get(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    decode_request(st, peer, headers, q.unwrap_or_default().as_bytes()).await
}

async fn decode_post(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ERR Request too large\n".into(),
        );
    };
    // A form field wins over the query string, as PHP's $_REQUEST does for POST. (In pyhsm's
    // prefix form the OTP is the first item: the query string's, else the body's.)
    let mut all = q.unwrap_or_default().into_bytes();
    if !all.is_empty() {
        all.push(b'&');
    }
    all.extend_from_slice(&body);
    decode_request(st, peer, headers, &all).await
}

/// The OTP parameter: URL-decoded, surrounding white space dropped, lower-cased (yubikey-val
/// sends lower case; people paste upper case).
fn otp_param(query: &[u8], name: &str) -> Option<String> {
    if name.is_empty() {
        // pyhsm's prefix form: the query string is the OTP.
        let raw = query.split(|b| *b == b'&').next().unwrap_or_default();
        return form_urlencoded::parse(raw)
            .next()
            .map(|(k, _)| k.trim().to_ascii_lowercase());
    }
    form_urlencoded::parse(query)
        .filter(|(k, _)| k == name)
        .last()
        .map(|(_, v)| v.trim().to_ascii_lowercase())
}

async fn decode_request(
    st: Arc<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    query: &[u8],
) -> Response {
    if !allowed(&st, peer) {
        warn!(client = %peer.ip(), "decode request from a client outside the allow-list");
        return text(StatusCode::FORBIDDEN, "ERR Forbidden\n".into());
    }
    let start = Instant::now();
    let raw = otp_param(query, &st.http.otp_param);
    let (outcome, id) = decode(&st, raw.as_deref(), start + st.http.reqtimeout).await;
    let took = start.elapsed();
    st.metrics.record(&outcome, took);
    info!(
        public_id = %id.as_deref().unwrap_or("-"),
        result = %outcome.label(),
        latency_us = took.as_micros() as u64,
        client = %client_of(&st, peer, &headers),
        "decode"
    );
    let (code, line) = outcome.answer();
    text(code, format!("{line}\n"))
}

/// The decode itself; returns the outcome and the public id (for the log line; never the
/// OTP's token part).
async fn decode(st: &AppState, raw: Option<&str>, deadline: Instant) -> (Outcome, Option<String>) {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return (Outcome::NoOtp, None);
    };
    let Ok(otp) = Otp::parse(raw) else {
        return (Outcome::InvalidOtp, None);
    };
    let id = Some(otp.public_id.to_string());
    let stored = match st.store.lookup(&otp.public_id) {
        Ok(Some(s)) => s,
        Ok(None) => return (Outcome::UnknownId, id),
        Err(e) => {
            warn!(public_id = %otp.public_id, error = %e, "AEAD unusable");
            return (Outcome::CorruptAead, id);
        }
    };
    if stored.aead.as_bytes().len() != hsm_proto::aead::YUBIKEY_AEAD_LEN {
        warn!(public_id = %otp.public_id, path = %stored.path.display(), "AEAD is not a 30-byte YubiKey AEAD");
        return (Outcome::CorruptAead, id);
    }
    let outcome = match st
        .pool
        .decode(otp, stored.key_handle, stored.nonce, stored.aead, deadline)
        .await
    {
        Ok(d) => Outcome::Ok(d),
        Err(e) => outcome_of(e),
    };
    if matches!(outcome, Outcome::CorruptAead) {
        // Which file is bad is what the operator needs; the HSM only says "invalid".
        warn!(public_id = %id.as_deref().unwrap_or("-"), path = %stored.path.display(), "AEAD rejected by the HSM (corrupt file, or made with another key)");
    }
    (outcome, id)
}

/// Maps a pool error to the answer.
pub fn outcome_of(e: PoolError) -> Outcome {
    match e {
        PoolError::Locked => Outcome::Locked,
        // Busy and Reopened concern tool leases, never decodes.
        PoolError::Unavailable | PoolError::Busy | PoolError::Reopened => Outcome::Unavailable,
        PoolError::Timeout => Outcome::Timeout,
        PoolError::Overloaded => Outcome::Overloaded,
        PoolError::Hsm(HsmError::Device { status, .. }) => match status {
            Status::OtpInvalid => Outcome::CorruptOtp,
            Status::AeadInvalid | Status::InvalidParameter => Outcome::CorruptAead,
            Status::KeyStorageLocked => Outcome::Locked,
            _ => Outcome::HsmRefused,
        },
        PoolError::Hsm(HsmError::CorruptOtp) => Outcome::CorruptOtp,
        PoolError::Hsm(HsmError::AeadAuth) => Outcome::CorruptAead,
        PoolError::Hsm(_) => Outcome::Unavailable,
    }
}

async fn stats(State(st): State<Arc<AppState>>) -> Response {
    text(StatusCode::OK, st.metrics.pyhsm_stats())
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let body = st
        .metrics
        .prometheus(&st.pool.health(), &*st.store, &st.connections);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    let devices = st.pool.health();
    let states: Vec<DeviceState> = devices.iter().map(|d| d.state()).collect();
    let store = st.store.check();
    if let Err(e) = &store {
        debug!(error = %e, "the AEAD directory cannot be read");
    }
    let status = if states.contains(&DeviceState::Up) {
        if store.is_ok() && states.iter().all(|s| *s == DeviceState::Up) {
            "ok"
        } else {
            "degraded"
        }
    } else if states.contains(&DeviceState::Locked) {
        "locked"
    } else {
        "down"
    };
    let body = serde_json::json!({
        "status": status,
        "devices": devices.iter().map(|d| serde_json::json!({
            "name": d.name,
            "state": d.state().name(),
            "queued": d.queued.load(Ordering::Relaxed),
            "opens": d.opens.load(Ordering::Relaxed),
            "last_error": d.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
            "line_errors": crate::pool::LINE_ERROR_KINDS.iter().zip(&d.line_errors)
                .map(|(k, n)| (k.to_string(), serde_json::json!(n.load(Ordering::Relaxed))))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "store": {
            "aeads": st.store.len(),
            "watching": st.store.watching(),
            "error": store.err().map(|e| e.to_string()),
        },
        "http": { "connections": st.connections.open(), "evicted": st.connections.evicted() },
    });
    let code = if matches!(status, "ok" | "degraded") {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otp_parameter_is_decoded_trimmed_and_lower_cased() {
        assert_eq!(otp_param(b"otp=%20CCCC%0a", "otp").as_deref(), Some("cccc"));
        assert_eq!(
            otp_param(b"x=1&otp=ab+&otp=cd", "otp").as_deref(),
            Some("cd")
        );
        assert_eq!(otp_param(b"otp=%zz%", "otp").as_deref(), Some("%zz%"));
        assert_eq!(otp_param(b"nothing", "otp"), None);
        // A POST in pyhsm's prefix form with an empty query string: the body is the OTP.
        assert_eq!(otp_param(b"CCCC", "").as_deref(), Some("cccc"));
        assert_eq!(
            otp_param(b"CCCCdeulfbvj", "").as_deref(),
            Some("ccccdeulfbvj")
        );
    }

    #[test]
    fn device_statuses_map_to_stable_answers() {
        let dev = |status| {
            PoolError::Hsm(HsmError::Device {
                cmd: hsm_proto::Opcode::AeadYubikeyOtpDecode,
                status,
            })
        };
        assert_eq!(
            outcome_of(dev(Status::OtpInvalid)).answer().1,
            "ERR Corrupt OTP"
        );
        assert_eq!(
            outcome_of(dev(Status::AeadInvalid)).answer().1,
            "ERR Corrupt AEAD"
        );
        assert_eq!(
            outcome_of(dev(Status::FunctionDisabled)).answer(),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ERR HSM refused key handle".into()
            )
        );
        assert_eq!(
            outcome_of(PoolError::Locked).answer(),
            (StatusCode::SERVICE_UNAVAILABLE, "ERR HSM locked".into())
        );
        assert_eq!(
            outcome_of(PoolError::Overloaded).answer().1,
            "ERR Overloaded"
        );
    }
}
