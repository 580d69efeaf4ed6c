//! A Prometheus text page, read the way tests ask about it: one metric by
//! name and labels.

use hyper::{Method, StatusCode};
use std::time::Duration;
use tessera_core::client::Client;

/// Longest wait for one `/metrics` answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One scraped metrics page.
#[derive(Debug, Clone)]
pub struct Metrics {
    text: String,
}

impl Metrics {
    /// A page from its text.
    pub fn parse(text: impl Into<String>) -> Self {
        Self { text: text.into() }
    }

    /// `GET /metrics` through `client` (the CA's public route); `200` expected.
    pub async fn fetch(client: &Client) -> Self {
        let r = tokio::time::timeout(FETCH_TIMEOUT, client.call(Method::GET, "/metrics", None))
            .await
            .expect("/metrics timed out")
            .expect("/metrics");
        assert_eq!(r.status, StatusCode::OK);
        Self::parse(String::from_utf8(r.body.to_vec()).unwrap())
    }

    /// `GET /metrics` over plain HTTP from `addr` (a loopback admin endpoint).
    pub async fn fetch_http(addr: &str) -> Self {
        let page = crate::http_get(addr, "/metrics").await;
        let body = page.split_once("\r\n\r\n").map_or(&page[..], |(_, b)| b);
        Self::parse(body)
    }

    /// The page as text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of the sample named `name` whose labels are exactly
    /// `labels` (in any order); `None` if there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name).find_map(|(l, v)| {
            (l.len() == labels.len() && labels.iter().all(|p| l.contains(p))).then_some(v)
        })
    }

    /// The value of one sample written as it is rendered, `name{a="b",c="d"}`
    /// (or a bare name); `None` if there is no such sample.
    pub fn sample(&self, series: &str) -> Option<f64> {
        match series.split_once('{') {
            None => self.value(series, &[]),
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .and_then(parse_labels)
                    .unwrap_or_else(|| panic!("not a series: {series}"));
                self.value(name, &labels)
            }
        }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(l, _)| labels.iter().all(|p| l.contains(p)))
            .map(|(_, v)| v)
            .sum()
    }

    /// `(labels, value)` of every sample named `name`.
    fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (Vec<(&'a str, &'a str)>, f64)> + 'a {
        self.text.lines().filter_map(move |line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once("} ")?;
                    (parse_labels(labels)?, value)
                }
                None => (vec![], rest.strip_prefix(' ')?),
            };
            let v = value
                .trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("metric line {line:?}: {e}"));
            Some((labels, v))
        })
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `a="b",c="d"` as pairs (the renderer never escapes a quote in these labels).
fn parse_labels(s: &str) -> Option<Vec<(&str, &str)>> {
    if s.is_empty() {
        return Some(vec![]);
    }
    s.split("\",")
        .map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.strip_suffix('"').unwrap_or(v)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    const PAGE: &str = "# TYPE a_total counter\n\
        a_total{kind=\"issue\"} 3\n\
        a_total{kind=\"renew\",route=\"/v1/certs/renew\"} 2\n\
        a_total_extra 9\n\
        lag_seconds 0.5\n\
        h_bucket{le=\"+Inf\"} 1\n";

    #[test]
    fn values_by_name_and_labels() {
        let m = Metrics::parse(PAGE);
        assert_eq!(m.value("a_total", &[("kind", "issue")]), Some(3.0));
        assert_eq!(
            m.value("a_total", &[("kind", "renew")]),
            None,
            "labels are exact"
        );
        assert_eq!(
            m.value(
                "a_total",
                &[("route", "/v1/certs/renew"), ("kind", "renew")]
            ),
            Some(2.0)
        );
        assert_eq!(m.value("lag_seconds", &[]), Some(0.5));
        assert_eq!(m.value("a", &[]), None, "a prefix is not a name");
        assert_eq!(m.sample(r#"h_bucket{le="+Inf"}"#), Some(1.0));
        assert_eq!(m.sum("a_total", &[]), 5.0);
        assert_eq!(m.sum("a_total", &[("kind", "renew")]), 2.0);
    }
}
