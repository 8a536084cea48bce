//! `ksm serve` over TLS, as validators reach it: the real daemon, real `curl` (what
//! yubikey-val calls its KSM URLs with, its `--cacert`, `--cert` and `--key` being the
//! `CURLOPT_CAINFO`, `CURLOPT_SSLCERT` and `CURLOPT_SSLKEY` of `__YKVAL_KSM_CURL_OPTS__`),
//! certificates made here with rcgen, OTPs from Yubico's `ykgenerate`. Where a test needs a
//! connection that stays open across a reload, the client is rustls over a plain socket.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::vector_otp;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

const KSM: &str = env!("CARGO_BIN_EXE_ksm");
const CURL: &str = "/usr/bin/curl";

/// curl's exit code for a server certificate it cannot verify.
const CURL_PEER_FAILED_VERIFICATION: i32 = 60;

/// The answer to [`otp`]`(counter)`.
fn ok_line(counter: u16) -> String {
    format!("OK counter={counter:04x} low=4242 high=17 use=01\n")
}

/// A fresh `ykgenerate` OTP of the first fixture YubiKey (served by the demo).
fn otp(counter: u16) -> String {
    vector_otp(0, counter, 1)
}

/// A certificate authority made for the test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// What a certificate is for.
#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and its key (PEM), valid now, or long expired.
    fn issue(&self, role: Role, expired: bool) -> (String, String) {
        let names = match role {
            Role::Server => vec!["localhost".to_string(), "127.0.0.1".to_string()],
            Role::Client => vec!["val1.example".to_string()],
        };
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` with `mode`; returns the path.
fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A server certificate of `ca` as the daemon's files.
fn server_files(dir: &Path, ca: &Ca, expired: bool) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.issue(Role::Server, expired);
    (
        write(dir, "server.crt", &cert, 0o644),
        write(dir, "server.key", &key, 0o600),
    )
}

/// A client certificate of `ca` as curl's files (named `name`).
fn client_files(dir: &Path, ca: &Ca, name: &str, expired: bool) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.issue(Role::Client, expired);
    (
        write(dir, &format!("{name}.crt"), &cert, 0o644),
        write(dir, &format!("{name}.key"), &key, 0o600),
    )
}

/// What the daemon logged so far, and a way to wait for a line.
#[derive(Default)]
struct Log {
    lines: Mutex<Vec<String>>,
    more: Condvar,
}

impl Log {
    /// Waits (at most 30 s, for a loaded machine) until `n` lines contain `needle`.
    fn wait_for(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = self.lines.lock().unwrap();
        loop {
            if lines.iter().filter(|l| l.contains(needle)).count() >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?} in the log:\n{}",
                lines.join("\n")
            );
            lines = self.more.wait_timeout(lines, left).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// `ksm -v serve --demo` with `args`, its log collected as it comes.
struct Serve {
    child: Child,
    addr: SocketAddr,
    scheme: String,
    log: Arc<Log>,
}

impl Serve {
    fn start(args: &[&std::ffi::OsStr]) -> Serve {
        let mut child = Command::new(KSM)
            .args(["-v", "serve", "--demo", "--port", "0", "--socket", "none"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let log = Arc::new(Log::default());
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lines.lock().unwrap().push(l);
                sink.more.notify_all();
            }
        });
        // "ksm listening on https://127.0.0.1:PORT/wsapi/decrypt (…)"
        let url = line
            .split_whitespace()
            .find(|w| w.contains("://"))
            .unwrap_or_else(|| panic!("no listening line: {line:?}"));
        let (scheme, rest) = url.split_once("://").unwrap();
        let addr = rest.split('/').next().unwrap().parse().unwrap();
        Serve {
            scheme: scheme.to_string(),
            child,
            addr,
            log,
        }
    }

    /// `args` as flags.
    fn with(args: &[&str]) -> Serve {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Serve::start(&args)
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    fn decode_url(&self, otp: &str) -> String {
        self.url(&format!("/wsapi/decrypt?otp={otp}"))
    }

    fn hangup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl with `args` (bounded by its own `--max-time`); its exit code and body.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new(CURL)
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn curl_with_the_ca_gets_the_same_answer_as_over_http_and_without_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, false);
    let https = Serve::with(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    let http = Serve::with(&[]);
    assert_eq!(
        (https.scheme.as_str(), http.scheme.as_str()),
        ("https", "http")
    );

    // Golden: the same OTP, the same line, over both.
    let otp = otp(1);
    let over_http = curl(&[&http.decode_url(&otp)]);
    let over_https = curl(&["--cacert", path(&ca_file), &https.decode_url(&otp)]);
    assert_eq!(over_http, (0, ok_line(1)));
    assert_eq!(over_https, over_http);

    // Both versions offered; a name in the certificate works as its address does.
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let name = format!(
            "https://localhost:{}/wsapi/decrypt?otp={otp}",
            https.addr.port()
        );
        let args = [&version[..], &["--cacert", path(&ca_file), &name]].concat();
        assert_eq!(curl(&args), (0, ok_line(1)), "{version:?}");
    }
    // The other answers too, and the other pages.
    assert_eq!(
        curl(&["--cacert", path(&ca_file), &https.decode_url("nonsense")]),
        (0, "ERR Invalid OTP format\n".to_string())
    );
    let (code, health) = curl(&["--cacert", path(&ca_file), &https.url("/health")]);
    assert_eq!(code, 0);
    assert!(health.contains("\"status\":\"ok\""), "{health}");

    // Without the CA, curl does not trust the daemon (and sends no OTP): 60, or 77 on a
    // machine without a CA bundle at all.
    let (code, body) = curl(&[&https.decode_url(&otp)]);
    assert!(matches!(code, CURL_PEER_FAILED_VERIFICATION | 77), "{code}");
    assert_eq!(body, "");
    // Plain HTTP to the TLS port is not served.
    let (code, body) = curl(&[&https.decode_url(&otp).replace("https:", "http:")]);
    assert_ne!(code, 0);
    assert!(!body.starts_with("OK"), "{body}");
}

#[test]
fn under_mutual_tls_only_validators_with_a_valid_certificate_of_the_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm server CA");
    let validators = Ca::new("validators CA");
    let stranger = Ca::new("some other CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let val_ca = write(dir.path(), "val-ca.pem", &validators.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, false);
    let ksm = Serve::with(&[
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--tls-client-ca",
        path(&val_ca),
    ]);
    let otp = otp(2);
    let url = ksm.decode_url(&otp);
    let with = |client: Option<&(PathBuf, PathBuf)>| {
        let mut args = vec!["--cacert", path(&ca_file)];
        if let Some((c, k)) = client {
            args.extend(["--cert", path(c), "--key", path(k)]);
        }
        args.push(&url);
        curl(&args)
    };

    let good = client_files(dir.path(), &validators, "val1", false);
    assert_eq!(with(Some(&good)), (0, ok_line(2)));

    let expired = client_files(dir.path(), &validators, "val-old", true);
    let foreign = client_files(dir.path(), &stranger, "val-x", false);
    for (client, what) in [
        (None, "no certificate"),
        (Some(&expired), "an expired certificate"),
        (Some(&foreign), "a certificate of another CA"),
    ] {
        let (code, body) = with(client);
        assert_ne!(code, 0, "{what}: {body}");
        assert_eq!(body, "", "{what}");
    }
    // Each refusal is logged, saying why; the good validator is still served.
    ksm.log.wait_for("TLS client certificate refused", 3);
    let log = ksm.log.text();
    assert!(log.to_lowercase().contains("expired"), "{log}");
    assert_eq!(with(Some(&good)), (0, ok_line(2)));
}

#[test]
fn curl_refuses_an_expired_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, true);
    let ksm = Serve::with(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    let (code, body) = curl(&["--cacert", path(&ca_file), &ksm.decode_url(&otp(3))]);
    assert_eq!((code, body.as_str()), (CURL_PEER_FAILED_VERIFICATION, ""));
    // The operator learns why validators go elsewhere.
    ksm.log.wait_for("TLS handshake refused by the client", 1);
}

/// A TLS client over one socket, kept open: rustls, trusting `ca`.
struct KeptConnection(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl KeptConnection {
    fn open(addr: SocketAddr, ca: &Ca) -> KeptConnection {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        KeptConnection(rustls::StreamOwned::new(conn, sock))
    }

    /// One keep-alive GET; the body of its answer.
    fn get(&mut self, path: &str) -> String {
        write!(self.0, "GET {path} HTTP/1.1\r\nHost: ksm\r\n\r\n").unwrap();
        self.0.flush().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("content-length");
        let mut body = vec![0u8; len];
        self.0.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }
}

#[test]
fn sighup_reloads_the_certificate_keeps_open_connections_and_survives_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old_ca_file = write(dir.path(), "old-ca.pem", &old_ca.pem(), 0o644);
    let new_ca_file = write(dir.path(), "new-ca.pem", &new_ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &old_ca, false);
    let old_key = std::fs::read_to_string(&key).unwrap();
    let ksm = Serve::with(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    let decode =
        |ca: &Path, counter: u16| curl(&["--cacert", path(ca), &ksm.decode_url(&otp(counter))]);
    assert_eq!(decode(&old_ca_file, 4), (0, ok_line(4)));
    let mut kept = KeptConnection::open(ksm.addr, &old_ca);
    assert_eq!(
        kept.get(&format!("/wsapi/decrypt?otp={}", otp(5))),
        ok_line(5)
    );

    // A renewal half done: the new certificate, the old key. Refused; the old pair serves.
    let (new_cert, new_key) = new_ca.issue(Role::Server, false);
    std::fs::write(&cert, &new_cert).unwrap();
    ksm.hangup();
    ksm.log.wait_for("the TLS files did not load", 1);
    assert_eq!(decode(&old_ca_file, 6), (0, ok_line(6)));

    // Its key too: new handshakes get the new certificate.
    std::fs::write(&key, &new_key).unwrap();
    ksm.hangup();
    ksm.log.wait_for("TLS certificate reloaded", 1);
    assert_eq!(decode(&new_ca_file, 7), (0, ok_line(7)));
    assert_eq!(decode(&old_ca_file, 8).0, CURL_PEER_FAILED_VERIFICATION);

    // The connection opened before both reloads was not dropped.
    assert_eq!(
        kept.get(&format!("/wsapi/decrypt?otp={}", otp(9))),
        ok_line(9)
    );
    // Nothing of either key reached the log.
    let log = ksm.log.text();
    for pem in [&new_key, &old_key] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!log.contains(line), "{log}");
        }
    }
}

/// True once the daemon has closed `sock` (EOF or reset); false if it is still open after
/// the 30 s read timeout.
fn closed_by_daemon(sock: &mut TcpStream) -> bool {
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    match sock.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The first bytes of a TLS ClientHello record (a handshake record announcing 512 bytes),
/// and then nothing.
const HANDSHAKE_BEGUN: [u8; 5] = [0x16, 0x03, 0x01, 0x02, 0x00];

#[test]
fn a_handshake_never_finished_is_cut_off_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let (cert, key) = server_files(dir.path(), &ca, false);
    let ksm = Serve::with(&[
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--header-timeout",
        "0.5",
    ]);
    let mut silent = TcpStream::connect(ksm.addr).unwrap();
    let mut begun = TcpStream::connect(ksm.addr).unwrap();
    begun.write_all(&HANDSHAKE_BEGUN).unwrap();
    assert!(
        closed_by_daemon(&mut silent),
        "a silent client kept its slot"
    );
    assert!(
        closed_by_daemon(&mut begun),
        "a stalled handshake kept its slot"
    );
}

#[test]
fn when_every_slot_holds_an_unfinished_handshake_a_validator_still_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, false);
    // A header timeout far beyond the test: only making room can free a slot.
    let ksm = Serve::with(&[
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--max-connections",
        "2",
        "--header-timeout",
        "300",
    ]);
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(ksm.addr).unwrap();
            s.write_all(&HANDSHAKE_BEGUN).unwrap();
            s
        })
        .collect();
    assert_eq!(
        curl(&["--cacert", path(&ca_file), &ksm.decode_url(&otp(10))]),
        (0, ok_line(10))
    );
    // The one that waited longest made room.
    assert!(closed_by_daemon(&mut stalled[0]));
    let (_, health) = curl(&["--cacert", path(&ca_file), &ksm.url("/health")]);
    assert!(health.contains("\"evicted\":"), "{health}");
    assert!(!health.contains("\"evicted\":0"), "{health}");
}

#[test]
fn a_key_file_others_may_read_stops_the_daemon_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let (cert, key) = server_files(dir.path(), &ca, false);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(KSM)
        .args([
            "serve",
            "--demo",
            "--port",
            "0",
            "--socket",
            "none",
            "--tls-cert",
        ])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("chmod 600") && err.contains(path(&key)),
        "{err}"
    );
    let pem = std::fs::read_to_string(&key).unwrap();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!err.contains(line), "{err}");
    }
    assert!(out.stdout.is_empty(), "it must not have started listening");
}

#[test]
fn a_client_outside_the_allow_list_is_closed_before_its_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, false);
    let ksm = Serve::with(&[
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
        "--allow",
        "192.0.2.0/24",
    ]);
    let (code, body) = curl(&["--cacert", path(&ca_file), &ksm.decode_url(&otp(11))]);
    assert_ne!(code, 0);
    assert_eq!(body, "");
    ksm.log.wait_for(
        "TLS connection from a client outside the allow-list closed",
        1,
    );
    // Not one byte of a handshake was answered.
    let mut s = TcpStream::connect(ksm.addr).unwrap();
    s.write_all(&HANDSHAKE_BEGUN).unwrap();
    assert!(closed_by_daemon(&mut s));
}

#[test]
fn other_tls_files_in_ksm_toml_wait_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("ksm test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem(), 0o644);
    let (cert, key) = server_files(dir.path(), &ca, false);
    let toml = |cert: &Path, key: &Path| format!("tls-cert = {cert:?}\ntls-key = {key:?}\n");
    let conf = write(dir.path(), "ksm.toml", &toml(&cert, &key), 0o644);
    let ksm = Serve::with(&["--config", path(&conf)]);
    assert_eq!(ksm.scheme, "https");

    // Reloaded as they are: no complaint.
    ksm.hangup();
    ksm.log.wait_for("TLS certificate reloaded", 1);
    assert!(
        !ksm.log.text().contains("takes a restart"),
        "{}",
        ksm.log.text()
    );

    // Other files named: said so, and the ones in use stay.
    std::fs::write(&conf, toml(&dir.path().join("new.crt"), &key)).unwrap();
    ksm.hangup();
    ksm.log.wait_for("that takes a restart", 1);
    assert_eq!(
        curl(&["--cacert", path(&ca_file), &ksm.decode_url(&otp(12))]),
        (0, ok_line(12))
    );
}
