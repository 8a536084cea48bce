//! The decode API validators call, on a real HTTP/1.1 server, over TLS if the daemon has a
//! certificate (see [`crate::daemon::tls`]).
//!
//! `run` takes a bound listener, the shared state and a shutdown future, so tests start the
//! whole daemon on `127.0.0.1:0`. Connections are served by hyper with small buffers and a
//! cap on open connections that never makes the accept loop wait (see
//! [`crate::daemon::connections`]), so a slow or abusive client costs little. The allow-list
//! is checked in the accept loop, before a connection takes a slot: a client outside it
//! gets a slot among [`OUTSIDER_SLOTS`] of its own, so it never takes an allowed client's
//! place. Each request then goes through the same gate before any work is done for it: the
//! allow-list (a `403` for an outsider), then the whole request (headers and body) received
//! by its deadline; only then is it routed, by an axum router. Over TLS an outsider is
//! closed in the accept loop, before its handshake, which must otherwise be done within the
//! header timeout of the connection's accept; the connection stays among those closed first
//! to make room until its first request is in.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aead_store::Store;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hsm_proto::otp::Otp;
use hsm_proto::{PublicId, YubiKeyAead};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::daemon::answer::Outcome;
use crate::daemon::connections::{Connections, Slot};
use crate::daemon::health::{DeviceKind, DeviceState};
use crate::daemon::hsm1_owner::Hsm1Aead;
use crate::daemon::hsm2_owner::Hsm2Aead;
use crate::daemon::metrics::Metrics;
use crate::daemon::pool::{DecodeAead, Pool};
use crate::daemon::tls::Tls;
use crate::daemon::val::Validator;
use crate::settings::http::{HttpConfig, FIXED_PAGES};

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
    /// The slots of clients outside `--allow`, a table of their own ([`OUTSIDER_SLOTS`]):
    /// they are told `403 ERR Forbidden` as before, but can only ever make room by closing
    /// one another, never an allowed client's connection.
    outsiders: Arc<Connections>,
    /// Who may connect and whose `X-Forwarded-For` is believed, as in force now:
    /// `http.allow` and `http.proxies` at start, replaced when SIGHUP reloads them. Read
    /// once per connection and per logged decode.
    access: RwLock<Arc<Access>>,
    /// The TLS configuration, if the API is served over TLS; SIGHUP rereads its files.
    tls: Option<Arc<Tls>>,
    /// The YK-VAL verify API, if served (`--val-db-url`).
    val: Option<Arc<Validator>>,
}

/// The lists SIGHUP may replace without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `--allow`: if non-empty, the only networks that may connect.
    pub allow: Vec<IpNet>,
    /// `--proxies`: peers whose `X-Forwarded-For` is logged as the client.
    pub proxies: Vec<IpAddr>,
}

impl Access {
    /// The lists of `http`.
    pub fn of(http: &HttpConfig) -> Access {
        Access {
            allow: http.allow.clone(),
            proxies: http.proxies.clone(),
        }
    }
}

impl AppState {
    /// State for serving `pool` and `store` with `http` settings.
    pub fn new(pool: Arc<Pool>, store: Arc<dyn Store + Send + Sync>, http: HttpConfig) -> AppState {
        AppState {
            pool,
            store,
            connections: Connections::new(http.max_connections),
            outsiders: Connections::new(OUTSIDER_SLOTS),
            access: RwLock::new(Arc::new(Access::of(&http))),
            http,
            metrics: Metrics::default(),
            tls: None,
            val: None,
        }
    }

    /// The same state, also serving the YK-VAL verify API with `val`.
    pub fn with_val(mut self, val: Option<Arc<Validator>>) -> AppState {
        self.val = val;
        self
    }

    /// The validation server, if the verify API is served.
    pub fn val(&self) -> Option<&Arc<Validator>> {
        self.val.as_ref()
    }

    /// The same state, serving over `tls` (loaded from `http.tls`) if given.
    pub fn with_tls(mut self, tls: Option<Arc<Tls>>) -> AppState {
        self.tls = tls;
        self
    }

