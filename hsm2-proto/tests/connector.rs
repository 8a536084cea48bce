//! The connector transport and the client against a stand-in connector on 127.0.0.1: real
//! HTTP, a device that speaks the session protocol (the crate's own device side), and the
//! ways a connector fails (gone, stalled, HTTP 500, no device).
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hsm2_proto::cmd::{self, DecryptOtp, DecryptOtpResponse, Echo, EchoResponse};
use hsm2_proto::codec::Frame;
use hsm2_proto::session::{Challenge, DeviceSession};
use hsm2_proto::transport::{Connector, ConnectorStatus, HttpTimeouts, Transport};
use hsm2_proto::{AuthKey, Client, Error, ErrorCode, ObjectId, OtpAead, OtpCounters};

/// One HTTP request as the stand-in saw it.
struct Request {
    line: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let (mut len, mut content_type) = (0usize, None);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "content-type" => content_type = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        line: line.trim_end().to_string(),
        content_type,
        body,
    })
}

fn respond(w: &mut TcpStream, status: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(head.as_bytes());
    let _ = w.write_all(body);
}

/// Serves `answer` to every request on a fresh port, on keep-alive connections; sends each
/// request line (and content type) down the channel.
fn serve(
    answer: impl Fn(&Request) -> (String, Vec<u8>) + Send + Sync + 'static,
) -> (String, mpsc::Receiver<(String, Option<String>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let answer = std::sync::Arc::new(answer);
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (tx, answer) = (tx.clone(), answer.clone());
            thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                while let Some(req) = read_request(&mut r) {
                    let _ = tx.send((req.line.clone(), req.content_type.clone()));
                    let (status, body) = answer(&req);
                    respond(&mut w, &status, &body);
                }
            });
        }
    });
    (url, rx)
}

/// Short enough that the test of a connector that never answers is quick, long enough that
/// a stand-in slowed by a loaded 2-core machine (the whole suite runs beside it) still answers.
const ANSWER: Duration = Duration::from_secs(2);

fn quick() -> HttpTimeouts {
    HttpTimeouts {
        connect: Duration::from_secs(2),
        answer: ANSWER,
    }
}

/// A device behind the stand-in: one session, authentication key 1 = `password`; answers
/// Echo and Decrypt OTP (counters 1/1/1/1) inside it, anything else with invalid-command.
fn device() -> impl Fn(&Request) -> (String, Vec<u8>) + Send + Sync {
    let session = std::sync::Mutex::new(None::<DeviceSession>);
    move |req| {
        if req.line != "POST /connector/api HTTP/1.1" {
            return (
                "200 OK".into(),
                b"status=OK\nserial=*\nversion=3.0.4\n".to_vec(),
            );
        }
        let frame = Frame::parse(&req.body).unwrap();
        let mut slot = session.lock().unwrap();
        let answer = match frame.cmd() {
            0x03 => {
                let create: cmd::CreateSession = cmd::decode_request(&frame).unwrap();
                let key = AuthKey::from_password(b"password");
                let (s, resp) = DeviceSession::create(
                    hsm2_proto::session::SessionId(3),
                    &key,
                    &create,
                    Challenge::random(),
                );
                *slot = Some(s);
                cmd::encode_response::<cmd::CreateSession>(&resp).unwrap()
            }
            0x04 => match slot.as_mut().map(|s| s.authenticate(&frame)) {
                Some(Ok(())) => Frame::parse(&[0x84, 0, 0]).unwrap(),
                _ => cmd::error_frame(ErrorCode::AuthenticationFailed),
            },
            0x05 => {
                let s = slot.as_mut().unwrap();
                let inner = s.open(&frame).unwrap();
                let reply = match inner.cmd() {
                    0x01 => cmd::encode_response::<Echo>(&EchoResponse {
                        data: inner.data().to_vec(),
                    })
                    .unwrap(),
                    0x60 => cmd::encode_response::<DecryptOtp>(&DecryptOtpResponse {
                        counters: OtpCounters {
                            use_ctr: 1,
                            session_ctr: 1,
                            ts_high: 1,
                            ts_low: 1,
                        },
                    })
                    .unwrap(),
                    0x40 => Frame::parse(&[0xc0, 0, 0]).unwrap(),
                    _ => cmd::error_frame(ErrorCode::InvalidCommand),
                };
                s.seal(&reply).unwrap()
            }
            _ => cmd::error_frame(ErrorCode::InvalidCommand),
        };
        ("200 OK".into(), answer.into_bytes())
    }
}

#[test]
fn a_session_over_http_carries_commands_and_refusals() {
    let (url, seen) = serve(device());
    let connector = Connector::open(&url, quick()).unwrap();
    let mut client = Client::new(connector);
    let key = AuthKey::from_password(b"password");
    let mut s = client.open_session(ObjectId(1), &key).unwrap();
    assert_eq!(s.id().0, 3);
    let echo = client
        .send(
            &mut s,
            &Echo {
                data: b"ksm".to_vec(),
            },
        )
        .unwrap();
    assert_eq!(echo.data, b"ksm");
    let counters = client
        .decrypt_otp(&mut s, ObjectId(0x20), OtpAead([0; 36]), [0; 16])
        .unwrap();
    assert_eq!((counters.use_ctr, counters.session_ctr), (1, 1));
    // A refusal inside the session is the device's error, and the session goes on.
    assert_eq!(
        client.randomize_otp_aead(&mut s, ObjectId(0x20)),
        Err(Error::Device {
            cmd: hsm2_proto::CommandCode::RandomizeOtpAead,
            code: ErrorCode::InvalidCommand
        })
    );
    assert!(client.send(&mut s, &Echo { data: vec![9] }).is_ok());
    client.close_session(s).unwrap();

    let lines: Vec<_> = seen.try_iter().collect();
    assert_eq!(lines[0].0, "GET /connector/status HTTP/1.1");
    assert!(lines[1..]
        .iter()
        .all(|(l, ct)| l == "POST /connector/api HTTP/1.1"
            && ct.as_deref() == Some("application/octet-stream")));
    assert_eq!(lines.len(), 1 + 2 + 5);

    // A wrong password is caught from the card cryptogram, before AuthenticateSession.
    let mut client = Client::new(Connector::new(&url, quick()));
    assert_eq!(
        client
            .open_session(ObjectId(1), &AuthKey::from_password(b"wrong"))
            .unwrap_err(),
        Error::CardCryptogram
    );
}

