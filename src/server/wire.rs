//! The worker side of the wire: the HTTP/1.1 that rip-server speaks to its
//! workers, as bytes.
//!
//! A worker connection carries one exchange at a time, from one client (the
//! server), to a process that keeps the worker protocol. That needs far less
//! than a general HTTP client (no pipelining, pooling or upgrades), and every
//! request crosses it twice, so it is written for that job alone: the request
//! head is encoded once into one buffer (which is also what a retry resends),
//! the response head is parsed by `httparse` in place and its header values
//! are slices of the read buffer, and bodies are framed here.
//!
//! The header policy of DESIGN §3 and worker-protocol §4 is applied in the
//! same pass: hop-by-hop headers (and those `Connection` names) never cross,
//! `Rip-*` headers never cross in either direction, and the worker gets
//! `Host` and `X-Forwarded-For/-Proto/-Host`.
//!
//! [`super::upstream`] moves these bytes over the worker's socket.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, StatusCode};
use smallvec::SmallVec;

use super::proxy::ClientInfo;

/// The largest response head a worker may send.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// The most header lines a worker's response head may have.
const MAX_HEADERS: usize = 100;
/// Header lines a response head may have before their spans spill to the heap.
const INLINE_HEADERS: usize = 24;

/// The readiness probe of worker-protocol §2.
pub const PROBE_REQUEST: &[u8] = b"GET /ready HTTP/1.1\r\nhost: rip-server\r\nrip-probe: 1\r\n\r\n";

/// A worker broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    #[error("response head larger than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    #[error("the worker answered 101 Switching Protocols, which rip-server does not forward")]
    Upgrade,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("the connection closed before the response was complete")]
    Truncated,
}

/// How a request body travels to a worker. The server frames it itself,
/// from what it knows of the body, never from the client's headers: an
/// upload the client sent chunked is never forwarded with a
/// `Content-Length` beside it, so the client cannot choose how the worker
/// frames the body (request smuggling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// This many bytes: a body read whole, or one whose length hyper checked.
    Length(u64),
    /// Unknown length (chunked HTTP/1.1 upload, or HTTP/2 without a length).
    Chunked,
}

/// The request head a worker receives for a client's request.
///
/// The forwarding headers say who the client is. From a peer that is not a
/// trusted proxy (`--trusted-proxies`) every such header the client sent is
/// dropped and the server writes its own, so an app can believe them:
/// `X-Forwarded-For` and `X-Real-IP` are the peer's address,
/// `X-Forwarded-Proto`, `-Host` and `-Port` what the peer connected to, and
/// `Forwarded` is not sent. From a trusted proxy its own headers pass:
/// `X-Forwarded-For` gains the peer's address, and the others are written
/// only where the proxy sent none. Header names with `_` never cross
/// (nginx's default): a CGI-style runtime would map `X_Forwarded_For` or
/// `Rip_Probe` onto the same variable as the real header.
pub fn encode_request_head(
    parts: &request::Parts,
    client: ClientInfo,
    framing: RequestFraming,
) -> Bytes {
    encode_unframed_head(parts, client).finish(framing, &[])
}

/// A request head encoded for a worker but for its framing: the body's
/// `Content-Length` or `Transfer-Encoding`, and the blank line, wait until
/// the body has been read (whole, if it is small). The client's parsed
/// request can be dropped meanwhile: the proxy's future, moved at every
/// level of the call chain, holds these bytes instead.
pub struct UnframedHead(BytesMut);

impl UnframedHead {
    /// The whole head, followed by `body` (a body read whole, or nothing).
    pub fn finish(self, framing: RequestFraming, body: &[u8]) -> Bytes {
        let mut out = self.0;
        out.reserve(48 + body.len());
        match framing {
            RequestFraming::Empty => {}
            RequestFraming::Length(length) => {
                let mut digits = itoa::Buffer::new();
                put_header(&mut out, "content-length", digits.format(length).as_bytes());
            }
            RequestFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        }
        out.put_slice(b"\r\n");
        out.put_slice(body);
        out.freeze()
    }
}

