//! Prometheus metrics, kept in memory and rendered in the text exposition format
//! at `/metrics`. Label values are model and version names the registry accepted
//! and route templates, never keys or raw paths, so the label sets stay bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds of the batch size buckets, in rows.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Upper bounds of the decoding speed buckets, in tokens per second.
const RATE_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Counts per bucket (not cumulative), then the +Inf bucket.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; bounds.len() + 1];
        }
        let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A phase of a prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Waiting in the model's queue.
    Queue,
    /// In the runtime (the batch's run).
    Inference,
    /// The whole request, from its arrival to its answer.
    Total,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Queue => "queue",
            Phase::Inference => "inference",
            Phase::Total => "total",
        }
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    /// Requests by (route, model, version, status).
    requests: Mutex<BTreeMap<(String, String, String, u16), u64>>,
    /// Request latency by route.
    request_seconds: Mutex<BTreeMap<String, Histogram>>,
    /// Predict latency by (model, version, phase).
    predict_seconds: Mutex<BTreeMap<(String, String, Phase), Histogram>>,
    /// Rows per batch run, by (model, version).
    batch_rows: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Text generation by (model, version): time to the first token, decoding
    /// speed of each sequence, tokens generated.
    first_token_seconds: Mutex<BTreeMap<(String, String), Histogram>>,
    tokens_per_second: Mutex<BTreeMap<(String, String), Histogram>>,
    generated_tokens: Mutex<BTreeMap<(String, String), u64>>,
    upload_bytes: AtomicU64,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Gauges read from the live server when rendering.
pub struct Gauges {
    /// (model, version, runtime, queued requests) of each loaded version.
    pub loaded: Vec<(String, String, String, usize)>,
}

impl Metrics {
    pub fn request(&self, route: &str, model: &str, version: &str, status: u16, took: Duration) {
        let key = (route.to_string(), model.to_string(), version.to_string(), status);
        *self.requests.lock().expect("metrics").entry(key).or_default() += 1;
        self.request_seconds
            .lock()
            .expect("metrics")
            .entry(route.to_string())
            .or_default()
            .observe(LATENCY_BUCKETS, took.as_secs_f64());
    }

    pub fn predict(&self, model: &str, version: &str, phase: Phase, took: Duration) {
        self.predict_seconds
            .lock()
            .expect("metrics")
            .entry((model.to_string(), version.to_string(), phase))
            .or_default()
            .observe(LATENCY_BUCKETS, took.as_secs_f64());
    }

    pub fn batch(&self, model: &str, version: &str, rows: usize) {
        self.batch_rows
            .lock()
            .expect("metrics")
            .entry((model.to_string(), version.to_string()))
            .or_default()
            .observe(BATCH_BUCKETS, rows as f64);
    }

    /// A finished generation: its time to the first token, its decoding speed
    /// (after the first token) and its tokens.
    pub fn generation(
        &self,
        model: &str,
        version: &str,
        first_token: Option<Duration>,
        decoding: Duration,
        tokens: usize,
    ) {
        let key = (model.to_string(), version.to_string());
        if let Some(t) = first_token {
            self.first_token_seconds
                .lock()
                .expect("metrics")
                .entry(key.clone())
                .or_default()
                .observe(LATENCY_BUCKETS, t.as_secs_f64());
        }
        if tokens > 1 && !decoding.is_zero() {
            let rate = (tokens - 1) as f64 / decoding.as_secs_f64();
            self.tokens_per_second.lock().expect("metrics").entry(key.clone()).or_default().observe(RATE_BUCKETS, rate);
        }
        *self.generated_tokens.lock().expect("metrics").entry(key).or_default() += tokens as u64;
    }