    /// The TLS configuration, if the API is served over TLS.
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The access lists in force.
    pub fn access(&self) -> Arc<Access> {
        self.access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the access lists (SIGHUP); connections already open keep the verdict they
    /// got when they were accepted.
    pub fn set_access(&self, access: Access) {
        *self.access.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(access);
    }
}

/// How many connections from clients outside `--allow` are kept open at once to be told
/// `403 ERR Forbidden` (plain HTTP only: over TLS they are closed at once). Enough for a
/// misconfigured validator or monitor to read why it is turned away; a flood from outside
/// the list churns through these few and never reaches the slots of allowed clients.
pub const OUTSIDER_SLOTS: usize = 16;

/// The address a connection comes from, as every later use (allow-list, proxies, logs) sees
/// it.
#[derive(Clone, Copy)]
struct Peer(SocketAddr);

impl Peer {
    /// On a dual-stack socket (`--addr ::`) an IPv4 client arrives as `::ffff:a.b.c.d`,
    /// which no IPv4 `--allow` or `--proxies` entry matches: it is made `a.b.c.d` here, where
    /// the address enters, once.
    fn new(addr: SocketAddr) -> Peer {
        Peer(SocketAddr::new(addr.ip().to_canonical(), addr.port()))
    }

    fn ip(self) -> IpAddr {
        self.0.ip()
    }
}

/// Marks `req` as coming from `peer`, as [`run`] does for every request; the handlers of
/// [`router`] need it. For callers that drive the router without a socket (the fuzz target
/// `fuzz/fuzz_targets/http_query.rs`). The allow-list is not the router's: [`run`] applies
/// it before a request reaches the router.
#[doc(hidden)]
pub fn with_peer<B>(mut req: Request<B>, peer: SocketAddr) -> Request<B> {
    req.extensions_mut().insert(Peer::new(peer));
    req
}

/// The longest request body (POST form) taken.
const MAX_BODY: usize = 4096;

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    let p = state.http.serve_path.trim_end_matches('/').to_string();
    let mut r = Router::new();
    // A decode URL at the root (`-U /?otp=`) is the one path `/`.
    if !p.is_empty() {
        r = r.route(&p, get(decode_get).post(decode_post));
    }
    let mut r = r
        .route(&format!("{p}/"), get(decode_get).post(decode_post))
        .route(FIXED_PAGES[0], get(health))
        .route(FIXED_PAGES[1], get(metrics));
    if let Some(s) = &state.http.stats_path {
        r = r.route(s, get(stats));
    }
    if state.val.is_some() {
        r = r
            .route(VERIFY_V2, get(verify_get).post(verify_post))
            .route(VERIFY_V1, get(verify_get).post(verify_post));
    }
    r.fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// yubikey-val's verify paths: protocol 2.0, and 1.0 (a path without a version).
pub const VERIFY_V2: &str = "/wsapi/2.0/verify";
/// Protocol 1.0's verify path.
pub const VERIFY_V1: &str = "/wsapi/verify";

async fn verify_get(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    RawQuery(q): RawQuery,
) -> Response {
    verify_request(
        &st,
        peer,
        &headers,
        uri.path(),
        q.unwrap_or_default().as_bytes(),
    )
    .await
}

async fn verify_post(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    let query = q.unwrap_or_default();
    let params = verify_params(query.as_bytes(), &body);
    verify_request(&st, peer, &headers, uri.path(), params).await
}

/// The parameters of a verify POST, as yubikey-val 2.41 reads them: the query string's if it
/// has any, else the form body's, never the two merged. The signature is checked over the
/// one set read, so a field added in the body of a signed query changes nothing.
fn verify_params<'a>(query: &'a [u8], body: &'a [u8]) -> &'a [u8] {
    match form_urlencoded::parse(query).next() {
        Some(_) => query,
        None => body,
    }
}

async fn verify_request(
    st: &AppState,
    Peer(peer): Peer,
    headers: &HeaderMap,
    path: &str,
    query: &[u8],
) -> Response {
    let Some(val) = st.val.as_ref() else {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    };
    let protocol = match path {
        VERIFY_V2 => ykval::Protocol::V2,
        _ => ykval::Protocol::V1,
    };
    let client = client_of(&st.access().proxies, peer.ip(), headers);
    let query = String::from_utf8_lossy(query);
    let deadline = Instant::now() + st.http.reqtimeout;
    let local = |otp: Otp| async move { decode(st, Some(&otp.to_modhex()), deadline).await.0 };
    let (code, body) =
        crate::daemon::val::verify(val, protocol, &query, &client, deadline, local).await;
    text(code, body)
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
        let peer = Peer::new(peer);
        // The peer cannot change: decided once, before anything is read, and before the
        // connection takes a slot, so clients outside the list never count against
        // --max-connections (nor close an allowed client's connection to make room).
        let allowed = allowed(&state.access().allow, peer.ip());
        let table = if allowed {
            &state.connections
        } else if state.tls().is_some() {
            // Answering it would take a handshake, and so work, for a client the daemon
            // is not to talk to: closed before a byte is read.
            warn!(client = %peer.ip(), "TLS connection from a client outside the allow-list closed");
            continue;
        } else {
            &state.outsiders
        };
        // Never waits on a full table: at most HANDOVER_WAIT for a connection told to close.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = table.admit(Some(stream.as_raw_fd())) => s,
        };
        let Some(slot) = slot else {
            debug!(client = %peer.ip(), allowed, "connection refused: every connection is answering a request");
            continue;
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            allowed,
            Arc::new(slot),
            app.clone(),
            state.clone(),
            stop_rx.clone(),
        ));
    }
    info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + state.http.reqtimeout + Duration::from_secs(1);
    while state.connections.open() + state.outsiders.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One connection, until the client closes it, a timeout does, the daemon stops, or it is
