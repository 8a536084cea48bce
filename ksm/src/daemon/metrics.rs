//! Counters for `/metrics` (Prometheus text format) and pyhsm's stats URL.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aead_store::Store;

use crate::daemon::answer::{Outcome, ANSWERS, PYHSM_STATS};
use crate::daemon::connections::Connections;
use crate::daemon::health::{DeviceHealth, DeviceKind, DeviceState};

/// Upper bounds of the latency histogram buckets, in seconds.
pub(crate) const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Decode counters and latency histogram. Lock-free: updated on every request.
#[derive(Default)]
pub struct Metrics {
    /// Decodes by outcome, indexed as [`ANSWERS`].
    outcomes: [AtomicU64; ANSWERS.len()],
    /// Decodes by the first bucket their latency fits (not cumulative: one counter per
    /// request instead of up to thirteen; the exposition adds them up).
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    /// Decodes whose client hung up before the answer (`result="abandoned"`): no answer
    /// went out, so they are in no other count and not in the latency histogram.
    abandoned: AtomicU64,
}

impl Metrics {
    /// Records one decode.
    pub fn record(&self, outcome: &Outcome, took: Duration) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| secs <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Records a decode its client gave up on before it was answered.
    pub fn record_abandoned(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Each row of the answer table with its count.
    fn counts(&self) -> impl Iterator<Item = (&'static crate::daemon::answer::Row, u64)> + '_ {
        ANSWERS
            .iter()
            .zip(&self.outcomes)
            .map(|(row, n)| (row, n.load(Ordering::Relaxed)))
    }

    /// pyhsm's stats page: `name count` lines for `no_aead`, `ok`, `err`, `invalid`, in the
    /// order pyhsm printed them.
    pub fn pyhsm_stats(&self) -> String {
        PYHSM_STATS
            .iter()
            .map(|stat| {
                let n: u64 = self
                    .counts()
                    .filter(|(row, _)| row.pyhsm == *stat)
                    .map(|(_, n)| n)
                    .sum();
                format!("{stat} {n}\n")
            })
            .collect()
    }

    /// The Prometheus exposition.
    pub fn prometheus(
        &self,
        devices: &[std::sync::Arc<DeviceHealth>],
        store: &dyn Store,
        connections: &Connections,
    ) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# HELP ksm_decodes_total OTP decode requests by result.\n# TYPE ksm_decodes_total counter");
        for (row, n) in self.counts() {
            let _ = writeln!(o, "ksm_decodes_total{{result=\"{}\"}} {n}", row.label);
        }
        let abandoned = self.abandoned.load(Ordering::Relaxed);
        let _ = writeln!(o, "ksm_decodes_total{{result=\"abandoned\"}} {abandoned}");
        let _ = writeln!(
            o,
            "# HELP ksm_decode_seconds Decode latency.\n# TYPE ksm_decode_seconds histogram"
        );
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "ksm_decode_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(o, "ksm_decode_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "ksm_decode_seconds_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "ksm_decode_seconds_count {count}");
        let _ = writeln!(o, "# HELP ksm_hsm_queue_depth Jobs waiting for or running on each HSM.\n# TYPE ksm_hsm_queue_depth gauge");
        for d in devices {
            let _ = writeln!(
                o,
                "ksm_hsm_queue_depth{{device=\"{}\"}} {}",
                d.name,
                d.queued.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP ksm_hsm_state HSM state (1 for the current state).\n# TYPE ksm_hsm_state gauge"
        );
        for d in devices {
            for s in DeviceState::ALL {
                let _ = writeln!(
                    o,
                    "ksm_hsm_state{{device=\"{}\",state=\"{}\"}} {}",
                    d.name,
                    s.name(),
                    u8::from(d.state() == s)
                );
            }
        }
        let _ = writeln!(o, "# HELP ksm_hsm_opens_total Times each HSM was opened.\n# TYPE ksm_hsm_opens_total counter");
        for d in devices {
            let _ = writeln!(
                o,
                "ksm_hsm_opens_total{{device=\"{}\"}} {}",
                d.name,
                d.opens.load(Ordering::Relaxed)
            );
        }
        let hsm2: Vec<_> = devices
            .iter()
            .filter(|d| d.kind == DeviceKind::YubiHsm2)
            .collect();
        if !hsm2.is_empty() {
            let _ = writeln!(o, "# HELP ksm_hsm_sessions_open YubiHSM 2 sessions open on each device.\n# TYPE ksm_hsm_sessions_open gauge");
            for d in &hsm2 {
                let _ = writeln!(
                    o,
                    "ksm_hsm_sessions_open{{device=\"{}\"}} {}",
                    d.name,
                    d.sessions_open.load(Ordering::Relaxed)
                );
            }
            let _ = writeln!(o, "# HELP ksm_hsm_reauthentications_total YubiHSM 2 sessions opened again (expired, dropped by a reset, broken, or the device reopened).\n# TYPE ksm_hsm_reauthentications_total counter");
            for d in &hsm2 {
                let _ = writeln!(
                    o,
                    "ksm_hsm_reauthentications_total{{device=\"{}\"}} {}",
                    d.name,
                    d.reauthentications.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(o, "# HELP ksm_http_connections HTTP connections open.\n# TYPE ksm_http_connections gauge\nksm_http_connections {}", connections.open());
        let _ = writeln!(o, "# HELP ksm_http_connections_evicted_total Idle connections, and connections still receiving their request, closed to make room at --max-connections.\n# TYPE ksm_http_connections_evicted_total counter\nksm_http_connections_evicted_total {}", connections.evicted());
        let _ = writeln!(o, "# HELP ksm_http_connections_refused_total New connections closed at once because every connection was answering a request.\n# TYPE ksm_http_connections_refused_total counter\nksm_http_connections_refused_total {}", connections.refused());
        let _ = writeln!(o, "# HELP ksm_hsm_line_errors_total HSM line failures by kind, failed reopen attempts (one each 250 ms while a device is down) included.\n# TYPE ksm_hsm_line_errors_total counter");
        for d in devices {
            for (kind, n) in d.line_errors() {
                let _ = writeln!(
                    o,
                    "ksm_hsm_line_errors_total{{device=\"{}\",kind=\"{}\"}} {n}",
                    d.name,
                    kind.name()
                );
            }
        }
        if let Some(n) = store.len() {
            let _ = writeln!(o, "# HELP ksm_store_aeads AEADs known to the store cache.\n# TYPE ksm_store_aeads gauge\nksm_store_aeads {n}");
        }
        if let Some(w) = store.watching() {
            let _ = writeln!(o, "# HELP ksm_store_watching Whether changes to the AEAD store are watched and lookups are cached (1) or every lookup reads the store (0).\n# TYPE ksm_store_watching gauge\nksm_store_watching {}", u8::from(w));
        }
        if let Some(n) = store.ignored_notices() {
            let _ = writeln!(o, "# HELP ksm_store_notices_ignored_total Notices on the AEAD database's change channel ignored: heartbeats this KSM did not send or had seen back already (copies, forgeries), and payloads that are neither a heartbeat nor a public id.\n# TYPE ksm_store_notices_ignored_total counter\nksm_store_notices_ignored_total {n}");
        }
        // A directory that cannot be listed, a database that does not answer.
        let _ = writeln!(o, "# HELP ksm_store_up Whether the AEAD store can be read (1) or not (0).\n# TYPE ksm_store_up gauge\nksm_store_up {}", u8::from(store.check().is_ok()));
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = Metrics::default();
        for ms in [0.2, 0.7, 0.7, 30.0, 9000.0] {
            m.record(&Outcome::NoOtp, Duration::from_secs_f64(ms / 1000.0));
        }
        let text = m.prometheus(&[], &NoStore, &Connections::new(1));
        let bucket = |le: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("ksm_decode_seconds_bucket{{le=\"{le}\"}}")))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap()
                .to_string()
        };
        assert_eq!(bucket("0.0005"), "1");
        assert_eq!(bucket("0.001"), "3");
        assert_eq!(bucket("0.025"), "3");
        assert_eq!(bucket("0.05"), "4");
        assert_eq!(bucket("5"), "4");
        assert_eq!(bucket("+Inf"), "5");
        assert!(text.contains("ksm_decodes_total{result=\"no_otp\"} 5\n"));
        assert_eq!(m.pyhsm_stats(), "no_aead 0\nok 0\nerr 0\ninvalid 5\n");
    }

    /// A store with nothing in it.
    struct NoStore;

    impl Store for NoStore {
        fn lookup(
            &self,
            _: &hsm_proto::PublicId,
        ) -> Result<Option<aead_store::StoredAead>, aead_store::StoreError> {
            Ok(None)
        }
        fn put(
            &self,
            _: &hsm_proto::PublicId,
            _: &aead_store::Sealed,
            _: bool,
        ) -> Result<aead_store::AeadSource, aead_store::StoreError> {
            Err(aead_store::StoreError::NoBase("none".into()))
        }
        fn exists(
            &self,
            _: hsm_proto::KeyHandle,
            _: &hsm_proto::PublicId,
        ) -> Result<bool, aead_store::StoreError> {
            Ok(false)
        }
        fn entries(&self) -> Box<dyn Iterator<Item = aead_store::WalkEntry> + '_> {
            Box::new(std::iter::empty())
        }
    }
}
