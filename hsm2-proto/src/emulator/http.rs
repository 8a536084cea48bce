//! The software YubiHSM 2 behind a yubihsm-connector HTTP API on a real TCP socket:
//! `POST /connector/api` carries one frame each way, `GET /connector/status` says
//! `status=OK` (shared notes §1.1). Runs on its own thread; its fault knobs are methods.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::device::Device;
use super::{DeviceConfig, EmulatorError};
use crate::codec::{HEADER_LEN, MAX_DATA};
use crate::transport::ConnectorStatus;

/// The connector version the status page reports (a current yubihsm-connector's).
pub const CONNECTOR_VERSION: &str = "3.0.5";

/// How long a client may take to send a request's headers, and then its body.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server keeps trying to listen again on its port after `refuse off`.
const REBIND_FOR: Duration = Duration::from_secs(5);

/// Shared between the server thread and the handle.
struct Shared {
    device: Mutex<Device>,
    addr: SocketAddr,
    /// Requests are taken and never answered while true.
    stall: watch::Sender<bool>,
    /// The port is closed (connections refused) while true.
    refuse: watch::Sender<bool>,
    /// Whether the port is open now (what `refuse` asked for, once carried out).
    listening: watch::Sender<bool>,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    /// Set once, when the handle is dropped.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        // A panic while holding the lock cannot leave the device half-changed in a way
        // that matters more than stopping would: keep serving.
        self.device.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running software YubiHSM 2 with a connector in front, on `127.0.0.1` (or whichever
/// address it was given). Stops when dropped.
pub struct ConnectorEmulator {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ConnectorEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorEmulator")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl ConnectorEmulator {
    /// Binds `addr` (port 0 picks a free one) and serves a device holding `cfg`.
    pub fn start(addr: SocketAddr, cfg: &DeviceConfig) -> Result<ConnectorEmulator, EmulatorError> {
        cfg.check()?;
        let std_listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| EmulatorError::Io(format!("listen on {addr}: {e}")))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| EmulatorError::Io(format!("listen on {addr}: {e}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| EmulatorError::Io(format!("start the emulator's runtime: {e}")))?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(std_listener)
                .map_err(|e| EmulatorError::Io(format!("listen on {addr}: {e}")))?
        };
        let shared = Arc::new(Shared {
            device: Mutex::new(Device::new(cfg)),
            addr,
            stall: watch::Sender::new(false),
            refuse: watch::Sender::new(false),
            listening: watch::Sender::new(true),
            cut: watch::Sender::new(0),
            stop: watch::Sender::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("yubihsm2-emulator".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, s));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| EmulatorError::Io(format!("start the emulator's thread: {e}")))?;
        info!(%addr, "software YubiHSM 2 serving the connector API");
        Ok(ConnectorEmulator {
            shared,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR`, the base URL clients are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Stall: requests are read and never answered (they never reach the device); when
    /// the stall ends, their connections are closed unanswered.
    pub fn set_stall(&self, on: bool) {
        self.shared.stall.send_replace(on);
    }

    /// Refuse connections: the port is closed and every open connection cut; `false`
    /// listens on the same port again. Returns once done (or after [`REBIND_FOR`] and a
    /// second, if listening again failed: then the port stays closed).
    pub fn set_refuse(&self, on: bool) {
        self.shared.refuse.send_replace(on);
        if on {
            self.shared.cut.send_modify(|n| *n = n.wrapping_add(1));
        }
        let deadline = Instant::now() + REBIND_FOR + Duration::from_secs(1);
        while *self.shared.listening.borrow() == on && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Drops every session (as a power cycle does); objects stay.
    pub fn reset(&self) {
        self.shared.device().reset();
    }

    /// `sessions=N stall=BOOL refuse=BOOL`.
    pub fn status(&self) -> String {
        format!(
            "sessions={} stall={} refuse={}",
            self.shared.device().open_sessions(),
            *self.shared.stall.borrow(),
            *self.shared.refuse.borrow()
        )
    }

    /// Runs `f` on the device (for tests that look inside).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut Device) -> R) -> R {
        f(&mut self.shared.device())
    }
}

impl Drop for ConnectorEmulator {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(mut listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut refuse = shared.refuse.subscribe();
    loop {
        let refusing = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = refuse.wait_for(|r| *r) => true,
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(stream, shared.clone()));
                    }
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                false
            }
        };
        if !refusing {
            continue;
        }
        drop(listener);
        shared.listening.send_replace(false);
        info!("connector refusing connections");
        let resumed = tokio::select! {
            _ = stop.wait_for(|s| *s) => false,
            _ = refuse.wait_for(|r| !*r) => true,
        };
        if !resumed {
            return;
        }
        match rebind(shared.addr).await {
            Some(l) => listener = l,
            None => return,
        }
        shared.listening.send_replace(true);
        info!("connector accepting connections again");
    }
}

/// Listens on `addr` again, trying for [`REBIND_FOR`] (a port just closed may linger).
async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    let deadline = Instant::now() + REBIND_FOR;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) if Instant::now() < deadline => {
                debug!(error = %e, "listening again failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                warn!(%addr, error = %e, "cannot listen again; the emulator stops serving");
                return None;
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut cut = shared.cut.subscribe();
    let mut stop = shared.stop.subscribe();
    let s = shared.clone();
    let svc = hyper::service::service_fn(move |req| handle(req, s.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(RECEIVE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                debug!(error = %e, "connector connection ended");
            }
        }
        _ = cut.changed() => debug!("connection cut"),
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// Why a request gets no answer at all: its connection is closed instead.
#[derive(Debug)]
struct Unanswered;

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request left unanswered (stall)")
    }
}

impl std::error::Error for Unanswered {}

type Reply = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Reply, Unanswered> {
    let path = req.uri().path();
    if path == "/connector/status" {
        return Ok(match *req.method() {
            Method::GET | Method::HEAD => status_page(&shared),
            _ => method_not_allowed("GET"),
        });
    }
    if path != "/connector/api" {
        return Ok(plain(StatusCode::NOT_FOUND, "not found\n"));
    }
    if req.method() != Method::POST {
        return Ok(method_not_allowed("POST"));
    }
    let max = HEADER_LEN + MAX_DATA;
    let read = Limited::new(req.into_body(), max).collect();
    let body = match tokio::time::timeout(RECEIVE_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return Ok(closing(StatusCode::BAD_REQUEST, "request too large\n")),
        Err(_) => return Ok(closing(StatusCode::REQUEST_TIMEOUT, "request timeout\n")),
    };
    if body.len() < HEADER_LEN {
        return Ok(plain(StatusCode::BAD_REQUEST, "request too short\n"));
    }
    if *shared.stall.borrow() {
        let mut stall = shared.stall.subscribe();
        let mut stop = shared.stop.subscribe();
        tokio::select! {
            _ = stall.wait_for(|s| !*s) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        return Err(Unanswered);
    }
    let answer = shared.device().handle(&body, Instant::now());
    let mut r = Response::new(Full::new(Bytes::from(answer.into_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(r)
}

fn status_page(shared: &Shared) -> Reply {
    let text = ConnectorStatus {
        status: Some("OK".into()),
        serial: Some("*".into()),
        version: Some(CONNECTOR_VERSION.into()),
        pid: Some(std::process::id().to_string()),
        address: Some(shared.addr.ip().to_string()),
        port: Some(shared.addr.port().to_string()),
    }
    .render();
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn plain(code: StatusCode, text: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// An answer after which the connection closes: its request was not read to the end.
fn closing(code: StatusCode, text: &'static str) -> Reply {
    let mut r = plain(code, text);
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}
