//! A host pattern as routes and TLS certificates name it: an exact name or `*.suffix`, parsed
//! and lower-cased once when the config is read, and matched against a request's host (port
//! already stripped) case-insensitively without allocating.

/// A route's `host`: an exact name, or `*.suffix` for any name below `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: matches `a.example.com` and `a.b.example.com`,
    /// not `example.com` itself (as nginx's `*.example.com`).
    Wildcard(String),
}

impl HostPattern {
    /// Parses a config host such as `"api.example.com"` or `"*.example.com"`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.to_ascii_lowercase();
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (lower.as_str(), false),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(format!(
                "{text:?} is not a host name or \"*.domain\" pattern (no port, no other '*')"
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(format!(".{name}"))
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    /// Whether this is an exact name rather than a wildcard.
    pub fn is_exact(&self) -> bool {
        matches!(self, HostPattern::Exact(_))
    }

    /// Whether `host` (already stripped of its port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_patterns_are_rejected() {
        for bad in [
            "",
            "*.",
            "a*.com",
            "*",
            "example.com:80",
            "ex ample.com",
            "**.a.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}

#[cfg(test)]
mod properties {
    //! Bounded fuzzing (proptest): a pattern matches what its definition says, for any host.

    use proptest::prelude::*;

    use super::HostPattern;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// A host pattern matches exactly what its definition says, for any host.
        #[test]
        fn host_patterns_match_by_definition(name in "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}", host in "[a-zA-Z.]{0,20}", wildcard in any::<bool>()) {
            let text = if wildcard { format!("*.{name}") } else { name.clone() };
            let pattern = HostPattern::parse(&text).unwrap();
            let host_lower = host.to_ascii_lowercase();
            let expected = if wildcard {
                host_lower.ends_with(&format!(".{name}")) && host_lower.len() > name.len() + 1
            } else {
                host_lower == name
            };
            prop_assert_eq!(pattern.matches(&host), expected);
        }
    }
}