/// closed to make room.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: Peer,
    allowed: bool,
    slot: Arc<Slot>,
    app: Router,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let Some(tls) = state.tls() else {
        serve_http(stream, peer, allowed, slot, app, state, stop).await;
        return;
    };
    let Some(stream) = handshake(tls.acceptor(), stream, peer, &slot, &mut stop, &state.http).await
    else {
        return;
    };
    serve_http(stream, peer, allowed, slot, app, state, stop).await;
}

/// The TLS handshake of a new connection, under the limits of a request: it must be done by
/// the header timeout, counted from when the connection was accepted, and until it is the
/// connection is *idle*, so a full table closes it to make room (see
/// [`crate::daemon::connections`]). A client that connects and never finishes its handshake
/// therefore holds its slot no longer than one that never sends its request. `None` if the
/// connection is to be closed.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: Peer,
    slot: &Slot,
    stop: &mut watch::Receiver<bool>,
    http: &HttpConfig,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let deadline = slot.waiting_since() + http.header_timeout;
    let accepted = tokio::select! {
        r = tokio::time::timeout_at(deadline.into(), acceptor.accept(stream)) => r,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => return None,
        _ = slot.evicted() => return None,
    };
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            // Why matters to the operator when a validator is turned away (its certificate)
            // or turns away (ours, expired or from a CA it does not trust); anything else
            // is a scanner or a broken client.
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(
                    rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented,
                ) => warn!(client = %peer.ip(), error = %e, "TLS client certificate refused"),
                Some(rustls::Error::AlertReceived(_)) => {
                    warn!(client = %peer.ip(), error = %e, "TLS handshake refused by the client (does it trust the KSM's certificate?)")
                }
                _ => debug!(client = %peer.ip(), error = %e, "TLS handshake failed"),
            }
            None
        }
        Err(_) => {
            debug!(client = %peer.ip(), "TLS handshake not done within the header timeout");
            None
        }
    }
}

/// HTTP/1.1 on an accepted connection (plain, or TLS after its handshake).
async fn serve_http<S>(
    stream: S,
    peer: Peer,
    allowed: bool,
    slot: Arc<Slot>,
    app: Router,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let in_service = slot.clone();
    let http = state.http.clone();
    let gate_state = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        gate(
            req,
            peer,
            allowed,
            in_service.clone(),
            app.clone(),
            gate_state.clone(),
        )
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(http.header_timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let finish = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "connection ended");
            }
            false
        }
        // The Ref that wait_for returns must not live across the await below.
        _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
        // Closed to make room: dropped at once unless it is answering a request.
        _ = slot.evicted() => slot.working(),
    };
    if finish {
        // Let the answer in progress go out; bounded like the decode it waits for.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(http.reqtimeout + Duration::from_secs(1), conn).await;
    }
    drop(slot);
}

