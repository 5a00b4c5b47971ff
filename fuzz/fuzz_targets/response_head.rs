//! A worker's response head: any bytes either parse to a head with the
//! header policy applied (nothing internal or hop-by-hop reaches a client)
//! or are an error, never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rip_server::server::wire::parse_response_head;

fuzz_target!(|data: &[u8]| {
    let Some((flags, raw)) = data.split_first() else {
        return;
    };
    let mut buf = BytesMut::from(raw);
    let before = buf.len();
    if let Ok(Some(head)) = parse_response_head(&mut buf, flags & 1 == 1) {
        assert!(buf.len() < before, "a head was taken off the buffer");
        for name in head.headers.keys() {
            let name = name.as_str();
            assert!(!name.starts_with("rip-"), "{name} reached the client");
            assert!(
                !matches!(name, "connection" | "transfer-encoding" | "keep-alive" | "upgrade"),
                "{name} reached the client"
            );
        }
    }
});
