//! One verification from request to answer, in yubikey-val 2.41's order: the parameters,
//! the client (unknown: `NO_SUCH_CLIENT`; disabled: `OPERATION_NOT_ALLOWED`), the
//! signature, the decode, the YubiKey's row (revoked: `BAD_OTP`), then the counter write
//! that alone may answer `OK`.

use std::future::Future;
use std::time::Instant;

use otp_core::{Otp, OtpCounters};

use crate::counter::{clock_check, ClockCheck, Verdict};
use crate::db::{Counters, Recorded, ValDb};
use crate::request::{Params, Protocol, Request};
use crate::response::{answer, Extra};
use crate::sign::{verify as signature_ok, ClientKey};
use crate::Status;

/// What decoding an OTP came to (the caller's KSM: its own HSMs, or remote KSMs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Decoded: the OTP's counters.
    Counters(OtpCounters),
    /// Not an OTP any key decodes (unknown public id, wrong key, tampered): `BAD_OTP`.
    BadOtp,
    /// The KSM could not be asked (HSM or AEAD store down, timeout): `BACKEND_ERROR`.
    Unavailable(String),
}

/// A verification's answer and what the log and metrics say of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The status answered.
    pub status: Status,
    /// The answer's text.
    pub body: String,
    /// The client id the request named, once well-formed (for the log: it may name no
    /// client at all).
    pub named_client: Option<i64>,
    /// The client id, once found in `clients`: only these may label a metric, as ids a
    /// request makes up (while the database is down, say) would grow the series without
    /// bound.
    pub client: Option<i64>,
    /// The OTP's public id, once the OTP was well-formed.
    pub public_id: Option<String>,
    /// Why a `BACKEND_ERROR` (for the log; never a key or signature).
    pub why: Option<String>,
    /// The clock check of an accepted OTP, when it applied.
    pub clock: Option<ClockCheck>,
}

/// Answers an OTP with `OK` at most once: `sl` is the share of the validators that have the
/// new counters, and with one database every validator reads them.
const SL_ALL: u8 = 100;

struct Reply {
    named_client: Option<i64>,
    client: Option<i64>,
    public_id: Option<String>,
    key: ClientKey,
}

impl Reply {
    fn say(&self, status: Status, extra: &Extra) -> Outcome {
        Outcome {
            status,
            body: answer(status, extra, &self.key, &crate::response::now()),
            named_client: self.named_client,
            client: self.client,
            public_id: self.public_id.clone(),
            why: None,
            clock: None,
        }
    }

    fn backend(&self, why: String) -> Outcome {
        Outcome {
            why: Some(why),
            ..self.say(Status::BackendError, &Extra::default())
        }
    }
}

/// Verifies the request `query` on `protocol`'s path against `db`, decoding through
/// `decode`, all of it by `deadline`: the client lookup, the decode and the counter write
/// share that one budget (each given a fresh timeout, a request could take several), and a
/// step that has not finished by it answers `BACKEND_ERROR`.
pub async fn verify<F, Fut>(
    db: &ValDb,
    protocol: Protocol,
    query: &str,
    deadline: Instant,
    decode: F,
) -> Outcome
where
    F: FnOnce(Otp) -> Fut,
    Fut: Future<Output = Decoded>,
{
    let mut reply = Reply {
        named_client: None,
        client: None,
        public_id: None,
        key: ClientKey::empty(),
    };
    let req = match Request::parse(protocol, Params::parse(query)) {
        Ok(r) => r,
        Err(refused) => return reply.say(refused.status, &Extra::default()),
    };
    reply.named_client = Some(req.id);
    let client = match db.client_until(req.id, deadline).await {
        Ok(Some(c)) => {
            reply.client = Some(c.id);
            c
        }
        Ok(None) => return reply.say(Status::NoSuchClient, &Extra::default()),
        Err(e) => return reply.backend(e.to_string()),
    };
    let Some(key) = ClientKey::from_base64(&client.secret) else {
        return reply.backend(format!("the secret of client {} is not base64", client.id));
    };
    reply.key = key;
    if !client.active {
        return reply.say(Status::OperationNotAllowed, &Extra::default());
    }
    if let Some(h) = &req.h {
        if !signature_ok(&req.params.signed(), &reply.key, h) {
            return reply.say(Status::BadSignature, &Extra::default());
        }
    }
    // Protocol 1.0 has no nonce: a random one stands for it, so that the same request
    // again is never mistaken for a replayed request.
    let nonce = match &req.nonce {
        Some(n) => n.clone(),
        None => random_nonce(),
    };
    let echo = match protocol {
        Protocol::V2 => Extra {
            otp: Some(req.otp.clone()),
            nonce: Some(nonce.clone()),
            ..Extra::default()
        },
        Protocol::V1 => Extra::default(),
    };
    let Ok(otp) = Otp::parse(&req.otp) else {
        return reply.say(Status::BadOtp, &Extra::default());
    };
    let public_id = otp.public_id.as_str().to_string();
    reply.public_id = Some(public_id.clone());
    let decoded = match tokio::time::timeout_at(deadline.into(), decode(otp)).await {
        Ok(Decoded::Counters(c)) => c,
        Ok(Decoded::BadOtp) => return reply.say(Status::BadOtp, &Extra::default()),
        Ok(Decoded::Unavailable(why)) => return reply.backend(format!("KSM: {why}")),
        Err(_) => return reply.backend("KSM: no answer in time".into()),
    };
    let counters = Counters {
        counter: i64::from(decoded.use_ctr),
        session_use: i64::from(decoded.session_ctr),
    };
    let recorded = db
        .record_until(
            &public_id,
            counters,
            decoded.ts_high,
            decoded.ts_low,
            &nonce,
            deadline,
        )
        .await;
    let previous = match recorded {
        Err(e) => return reply.backend(e.to_string()),
        Ok(Recorded::Refused(Verdict::Inactive, _)) => {
            return reply.say(Status::BadOtp, &Extra::default())
        }
        Ok(Recorded::Refused(Verdict::ReplayedRequest, _)) => {
            return reply.say(Status::ReplayedRequest, &echo)
        }
        Ok(Recorded::Refused(_, _)) => return reply.say(Status::ReplayedOtp, &echo),
        Ok(Recorded::Accepted(a)) => a.previous,
    };
    let clock = clock_check(
        &previous,
        counters,
        decoded.ts_high,
        decoded.ts_low,
        crate::db::unix_now(),
    );
    let mut extra = echo;
    if protocol == Protocol::V2 {
        extra.sl = Some(SL_ALL);
    }
    if req.timestamp {
        extra.timestamp = Some((
            (u32::from(decoded.ts_high) << 16) | u32::from(decoded.ts_low),
            decoded.use_ctr,
            decoded.session_ctr,
        ));
    }
    Outcome {
        clock,
        ..reply.say(Status::Ok, &extra)
    }
}

/// 32 random hex digits (yubikey-val's stand-in nonce is an MD5 in hex).
fn random_nonce() -> String {
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