#[test]
fn status_pages_are_read_and_no_device_is_an_error() {
    let (url, _) = serve(|_| {
        (
            "200 OK".into(),
            b"status=NO_DEVICE\nserial=*\nversion=3.0.4\npid=12\naddress=localhost\nport=12345\n"
                .to_vec(),
        )
    });
    let c = Connector::new(&url, quick());
    let st = c.status().unwrap();
    assert!(!st.has_device());
    assert_eq!(st.version.as_deref(), Some("3.0.4"));
    assert_eq!(st.port.as_deref(), Some("12345"));
    assert_eq!(
        st.render(),
        "status=NO_DEVICE\nserial=*\nversion=3.0.4\npid=12\naddress=localhost\nport=12345\n"
    );
    assert_eq!(ConnectorStatus::parse(&st.render()), st);
    assert_eq!(
        Connector::open(&url, quick()).unwrap_err(),
        Error::NoDevice {
            url: url.clone(),
            status: "NO_DEVICE"
        }
    );
}

#[test]
fn connector_failures_are_typed_and_bounded() {
    // HTTP 500: the connector lost the device.
    let (url, _) = serve(|_| ("500 Internal Server Error".into(), vec![]));
    let mut c = Connector::new(&url, quick());
    let echo = cmd::encode_request(&Echo { data: vec![1] }).unwrap();
    let err = c.exchange(&echo).unwrap_err();
    assert_eq!(err, Error::ConnectorHttp { url, status: 500 });
    assert!(err.is_transport_error());

    // Bytes that are not a frame.
    let (url, _) = serve(|_| ("200 OK".into(), vec![0x81, 0, 9, 1]));
    assert!(matches!(
        Connector::new(&url, quick()).exchange(&echo),
        Err(Error::Frame(_))
    ));

    // A connector that takes the request and never answers: a timeout, on time.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = thread::spawn(move || listener.accept().map(|(s, _)| s));
    let start = Instant::now();
    let err = Connector::new(&url, quick()).exchange(&echo).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_transport_error());
    assert!(
        start.elapsed() < ANSWER + Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    drop(held.join());

    // A connector that is gone: nothing listens on the port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{port}");
    let err = Connector::new(&url, quick()).exchange(&echo).unwrap_err();
    assert!(matches!(err, Error::ConnectorUnreachable { .. }), "{err:?}");
    assert!(err.is_transport_error());

    // A session whose answer never came cannot be used again.
    let (url, _) = serve(device());
    let mut client = Client::new(Connector::new(&url, quick()));
    let mut s = client
        .open_session(ObjectId(1), &AuthKey::from_password(b"password"))
        .unwrap();
    *client.transport_mut() = Connector::new(&format!("http://{port}"), quick());
    assert!(client.send(&mut s, &Echo { data: vec![] }).is_err());
    assert!(!s.is_usable());
    *client.transport_mut() = Connector::new(&url, quick());
    assert_eq!(
        client.send(&mut s, &Echo { data: vec![] }),
        Err(Error::SessionUnusable(3))
    );
}

/// Serves `raw` bytes as the whole answer to the first request on a fresh port.
fn serve_raw(raw: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            if read_request(&mut r).is_some() {
                let _ = w.write_all(raw);
            }
        }
    });
    url
}

#[test]
fn errors_never_quote_what_the_connector_sent() {
    const MARK: &str = "SECRET-FROM-PEER";
    // A status page whose status is not a known one.
    let (url, _) = serve(|_| ("200 OK".into(), format!("status={MARK}\n").into_bytes()));
    let err = Connector::open(&url, quick()).unwrap_err();
    assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(MARK), "{err:?}");

    // Answers that are not HTTP, or HTTP with a broken header or status line.
    let echo = cmd::encode_request(&Echo { data: vec![1] }).unwrap();
    for raw in [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Mark SECRET-FROM-PEER\r\n\r\nx".as_slice(),
        b"HTTP/1.1 200 OK\r\nContent-Length: SECRET-FROM-PEER\r\n\r\nx",
        b"HTTP/1.1 2000 SECRET-FROM-PEER\r\nContent-Length: 0\r\n\r\n",
        b"SECRET-FROM-PEER SECRET-FROM-PEER SECRET-FROM-PEER\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: SECRET-FROM-PEER\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nx",
        b"HTTP/1.1 301 Moved\r\nLocation: http://SECRET-FROM-PEER/\r\nContent-Length: 0\r\n\r\n",
    ] {
        let url = serve_raw(raw);
        let errs = [
            Connector::new(&url, quick()).exchange(&echo).err(),
            Connector::new(&url, quick()).status().err(),
        ];
        for err in errs.into_iter().flatten() {
            assert!(
                !format!("{err} {err:?}").contains(MARK),
                "{}: {err:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
