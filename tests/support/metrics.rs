//! Scraping `GET /metrics` and reading the Prometheus text exposition, strictly: a line that does
//! not parse, a sample without a `# TYPE`, or a histogram whose buckets, `_sum` and `_count` do
//! not agree fails the test.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::client::raw;

/// One scrape: every sample by name and sorted labels.
#[derive(Debug)]
pub struct Metrics {
    pub text: String,
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

/// Scrapes the admin API at `admin` and checks the exposition is valid.
pub async fn scrape(admin: SocketAddr) -> Metrics {
    let reply = raw(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "GET /metrics: {head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "the Prometheus text content type: {head}"
    );
    let metrics = Metrics::parse(body);
    metrics.check_histograms();
    metrics
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            let (name, labels) = split_series(series);
            let family = family_of(&name, &types);
            assert!(family.is_some(), "sample without a # TYPE: {line}");
            let key = key(&name, &labels);
            assert!(
                samples.insert(key, value).is_none(),
                "duplicate series: {line}"
            );
        }
        Metrics {
            text: text.to_owned(),
            samples,
            types,
        }
    }

    /// The sample `name{labels}`, or 0 when the series is absent (not yet seen).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .get(&key(name, &labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        let prefix = format!("{name}{{");
        self.samples
            .keys()
            .any(|k| k == name || k.starts_with(&prefix))
    }

    /// The `# TYPE` of a metric family.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }

    /// Every histogram series: buckets non-decreasing, `+Inf` equal to `_count`, `_sum` present.
    fn check_histograms(&self) {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for (key, value) in &self.samples {
                let (name, mut labels) = split_series(key);
                if name != format!("{family}_bucket") {
                    continue;
                }
                let le = labels.remove("le").expect("a bucket has le");
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                series
                    .entry(key_of_labels(&labels))
                    .or_default()
                    .push((le, *value));
            }
            for (labels, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
                assert!(
                    buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                    "{family}{labels}: buckets are cumulative"
                );
                let last = buckets.last().unwrap();
                assert_eq!(last.0, f64::INFINITY, "{family}{labels}: a +Inf bucket");
                let count = self.samples.get(&format!("{family}_count{labels}"));
                assert_eq!(
                    count,
                    Some(&last.1),
                    "{family}{labels}: _count is the +Inf bucket"
                );
                assert!(
                    self.samples.contains_key(&format!("{family}_sum{labels}")),
                    "{family}{labels}: _sum"
                );
            }
        }
    }
}

fn split_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), BTreeMap::new());
    };
    let body = rest.strip_suffix('}').expect("labels end with }");
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(
            chars.next(),
            Some('"'),
            "a label value is quoted in {series}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().expect("an escape")),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    (name.to_owned(), labels)
}

fn key_of_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", pairs.join(","))
}

fn key(name: &str, labels: &BTreeMap<String, String>) -> String {
    format!("{name}{}", key_of_labels(labels))
}

/// The family a sample belongs to: its own name, or without a histogram suffix.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|family| types.get(*family).is_some_and(|k| k == "histogram"))
}