/// What every request passes before any work is done for it: the allow-list (before a byte
/// of its body is read), then the whole request received by its deadline. Only then is the
/// connection *working* (not closed to make room) and the request routed.
async fn gate(
    req: Request<hyper::body::Incoming>,
    peer: Peer,
    allowed: bool,
    slot: Arc<Slot>,
    app: Router,
    state: Arc<AppState>,
) -> Result<Response, Infallible> {
    if !allowed {
        warn!(client = %peer.ip(), path = %req.uri().path(), "request from a client outside the allow-list");
        return Ok(closing(StatusCode::FORBIDDEN, "ERR Forbidden\n"));
    }
    let request = slot.request();
    let deadline = slot.waiting_since() + state.http.header_timeout;
    let req = match receive(req, deadline).await {
        Ok(r) => r,
        Err(refused) => return Ok(refused),
    };
    request.received();
    let response = dispatch(&state, app, peer, req).await;
    drop(request);
    Ok(response)
}

/// Routes a received request. The decode URL, which validators call thousands of times a
/// second, goes straight to its handler: no router, no extractors, no copy of the headers.
/// Everything else (and every other method on the decode URL) goes through the router,
/// whose decode routes call the same [`decode_request`], so both ways answer alike.
async fn dispatch(state: &Arc<AppState>, app: Router, peer: Peer, req: Request<Body>) -> Response {
    let path = req.uri().path();
    let decode_path = path
        .strip_prefix(state.http.serve_path.trim_end_matches('/'))
        .is_some_and(|rest| rest.is_empty() || rest == "/");
    if decode_path && req.method() == Method::GET {
        let query = req.uri().query().unwrap_or_default().as_bytes();
        return decode_request(state, peer, req.headers(), query).await;
    }
    if decode_path && req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
            return too_large();
        };
        let query = parts.uri.query().unwrap_or_default().as_bytes().to_vec();
        return decode_request(state, peer, &parts.headers, &post_query(query, &body)).await;
    }
    let mut req = req;
    req.extensions_mut().insert(peer);
    match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Reads a request's body (at most [`MAX_BODY`]) by `deadline`, so that a client trickling
/// its body, or announcing one it never sends, holds a connection no longer than one that
/// trickles its headers. An answer for the client if it does not make it.
async fn receive(
    req: Request<hyper::body::Incoming>,
    deadline: Instant,
) -> Result<Request<Body>, Response> {
    // A Content-Length over the cap is refused without reading a byte of the body.
    let size = hyper::body::Body::size_hint(req.body());
    if size.lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    // No body at all (a GET, as validators send): nothing to wait for, no timer to set.
    if size.exact() == Some(0) {
        return Ok(Request::from_parts(parts, Body::empty()));
    }
    let read = axum::body::to_bytes(Body::new(body), MAX_BODY);
    match tokio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(body)) => Ok(Request::from_parts(parts, Body::from(body))),
        // Over the cap (chunked), or the client went away (it reads no answer then).
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            debug!("request not received within the header timeout");
            Err(closing(
                StatusCode::REQUEST_TIMEOUT,
                "ERR Request timeout\n",
            ))
        }
    }
}

/// An answer after which the connection is closed: its request was not (fully) read.
fn closing(code: StatusCode, body: &'static str) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CONNECTION, "close"),
        ],
        body,
    )
        .into_response()
}

fn too_large() -> Response {
    closing(StatusCode::PAYLOAD_TOO_LARGE, "ERR Request too large\n")
}

/// The client to log for a request from `peer`. From a trusted proxy, the address its
/// `X-Forwarded-For` names: the last entry of the last such header, the one the proxy itself
/// added (entries before it are whatever the client claimed). It must parse as an IP
/// address; anything else is logged as the proxy's address and a marker, never as sent, so a
/// header cannot forge or garble a log line.
fn client_of(proxies: &[IpAddr], peer: IpAddr, headers: &HeaderMap) -> String {
    if !proxies.contains(&peer) {
        return peer.to_string();
    }
    let Some(xff) = headers.get_all("x-forwarded-for").iter().next_back() else {
        return peer.to_string();
    };
    let named = xff
        .to_str()
        .ok()
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    match named {
        Some(ip) => ip.to_canonical().to_string(),
        None => format!("{peer}+invalid-x-forwarded-for"),
    }
}

