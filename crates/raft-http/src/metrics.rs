//! What `/metrics` shows, through the `prometheus-client` crate (OpenMetrics text).
//!
//! Two kinds of metrics: those the HTTP layer keeps as requests happen ([`Metrics`]:
//! proposals, their latency and how many wait, requests by route and status with their
//! latency), and those read from the node at scrape time (its state, the network, storage,
//! snapshots, connections, the process), registered as constants in a registry built for
//! each scrape ([`Scrape`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The media type of the exposition.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the proposal latency histogram's buckets.
pub(crate) const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds (seconds) of the HTTP request latency histogram's buckets.
const HTTP_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Labels of one metric's sample.
pub(crate) type Labels = Vec<(&'static str, String)>;

fn http_histogram() -> Histogram {
    Histogram::new(HTTP_BUCKETS)
}

/// Proposals submitted through HTTP on this node: outcomes and a cumulative latency
/// histogram, as shown in `/v1/status` and summed over the members by the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProposalSummary {
    /// Proposals committed and applied.
    pub(crate) committed: u64,
    /// Proposals that failed.
    pub(crate) failed: u64,
    /// Proposals that took at most [`LATENCY_BUCKETS`]`[i]` seconds.
    pub(crate) buckets: [u64; LATENCY_BUCKETS.len()],
    /// Proposals timed.
    pub(crate) count: u64,
    /// Their total time, in microseconds.
    pub(crate) sum_us: u64,
}

/// Metrics the HTTP layer keeps as requests happen.
#[derive(Debug)]
pub struct Metrics {
    proposals_ok: AtomicU64,
    proposals_failed: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    pending: Gauge,
    requests: Family<Labels, Counter>,
    request_seconds: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            proposals_ok: AtomicU64::default(),
            proposals_failed: AtomicU64::default(),
            buckets: Default::default(),
            latency_count: AtomicU64::default(),
            latency_sum_us: AtomicU64::default(),
            pending: Gauge::default(),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(http_histogram),
        }
    }
}

