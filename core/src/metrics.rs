//! A small Prometheus text-format registry: labelled counters, gauges and
//! histograms. Small on purpose: every Tessera process exposes `/metrics`, and a
//! full metrics stack would cost more build time than this whole module.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Something that renders itself in the Prometheus text format.
pub trait Metric: Send + Sync {
    /// Appends the metric's `# HELP`, `# TYPE` and sample lines.
    fn render(&self, out: &mut String);
}

/// A set of metrics rendered together.
#[derive(Default, Clone)]
pub struct Registry {
    metrics: Arc<Mutex<Vec<Arc<dyn Metric>>>>,
}

impl Registry {
    /// Adds a metric and returns it for use.
    pub fn register<M: Metric + 'static>(&self, m: M) -> Arc<M> {
        let m = Arc::new(m);
        if let Ok(mut v) = self.metrics.lock() {
            v.push(m.clone());
        }
        m
    }

    /// Renders every registered metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(v) = self.metrics.lock() {
            for m in v.iter() {
                m.render(&mut out);
            }
        }
        out
    }
}

/// Appends a metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn label_str(names: &[&str], values: &[String]) -> String {
    let mut s = String::new();
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{n}=\"{v}\"");
    }
    s
}

/// The value type of a labelled family: `u64` makes a counter, `i64` a gauge.
pub trait SeriesValue:
    Copy + Default + std::ops::AddAssign + std::fmt::Display + Send + Sync + 'static
{
    /// The Prometheus type name.
    const KIND: &'static str;
    /// One, for `inc`.
    const ONE: Self;
}

impl SeriesValue for u64 {
    const KIND: &'static str = "counter";
    const ONE: Self = 1;
}

impl SeriesValue for i64 {
    const KIND: &'static str = "gauge";
    const ONE: Self = 1;
}

/// A metric family with labels; see [`CounterVec`] and [`GaugeVec`].
pub struct Family<V> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<HashMap<Vec<String>, V>>,
}

/// A counter with labels.
pub type CounterVec = Family<u64>;
/// A gauge with labels.
pub type GaugeVec = Family<i64>;

fn key(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

/// A family's series, ordered by their label values (stable output).
fn sorted<V>(m: &HashMap<Vec<String>, V>) -> Vec<(&Vec<String>, &V)> {
    let mut rows: Vec<_> = m.iter().collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    rows
}

impl<V: SeriesValue> Family<V> {
    /// A new family.
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(HashMap::new()),
        }
    }

    /// Adds one to the series with these label values.
    pub fn inc(&self, values: &[&str]) {
        self.add(values, V::ONE);
    }

    /// Adds `n` (a gauge may take a negative `n`) to the series with these label values.
    pub fn add(&self, values: &[&str], n: V) {
        if let Ok(mut m) = self.values.lock() {
            *m.entry(key(values)).or_default() += n;
        }
    }

    /// Sets the series with these label values.
    pub fn set(&self, values: &[&str], v: V) {
        if let Ok(mut m) = self.values.lock() {
            m.insert(key(values), v);
        }
    }

    /// Keeps only the series whose label values `keep` accepts (for a
    /// family whose subjects can disappear, such as a deleted relationship).
    pub fn retain(&self, keep: impl Fn(&[String]) -> bool) {
        if let Ok(mut m) = self.values.lock() {
            m.retain(|k, _| keep(k));
        }
    }

    /// The current value of one series (zero if never touched).
    pub fn get(&self, values: &[&str]) -> V {
        self.values
            .lock()
            .ok()
            .and_then(|m| m.get(&key(values)).copied())
            .unwrap_or_default()
    }
}

impl<V: SeriesValue> Metric for Family<V> {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, V::KIND);
        if let Ok(m) = self.values.lock() {
            for (k, v) in sorted(&m) {
                let _ = writeln!(out, "{}{{{}}} {}", self.name, label_str(self.labels, k), v);
            }
        }
    }
}

/// A gauge without labels.
pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    /// A new gauge at zero.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    /// Adds (or subtracts) from the value.
    pub fn add(&self, d: i64) {
        self.value.fetch_add(d, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

impl Metric for Gauge {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        let _ = writeln!(out, "{} {}", self.name, self.get());
    }
}

#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram with labels (seconds buckets by default).
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<HashMap<Vec<String>, Hist>>,
}

/// Latency buckets in seconds, from 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

impl HistogramVec {
    /// A new histogram family with the given buckets.
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            buckets,
            values: Mutex::new(HashMap::new()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, values: &[&str], v: f64) {
        if let Ok(mut m) = self.values.lock() {
            let h = m.entry(key(values)).or_insert_with(|| Hist {
                counts: vec![0; self.buckets.len()],
                sum: 0.0,
                count: 0,
            });
            if let Some(i) = self.buckets.iter().position(|b| v <= *b) {
                h.counts[i] += 1;
            }
            h.sum += v;
            h.count += 1;
        }
    }
}

impl Metric for HistogramVec {
    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let Ok(m) = self.values.lock() else { return };
        for (k, h) in sorted(&m) {
            let labels = label_str(self.labels, k);
            let sep = if labels.is_empty() { "" } else { "," };
            let mut cum = 0;
            for (b, c) in self.buckets.iter().zip(&h.counts) {
                cum += c;
                let _ = writeln!(out, "{}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}", self.name);
            }
            let _ = writeln!(
                out,
                "{}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
                self.name, h.count
            );
            let _ = writeln!(out, "{}_sum{{{labels}}} {}", self.name, h.sum);
            let _ = writeln!(out, "{}_count{{{labels}}} {}", self.name, h.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let r = Registry::default();
        let c = r.register(CounterVec::new("t_total", "things", &["kind"]));
        let h = r.register(HistogramVec::new(
            "t_seconds",
            "time",
            &["route"],
            &[0.1, 1.0],
        ));
        c.inc(&["a\"b"]);
        c.add(&["x"], 2);
        h.observe(&["/v1"], 0.5);
        let text = r.render();
        assert!(text.contains("t_total{kind=\"a\\\"b\"} 1"), "{text}");
        assert!(text.contains("t_total{kind=\"x\"} 2"));
        assert!(text.contains("t_seconds_bucket{route=\"/v1\",le=\"0.1\"} 0"));
        assert!(text.contains("t_seconds_bucket{route=\"/v1\",le=\"1\"} 1"));
        assert!(text.contains("t_seconds_count{route=\"/v1\"} 1"));
    }
}
