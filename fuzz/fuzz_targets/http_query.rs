//! HTTP query handling: any request line and body that reaches the daemon's router gets one
//! of the documented answers.
//!
//! Why: the decode API faces the network. A panic in a handler drops that connection (hyper
//! catches nothing: the task dies), and an answer outside the contract (a multi-line body, a
//! status validators do not expect) would confuse yubikey-val. The router is the daemon's own
//! (`ksm::daemon::server::router`) over the demo soft HSM and the AEADs of `fixtures/`, so a fuzzed
//! OTP that happens to name a known public id goes all the way to the HSM and back.
//!
//! Input: a flag byte, then the request target up to the first `\n`, then the POST body.
//! Flag bits: 0-1 the method (GET, POST, HEAD, PUT); 2 the daemon's URL set-up (0: the
//! default `/wsapi/decrypt?otp=` with an allow-list of 127.0.0.0/8 and a stats page, 1:
//! pyhsm's prefix form `/yhsm/validate?` where the whole query is the OTP); 3 the peer (0:
//! 127.0.0.1, 1: 192.0.2.7, outside the allow-list); 4 put 4 KiB of `&` before the body (the
//! body cap is 4 KiB). Bits 5-7 are ignored, so seeds use printable flags (`@` is 0x40).
//!
//! Checked: no panic; the status is one of 200, 403, 404, 405, 413, 503; 403 only for a peer
//! outside the allow-list (the daemon's `run` applies the allow-list before a request reaches
//! this router, so here 403 should not occur at all) and 413 only for a POST; and every GET or POST answer of the decode
//! path is exactly one line, ending in `\n`, starting `OK ` or `ERR `.
#![no_main]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use aead_store::FsStore;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, Uri};
use axum::Router;
use ksm::daemon::pool::{Backend, Pool, PoolConfig};
use ksm::daemon::server::{router, with_peer, AppState};
use ksm::settings::http::HttpConfig;
use ksm_fuzz::{device_config, AEAD_STORE, DEMO_DEVICE};
use libfuzzer_sys::fuzz_target;
use otp_core::KeyHandle;
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// One URL set-up of the daemon: its router and the path of its decode API.
struct Site {
    app: Router,
    decode_path: &'static str,
    has_allow_list: bool,
}

struct Harness {
    rt: Runtime,
    sites: [Site; 2],
}

/// The daemon, built once: one soft HSM and one store serve both URL set-ups.
fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let pool = Arc::new(Pool::start(
            vec![Backend::Soft(Box::new(device_config(DEMO_DEVICE)))],
            PoolConfig::default(),
        ));
        let store = Arc::new(
            FsStore::open(AEAD_STORE, vec![KeyHandle(0x20), KeyHandle(0x21)])
                .expect("fixtures/aead-files/store opens"),
        );
        let site = |http: HttpConfig, decode_path, has_allow_list| Site {
            app: router(Arc::new(AppState::new(pool.clone(), store.clone(), http))),
            decode_path,
            has_allow_list,
        };
        let default = HttpConfig {
            allow: vec!["127.0.0.0/8".parse().expect("a network")],
            stats_path: Some("/stats".into()),
            ..HttpConfig::default()
        };
        let prefix_form = HttpConfig {
            serve_path: "/yhsm/validate".into(),
            otp_param: String::new(),
            ..HttpConfig::default()
        };
        Harness {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime"),
            sites: [
                site(default, "/wsapi/decrypt", true),
                site(prefix_form, "/yhsm/validate", false),
            ],
        }
    })
}

const INSIDE: &str = "127.0.0.1:40000";
const OUTSIDE: &str = "192.0.2.7:40000";

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (target, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let method =
        [Method::GET, Method::POST, Method::HEAD, Method::PUT][usize::from(flags & 3)].clone();
    let h = harness();
    let site = &h.sites[usize::from(flags >> 2 & 1)];
    let outside = flags & 8 != 0;
    let peer: SocketAddr = if outside { OUTSIDE } else { INSIDE }
        .parse()
        .expect("an address");
    let mut body = body.to_vec();
    if flags & 16 != 0 {
        body.splice(0..0, std::iter::repeat(b'&').take(4096));
    }

    let on_decode_path = uri
        .path()
        .strip_prefix(site.decode_path)
        .is_some_and(|tail| tail.is_empty() || tail == "/");
    let Ok(req) = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Body::from(body))
    else {
        return;
    };
    let (status, answer) = h.rt.block_on(async {
        let resp = site
            .app
            .clone()
            .oneshot(with_peer(req, peer))
            .await
            .expect("the router is infallible");
        let status = resp.status();
        let answer = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a buffered body");
        (status, answer)
    });

    assert!(
        [200, 403, 404, 405, 413, 503].contains(&status.as_u16()),
        "unexpected status {status}"
    );
    if status == StatusCode::FORBIDDEN {
        assert!(site.has_allow_list && outside, "403 for an allowed peer");
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        assert_eq!(method, Method::POST, "413 without a body");
    }
    if on_decode_path && (method == Method::GET || method == Method::POST) {
        let text = std::str::from_utf8(&answer).expect("a UTF-8 answer");
        let line = text
            .strip_suffix('\n')
            .expect("the answer ends in a newline");
        assert!(!line.contains('\n'), "more than one line: {text:?}");
        assert!(
            line.starts_with("OK ") || line.starts_with("ERR "),
            "not a KSM answer: {text:?}"
        );
    }
});