fn allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|n| n.contains(&ip))
}

/// A plain-text answer, built directly (the per-request path avoids the generic
/// `IntoResponse` machinery).
fn text(code: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn decode_get(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    decode_request(&st, peer, &headers, q.unwrap_or_default().as_bytes()).await
}

async fn decode_post(
    State(st): State<Arc<AppState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Body,
) -> Response {
    // Already received by `gate` when served by `run`; the cap is for other callers.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return too_large();
    };
    let all = post_query(q.unwrap_or_default().into_bytes(), &body);
    decode_request(&st, peer, &headers, &all).await
}

/// The parameters of a POST: the query string, then the form body. A form field wins over
/// the query string, as PHP's $_REQUEST does for POST. (In pyhsm's prefix form the OTP is
/// the first item: the query string's, else the body's.)
fn post_query(mut query: Vec<u8>, body: &[u8]) -> Vec<u8> {
    if !query.is_empty() {
        query.push(b'&');
    }
    query.extend_from_slice(body);
    query
}

/// The OTP parameter: URL-decoded, surrounding white space dropped, lower-cased (yubikey-val
/// sends lower case; people paste upper case). Parsed as `application/x-www-form-urlencoded`
/// (what `form_urlencoded::parse` does, the last `name=` winning), but without decoding or
/// allocating for the other parameters: this runs on every request.
fn otp_param(query: &[u8], name: &str) -> Option<String> {
    let mut pieces = query.split(|b| *b == b'&');
    let raw = if name.is_empty() {
        // pyhsm's prefix form: the query string is the OTP.
        let (key, _) = split_pair(pieces.next().filter(|p| !p.is_empty())?);
        key
    } else {
        // The last one wins: look from the end.
        pieces
            .rev()
            .filter(|p| !p.is_empty())
            .map(split_pair)
            .find(|(k, _)| form_decode(k) == name)?
            .1
    };
    Some(form_decode(raw).trim().to_ascii_lowercase())
}

/// `key=value` (a piece without `=` is a key with an empty value).
fn split_pair(piece: &[u8]) -> (&[u8], &[u8]) {
    match piece.iter().position(|b| *b == b'=') {
        Some(i) => (&piece[..i], &piece[i + 1..]),
        None => (piece, &[]),
    }
}

