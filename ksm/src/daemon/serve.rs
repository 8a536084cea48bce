//! `ksm serve`: the daemon. Takes its [`Settings`] from flags and `ksm.toml`
//! ([`crate::settings`]), opens the HSMs and the AEAD store, binds, serves until
//! SIGTERM, then drains and cleans up.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aead_store::{CachedStore, DbStore, FsStore, NoncePolicy, Store};
use hsm_proto::Timeouts;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::daemon::hsm2_owner::Hsm2Backend;
use crate::daemon::instance::{PidFile, SocketClaim};
use crate::daemon::pool::{Backend, Pool, PoolConfig};
use crate::daemon::server::{Access, AppState};
use crate::daemon::sharing::SharingConfig;
use crate::daemon::tls::Tls;
use crate::daemon::val::Validator;
use crate::device;
use crate::device::hsm2::{Hsm2Auth, Hsm2Spec};
use crate::settings::options::ServeArgs;
use crate::settings::serve::{Reload, Settings};
use crate::Error;

/// The first OTP vector, for the demo's `curl` line.
pub fn demo_otp() -> String {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../../fixtures/otp-vectors.json"))
            .unwrap_or_default();
    v["otps"][0]["otp"].as_str().unwrap_or_default().to_string()
}

/// The daemon's devices. The YubiHSM 2 password configured in `ksm.toml` is wiped from
/// `s` once its keys are derived: the owner threads hold the only copy, so forgetting it
/// there forgets it.
fn backends(s: &mut Settings) -> Result<Vec<Backend>, Error> {
    if s.demo {
        warn!("DEMO mode: soft HSM with the public test keys compiled into ksm; never use for real YubiKeys");
        return Ok(vec![Backend::Soft(Box::new(device::demo_config()?))]);
    }
    let mut hsm2_auth: Option<Option<Hsm2Auth>> = None;
    // Opened once, shared by every YubiHSM 2 (each device's chain is kept by its serial).
    let mut audit_log: Option<crate::daemon::hsm2_audit::AuditSink> = None;
    let devices = s
        .devices
        .iter()
        .map(|d| {
            let text = d.to_str().unwrap_or_default();
            if Hsm2Spec::is_hsm2(text) {
                let spec = Hsm2Spec::parse(text)?;
                let auth_key_id = s.hsm2.auth_key.ok_or_else(|| {
                    Error::Usage(format!(
                        "-D {spec} is a YubiHSM 2: set hsm2-auth-key (the authentication key id) in ksm.toml or --hsm2-auth-key"
                    ))
                })?;
                // Read (and derived) once for every YubiHSM 2 of the daemon.
                let auth = match &hsm2_auth {
                    Some(a) => a.clone(),
                    None => hsm2_auth.insert(s.hsm2.auth()?).clone(),
                };
                if auth.is_none() {
                    warn!(device = %spec, "no YubiHSM 2 password configured: the device answers ERR HSM locked until `ksm keystore-unlock`");
                }
                let timeout = s.http.reqtimeout;
                let name = spec.to_string();
                // A password file is read again on SIGHUP (one in ksm.toml comes back with
                // a restart).
                let reload_key: Option<crate::daemon::hsm2_owner::ReloadKey> =
                    match (&s.hsm2.password, &s.hsm2.password_file) {
                        (None, Some(path)) => {
                            let path = path.clone();
                            Some(Arc::new(move || {
                                Hsm2Auth::from_file(auth_key_id, &path)
                                    .map(|a| a.auth_key().clone())
                            }))
                        }
                        _ => None,
                    };
                return Ok(Backend::Hsm2(Hsm2Backend {
                    name,
                    open: Arc::new(move || spec.transport(timeout)),
                    auth_key_id,
                    key: auth.map(|a| a.auth_key().clone()),
                    reload_key,
                    refused_retry: crate::daemon::hsm2_owner::REFUSED_RETRY,
                    sessions: s.hsm2.sessions,
                    keepalive: s.hsm2.keepalive,
                    audit_log: match (&s.hsm2.audit_log, &audit_log) {
                        (Some(_), Some(sink)) => Some(sink.clone()),
                        (Some(path), None) => Some(
                            audit_log
                                .insert(Arc::new(std::sync::Mutex::new(
                                    crate::device::hsm2_log::AuditFile::open(path)?,
                                )))
                                .clone(),
                        ),
                        (None, _) => None,
                    },
                }));
            }
            if device::is_key_file(d) {
                Ok(Backend::Soft(Box::new(device::load_key_file(d)?)))
            } else {
                Ok(Backend::Serial(d.clone()))
            }
        })
        .collect();
    s.hsm2.forget_password();
    devices
}