/// See [`encode_request_head`] and [`UnframedHead`].
pub fn encode_unframed_head(parts: &request::Parts, client: ClientInfo) -> UnframedHead {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = BytesMut::with_capacity(320 + target.len() + 48 * parts.headers.len());
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");

    // Host, the body's framing and the forwarding headers are written below
    // from what the server knows, never copied blindly: a client's
    // `Connection` header must not be able to remove them
    // (`Connection: content-length` would leave the body unframed, and the
    // worker would read it as a second request).
    let listed: Vec<HeaderName> =
        connection_options(parts.headers.get_all(header::CONNECTION)).collect();
    // The edge has left one `Host` at most (`edge::admit`); it is taken on the way.
    let mut host = None;
    for (name, value) in &parts.headers {
        if *name == header::HOST {
            host = Some(value.as_bytes());
            continue;
        }
        let written_below = *name == header::CONTENT_LENGTH || is_forwarding(name);
        if !written_below && crosses(name, &listed) && !name.as_str().contains('_') {
            put_header(&mut out, name.as_str(), value.as_bytes());
        }
    }
    let host = host.or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes()));
    if let Some(host) = host {
        put_header(&mut out, "host", host);
    }
    put_forwarding(&mut out, parts, client, host);
    UnframedHead(out)
}

/// The forwarding headers (see [`encode_request_head`]).
fn put_forwarding(
    out: &mut BytesMut,
    parts: &request::Parts,
    client: ClientInfo,
    host: Option<&[u8]>,
) {
    let headers = &parts.headers;
    let trusted = client.trusted;
    out.put_slice(b"x-forwarded-for: ");
    if trusted {
        for prior in headers.get_all(X_FORWARDED_FOR) {
            out.put_slice(prior.as_bytes());
            out.put_slice(b", ");
        }
    }
    out.put_slice(client.ip_text());
    out.put_slice(b"\r\n");
    // From a trusted proxy, what it says wins; from anyone else, ours (and
    // its headers are not even looked up).
    let from_proxy = |name: &HeaderName| trusted.then(|| headers.get(name)).flatten();
    match from_proxy(&X_REAL_IP) {
        Some(real) => put_header(out, "x-real-ip", real.as_bytes()),
        None => put_header(out, "x-real-ip", client.ip_text()),
    }
    match from_proxy(&X_FORWARDED_PROTO) {
        Some(proto) => put_header(out, "x-forwarded-proto", proto.as_bytes()),
        None => put_header(out, "x-forwarded-proto", client.scheme.as_str().as_bytes()),
    }
    match (from_proxy(&X_FORWARDED_HOST), host) {
        (Some(forwarded), _) => put_header(out, "x-forwarded-host", forwarded.as_bytes()),
        (None, Some(host)) => put_header(out, "x-forwarded-host", host),
        (None, None) => {}
    }
    match from_proxy(&X_FORWARDED_PORT) {
        Some(port) => put_header(out, "x-forwarded-port", port.as_bytes()),
        None => {
            let mut digits = itoa::Buffer::new();
            put_header(
                out,
                "x-forwarded-port",
                digits.format(client.port).as_bytes(),
            );
        }
    }
    if let Some(forwarded) = from_proxy(&header::FORWARDED) {
        put_header(out, "forwarded", forwarded.as_bytes());
    }
}