/// One form-encoded name or value: `+` is a space, `%XX` a byte, and the bytes UTF-8 (lossy).
/// Borrowed when there is nothing to decode, as in every OTP.
fn form_decode(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    if !raw.iter().any(|b| matches!(b, b'%' | b'+')) {
        return String::from_utf8_lossy(raw);
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    std::borrow::Cow::Owned(String::from_utf8_lossy(&bytes).into_owned())
}

async fn decode_request(
    st: &AppState,
    Peer(peer): Peer,
    headers: &HeaderMap,
    query: &[u8],
) -> Response {
    let start = Instant::now();
    let raw = otp_param(query, &st.http.otp_param);
    let abandoned = Abandoned {
        st,
        peer,
        headers,
        start,
    };
    let (outcome, id) = decode(st, raw.as_deref(), start + st.http.reqtimeout).await;
    std::mem::forget(abandoned);
    let took = start.elapsed();
    st.metrics.record(&outcome, took);
    info!(
        public_id = %id.as_deref().unwrap_or("-"),
        result = %outcome.label(),
        latency_us = took.as_micros() as u64,
        client = %client_of(&st.access().proxies, peer.ip(), headers),
        "decode"
    );
    let (code, body) = outcome.body();
    text(code, body)
}

/// A decode in progress, counted and logged as abandoned if it is dropped before it is
/// answered: when the client hangs up (a timeout of its own, or a validator that already
/// has another KSM's answer), hyper drops the request's future, and this guard's drop is
/// then the only code that runs. It holds nothing to release, so it is forgotten once the
/// decode is done.
struct Abandoned<'a> {
    st: &'a AppState,
    peer: SocketAddr,
    headers: &'a HeaderMap,
    start: Instant,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        self.st.metrics.record_abandoned();
        debug!(
            result = "abandoned",
            latency_us = self.start.elapsed().as_micros() as u64,
            client = %client_of(&self.st.access().proxies, self.peer.ip(), self.headers),
            "decode abandoned by the client before its answer"
        );
    }
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
    let stored = match st.store.lookup_until(&otp.public_id, deadline).await {
        Ok(Some(s)) => s,
        Ok(None) => return (Outcome::UnknownId, id),
        Err(e) => {
            let outcome = Outcome::from(&e);
            if outcome == Outcome::CorruptAead {
                warn!(public_id = %otp.public_id, error = %e, "AEAD unusable");
            } else {
                debug!(public_id = %otp.public_id, error = %e, "AEAD store unavailable");
            }
            return (outcome, id);
        }
    };
    let Some(what) = decode_aead(&otp.public_id, &stored) else {
        return (Outcome::CorruptAead, id);
    };
    // The next configured keys' AEADs, read only if the devices for this one cannot
    // serve (see `Pool::decode_failover`).
    let mut later = Vec::new();
    let public_id = otp.public_id.clone();
    let first_key = stored.key();
    let (sink, pid) = (&mut later, &public_id);
    let fallbacks = move || async move {
        match st.store.fallbacks_until(pid, first_key, deadline).await {
            Ok(more) => more
                .into_iter()
                .filter_map(|s| {
                    let d = decode_aead(pid, &s)?;
                    sink.push(s);
                    Some(d)
                })
                .collect(),
            Err(e) => {
                debug!(public_id = %pid, error = %e, "no fallback AEAD");
                Vec::new()
            }
        }
    };
    let (result, served) = st
        .pool
        .decode_failover(otp, what, fallbacks, deadline)
        .await;
    let stored = match served.and_then(|i| later.get(i)) {
        Some(next) => {
            debug!(public_id = %public_id, path = %next.source, "served with a later key's AEAD: the first one's devices could not");
            next
        }
        None => &stored,
    };
    let outcome = match result {
        Ok(d) => Outcome::Ok(d),
        Err(e) => Outcome::from(e),
    };
    if matches!(outcome, Outcome::CorruptAead) {
        // Which file is bad is what the operator needs; the HSM only says "invalid".
        warn!(public_id = %id.as_deref().unwrap_or("-"), path = %stored.source, "AEAD rejected by the HSM (corrupt file, or made with another key)");
    }
    (outcome, id)
}

/// What the pool needs to open `stored`: each kind of AEAD goes to the kind of HSM that
/// opens it. `None` (logged) for a YubiHSM 1 AEAD that is not a YubiKey's 30 bytes.
fn decode_aead(id: &PublicId, stored: &aead_store::StoredAead) -> Option<DecodeAead> {
    Some(match &stored.sealed {
        aead_store::Sealed::Hsm1 {
            key_handle,
            nonce,
            aead,
        } => {
            let Ok(aead) = YubiKeyAead::try_from(aead) else {
                warn!(public_id = %id, path = %stored.source, "AEAD is not a 30-byte YubiKey AEAD");
                return None;
            };
            DecodeAead::Hsm1(Hsm1Aead {
                key_handle: *key_handle,
                nonce: *nonce,
                aead,
            })
        }
        aead_store::Sealed::Hsm2 { key_id, aead } => DecodeAead::Hsm2(Hsm2Aead {
            key_id: *key_id,
            aead: *aead,
        }),
    })
}

