//! The chunked decoder, fed any bytes in any pieces: never panics, never
//! yields more data than it was given, and stops at its end.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rip_server::server::wire::{ChunkedDecoder, Decoded};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, wire)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = 0usize;
    for piece in wire.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => {
                    assert!(!data.is_empty());
                    out += data.len();
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => {
                    assert!(decoder.is_done());
                    assert!(out <= wire.len());
                    return;
                }
                Err(_) => return,
            }
        }
    }
    assert!(out <= wire.len());
});
