//! The request head a worker receives, for any request a client can send:
//! it parses back as one HTTP/1.1 request with exactly one Host, at most one
//! framing header, no internal (`Rip-*`) or underscore header, and the
//! forwarding headers written by the server alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rip_server::server::proxy::{ClientInfo, Scheme};
use rip_server::server::wire::{encode_request_head, RequestFraming};

fuzz_target!(|data: &[u8]| {
    let Some((framing_byte, raw)) = data.split_first() else {
        return;
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = request.parse(raw) else {
        return;
    };
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(path);
    for header in request.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let Ok(parsed) = builder.body(()) else {
        return;
    };
    let (mut parts, ()) = parsed.into_parts();
    // The edge settles the authority before anything is encoded.
    if rip_server::server::edge::admit(&mut parts).is_err() {
        return;
    }
    let framing = match framing_byte % 3 {
        0 => RequestFraming::Empty,
        1 => RequestFraming::Length(u64::from(*framing_byte)),
        _ => RequestFraming::Chunked,
    };
    let trusted = framing_byte & 0x80 != 0;
    let client = ClientInfo::new("192.0.2.7".parse().unwrap(), Scheme::Https, 443, trusted);
    let head = encode_request_head(&parts, client, framing);

    let mut out = [httparse::EMPTY_HEADER; 128];
    let mut reparsed = httparse::Request::new(&mut out);
    let status = reparsed.parse(&head).expect("the encoded head parses");
    assert_eq!(status, httparse::Status::Complete(head.len()), "one head, nothing after it");
    let count = |name: &str| {
        reparsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1);
    assert!(count("content-length") + count("transfer-encoding") <= 1);
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(count("x-real-ip"), 1);
    for header in reparsed.headers.iter() {
        let name = header.name.to_ascii_lowercase();
        assert!(!name.starts_with("rip-"), "{name} crossed");
        assert!(!name.contains('_'), "{name} crossed");
        if !trusted {
            assert!(name != "forwarded", "an untrusted Forwarded crossed");
        }
    }
});