/// Counts a proposal as waiting until dropped.
pub(crate) struct PendingGuard<'a>(&'a Gauge);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A method as a label: the usual ones by name, anything else as `other` (so that clients
/// cannot grow the number of series).
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl Metrics {
    /// Records the outcome and latency of one proposal.
    pub fn record_proposal(&self, ok: bool, took: Duration) {
        if ok {
            self.proposals_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.proposals_failed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts one proposal as waiting for its commit until the guard is dropped.
    pub(crate) fn proposal_pending(&self) -> PendingGuard<'_> {
        self.pending.inc();
        PendingGuard(&self.pending)
    }

    /// Records one answered HTTP request: the route that matched (its pattern, or
    /// `unmatched`), the method, the status and how long the answer took.
    pub(crate) fn record_request(
        &self,
        route: &str,
        method: &axum::http::Method,
        status: u16,
        took: Duration,
    ) {
        let method = method_label(method);
        let labels = vec![
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("code", status.to_string()),
        ];
        self.requests.get_or_create(&labels).inc();
        let labels = vec![("route", route.to_string()), ("method", method.to_string())];
        self.request_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The proposal counters and latency histogram as they stand.
    pub(crate) fn proposals(&self) -> ProposalSummary {
        ProposalSummary {
            committed: self.proposals_ok.load(Ordering::Relaxed),
            failed: self.proposals_failed.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            count: self.latency_count.load(Ordering::Relaxed),
            sum_us: self.latency_sum_us.load(Ordering::Relaxed),
        }
    }

    /// Adds this layer's metrics to a scrape.
    pub(crate) fn register(&self, s: &mut Scrape) {
        let p = self.proposals();
        s.counter_family(
            "raft_proposals",
            "Proposals submitted through HTTP, by result.",
            vec![
                (vec![("result", "committed".to_string())], p.committed),
                (vec![("result", "failed".to_string())], p.failed),
            ],
        );
        s.histogram(
            "raft_proposal_seconds",
            "Time from submit to commit and apply.",
            p.sum_us as f64 / 1e6,
            p.count,
            &LATENCY_BUCKETS,
            &p.buckets,
        );
        s.registry.register(
            "raft_proposals_pending",
            "Proposals submitted through HTTP and waiting for their commit now",
            self.pending.clone(),
        );
        s.registry.register(
            "raft_http_requests",
            "HTTP requests answered, by route (the pattern that matched), method and status code",
            self.requests.clone(),
        );
        s.registry.register(
            "raft_http_request_seconds",
            "Time to answer an HTTP request (to the start of the body for streams), by route and method",
            self.request_seconds.clone(),
        );
    }
}

/// A histogram read from elsewhere: its buckets as they stand at scrape time.
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// Upper bound and the observations in that bucket alone (not cumulative), `+Inf`
    /// last.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for ConstHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A gauge family whose samples are fixed at scrape time; declared even without samples.
#[derive(Debug)]
struct ConstFamily {
    kind: MetricType,
    rows: Vec<(Labels, u64)>,
}

impl EncodeMetric for ConstFamily {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        for (labels, v) in &self.rows {
            let mut e = encoder.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => e.encode_counter::<NoLabelSet, _, f64>(v, None)?,
                _ => e.encode_gauge(v)?,
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        self.kind
    }
}

/// Help text without its final period (the exposition adds one).
fn help(h: &str) -> &str {
    h.strip_suffix('.').unwrap_or(h)
}

/// One scrape: a registry of what the node shows now.
pub(crate) struct Scrape {
    pub(crate) registry: Registry,
}

impl Scrape {
    pub(crate) fn new() -> Scrape {
        Scrape {
            registry: Registry::default(),
        }
    }

    /// A gauge.
    pub(crate) fn gauge(&mut self, name: &str, help: &str, v: impl Into<f64>) {
        let v: f64 = v.into();
        self.registry
            .register(name, self::help(help), ConstGauge::new(v));
    }

    /// A gauge whose value is a whole number (shown without a decimal point).
    pub(crate) fn gauge_int(&mut self, name: &str, help: &str, v: i64) {
        self.registry
            .register(name, self::help(help), ConstGauge::new(v));
    }

    /// A counter; `name` without the `_total` the exposition adds.
    pub(crate) fn counter(&mut self, name: &str, help: &str, v: u64) {
        self.registry
            .register(name, self::help(help), ConstCounter::new(v));
    }

    /// A counter of a fractional quantity (seconds).
    pub(crate) fn counter_f64(&mut self, name: &str, help: &str, v: f64) {
        self.registry
            .register(name, self::help(help), ConstCounter::new(v));
    }

    /// A gauge with one sample per label set.
    pub(crate) fn gauge_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        self.registry.register(
            name,
            self::help(help),
            ConstFamily {
                kind: MetricType::Gauge,
                rows,
            },
        );
    }

    /// A counter with one sample per label set.
    pub(crate) fn counter_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        self.registry.register(
            name,
            self::help(help),
            ConstFamily {
                kind: MetricType::Counter,
                rows,
            },
        );
    }

    /// A histogram given as `cumulative[i]` observations at most `bounds[i]`, `count` in
    /// all.
    pub(crate) fn histogram(
        &mut self,
        name: &str,
        help: &str,
        sum: f64,
        count: u64,
        bounds: &[f64],
        cumulative: &[u64],
    ) {
        let mut buckets = Vec::with_capacity(bounds.len() + 1);
        let mut below = 0u64;
        for (b, c) in bounds.iter().zip(cumulative) {
            buckets.push((*b, c.saturating_sub(below)));
            below = below.max(*c);
        }
        buckets.push((f64::INFINITY, count.saturating_sub(below)));
        self.registry.register(
            name,
            self::help(help),
            ConstHistogram {
                sum,
                count,
                buckets,
            },
        );
    }

    /// The OpenMetrics text.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; a metric that failed to encode ends it.
            out.push_str("# EOF\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
    }

    #[test]
    fn counters_are_exposed_with_total_and_gauges_as_they_are() {
        let mut s = Scrape::new();
        s.counter("raft_things", "Things.", 7);
        s.gauge_int("raft_level", "Level.", -1);
        s.gauge("raft_ratio", "Ratio.", 0.5);
        let text = s.encode();
        assert_eq!(sample(&text, "raft_things_total"), Some("7"));
        assert_eq!(sample(&text, "raft_level"), Some("-1"));
        assert_eq!(sample(&text, "raft_ratio"), Some("0.5"));
        assert!(text.contains("# TYPE raft_things counter"));
        assert!(
            text.contains("# HELP raft_things Things.\n"),
            "one period: {text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_cumulative_histogram_is_exposed_cumulatively_with_inf_last() {
        let mut s = Scrape::new();
        // 2 at most 0.1 s, 5 at most 1 s, 6 in all.
        s.histogram("h", "H.", 3.5, 6, &[0.1, 1.0], &[2, 5]);
        let text = s.encode();
        assert_eq!(sample(&text, "h_bucket{le=\"0.1\"}"), Some("2"));
        assert_eq!(sample(&text, "h_bucket{le=\"1.0\"}"), Some("5"));
        assert_eq!(sample(&text, "h_bucket{le=\"+Inf\"}"), Some("6"));
        assert_eq!(sample(&text, "h_count"), Some("6"));
        assert_eq!(sample(&text, "h_sum"), Some("3.5"));
    }

    #[test]
    fn families_are_declared_even_without_samples() {
        let mut s = Scrape::new();
        s.gauge_family("raft_empty", "Nothing yet.", vec![]);
        s.counter_family(
            "raft_by_peer",
            "Per peer.",
            vec![(vec![("peer", "2".to_string())], 3)],
        );
        let text = s.encode();
        assert!(text.contains("# TYPE raft_empty gauge"));
        assert_eq!(sample(&text, "raft_by_peer_total{peer=\"2\"}"), Some("3"));
    }

    #[test]
    fn requests_are_counted_by_route_method_and_status_and_odd_methods_share_a_label() {
        let m = Metrics::default();
        let get = axum::http::Method::GET;
        let odd = axum::http::Method::from_bytes(b"BREW").unwrap_or(get.clone());
        m.record_request("/v1/status", &get, 200, Duration::from_millis(1));
        m.record_request("/v1/status", &get, 200, Duration::from_millis(2));
        m.record_request("/v1/status", &odd, 405, Duration::from_millis(1));
        let mut s = Scrape::new();
        m.register(&mut s);
        let text = s.encode();
        assert!(text.contains(
            "raft_http_requests_total{route=\"/v1/status\",method=\"GET\",code=\"200\"} 2"
        ));
        assert!(text.contains(
            "raft_http_requests_total{route=\"/v1/status\",method=\"other\",code=\"405\"} 1"
        ));
        assert!(
            text.contains("raft_http_request_seconds_count{route=\"/v1/status\",method=\"GET\"} 2")
        );
    }

    #[test]
    fn a_pending_proposal_counts_until_its_guard_is_dropped() {
        let m = Metrics::default();
        let g = m.proposal_pending();
        let g2 = m.proposal_pending();
        assert_eq!(m.pending.get(), 2);
        drop(g);
        drop(g2);
        assert_eq!(m.pending.get(), 0);
    }
}
