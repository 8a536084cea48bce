//! The YK-VAL verify API (`--val-db-url`): `GET /wsapi/2.0/verify` and `/wsapi/verify`
//! on the decode API's listener, with its TLS and allow-list.
//!
//! The protocol and the counter rules are `ykval`'s; this module gives them a way to decode
//! (this daemon's own HSMs and AEAD store, no HTTP hop; or the remote KSMs of
//! `--val-ksm-url`, yubikey-val's `otp2ksmurls`, asked together, the first `OK` winning),
//! logs one line per verification (client id, public id, status; never a key, signature or
//! the OTP's token part) and counts them for `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use otp_core::{Otp, OtpCounters};
use tracing::{info, warn};
use ykval::{Decoded, Outcome as Verified, Protocol, Status, ValDb};

use crate::daemon::answer::Outcome;
use crate::daemon::metrics::BUCKETS;

/// The validation server: its counter database, where OTPs are decoded, and its counts.
pub struct Validator {
    /// The counter database (yubikey-val's tables).
    pub db: ValDb,
    /// `--val-ksm-url`: remote KSMs' decrypt URLs; empty: this daemon's own HSMs.
    remote: Vec<String>,
    /// The HTTP client for `remote`.
    agent: ureq::Agent,
    /// Verifications by client and status, and their latency.
    pub metrics: ValMetrics,
}

/// Longest KSM answer read (`OK counter=… low=… high=… use=…` is 41 bytes).
const MAX_KSM_ANSWER: u64 = 256;

impl Validator {
    /// A validator on `db`, decoding with `remote` KSMs if any, each asked for at most
    /// `timeout`.
    pub fn new(db: ValDb, remote: Vec<String>, timeout: Duration) -> Validator {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .build()
            .into();
        Validator {
            db,
            remote,
            agent,
            metrics: ValMetrics::default(),
        }
    }

    /// Decodes `otp` with this daemon's HSMs (`local`), or the remote KSMs.
    async fn decode<F, Fut>(&self, otp: Otp, local: F) -> Decoded
    where
        F: FnOnce(Otp) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        if self.remote.is_empty() {
            return decoded(&local(otp).await);
        }
        self.decode_remote(otp.to_modhex()).await
    }

    /// Asks every remote KSM at once; the first `OK` wins. None answering `OK`: `BAD_OTP` if
    /// one of them answered (an `ERR` line about the OTP), else the KSMs are unavailable.
    async fn decode_remote(&self, otp: String) -> Decoded {
        let mut asks = tokio::task::JoinSet::new();
        for url in &self.remote {
            let (agent, url) = (self.agent.clone(), format!("{url}{otp}"));
            asks.spawn_blocking(move || ask_ksm(&agent, &url));
        }
        let mut answered = false;
        let mut why = String::from("no KSM answered");
        while let Some(r) = asks.join_next().await {
            match r {
                Ok(Ok(Some(c))) => return Decoded::Counters(c),
                Ok(Ok(None)) => answered = true,
                Ok(Err(e)) => why = e,
                Err(e) => why = e.to_string(),
            }
        }
        match answered {
            true => Decoded::BadOtp,
            false => Decoded::Unavailable(why),
        }
    }
}

/// One remote KSM's answer: the counters of an `OK`, `None` for another answer of 200 (an
/// `ERR` line about the OTP), an error when it could not be asked or answered 503.
fn ask_ksm(agent: &ureq::Agent, url: &str) -> Result<Option<OtpCounters>, String> {
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_KSM_ANSWER)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("KSM answered HTTP {status}"));
    }
    Ok(parse_ksm_ok(&body))
}

/// The counters of a KSM's `OK counter=%04x low=%04x high=%02x use=%02x` line (what
/// yubikey-val's `sscanf` reads), `None` for any other answer.
fn parse_ksm_ok(body: &str) -> Option<OtpCounters> {
    let rest = body.trim_end().strip_prefix("OK ")?;
    let mut f = rest.split(' ');
    let mut field = |name: &str, digits: usize| {
        let v = f.next()?.strip_prefix(name)?.strip_prefix('=')?;
        (v.len() == digits).then(|| u32::from_str_radix(v, 16).ok())?
    };
    let use_ctr = u16::try_from(field("counter", 4)?).ok()?;
    let ts_low = u16::try_from(field("low", 4)?).ok()?;
    let ts_high = u8::try_from(field("high", 2)?).ok()?;
    let session_ctr = u8::try_from(field("use", 2)?).ok()?;
    f.next().is_none().then_some(OtpCounters {
        use_ctr,
        session_ctr,
        ts_high,
        ts_low,
    })
}

