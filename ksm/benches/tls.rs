//! TLS benchmark: the decode rate of the real daemon (`ksm serve --demo`, the soft HSM) over
//! TLS 1.3 and TLS 1.2 with keep-alive, next to plain HTTP, at 64 connections on 127.0.0.1.
//!
//! `cargo bench -p ksm --bench tls`. `KSM_BENCH_SECS` sets each run's length (default 5),
//! `KSM_BENCH_REPS` how many interleaved runs each cell takes the median of (default 3),
//! `KSM_BENCH_CONNS` the connection counts (comma-separated, default 64).
//!
//! The load generator is in this file (wrk has no TLS 1.2/1.3 choice and no rustls), one
//! thread of tokio with a connection per task, sending the fixture OTPs in turn and counting
//! answers that start `OK`; it runs on the same two cores as the daemon, so its own TLS
//! work is in the figures, as a validator's would be on a shared host. Handshakes happen
//! once per connection, before the clock starts: the figures are the steady state of
//! keep-alive validators. Results go to stdout as Markdown for docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{pct, us};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const KSM: &str = env!("CARGO_BIN_EXE_ksm");

/// The daemon, stopped when dropped.
struct Daemon(Child, SocketAddr);

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let mut child = Command::new(KSM)
            .args(["serve", "--demo", "--port", "0", "--socket", "none"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.split_whitespace().find(|w| w.contains("://")).unwrap();
        let addr = url.split("://").nth(1).unwrap().split('/').next().unwrap();
        Daemon(child, addr.parse().unwrap())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a client reaches the daemon.
#[derive(Clone)]
enum Transport {
    Plain,
    Tls(tokio_rustls::TlsConnector),
}

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// The GET requests of the fixture OTPs, each decoding to an `OK` line.
fn requests() -> Vec<Vec<u8>> {
    let v = test_support::otp_vectors();
    v["otps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "GET /wsapi/decrypt?otp={} HTTP/1.1\r\nHost: ksm\r\n\r\n",
                o["otp"].as_str().unwrap()
            )
            .into_bytes()
        })
        .collect()
}

/// Sends `req` and reads its answer (headers, then a Content-Length body) into `buf`; true
/// if the body starts `OK`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<bool> {
    s.write_all(req).await?;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).unwrap_or_default();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            let body = end + 4;
            if buf.len() >= body + len {
                return Ok(buf[body..].starts_with(b"OK"));
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One connection's loop until `stop`: its latencies and its failed answers.
async fn client<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    reqs: Arc<Vec<Vec<u8>>>,
    first: usize,
    start: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
) -> (Vec<Duration>, u64) {
    let mut buf = Vec::with_capacity(1024);
    let mut lat = Vec::new();
    let mut errors = 0;
    start.wait().await;
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        match exchange(&mut s, &reqs[i % reqs.len()], &mut buf).await {
            Ok(true) => lat.push(t.elapsed()),
            Ok(false) => errors += 1,
            Err(_) => {
                errors += 1;
                break;
            }
        }
        i += 1;
    }
    (lat, errors)
}

/// `conns` keep-alive connections to `addr` for `secs`, every handshake done first.
fn load(addr: SocketAddr, transport: &Transport, conns: usize, secs: f64) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let reqs = Arc::new(requests());
        let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for c in 0..conns {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let (reqs, start, stop) = (reqs.clone(), start.clone(), stop.clone());
            tasks.push(match transport {
                Transport::Plain => tokio::spawn(client(tcp, reqs, c, start, stop)),
                Transport::Tls(connector) => {
                    let name = rustls::pki_types::ServerName::from(addr.ip());
                    let tls = connector.connect(name, tcp).await.unwrap();
                    tokio::spawn(client(tls, reqs, c, start, stop))
                }
            });
        }
        start.wait().await;
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (l, e) = task.await.unwrap();
            lat.extend(l);
            errors += e;
        }
        let took = t.elapsed().as_secs_f64();
        lat.sort();
        Run {
            rps: lat.len() as f64 / took,
            p50: pct(&lat, 0.5),
            p99: pct(&lat, 0.99),
            errors,
        }
    })
}

/// A CA and a server certificate of it for 127.0.0.1, written to `dir`; the CA's
/// certificate for the clients.
fn certificates(dir: &Path) -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    use std::os::unix::fs::PermissionsExt;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cert_file = dir.join("server.crt");
    let key_file = dir.join("server.key");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (
        cert_file.to_str().unwrap().to_string(),
        key_file.to_str().unwrap().to_string(),
        ca.der().clone(),
    )
}

/// A client trusting `ca`, speaking only `version`.
fn connector(
    ca: &rustls::pki_types::CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs: f64 = env("KSM_BENCH_SECS", 5.0);
    let reps: usize = env("KSM_BENCH_REPS", 3);
    let conns: Vec<usize> = std::env::var("KSM_BENCH_CONNS")
        .ok()
        .map(|s| s.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64]);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = certificates(dir.path());
    let plain = Daemon::start(&[]);
    let tls = Daemon::start(&["--tls-cert", &cert, "--tls-key", &key]);
    let targets = [
        ("plain HTTP", plain.1, Transport::Plain),
        (
            "TLS 1.3",
            tls.1,
            Transport::Tls(connector(&ca, &rustls::version::TLS13)),
        ),
        (
            "TLS 1.2",
            tls.1,
            Transport::Tls(connector(&ca, &rustls::version::TLS12)),
        ),
    ];
    println!("# TLS benchmark ({cores} cores, soft HSM, keep-alive on 127.0.0.1, {secs} s runs, median of {reps})\n");
    println!("| connections | transport | decodes/s | vs plain | p50 | p99 | errors |");
    println!("|---|---|---|---|---|---|---|");
    for &c in &conns {
        // Interleaved: every transport sees the same drift of a shared machine.
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
        for _ in 0..reps.max(1) {
            for (i, (_, addr, transport)) in targets.iter().enumerate() {
                runs[i].push(load(*addr, transport, c, secs));
            }
        }
        let medians: Vec<Run> = runs
            .into_iter()
            .map(|mut r| {
                r.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                r[r.len() / 2]
            })
            .collect();
        for ((name, _, _), r) in targets.iter().zip(&medians) {
            println!(
                "| {c} | {name} | {:.0} | {:.2} | {} | {} | {} |",
                r.rps,
                r.rps / medians[0].rps.max(1.0),
                us(r.p50),
                us(r.p99),
                r.errors
            );
        }
    }
}
