//! The daemon harness shared by the end-to-end tests: `ksm::daemon::serve::serve` on 127.0.0.1:0 in
//! a thread of its own, stopped on drop.
#![allow(clippy::unwrap_used)] // tests and benches may unwrap: a panic is the failure report
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::*;
use hsm_proto::KeyHandle;
use ksm::settings::http::HttpConfig;
use ksm::settings::serve::Settings;

pub struct Daemon {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    pub fn start(s: Settings) -> Daemon {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                ksm::daemon::serve::serve(s, listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("daemon");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("daemon started");
        // Serving (and its sharing socket bound) once /health answers at all.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while get(addr, "/health").status == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "daemon never answered"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn decode(&self, otp: &str) -> Answer {
        get(self.addr, &format!("/wsapi/decrypt?otp={otp}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn settings(devices: Vec<PathBuf>, aead_dir: &Path, reqtimeout: Duration) -> Settings {
    Settings {
        demo: devices.is_empty(),
        devices,
        aead_dir: aead_dir.to_path_buf(),
        demo_aeads: None,
        key_handles: vec![KeyHandle(0x20).into(), KeyHandle(0x21).into()],
        http: HttpConfig {
            reqtimeout,
            ..HttpConfig::default()
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        pid_file: None,
        socket: None,
        queue_depth: 64,
        socket_policy: Default::default(),
        reload: None,
        nonce_policy: aead_store::NoncePolicy::PublicId,
        db: None,
        val: None,
        hsm2: Default::default(),
    }
}

/// Decodes `otp` until the answer is `body` (status 200), then asserts it: a file changed on
/// disk reaches a cached daemon through its watch a moment later, and on a loaded machine
/// that moment can be long. Gives up (and fails) after 5 s.
pub fn assert_answer_soon(d: &Daemon, otp: &str, body: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let a = d.decode(otp);
        if a.body == format!("{body}\n") || std::time::Instant::now() > deadline {
            assert_answer(&a, 200, body);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn assert_answer(a: &Answer, status: u16, body: &str) {
    assert_eq!(
        (a.status, a.body.as_str()),
        (status, format!("{body}\n").as_str())
    );
}

/// Makes pyhsm's table in the database at `url` and fills it with the six AEADs of
/// `fixtures/aead-files/store`, as `ksm store db-import` does.
pub fn fill_from_fixtures(url: &str) {
    use aead_store::{DbConfig, DbStore, DbUrl, FsStore};
    let db = DbStore::open(DbConfig::new(DbUrl::parse(url).unwrap(), vec![])).unwrap();
    db.init().unwrap();
    let files = FsStore::open(test_support::fixtures().join("aead-files/store"), vec![]).unwrap();
    let c = ksm::tools::store_cmd::copy(&files, &db, &mut std::io::sink()).unwrap();
    assert_eq!(c.copied, 6);
}