/// A header that says who the client is: only the server writes these.
fn is_forwarding(name: &HeaderName) -> bool {
    *name == X_FORWARDED_FOR
        || *name == X_FORWARDED_PROTO
        || *name == X_FORWARDED_HOST
        || *name == X_FORWARDED_PORT
        || *name == X_REAL_IP
        || *name == header::FORWARDED
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const RIP_WORKER_BUSY: &str = "rip-worker-busy";
const RIP_WORKER_DRAINING: &str = "rip-worker-draining";

/// Whether a header may cross the server: not hop-by-hop (RFC 9110 §7.6.1),
/// not `listed` by the message's `Connection`, not one of the protocol's own `Rip-*`.
fn crosses(name: &HeaderName, listed: &[HeaderName]) -> bool {
    !(is_hop_by_hop(name) || is_internal(name) || listed.contains(name))
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRAILER
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::PROXY_AUTHENTICATE
        || *name == header::PROXY_AUTHORIZATION
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

fn is_internal(name: &HeaderName) -> bool {
    name.as_str().starts_with("rip-")
}

/// The header names a `Connection` header lists (RFC 9110 §7.6.1), without
/// its `close` and `keep-alive` options. Usually none, so nothing is allocated.
fn connection_options<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue> + 'a,
) -> impl Iterator<Item = HeaderName> + 'a {
    values
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| name != "close" && name != "keep-alive")
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: `HEAD`, `204`, `304`.
    Empty,
    Length(u64),
    Chunked,
    /// Until the worker closes the connection.
    UntilClose,
}

/// A worker's response head, with the header policy applied.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    /// The headers the client may see.
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// The connection can carry another request once the body is read.
    pub reusable: bool,
    /// `503` with `Rip-Worker-Busy` or `Rip-Worker-Draining`: the app never
    /// saw the request, so it may go to another worker.
    pub busy: bool,
}

/// Where one header line lies in the head.
#[derive(Clone, Copy)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
}

impl Span {
    fn range(part: (u32, u32)) -> Range<usize> {
        part.0 as usize..part.1 as usize
    }
}

/// Parses a response head from the front of `buf`, skipping interim `1xx`
/// answers. `Ok(None)`: the head is not complete yet. On success the head
/// is taken off `buf`, which then starts with the body.
pub fn parse_response_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, WireError> {
    loop {
        // Left uninitialized: writing 100 empty headers (and 100 spans) cost
        // more than parsing a typical head.
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut raw,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(WireError::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Malformed("more than 100 header lines"))
            }
            Err(_) => return Err(WireError::Malformed("not an HTTP/1.x response head")),
        };
        let code = response.code.ok_or(WireError::Malformed("no status"))?;
        if (100..200).contains(&code) {
            if code == 101 {
                return Err(WireError::Upgrade);
            }
            // Interim answers (100 Continue, 103 Early Hints) are not passed on.
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Malformed("bad status"))?;
        let http10 = response.version == Some(0);
        // The spans outlive the borrow of `buf`, so the values can be cut
        // out of the same bytes once the head is split off.
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| {
            let start = (s.as_ptr() as usize - base) as u32;
            (start, start + s.len() as u32)
        };
        let spans: SmallVec<[Span; INLINE_HEADERS]> = response
            .headers
            .iter()
            .map(|line| Span {
                name: offset(line.name.as_bytes()),
                value: offset(line.value),
            })
            .collect();
        let head = buf.split_to(len).freeze();
        return build_head(&head, &spans, status, http10, head_request).map(Some);
    }
}

/// What the framing headers of a response said.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    /// Transfer-Encoding was present; `chunked`: its last coding is chunked.
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

