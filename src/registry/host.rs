//! Host names as the registry keeps and matches them.
//!
//! A registered name is a DNS name in its ASCII form: lowercase, IDNA-encoded
//! (`Bücher.example` is kept as `xn--bcher-kva.example`), no port, no
//! trailing dot; or a wildcard `*.example.com`, which matches exactly one
//! more label (`a.example.com`, not `example.com` nor `a.b.example.com`).
//! A request's `Host` is reduced the same way before it is looked up
//! ([`request_host`]), so matching is exact string equality.

use std::borrow::Cow;
use std::fmt;

/// A host name or wildcard pattern, validated and normalized.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// `example.com`
    Exact(String),
    /// `*.example.com`, kept as its parent `example.com`.
    Wildcard(String),
}

/// Why a host name cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host '{host}': {why}")]
pub struct HostError {
    pub host: String,
    pub why: String,
}

/// Longest DNS name (RFC 1035).
const MAX_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;

impl HostPattern {
    /// Validates and normalizes a host name as typed (`Labs.Example.COM`,
    /// `*.example.com`, `bücher.example`).
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        let fail = |why: &str| HostError {
            host: raw.to_string(),
            why: why.to_string(),
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        if trimmed.contains("://") || trimmed.contains('/') {
            return Err(fail("give the host name alone, without a scheme or a path"));
        }
        if trimmed.starts_with('[') || trimmed.contains(':') {
            return Err(fail(
                "give the host name without a port (the server's listeners decide the port)",
            ));
        }
        let (wildcard, name) = match trimmed.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if name.contains('*') {
            return Err(fail(
                "a wildcard is allowed only as the whole first label: *.example.com",
            ));
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        let ascii = idna::domain_to_ascii(name)
            .map_err(|_| fail("it is not a valid internationalized domain name"))?;
        check_dns_name(&ascii).map_err(|why| fail(&why))?;
        if wildcard && !ascii.contains('.') {
            return Err(fail(
                "a wildcard needs a parent with at least two labels: *.example.com",
            ));
        }
        Ok(if wildcard {
            HostPattern::Wildcard(ascii)
        } else {
            HostPattern::Exact(ascii)
        })
    }

    /// Whether `host` (already reduced by [`request_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(parent) => write!(f, "*.{parent}"),
        }
    }
}

/// Letters, digits and hyphens in labels of 1 to 63 characters, not
/// starting or ending with a hyphen; at most 253 characters in all.
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("it is longer than {MAX_NAME} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (two dots in a row)".into());
        }
        if label.len() > MAX_LABEL {
            return Err(format!(
                "the label '{label}' is longer than {MAX_LABEL} characters"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "the label '{label}' holds a character other than letters, digits and '-'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("the label '{label}' starts or ends with '-'"));
        }
    }
    Ok(())
}

/// A request's `Host` (already validated by the edge) reduced for lookup:
/// without its port and trailing dot, in lower case. Borrowed when it is
/// already in that form, which is the common case.
pub fn request_host(authority: &str) -> Cow<'_, str> {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets; it is never a registered name.
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _port)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(s: &str) -> HostPattern {
        HostPattern::Exact(s.to_string())
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            HostPattern::parse("Labs.Example.COM"),
            Ok(exact("labs.example.com"))
        );
        assert_eq!(HostPattern::parse("example.com."), Ok(exact("example.com")));
        assert_eq!(
            HostPattern::parse("bücher.example"),
            Ok(exact("xn--bcher-kva.example"))
        );
        assert_eq!(HostPattern::parse("localhost"), Ok(exact("localhost")));
        assert_eq!(
            HostPattern::parse("*.Apps.Example"),
            Ok(HostPattern::Wildcard("apps.example".into()))
        );
        assert_eq!(
            HostPattern::parse("*.apps.example").unwrap().to_string(),
            "*.apps.example"
        );
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        for (raw, says) in [
            ("", "empty"),
            ("example.com:8080", "without a port"),
            ("https://example.com", "without a scheme"),
            ("a..b", "empty label"),
            ("a_b.example", "other than letters"),
            ("-a.example", "starts or ends"),
            ("a.*.example", "whole first label"),
            ("*.com", "at least two labels"),
            ("[::1]", "without a port"),
        ] {
            let err = HostPattern::parse(raw).unwrap_err();
            assert_eq!(err.host, raw);
            assert!(err.to_string().contains(says), "{raw}: {err}");
        }
        let long = format!("{}.example", "a".repeat(64));
        assert!(HostPattern::parse(&long)
            .unwrap_err()
            .why
            .contains("longer than 63"));
    }

    #[test]
    fn wildcards_match_one_label() {
        let pattern = HostPattern::parse("*.example.com").unwrap();
        assert!(pattern.matches("a.example.com"));
        assert!(!pattern.matches("example.com"));
        assert!(!pattern.matches("a.b.example.com"));
        assert!(!pattern.matches(".example.com"));
    }

    #[test]
    fn request_hosts_lose_their_port_case_and_trailing_dot() {
        assert_eq!(request_host("Labs.Example.com:5700"), "labs.example.com");
        assert_eq!(request_host("labs.example.com."), "labs.example.com");
        assert!(matches!(request_host("labs.example.com"), Cow::Borrowed(_)));
        assert_eq!(request_host("[::1]:443"), "[::1]");
        assert_eq!(request_host("127.0.0.1:80"), "127.0.0.1");
    }

    proptest! {
        #[test]
        fn a_parsed_name_parses_back_to_itself(raw in "(\\*\\.)?[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){0,3}") {
            if let Ok(pattern) = HostPattern::parse(&raw) {
                prop_assert_eq!(HostPattern::parse(&pattern.to_string()), Ok(pattern.clone()));
                if let HostPattern::Exact(name) = &pattern {
                    prop_assert!(pattern.matches(&request_host(&raw.to_ascii_uppercase())));
                    prop_assert_eq!(&*request_host(name), name.as_str());
                }
            }
        }
    }
}