fn bind_socket(path: &Path) -> Result<(tokio::net::UnixListener, (u64, u64)), Error> {
    let (std_listener, id) = crate::private_socket::bind_private(path)?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("socket", e))?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(|e| Error::io("socket", e))?;
    Ok((listener, id))
}

/// Connections the kernel may hold complete but not yet accepted. tokio's default (1024) fills
/// within a millisecond or two of a connection flood, and every SYN beyond it waits a
/// second for its retransmission, good clients' included; Linux caps this at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 8192;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The socket systemd bound (`ksm.socket`), as the daemon's listener. `addr`/`port` of the
/// configuration are not used then: the socket unit's `ListenStream=` is what clients
/// reach, so a difference is worth a warning, not a refusal to serve.
fn take_inherited(l: std::net::TcpListener, configured: SocketAddr) -> Result<TcpListener, Error> {
    l.set_nonblocking(true)
        .map_err(|e| Error::io("the socket systemd passed", e))?;
    let l = TcpListener::from_std(l).map_err(|e| Error::io("the socket systemd passed", e))?;
    let addr = l
        .local_addr()
        .map_err(|e| Error::io("the socket systemd passed", e))?;
    if configured != addr && configured.port() != 0 {
        warn!(socket = %addr, configured = %configured, "serving on the socket systemd passed (ksm.socket's ListenStream=); addr and port of the configuration are not used");
    } else {
        info!(socket = %addr, "serving on the socket systemd passed");
    }
    Ok(l)
}

/// `ksm serve`: runs the daemon with `args` until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> Result<(), Error> {
    if args.daemon {
        warn!("-d/--daemon is ignored: run ksm under systemd (see ksm/dist/ksm.service)");
    }
    let s = args.settings()?;
    // Before the runtime's threads start: it clears the activation variables.
    let inherited = crate::daemon::systemd::inherited_listener()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", e))?;
    rt.block_on(async move {
        let listener = match inherited {
            Some(l) => take_inherited(l, s.listen)?,
            None => listen(s.listen).map_err(|e| Error::io(format!("bind {}", s.listen), e))?,
        };
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            crate::daemon::systemd::stopping();
        };
        serve(s, listener, shutdown).await
    })
}