fn build_head(
    head: &Bytes,
    spans: &[Span],
    status: StatusCode,
    http10: bool,
    head_request: bool,
) -> Result<ResponseHead, WireError> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    let mut framing = Framing::default();
    let mut busy_marker = false;
    let mut connection_values = Vec::new();
    for span in spans {
        let name = HeaderName::from_bytes(&head[Span::range(span.name)])
            .map_err(|_| WireError::Malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(Span::range(span.value)))
            .map_err(|_| WireError::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let length = parse_content_length(value.as_bytes())?;
            if framing.content_length.is_some_and(|l| l != length) {
                return Err(WireError::Malformed("conflicting Content-Length headers"));
            }
            framing.content_length = Some(length);
        } else if name == header::TRANSFER_ENCODING {
            framing.transfer_encoding = true;
            framing.chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                framing.close |= token.eq_ignore_ascii_case(b"close");
                framing.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
            connection_values.push(value);
            continue;
        }
        if is_internal(&name) {
            busy_marker |= matches!(name.as_str(), RIP_WORKER_BUSY | RIP_WORKER_DRAINING);
            continue;
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        headers.append(name, value);
    }
    // Headers the worker's `Connection` names are hop-by-hop too, except the
    // body's length, which the client needs (for `HEAD` it is all there is).
    for name in connection_options(&connection_values) {
        if name != header::CONTENT_LENGTH {
            headers.remove(name);
        }
    }

    let body =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            BodyFraming::Empty
        } else if framing.transfer_encoding {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3).
            headers.remove(header::CONTENT_LENGTH);
            if framing.chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            }
        } else {
            match framing.content_length {
                Some(length) => BodyFraming::Length(length),
                None => BodyFraming::UntilClose,
            }
        };
    let persistent = if http10 {
        framing.keep_alive
    } else {
        !framing.close
    };
    Ok(ResponseHead {
        status,
        headers,
        framing: body,
        reusable: persistent && body != BodyFraming::UntilClose,
        busy: status == StatusCode::SERVICE_UNAVAILABLE && busy_marker,
    })
}

/// `Content-Length`: digits, or a list of identical values.
fn parse_content_length(value: &[u8]) -> Result<u64, WireError> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(WireError::Malformed("bad Content-Length"));
        }
        let parsed = std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(WireError::Malformed("Content-Length out of range"))?;
        if length.is_some_and(|l| l != parsed) {
            return Err(WireError::Malformed("conflicting Content-Length values"));
        }
        length = Some(parsed);
    }
    length.ok_or(WireError::Malformed("empty Content-Length"))
}

/// The framing bytes around one chunk of a chunked request body.
pub fn chunk_prefix(len: usize) -> Bytes {
    Bytes::from(format!("{len:x}\r\n"))
}

