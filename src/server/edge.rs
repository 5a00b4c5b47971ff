//! The edge: what the server settles about a client's request before it is
//! routed anywhere, so that no app ever sees an ambiguous one.
//!
//! - **Method.** `CONNECT` (tunnels) and `TRACE` (it would echo credentials
//!   back) do not cross: `501` and `405`.
//! - **Framing.** A `Transfer-Encoding` other than a single `chunked` gets
//!   `501`: the server would strip a `gzip` coding on the way (it re-frames
//!   bodies itself), and the app would read compressed bytes as the body.
//! - **Authority.** The request's authority is settled once: HTTP/2's
//!   `:authority` and an HTTP/1.1 absolute-form target win over `Host`
//!   (RFC 9113 §8.3.1, RFC 9112 §3.2.2); an HTTP/1.1 request needs exactly
//!   one valid `Host` (RFC 9112 §3.2). The authority must be an RFC 3986
//!   host with an optional port and nothing else (`x/echo?` would otherwise
//!   become part of the URL an app builds), and it is written back as the
//!   request's one `Host` header, which is what routing and workers read
//!   (an HTTP/1.0 request without one gets [`NO_HOST`]).

use http::header::{self, HeaderValue};
use http::{request, Method, StatusCode, Version};

/// The `Host` an HTTP/1.0 request without one is given.
pub const NO_HOST: &str = "localhost";

/// Why a request is refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Connect,
    Trace,
    TransferCoding,
    MissingHost,
    DuplicateHost,
    BadAuthority(&'static str),
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Connect | Refusal::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::Trace => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::MissingHost | Refusal::DuplicateHost | Refusal::BadAuthority(_) => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    pub fn message(self) -> String {
        match self {
            Refusal::Connect => "CONNECT is not supported: rip-server does not tunnel\n".into(),
            Refusal::Trace => "TRACE is not allowed\n".into(),
            Refusal::TransferCoding => {
                "unsupported Transfer-Encoding: only chunked is accepted\n".into()
            }
            Refusal::MissingHost => "an HTTP/1.1 request needs a Host header\n".into(),
            Refusal::DuplicateHost => "more than one Host header\n".into(),
            Refusal::BadAuthority(why) => format!("invalid Host: {why}\n"),
        }
    }

    /// The `Allow` header a `405` must carry.
    pub fn allow(self) -> Option<HeaderValue> {
        (self == Refusal::Trace)
            .then(|| HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"))
    }
}

/// Checks a request and settles its authority into one `Host` header.
pub fn admit(parts: &mut request::Parts) -> Result<(), Refusal> {
    match parts.method {
        Method::CONNECT => return Err(Refusal::Connect),
        Method::TRACE => return Err(Refusal::Trace),
        _ => {}
    }
    if !only_chunked(parts.headers.get_all(header::TRANSFER_ENCODING)) {
        return Err(Refusal::TransferCoding);
    }
    match effective_authority(parts)? {
        // The common case: the one valid `Host` is the authority already.
        Authority::Host => {}
        Authority::Target(authority) => {
            parts.headers.insert(header::HOST, authority);
        }
        // HTTP/1.0 may name no host; workers speak HTTP/1.1, which needs one.
        Authority::Missing => {
            parts
                .headers
                .insert(header::HOST, HeaderValue::from_static(NO_HOST));
        }
    }
    Ok(())
}

/// Where a request's authority comes from, once checked.
enum Authority {
    /// Its one `Host` header.
    Host,
    /// Its target (absolute form, or HTTP/2's `:authority`), which wins
    /// over any `Host`.
    Target(HeaderValue),
    /// Nowhere (HTTP/1.0 without `Host`).
    Missing,
}

/// No `Transfer-Encoding`, or exactly one `chunked` coding.
fn only_chunked<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> bool {
    let mut codings = values
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    match codings.next() {
        None => true,
        Some(first) => first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none(),
    }
}

/// The authority the request is for, checked (RFC 9112 §3.2, RFC 9113 §8.3.1).
fn effective_authority(parts: &request::Parts) -> Result<Authority, Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    if parts.version == Version::HTTP_11 && host.is_none() {
        return Err(Refusal::MissingHost);
    }
    if let Some(host) = host {
        // Checked even when the target's authority wins (RFC 9112 §3.2).
        check_authority(host.as_bytes()).map_err(Refusal::BadAuthority)?;
    }
    match (parts.uri.authority(), host) {
        (Some(authority), _) => {
            check_authority(authority.as_str().as_bytes()).map_err(Refusal::BadAuthority)?;
            HeaderValue::from_str(authority.as_str())
                .map(Authority::Target)
                .map_err(|_| Refusal::BadAuthority("not visible ASCII"))
        }
        (None, Some(_)) => Ok(Authority::Host),
        (None, None) => Ok(Authority::Missing),
    }
}