/// What the daemon's decode answer means to the validator: its counters; an OTP the KSM
/// cannot decode (the answers of 200) is `BAD_OTP`; an HSM or store that cannot serve (the
/// answers of 503) is `BACKEND_ERROR`.
fn decoded(outcome: &Outcome) -> Decoded {
    match outcome {
        Outcome::Ok(c) => Decoded::Counters(*c),
        o if o.row().status == StatusCode::OK => Decoded::BadOtp,
        o => Decoded::Unavailable(o.label().to_string()),
    }
}

/// Serves one verify request: `query` on `protocol`'s path from `client` (the address the
/// log names), all of it by `deadline`, decoding with `local` (the daemon's own decode)
/// unless remote KSMs are configured.
pub async fn verify<F, Fut>(
    val: &Validator,
    protocol: Protocol,
    query: &str,
    client: &str,
    deadline: Instant,
    local: F,
) -> (StatusCode, String)
where
    F: FnOnce(Otp) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let start = Instant::now();
    let v = ykval::verify(&val.db, protocol, query, deadline, |otp| {
        val.decode(otp, local)
    })
    .await;
    let took = start.elapsed();
    val.metrics.record(&v, took);
    let id = v
        .named_client
        .map_or_else(|| "-".to_string(), |c| c.to_string());
    let public_id = v.public_id.as_deref().unwrap_or("-");
    let latency_us = took.as_micros() as u64;
    // One line per verification; a backend error's reason, and a clock that disagrees
    // past yubikey-val's tolerances, are fields of it (and make it a warning).
    match (&v.why, v.clock.filter(|c| c.failed)) {
        (Some(why), _) => warn!(
            client_id = %id,
            public_id = %public_id,
            status = %v.status,
            latency_us,
            client = %client,
            reason = %why,
            "verify"
        ),
        (None, Some(c)) => warn!(
            client_id = %id,
            public_id = %public_id,
            status = %v.status,
            latency_us,
            client = %client,
            key_secs = c.key_secs,
            server_secs = c.server_secs,
            "verify: the YubiKey's clock and the server's disagree past yubikey-val's tolerances (an OTP held back and replayed later?); answered as yubikey-val does"
        ),
        (None, None) => info!(
            client_id = %id,
            public_id = %public_id,
            status = %v.status,
            latency_us,
            client = %client,
            "verify"
        ),
    }
    (StatusCode::OK, v.body)
}

/// Verification counts by client and status, and a latency histogram (the decode API's
/// buckets).
#[derive(Default)]
pub struct ValMetrics {
    /// By (client id, or `-` for a request naming none that exists; status). Bounded by the
    /// clients in the database times the statuses.
    by: Mutex<BTreeMap<(String, Status), u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl ValMetrics {
    fn record(&self, v: &Verified, took: Duration) {
        // Only a client found in the table gets a label of its own (`Verified::client`).
        let client = v
            .client
            .map_or_else(|| "-".to_string(), |id| id.to_string());
        *self
            .by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((client, v.status))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus exposition, with `up` for the counter database.
    pub fn prometheus(&self, up: bool) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "# HELP ksm_verifications_total YK-VAL verifications by client id and status.\n# TYPE ksm_verifications_total counter");
        for ((client, status), n) in self.by.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                o,
                "ksm_verifications_total{{client=\"{client}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP ksm_verify_seconds YK-VAL verification latency.\n# TYPE ksm_verify_seconds histogram");
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "ksm_verify_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(o, "ksm_verify_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "ksm_verify_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "ksm_verify_seconds_count {count}");
        let _ = writeln!(o, "# HELP ksm_val_db_up Whether the counter database answers and takes writes (1) or not (0).\n# TYPE ksm_val_db_up gauge\nksm_val_db_up {}", u8::from(up));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ksm_ok_line_is_read_as_yubikey_val_reads_it() {
        assert_eq!(
            parse_ksm_ok("OK counter=0001 low=1234 high=56 use=00\n"),
            Some(OtpCounters {
                use_ctr: 1,
                session_ctr: 0,
                ts_high: 0x56,
                ts_low: 0x1234
            })
        );
        for bad in [
            "ERR Unknown public_id\n",
            "OK counter=1 low=1234 high=56 use=00",
            "OK counter=0001 low=1234 high=56",
            "OK counter=0001 low=1234 high=56 use=00 more=1",
            "OK counter=zzzz low=1234 high=56 use=00",
        ] {
            assert_eq!(parse_ksm_ok(bad), None, "{bad}");
        }
    }
}