    /// Drop the series of a deleted version (`None`: of every version of a deleted
    /// model), so that a server that sees many versions come and go keeps a
    /// bounded set of series.
    pub fn forget(&self, model: &str, version: Option<&str>) {
        let gone = |m: &str, v: &str| m == model && version.is_none_or(|version| v == version);
        self.requests.lock().expect("metrics").retain(|(_, m, v, _), _| !gone(m, v));
        self.predict_seconds.lock().expect("metrics").retain(|(m, v, _), _| !gone(m, v));
        self.batch_rows.lock().expect("metrics").retain(|(m, v), _| !gone(m, v));
        self.first_token_seconds.lock().expect("metrics").retain(|(m, v), _| !gone(m, v));
        self.tokens_per_second.lock().expect("metrics").retain(|(m, v), _| !gone(m, v));
        self.generated_tokens.lock().expect("metrics").retain(|(m, v), _| !gone(m, v));
    }

    pub fn uploaded(&self, bytes: u64) {
        self.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        out.push_str("# HELP zoo_requests_total HTTP requests by route template, model, version and status.\n");
        out.push_str("# TYPE zoo_requests_total counter\n");
        for ((route, model, version, status), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "zoo_requests_total{{route=\"{}\",model=\"{}\",version=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(model),
                escape(version)
            );
        }
        out.push_str("# HELP zoo_request_duration_seconds HTTP request latency by route template.\n");
        out.push_str("# TYPE zoo_request_duration_seconds histogram\n");
        for (route, h) in self.request_seconds.lock().expect("metrics").iter() {
            h.render(
                &mut out,
                "zoo_request_duration_seconds",
                &format!("route=\"{}\"", escape(route)),
                LATENCY_BUCKETS,
            );
        }
        out.push_str(
            "# HELP zoo_predict_duration_seconds Prediction latency by model, version and phase (queue, inference, total).\n",
        );
        out.push_str("# TYPE zoo_predict_duration_seconds histogram\n");
        for ((model, version, phase), h) in self.predict_seconds.lock().expect("metrics").iter() {
            let labels =
                format!("model=\"{}\",version=\"{}\",phase=\"{}\"", escape(model), escape(version), phase.as_str());
            h.render(&mut out, "zoo_predict_duration_seconds", &labels, LATENCY_BUCKETS);
        }
        out.push_str("# HELP zoo_batch_size Rows per batch the runtime ran, by model and version.\n");
        out.push_str("# TYPE zoo_batch_size histogram\n");
        for ((model, version), h) in self.batch_rows.lock().expect("metrics").iter() {
            let labels = format!("model=\"{}\",version=\"{}\"", escape(model), escape(version));
            h.render(&mut out, "zoo_batch_size", &labels, BATCH_BUCKETS);
        }
        out.push_str(
            "# HELP zoo_time_to_first_token_seconds Text generation: from a request's arrival to its first token.\n",
        );
        out.push_str("# TYPE zoo_time_to_first_token_seconds histogram\n");
        for ((model, version), h) in self.first_token_seconds.lock().expect("metrics").iter() {
            let labels = format!("model=\"{}\",version=\"{}\"", escape(model), escape(version));
            h.render(&mut out, "zoo_time_to_first_token_seconds", &labels, LATENCY_BUCKETS);
        }
        out.push_str("# HELP zoo_generation_tokens_per_second Text generation: each sequence's decoding speed after its first token.\n");
        out.push_str("# TYPE zoo_generation_tokens_per_second histogram\n");
        for ((model, version), h) in self.tokens_per_second.lock().expect("metrics").iter() {
            let labels = format!("model=\"{}\",version=\"{}\"", escape(model), escape(version));
            h.render(&mut out, "zoo_generation_tokens_per_second", &labels, RATE_BUCKETS);
        }
        out.push_str("# HELP zoo_generated_tokens_total Text generation: tokens generated.\n");
        out.push_str("# TYPE zoo_generated_tokens_total counter\n");
        for ((model, version), n) in self.generated_tokens.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "zoo_generated_tokens_total{{model=\"{}\",version=\"{}\"}} {n}",
                escape(model),
                escape(version)
            );
        }
        out.push_str("# HELP zoo_queue_depth Requests waiting in a loaded version's queue.\n");
        out.push_str("# TYPE zoo_queue_depth gauge\n");
        for (model, version, _, queued) in &gauges.loaded {
            let _ = writeln!(
                out,
                "zoo_queue_depth{{model=\"{}\",version=\"{}\"}} {queued}",
                escape(model),
                escape(version)
            );
        }
        out.push_str("# HELP zoo_loaded_models Versions loaded in a runtime on this server, by runtime.\n");
        out.push_str("# TYPE zoo_loaded_models gauge\n");
        let mut by_runtime: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, _, runtime, _) in &gauges.loaded {
            *by_runtime.entry(runtime).or_default() += 1;
        }
        for (runtime, n) in by_runtime {
            let _ = writeln!(out, "zoo_loaded_models{{runtime=\"{runtime}\"}} {n}");
        }
        out.push_str("# HELP zoo_upload_bytes_total Bytes of artifacts received.\n");
        out.push_str("# TYPE zoo_upload_bytes_total counter\n");
        let _ = writeln!(out, "zoo_upload_bytes_total {}", self.upload_bytes.load(Ordering::Relaxed));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_versions_leave_no_series() {
        let m = Metrics::default();
        for v in ["1", "2"] {
            m.request("/v1/models/{name}/predict", "a", v, 200, Duration::from_millis(1));
            m.predict("a", v, Phase::Total, Duration::from_millis(1));
            m.batch("a", v, 2);
        }
        m.predict("b", "1", Phase::Total, Duration::from_millis(1));
        let gauges = || Gauges { loaded: vec![] };
        m.forget("a", Some("1"));
        let text = m.render(&gauges());
        assert!(!text.contains("model=\"a\",version=\"1\""), "{text}");
        assert!(text.contains("model=\"a\",version=\"2\""), "{text}");
        m.forget("a", None);
        let text = m.render(&gauges());
        assert!(!text.contains("model=\"a\""), "{text}");
        assert!(text.contains("model=\"b\""), "{text}");
    }

    #[test]
    fn exposition_format() {
        let m = Metrics::default();
        m.request("/v1/models/{name}/predict", "mlp", "1", 200, Duration::from_millis(3));
        m.predict("mlp", "1", Phase::Queue, Duration::from_micros(200));
        m.batch("mlp", "1", 4);
        m.generation("mlp", "1", Some(Duration::from_millis(40)), Duration::from_secs(1), 31);
        m.uploaded(1000);
        let text = m.render(&Gauges { loaded: vec![("mlp".into(), "1".into(), "ort".into(), 2)] });
        assert!(text.contains(
            "zoo_requests_total{route=\"/v1/models/{name}/predict\",model=\"mlp\",version=\"1\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "zoo_predict_duration_seconds_bucket{model=\"mlp\",version=\"1\",phase=\"queue\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("zoo_batch_size_bucket{model=\"mlp\",version=\"1\",le=\"2\"} 0"));
        assert!(text.contains("zoo_batch_size_bucket{model=\"mlp\",version=\"1\",le=\"4\"} 1"));
        assert!(text.contains("zoo_queue_depth{model=\"mlp\",version=\"1\"} 2"));
        assert!(text.contains("zoo_loaded_models{runtime=\"ort\"} 1"));
        assert!(text.contains("zoo_upload_bytes_total 1000"));
        assert!(text.contains("zoo_time_to_first_token_seconds_bucket{model=\"mlp\",version=\"1\",le=\"0.05\"} 1"));
        assert!(text.contains("zoo_generation_tokens_per_second_bucket{model=\"mlp\",version=\"1\",le=\"20\"} 0"));
        assert!(text.contains("zoo_generation_tokens_per_second_bucket{model=\"mlp\",version=\"1\",le=\"40\"} 1"));
        assert!(text.contains("zoo_generated_tokens_total{model=\"mlp\",version=\"1\"} 31"));
    }
}