/// An RFC 3986 authority without userinfo: `host[:port]`, where host is a
/// bracketed IPv6 address, an IPv4 address or a registered name (of the
/// characters [`check_reg_name`] allows).
pub fn check_authority(value: &[u8]) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("empty");
    }
    let (host, port) = if value[0] == b'[' {
        let close = value
            .iter()
            .position(|&b| b == b']')
            .ok_or("unclosed IPv6 bracket")?;
        let literal = std::str::from_utf8(&value[1..close]).map_err(|_| "not ASCII")?;
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in brackets")?;
        match &value[close + 1..] {
            [] => (&value[..=close], None),
            [b':', port @ ..] => (&value[..=close], Some(port)),
            _ => return Err("text after the IPv6 address"),
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    if let Some(port) = port {
        check_port(port)?;
    }
    if host.first() != Some(&b'[') {
        check_reg_name(host)?;
    }
    Ok(())
}

/// A host name as real clients send it: letters, digits, `-`, `.` and `_`
/// (IDNs arrive as punycode). RFC 3986 would also allow `%`-escapes and
/// `!$&'()*+,;=`; no DNS name holds them, URL parsers disagree about them
/// (`%41.example` is `a.example` to a browser and invalid to the `http`
/// crate), so they are refused rather than passed to apps to interpret.
fn check_reg_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("no host name");
    }
    // One table lookup per byte: this runs on every request.
    match name.iter().find(|&&b| !HOST_NAME_BYTES[b as usize]) {
        None => Ok(()),
        Some(b'@') => Err("userinfo is not allowed"),
        Some(b'/' | b'?' | b'#') => Err("a path, query or fragment is not allowed"),
        Some(_) => Err("a character a host name cannot hold"),
    }
}

/// The bytes [`check_reg_name`] allows, by value.
static HOST_NAME_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        allowed[b] =
            matches!(b as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_');
        b += 1;
    }
    allowed
};

/// An authority's port: up to five digits, at most 65535 (RFC 3986 allows it empty).
fn check_port(port: &[u8]) -> Result<(), &'static str> {
    if port.len() > 5 {
        return Err("the port is not a number");
    }
    let mut value = 0u32;
    for &b in port {
        if !b.is_ascii_digit() {
            return Err("the port is not a number");
        }
        value = value * 10 + u32::from(b - b'0');
    }
    if value > 65535 {
        return Err("the port is over 65535");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    fn parts(request: Request<()>) -> request::Parts {
        request.into_parts().0
    }

    #[test]
    fn authorities_follow_rfc_3986() {
        for good in [
            "example.com",
            "example.com:8080",
            "EXAMPLE.com",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
            "a_b.example",
            "localhost:0",
            "h:65535",
        ] {
            assert_eq!(check_authority(good.as_bytes()), Ok(()), "{good}");
        }
        for bad in [
            "",
            "x/echo?",
            "x?y",
            "x#y",
            "user@example.com",
            "a b",
            "[::1",
            "[nope]",
            "[::1]x",
            "h:port",
            "h:65536",
            "h:123456",
            "%41.example",
            "a!b",
            "a*b",
            ":80",
            "a:b:c",
            "tab\there",
        ] {
            assert!(check_authority(bad.as_bytes()).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn the_target_or_authority_wins_over_host() {
        let mut h2 = parts(
            Request::get("https://real.example/p")
                .version(Version::HTTP_2)
                .header("host", "other.example")
                .body(())
                .unwrap(),
        );
        admit(&mut h2).unwrap();
        assert_eq!(h2.headers["host"], "real.example");

        let mut absolute = parts(
            Request::get("http://real.example:8080/p")
                .header("host", "other.example")
                .body(())
                .unwrap(),
        );
        admit(&mut absolute).unwrap();
        assert_eq!(absolute.headers["host"], "real.example:8080");
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let mut missing = parts(Request::get("/").body(()).unwrap());
        assert_eq!(admit(&mut missing), Err(Refusal::MissingHost));
        let mut old = parts(
            Request::get("/")
                .version(Version::HTTP_10)
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut old), Ok(()));
        assert_eq!(old.headers["host"], NO_HOST);
        let mut twice = parts(
            Request::get("/")
                .header("host", "a")
                .header("host", "a")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut twice), Err(Refusal::DuplicateHost));
        let mut bad = parts(
            Request::get("/ping")
                .header("host", "x/echo?")
                .body(())
                .unwrap(),
        );
        assert!(matches!(admit(&mut bad), Err(Refusal::BadAuthority(_))));
        // Validated even when an absolute target would win.
        let mut bad_but_absolute = parts(
            Request::get("http://ok.example/")
                .header("host", "x/y")
                .body(())
                .unwrap(),
        );
        assert!(matches!(
            admit(&mut bad_but_absolute),
            Err(Refusal::BadAuthority(_))
        ));
    }

    #[test]
    fn methods_and_codings_that_do_not_cross() {
        let mut connect = parts(
            Request::connect("example.com:443")
                .header("host", "example.com:443")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut connect), Err(Refusal::Connect));
        let mut trace = parts(
            Request::builder()
                .method("TRACE")
                .uri("/")
                .header("host", "h")
                .body(())
                .unwrap(),
        );
        assert_eq!(admit(&mut trace), Err(Refusal::Trace));
        assert!(Refusal::Trace.allow().is_some());
        for (coding, ok) in [
            ("chunked", true),
            ("Chunked", true),
            ("gzip, chunked", false),
            ("gzip", false),
            ("chunked, chunked", false),
        ] {
            let mut post = parts(
                Request::post("/")
                    .header("host", "h")
                    .header("transfer-encoding", coding)
                    .body(())
                    .unwrap(),
            );
            assert_eq!(admit(&mut post).is_ok(), ok, "{coding}");
        }
    }

    proptest! {
        #[test]
        fn accepted_authorities_hold_nothing_that_changes_a_url(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            if check_authority(&raw).is_ok() {
                for b in b"/?#@ \t\r\n\\" {
                    prop_assert!(!raw.contains(b), "{:?}", String::from_utf8_lossy(&raw));
                }
                // What a loader builds from it parses back to the same authority.
                let text = String::from_utf8(raw.clone()).unwrap();
                let uri: http::Uri = format!("http://{text}/p").parse().unwrap();
                prop_assert_eq!(uri.path(), "/p");
            }
        }
    }
}