async fn stats(State(st): State<Arc<AppState>>) -> Response {
    text(StatusCode::OK, st.metrics.pyhsm_stats())
}

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let mut body = st
        .metrics
        .prometheus(&st.pool.health(), &*st.store, &st.connections);
    if let Some(val) = &st.val {
        let up = val.db.ping().await.is_ok();
        body.push_str(&val.metrics.prometheus(up));
    }
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
        debug!(error = %e, "the AEAD store cannot be read");
    }
    // The counter database, when the verify API is served: without it, or with one that
    // takes no writes, no OTP verifies.
    let val_db = match &st.val {
        Some(val) => Some(val.db.ping().await),
        None => None,
    };
    let val_ok = !matches!(val_db, Some(Err(_)));
    let status = if states.contains(&DeviceState::Up) {
        if store.is_ok() && val_ok && states.iter().all(|s| *s == DeviceState::Up) {
            "ok"
        } else {
            "degraded"
        }
    } else if states.contains(&DeviceState::Locked) {
        "locked"
    } else {
        "down"
    };
    let warnings: Vec<String> = devices
        .iter()
        .filter_map(|d| d.log.warning().map(|w| format!("{}: {w}", d.name)))
        .collect();
    let body = serde_json::json!({
        "status": status,
        "warnings": warnings,
        "devices": devices.iter().map(|d| serde_json::json!({
            "name": d.name,
            "kind": d.kind.name(),
            "state": d.state().name(),
            "queued": d.queued.load(Ordering::Relaxed),
            "opens": d.opens.load(Ordering::Relaxed),
            "last_error": d.last_error(),
            "sessions_open": d.sessions_open.load(Ordering::Relaxed),
            "reauthentications": d.reauthentications.load(Ordering::Relaxed),
            "log": (d.kind == DeviceKind::YubiHsm2).then(|| serde_json::json!({
                "used": d.log.used.load(Ordering::Relaxed),
                "capacity": d.log.capacity.load(Ordering::Relaxed),
                "force_audit": match d.log.forced.load(Ordering::Relaxed) {
                    1 => Some(false),
                    2 => Some(true),
                    _ => None,
                },
                "drained": d.log.drained.load(Ordering::Relaxed),
                "chain_breaks": d.log.chain_breaks.load(Ordering::Relaxed),
                "refused_full": d.log.refused_full.load(Ordering::Relaxed),
                "warning": d.log.warning(),
            })),
            "line_errors": d.line_errors()
                .map(|(k, n)| (k.name().to_string(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
        "store": {
            "aeads": st.store.len(),
            "watching": st.store.watching(),
            "unwatched": st.store.unwatched(),
            "ignored_notices": st.store.ignored_notices(),
            "error": store.err().map(|e| e.to_string()),
        },
        "validation": val_db.map(|r| serde_json::json!({
            "database": match &r {
                Ok(()) => "ok",
                Err(ykval::DbError::ReadOnly(_)) => "read-only",
                Err(_) => "down",
            },
            "error": r.err().map(|e| e.to_string()),
        })),
        "http": {
            "connections": st.connections.open(),
            "evicted": st.connections.evicted(),
            "refused": st.connections.refused(),
        },
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

    /// What `otp_param` did before it skipped the other parameters: the reference.
    fn otp_param_reference(query: &[u8], name: &str) -> Option<String> {
        if name.is_empty() {
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

    #[test]
    fn otp_parameter_parsing_matches_form_urlencoded() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"otpOTP=&%+2a0Fgx \xc3\xa9";
        for _ in 0..20_000 {
            let len = rng.gen_range(0..24);
            let q: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            for name in ["otp", ""] {
                assert_eq!(
                    otp_param(&q, name),
                    otp_param_reference(&q, name),
                    "{:?} {name:?}",
                    String::from_utf8_lossy(&q)
                );
            }
        }
    }

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
    fn only_an_ip_address_from_a_trusted_proxy_is_logged_as_the_client() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let proxies = [proxy];
        let client = |peer: IpAddr, xff: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in xff {
                let v = axum::http::HeaderValue::from_bytes(v.as_bytes()).unwrap();
                headers.append("x-forwarded-for", v);
            }
            client_of(&proxies, peer, &headers)
        };
        assert_eq!(client(proxy, &["203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(proxy, &[" 2001:db8::7 "]), "2001:db8::7");
        assert_eq!(client(proxy, &["::ffff:192.0.2.3"]), "192.0.2.3");
        // The entry the proxy added is the last; what the client claimed before it is not.
        assert_eq!(client(proxy, &["192.0.2.66, 203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(proxy, &["192.0.2.66", "203.0.113.9"]), "203.0.113.9");
        // Anything else is the proxy with a marker, never the header's text.
        for bad in [
            "evil client=127.0.0.1 result=ok",
            "203.0.113.9:4711",
            "unknown",
            "",
            "203.0.113.9, caf\u{e9}",
        ] {
            let logged = client(proxy, &[bad]);
            assert_eq!(logged, "10.0.0.1+invalid-x-forwarded-for", "{bad:?}");
        }
        // Not a trusted proxy: its header is ignored.
        let other: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(client(other, &["203.0.113.9"]), "192.0.2.5");
        assert_eq!(client(proxy, &[]), "10.0.0.1");
    }
}