/// The daemon on an already-bound listener (tests bind `127.0.0.1:0`).
pub async fn serve(
    mut s: Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    // First of all, before touching a device: is another daemon using our files?
    let pid_file = s.pid_file.as_deref().map(PidFile::claim).transpose()?;
    let socket_claim = s.socket.as_deref().map(SocketClaim::claim).transpose()?;
    // The certificate and key are checked before any device or store is opened.
    let tls = s.http.tls.clone().map(Tls::load).transpose()?.map(Arc::new);
    if s.nonce_policy == NoncePolicy::Any {
        warn!("--random-nonce-aeads: AEADs with any nonce are served, so only their place in the AEAD store ties them to a public id");
    }
    let (store, aeads_in): (Arc<dyn Store + Send + Sync>, String) = match &s.db {
        Some(db) => {
            let cfg = db.store_config(s.key_handles.clone(), s.nonce_policy, s.http.reqtimeout);
            if db.serve_cached_when_down {
                warn!("--db-serve-cached-when-down: while the database is unreachable, cached AEADs keep decoding, including any whose row was deleted meanwhile");
            }
            let engine = format!("{:?}", db.url.engine()).to_lowercase();
            (
                Arc::new(DbStore::open(cfg)?),
                format!("a {engine} database"),
            )
        }
        None => {
            let store = FsStore::open_keys(&s.aead_dir, s.key_handles.clone())?
                .with_nonce_policy(s.nonce_policy);
            (
                Arc::new(CachedStore::spawn(store, CachedStore::DEFAULT_MAX_ENTRIES)),
                s.aead_dir.display().to_string(),
            )
        }
    };
    let pool = Arc::new(Pool::start(
        backends(&mut s)?,
        PoolConfig {
            queue_depth: s.queue_depth,
            timeouts: Timeouts::default(),
            ..PoolConfig::default()
        },
    ));
    let mut http = s.http.clone();
    http.max_connections = connection_budget(http.max_connections);
    let val = match &s.val {
        Some(v) => {
            let db = ykval::ValDb::open(&v.db_config(s.http.reqtimeout))?;
            Some(Arc::new(Validator::new(
                db,
                v.ksm_urls.clone(),
                s.http.reqtimeout,
            )))
        }
        None => None,
    };
    let state = Arc::new(
        AppState::new(pool.clone(), store, http)
            .with_tls(tls)
            .with_val(val),
    );
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("listener", e))?;
    let sharing = match &s.socket {
        Some(path) => match bind_socket(path) {
            Ok((l, id)) => {
                info!(socket = %path.display(), "sharing socket for operator tools");
                let cfg = SharingConfig {
                    policy: s.socket_policy,
                    reqtimeout: s.http.reqtimeout,
                    ..SharingConfig::default()
                };
                Some((
                    tokio::spawn(crate::daemon::sharing::serve(l, pool.clone(), cfg)),
                    id,
                ))
            }
            Err(e) => {
                warn!(error = %e, "no sharing socket: operator tools cannot use the HSM while the daemon runs");
                None
            }
        },
        None => None,
    };
    let khs: Vec<String> = s.key_handles.iter().map(|k| k.to_string()).collect();
    // Written, not println!'d: a daemon whose stdout was closed (a supervisor that read the
    // first line and went away) must keep serving, not panic on the broken pipe.
    use std::io::Write as _;
    // Before the listening line: a SIGHUP sent as soon as the daemon says it listens (a
    // reload right after a start) must find the handler, not the default action, an exit.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let scheme = if state.tls().is_some() {
        "https"
    } else {
        "http"
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ksm listening on {scheme}://{addr}{} (AEADs in {}, key handles {})",
        s.http.serve_path,
        aeads_in,
        khs.join(",")
    );
    if let Some(v) = &s.val {
        let engine = format!("{:?}", v.url.engine()).to_lowercase();
        let decoder = match v.ksm_urls.len() {
            0 => "this daemon's HSMs".to_string(),
            n => format!("{n} remote KSM(s)"),
        };
        let _ = writeln!(
            out,
            "ksm verify API on {scheme}://{addr}{} and {} (counters in a {engine} database, OTPs decoded by {decoder})",
            crate::daemon::server::VERIFY_V2,
            crate::daemon::server::VERIFY_V1,
        );
    }
    if s.demo {
        let _ = writeln!(
            out,
            "try:  curl '{scheme}://{addr}{}?{}={}'",
            s.http.serve_path,
            s.http.otp_param,
            demo_otp()
        );
    }
    let _ = out.flush();
    drop(out);
    let status = format!("serving on {scheme}://{addr}");
    crate::daemon::systemd::ready(&status);
    let hangup = tokio::spawn(on_hangup(
        hup,
        pool.clone(),
        state.clone(),
        s.reload.clone(),
        status,
    ));
    let result = crate::daemon::server::run(listener, state, shutdown)
        .await
        .map_err(|e| Error::io("serve", e));
    hangup.abort();
    if let (Some((task, id)), Some(p)) = (sharing, &s.socket) {
        task.abort();
        crate::private_socket::remove_if_ours(p, id);
    }
    drop(socket_claim);
    drop(pid_file);
    info!("stopped");
    result
}

