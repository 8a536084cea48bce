//! The connector is never reached through a proxy named in the environment. Its own test
//! binary with one test: the environment is process-wide, so no other test sees it changed.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::net::TcpListener;
use std::time::Duration;

use hsm2_proto::cmd::Echo;
use hsm2_proto::emulator::{ConnectorEmulator, DeviceConfig};
use hsm2_proto::transport::{Connector, HttpTimeouts};
use hsm2_proto::{AuthKey, Client, ObjectId};

#[test]
fn a_proxy_in_the_environment_is_not_used() {
    // A port nothing listens on: a request sent to this "proxy" fails.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = format!("http://{dead}");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy);
    }
    for var in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(var);
    }

    let emu =
        ConnectorEmulator::start("127.0.0.1:0".parse().unwrap(), &DeviceConfig::factory()).unwrap();
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(2),
        answer: Duration::from_secs(2),
    };
    let mut client = Client::new(Connector::open(&emu.url(), timeouts).unwrap());
    let mut s = client
        .open_session(ObjectId(1), &AuthKey::from_password(b"password"))
        .unwrap();
    let answer = client.send(&mut s, &Echo { data: vec![7; 3] }).unwrap();
    assert_eq!(answer.data, vec![7; 3]);
}
