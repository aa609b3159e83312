//! What the request and response tests share: a proxy with a plain and a TLS listener in front
//! of one backend, the normal form of a message's fields, and the report of variants that
//! disagree.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::tls::write_cert;
use crate::support::{TempDir, TestProxy};

/// How long any one exchange may take: a hang is a failure, not a stuck test.
pub const WAIT: Duration = Duration::from_secs(3);

/// A certificate for `a.test`, in a directory kept while this lives.
pub struct Certs(TempDir);

impl Certs {
    pub fn new() -> Certs {
        let dir = TempDir::new();
        write_cert(dir.path(), "a", &["a.test"]);
        Certs(dir)
    }

    /// A proxy with a plain and a TLS listener in front of `backend` (one pool, `extra`
    /// appended to its table).
    pub async fn proxy(&self, backend: SocketAddr, extra: &str) -> TestProxy {
        let config = format!(
            "[pool.web]\nbackends = [{{ address = \"{backend}\" }}]\n{extra}\n\
             [tls]\nlisten = \"127.0.0.1:0\"\n\
             [[tls.certificates]]\nhosts = [\"a.test\"]\ncert = \"{0}/a.pem\"\nkey = \"{0}/a.key\"\n",
            self.0.path().display()
        );
        TestProxy::start(&config).await
    }
}

/// Fields in a normal form for comparing answers: names lowercased, sorted by name (the order
/// of same-named fields kept), the values of `Date` and `X-Request-Id` replaced (they differ on
/// every answer), and the fields named in `dropped` left out.
pub fn normal_fields<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    dropped: &[&str],
) -> String {
    let mut fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                crate::support::wire::escape(value),
            )
        })
        .filter(|(name, _)| !dropped.contains(&name.as_str()))
        .map(|(name, value)| match name.as_str() {
            "date" => (name, "<date>".to_owned()),
            "x-request-id" => (name, "<request id>".to_owned()),
            _ => (name, value),
        })
        .collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
        .iter()
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect()
}

/// `None` when every `(label, text)` has the same text; else the first text in full with the
/// labels that saw it, then each other distinct text as the lines it lacks (`-`) and adds (`+`),
/// with the labels that saw it.
pub fn disagreement(what: &str, seen: &[(String, String)]) -> Option<String> {
    let mut groups: Vec<(Vec<&str>, &str)> = Vec::new();
    for (label, text) in seen {
        match groups.iter_mut().find(|(_, t)| *t == text.as_str()) {
            Some((labels, _)) => labels.push(label.as_str()),
            None => groups.push((vec![label.as_str()], text.as_str())),
        }
    }
    if groups.len() < 2 {
        return None;
    }
    let mut report = format!("the variants disagree on {what}:\n");
    let (first_labels, first) = &groups[0];
    report += &format!("      [{}] saw:\n", first_labels.join("; "));
    for line in first.lines() {
        report += &format!("          {line}\n");
    }
    for (labels, text) in &groups[1..] {
        report += &format!("      [{}] saw instead:\n", labels.join("; "));
        for line in first
            .lines()
            .filter(|line| !text.lines().any(|l| l == *line))
        {
            report += &format!("        - {line}\n");
        }
        for line in text
            .lines()
            .filter(|line| !first.lines().any(|l| l == *line))
        {
            report += &format!("        + {line}\n");
        }
    }
    Some(report.trim_end().to_owned())
}

/// Panics with every failure, if any: `(case, what went wrong)`, grouped by case.
pub fn assert_none(invariant: &str, cases: usize, failures: &[(String, String)]) {
    if failures.is_empty() {
        return;
    }
    let mut failing: Vec<&str> = failures.iter().map(|(case, _)| case.as_str()).collect();
    failing.dedup();
    let mut report = format!(
        "{invariant}\n{} of {cases} cases fail ({} findings):\n",
        failing.len(),
        failures.len()
    );
    for case in failing {
        report += &format!("- {case:?}:\n");
        for (_, what) in failures.iter().filter(|(c, _)| c == case) {
            report += &format!("    {what}\n");
        }
    }
    panic!("{report}");
}