/// SIGHUP, as daemons take it (`systemctl reload ksm`): never an exit. The devices are
/// reopened (after a replug, or to run their start-up checks again) and their lock state
/// probed, and the access lists (`allow`, `proxies`) are read again from the flags and
/// `ksm.toml`. With TLS, the certificate, key and client CA files are read again (a renewed
/// certificate); if one of them is unusable the old ones stay, and the log says why.
/// Everything else (devices, AEAD directory, addresses, limits, which TLS files) needs a
/// restart: changing it under a running daemon could not be done without dropping requests.
/// A configuration that no longer parses is logged and the old lists kept. systemd is told
/// of the reload (`RELOADING=1`, then `READY=1` with `status` again).
async fn on_hangup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    pool: Arc<Pool>,
    state: Arc<AppState>,
    reload: Option<Reload>,
    status: String,
) {
    let Ok(mut hup) = hup else {
        warn!("cannot handle SIGHUP");
        return;
    };
    while hup.recv().await.is_some() {
        crate::daemon::systemd::reloading();
        info!("SIGHUP: reopening the HSMs and probing their lock state");
        pool.reopen_all();
        if let Some(tls) = state.tls() {
            match tls.reload() {
                Ok(()) => {
                    info!(cert = %tls.files().cert.display(), "SIGHUP: TLS certificate reloaded")
                }
                Err(e) => {
                    warn!(error = %e, "SIGHUP: the TLS files did not load; the old certificate stays")
                }
            }
        }
        if let Some(reload) = &reload {
            reload_access(reload, &state);
        }
        crate::daemon::systemd::ready(&status);
    }
}

/// SIGHUP's part of the configuration: the allow-list and proxies, read again.
fn reload_access(reload: &Reload, state: &AppState) {
    match (reload.0)() {
        Ok(new) => {
            if new.http.tls.as_ref() != state.tls().map(|t| t.files()) {
                warn!("SIGHUP: the configuration names other TLS files (or turns TLS on or off); that takes a restart, the files in use stay");
            }
            let access = Access::of(&new.http);
            info!(
                allow = access.allow.len(),
                proxies = access.proxies.len(),
                "SIGHUP: allow-list and proxies reloaded"
            );
            state.set_access(access);
        }
        Err(e) => {
            warn!(error = %e, "SIGHUP: the configuration did not load; the old allow-list and proxies stay")
        }
    }
}

/// Descriptors kept back from connections: AEAD files, devices, the watch, the sharing socket,
/// and the few connections of clients outside `--allow`.
const FD_RESERVE: u64 = 256 + crate::daemon::server::OUTSIDER_SLOTS as u64;

/// Each connection is a file descriptor, and running out of them would stop the daemon from
/// opening AEAD files. So raise the soft open-file limit to the hard one (systemd's default
/// soft limit is 1024) and cap connections to what then fits.
fn connection_budget(wanted: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted;
    };
    let soft = if hard > soft && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let fits = usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
    if wanted > fits {
        warn!(
            max_connections = wanted,
            open_file_limit = soft,
            using = fits,
            "--max-connections does not fit the open-file limit; raise LimitNOFILE"
        );
        return fits;
    }
    wanted
}

#[cfg(test)]
mod tests {
    /// The password from `ksm.toml` is not kept once the devices have their keys.
    #[test]
    fn the_configured_yubihsm2_password_is_wiped_once_derived() {
        use crate::settings::options::ServeOptions;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ksm.toml");
        std::fs::write(
            &file,
            "device = [\"http://127.0.0.1:1\"]\nkey-handles = [\"otp-aead-key:0x0120\"]\nhsm2-auth-key = 2\nhsm2-password = \"pw\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut s = ServeOptions::load(&file)
            .unwrap()
            .or(ServeOptions::default())
            .settings(false)
            .unwrap();
        assert!(s.hsm2.password.is_some());
        let b = super::backends(&mut s).unwrap();
        assert!(matches!(&b[0], crate::daemon::pool::Backend::Hsm2(h) if h.key.is_some()));
        assert!(s.hsm2.password.is_none());
    }

    /// The demo's `curl` line shows the first vector OTP, which the demo answers
    /// `OK counter=0001 low=1234 high=56 use=00` (`ksm/tests/serve_cli.rs` decodes it).
    #[test]
    fn the_demo_otp_is_the_first_vectors() {
        let otp = super::demo_otp();
        assert_eq!(otp, "ccccdeulfbvjktbbvtiekgclldvdnbhhccnjvvvfevri");
        let parsed = hsm_proto::otp::Otp::parse(&otp).unwrap();
        assert_eq!(parsed.public_id.to_string(), "ccccdeulfbvj");
    }
}
