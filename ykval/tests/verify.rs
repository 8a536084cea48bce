//! `ykval::verify` against a real (SQLite) counter database: one deadline bounds the whole
//! verification, the client lookup, the decode and the counter write together.
#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::time::{Duration, Instant};

use aead_store::DbUrl;
use otp_core::OtpCounters;
use ykval::db::NewClient;
use ykval::{Decoded, Protocol, Status, ValDb, ValDbConfig};

const PUBLIC_ID: &str = "cccccccccccb";

/// A request of client `id` for an OTP of [`PUBLIC_ID`] (the decode below ignores its
/// ciphertext).
fn query(id: i64, nonce: &str) -> String {
    format!("id={id}&otp={PUBLIC_ID}{}&nonce={nonce}", "d".repeat(32))
}

fn counters(use_ctr: u16) -> Decoded {
    Decoded::Counters(OtpCounters {
        use_ctr,
        session_ctr: 0,
        ts_high: 0,
        ts_low: 1,
    })
}

/// The deadline is the request's, not one per step: a request past it before the client
/// lookup, or whose decode used all of it, answers `BACKEND_ERROR` and accepts no OTP, while
/// each step alone would have been within the database's own timeout (2 s). (Seen failing
/// with a fresh timeout per step: both were `OK`.)
#[tokio::test]
async fn one_deadline_bounds_lookup_decode_and_write_together() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:///{}", dir.path().join("val.db").display());
    let db = ValDb::open(&ValDbConfig::new(DbUrl::parse(&url).unwrap())).unwrap();
    db.init().await.unwrap();
    let id = db
        .insert_client(&NewClient::default(), "c2VjcmV0c2VjcmV0c2VjcmV0")
        .await
        .unwrap();

    // Past the deadline before the lookup: nothing asked of the KSM, nothing written.
    let past = Instant::now();
    let v = ykval::verify(
        &db,
        Protocol::V2,
        &query(id, "nonce0000000000000"),
        past,
        |_| async { counters(5) },
    )
    .await;
    assert_eq!(v.status, Status::BackendError, "{}", v.body);
    assert!(db.yubikey(PUBLIC_ID).await.unwrap().is_none());

    // A decode that answers only at the deadline leaves the write no time: no OK.
    let deadline = Instant::now() + Duration::from_millis(300);
    let v = ykval::verify(
        &db,
        Protocol::V2,
        &query(id, "nonce1111111111111"),
        deadline,
        |_| async move {
            tokio::time::sleep_until(deadline.into()).await;
            counters(6)
        },
    )
    .await;
    assert_eq!(v.status, Status::BackendError, "{}", v.body);
    // The new-key row may have been made (the insert was under way at the deadline), but
    // never advanced to the OTP's counters.
    let row = db.yubikey(PUBLIC_ID).await.unwrap();
    assert!(
        matches!(
            &row,
            None | Some(ykval::Yubikey {
                counters: ykval::Counters { counter: -1, .. },
                ..
            })
        ),
        "{row:?}"
    );

    // Time enough: OK, recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = ykval::verify(
        &db,
        Protocol::V2,
        &query(id, "nonce2222222222222"),
        deadline,
        |_| async { counters(7) },
    )
    .await;
    assert_eq!(v.status, Status::Ok, "{}", v.body);
    assert_eq!(
        db.yubikey(PUBLIC_ID)
            .await
            .unwrap()
            .unwrap()
            .counters
            .counter,
        7
    );
}