pub const CHUNK_SUFFIX: &[u8] = b"\r\n";
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Decodes a chunked body (RFC 9112 §7.1) as its bytes arrive; trailers are
/// read and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Skipping a chunk extension up to the end of the line.
    Extension {
        size: u64,
    },
    /// Saw CR after the size line, expecting LF.
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    EndLf,
    Done,
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// Everything in the buffer was consumed; read more.
    NeedMore,
    /// The last chunk and trailers are read.
    End,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { size: 0, digits: 0 },
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    fn after_size_line(size: u64) -> ChunkState {
        if size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data { remaining: size }
        }
    }

    /// Consumes framing from `buf` and returns the next data it holds.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        use ChunkState::*;
        loop {
            if let Data { remaining } = self.state {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = remaining.min(buf.len() as u64) as usize;
                let left = remaining - take as u64;
                self.state = if left == 0 {
                    DataCr
                } else {
                    Data { remaining: left }
                };
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            if self.state == Done {
                return Ok(Decoded::End);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.state = match (self.state, byte) {
                (Size { size, digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 16 {
                        return Err(WireError::Chunked("chunk size too large"));
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Size {
                        size: size << 4 | digit,
                        digits: digits + 1,
                    }
                }
                (Size { size, digits }, b'\r') if digits > 0 => SizeLf { size },
                (Extension { size }, b'\r') => SizeLf { size },
                (Size { size, digits }, b'\n') if digits > 0 => Self::after_size_line(size),
                (Extension { size } | SizeLf { size }, b'\n') => Self::after_size_line(size),
                (Size { digits: 0, .. }, _) => return Err(WireError::Chunked("no chunk size")),
                (Size { size, .. }, b';' | b' ' | b'\t') => Extension { size },
                (Extension { size }, _) => Extension { size },
                (DataCr, b'\r') => DataLf,
                (DataCr | DataLf, b'\n') => Size { size: 0, digits: 0 },
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | EndLf, b'\n') => Done,
                (TrailerLine, b'\n') => TrailerStart,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                _ => return Err(WireError::Chunked("bad framing byte")),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::proxy::Scheme;
    use http::Request;
    use proptest::prelude::*;

    fn client() -> ClientInfo {
        ClientInfo::new("127.0.0.1".parse().unwrap(), Scheme::Http, 8080, false)
    }

    fn head_of(request: Request<()>, framing: RequestFraming) -> String {
        let (parts, ()) = request.into_parts();
        String::from_utf8(encode_request_head(&parts, client(), framing).to_vec()).unwrap()
    }

    fn lines(head: &str) -> Vec<&str> {
        head.split("\r\n").collect()
    }

    #[test]
    fn request_heads_carry_the_forwarding_headers_and_nothing_internal() {
        let request = Request::get("http://example.com/a?b=1")
            .header("rip-worker-busy", "1")
            .header("Rip-Probe", "1")
            .header("rip_probe", "1")
            .header("x_forwarded_for", "6.6.6.6")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "s")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "spoofed")
            .header("x-forwarded-port", "1")
            .header("x-real-ip", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("te", "trailers")
            .header("proxy-authorization", "Basic x")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let head = head_of(request, RequestFraming::Empty);
        let lines = lines(&head);
        assert_eq!(lines[0], "GET /a?b=1 HTTP/1.1");
        for gone in [
            "rip-",
            "rip_",
            "x_forwarded",
            "connection",
            "x-secret",
            "te:",
            "proxy-authorization",
            "spoofed",
            "10.0.0.1",
            "6.6.6.6",
            "forwarded:",
            "https",
        ] {
            assert!(!head.contains(gone), "{gone} crossed: {head}");
        }
        assert!(lines.contains(&"accept: */*"));
        assert!(lines.contains(&"x-forwarded-for: 127.0.0.1"));
        assert!(lines.contains(&"x-real-ip: 127.0.0.1"));
        assert!(lines.contains(&"x-forwarded-proto: http"));
        assert!(lines.contains(&"x-forwarded-port: 8080"));
        assert!(lines.contains(&"host: example.com"));
        assert!(lines.contains(&"x-forwarded-host: example.com"));
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_trusted_proxy_keeps_its_forwarding_headers() {
        let request = Request::get("/a")
            .header("host", "inner.example")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "public.example")
            .header("x-real-ip", "203.0.113.9")
            .header("forwarded", "for=203.0.113.9;proto=https")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let proxy = ClientInfo::new("10.0.0.5".parse().unwrap(), Scheme::Http, 80, true);
        let head = encode_request_head(&parts, proxy, RequestFraming::Empty);
        let head = String::from_utf8(head.to_vec()).unwrap();
        let lines = lines(&head);
        for line in [
            "x-forwarded-for: 203.0.113.9, 10.0.0.5",
            "x-real-ip: 203.0.113.9",
            "x-forwarded-proto: https",
            "x-forwarded-host: public.example",
            "x-forwarded-port: 80",
            "forwarded: for=203.0.113.9;proto=https",
            "host: inner.example",
        ] {
            assert!(lines.contains(&line), "{line} missing: {head}");
        }
        assert_eq!(head.matches("x-forwarded-for").count(), 1, "{head}");
    }

    #[test]
    fn connection_cannot_remove_the_framing_or_the_host() {
        let request = Request::post("/u")
            .header("host", "h")
            .header("connection", "content-length, host, transfer-encoding")
            .header("content-length", "37")
            .body(())
            .unwrap();
        let head = head_of(request, RequestFraming::Length(37));
        let lines = lines(&head);
        assert!(lines.contains(&"content-length: 37"), "{head}");
        assert!(lines.contains(&"host: h"), "{head}");
        assert_eq!(head.matches("content-length").count(), 1, "{head}");

        let request = Request::post("/u")
            .header("host", "h")
            .header("connection", "transfer-encoding")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let head = head_of(request, RequestFraming::Chunked);
        assert!(
            head.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{head}"
        );

        let (response, _) = parse(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 4\r\n\r\npong",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(response.headers["content-length"], "4");
        assert_eq!(response.framing, BodyFraming::Length(4));
    }

    #[test]
    fn request_framing_follows_the_body() {
        let with_length = Request::post("/u")
            .header("host", "h")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let head = head_of(with_length, RequestFraming::Length(3));
        assert!(lines(&head).contains(&"content-length: 3"));
        assert!(!head.contains("transfer-encoding"));

        let streamed = Request::post("/u")
            .header("host", "h")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        let head = head_of(streamed, RequestFraming::Chunked);
        assert_eq!(head.matches("transfer-encoding: chunked").count(), 1);

        // The client's own Content-Length never crosses: only the server's.
        let lying = Request::post("/u")
            .header("host", "h")
            .header("content-length", "3, 3")
            .body(())
            .unwrap();
        let head = head_of(lying, RequestFraming::Length(3));
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert!(lines(&head).contains(&"content-length: 3"), "{head}");
    }

    fn parse(raw: &str, head_request: bool) -> Result<Option<(ResponseHead, BytesMut)>, WireError> {
        let mut buf = BytesMut::from(raw);
        parse_response_head(&mut buf, head_request).map(|h| h.map(|h| (h, buf)))
    }

    #[test]
    fn response_heads_are_parsed_and_cleaned() {
        let (head, rest) = parse(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 4\r\nRip-Worker-Id: 3\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n\r\npong",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, BodyFraming::Length(4));
        assert!(head.reusable);
        assert!(!head.busy);
        assert_eq!(head.headers["content-type"], "text/plain");
        assert_eq!(head.headers["content-length"], "4");
        for gone in ["rip-worker-id", "connection", "x-hop", "keep-alive"] {
            assert!(head.headers.get(gone).is_none(), "{gone} crossed");
        }
        assert_eq!(&rest[..], b"pong");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |raw: &str, head: bool| parse(raw, head).unwrap().unwrap().0;
        let chunked = framing(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(chunked.headers.get("content-length").is_none());
        let close = framing("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(close.framing, BodyFraming::UntilClose);
        assert!(!close.reusable);
        let head = framing("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true);
        assert_eq!(head.framing, BodyFraming::Empty);
        assert_eq!(head.headers["content-length"], "10");
        let no_content = framing("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(no_content.framing, BodyFraming::Empty);
        assert!(no_content.reusable);
        let closing = framing(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!closing.reusable);
        let old = framing("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!old.reusable);
        let list = framing("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false);
        assert_eq!(list.framing, BodyFraming::Length(3));
    }

    #[test]
    fn busy_answers_are_recognised_and_interim_answers_skipped() {
        let (head, _) = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nRip-Worker-Busy: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(head.busy);
        assert!(head.headers.get("rip-worker-busy").is_none());
        let (plain_503, _) = parse("HTTP/1.1 503 Nope\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!plain_503.busy);
    }

    #[test]
    fn broken_response_heads_are_errors() {
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Len", false)
            .unwrap()
            .is_none());
        for raw in [
            "SMTP ready\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            assert!(parse(raw, false).is_err(), "{raw:?} was accepted");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(parse(&huge, false).unwrap_err(), WireError::HeadTooLarge);
    }

    /// Decodes `wire` fed in pieces cut at `cuts`.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, bool), WireError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.sort_unstable();
        points.push(wire.len());
        for point in points {
            buf.extend_from_slice(&wire[fed..point.max(fed)]);
            fed = point.max(fed);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(data) => out.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, buf.is_empty())),
                }
            }
        }
        Ok((out, false))
    }

    fn encode_chunked(chunks: &[Vec<u8>], extension: bool, trailer: bool) -> Vec<u8> {
        let mut wire = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            wire.extend_from_slice(format!("{:X}", chunk.len()).as_bytes());
            if extension {
                wire.extend_from_slice(b";name=value");
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n");
        if trailer {
            wire.extend_from_slice(b"x-checksum: 1\r\n");
        }
        wire.extend_from_slice(b"\r\n");
        wire
    }

    proptest! {
        #[test]
        fn chunked_bodies_decode_whole_however_they_are_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            extension in any::<bool>(),
            trailer in any::<bool>(),
        ) {
            let wire = encode_chunked(&chunks, extension, trailer);
            let (data, exact) = decode_in_pieces(&wire, &cuts).unwrap();
            prop_assert_eq!(data, chunks.concat());
            prop_assert!(exact, "the decoder stopped before the end of the body");
        }

        #[test]
        fn the_request_chunk_encoder_round_trips(data in proptest::collection::vec(any::<u8>(), 1..500)) {
            let mut wire = chunk_prefix(data.len()).to_vec();
            wire.extend_from_slice(&data);
            wire.extend_from_slice(CHUNK_SUFFIX);
            wire.extend_from_slice(LAST_CHUNK);
            prop_assert_eq!(decode_in_pieces(&wire, &[]).unwrap().0, data);
        }

        #[test]
        fn encoded_heads_reparse_with_one_host_and_only_the_servers_forwarding(
            headers in proptest::collection::vec((
                prop_oneof![
                    Just("host"), Just("Rip-Probe"), Just("rip_probe"), Just("x_forwarded_for"),
                    Just("x-forwarded-for"), Just("x-real-ip"), Just("forwarded"),
                    Just("x-forwarded-proto"), Just("connection"), Just("content-length"),
                    Just("transfer-encoding"), Just("x-app"), Just("cookie"),
                ],
                "[ -~]{0,20}",
            ), 0..12),
            framing in 0u8..3,
            trusted in any::<bool>(),
        ) {
            let mut builder = Request::get("/p?q=1");
            for (name, value) in &headers {
                builder = builder.header(*name, value.as_str());
            }
            let Ok(request) = builder.body(()) else { return Ok(()) };
            let (mut parts, ()) = request.into_parts();
            if crate::server::edge::admit(&mut parts).is_err() {
                return Ok(());
            }
            let framing = match framing {
                0 => RequestFraming::Empty,
                1 => RequestFraming::Length(7),
                _ => RequestFraming::Chunked,
            };
            let client = ClientInfo::new("192.0.2.7".parse().unwrap(), Scheme::Https, 443, trusted);
            let head = encode_request_head(&parts, client, framing);
            let mut out = [httparse::EMPTY_HEADER; 64];
            let mut reparsed = httparse::Request::new(&mut out);
            prop_assert_eq!(reparsed.parse(&head).unwrap(), httparse::Status::Complete(head.len()));
            let count = |name: &str| reparsed.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
            prop_assert_eq!(count("host"), 1);
            prop_assert!(count("content-length") + count("transfer-encoding") <= 1);
            prop_assert_eq!(count("x-forwarded-for"), 1);
            for header in reparsed.headers.iter() {
                let name = header.name.to_ascii_lowercase();
                prop_assert!(!name.starts_with("rip-") && !name.contains('_'), "{} crossed", name);
                if !trusted {
                    prop_assert!(name != "forwarded");
                    if name == "x-forwarded-for" || name == "x-real-ip" {
                        prop_assert_eq!(header.value, b"192.0.2.7");
                    }
                }
            }
        }

        #[test]
        fn garbage_never_panics_the_parsers(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut buf = BytesMut::from(&raw[..]);
            let _ = parse_response_head(&mut buf, false);
            let mut buf = BytesMut::from(&raw[..]);
            let mut decoder = ChunkedDecoder::default();
            while let Ok(Decoded::Data(_)) = decoder.decode(&mut buf) {}
        }
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        for wire in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"11111111111111111\r\n",
        ] {
            assert!(
                decode_in_pieces(wire, &[]).is_err(),
                "{wire:?} was accepted"
            );
        }
    }
}
