//! The Host validator: whatever it accepts cannot change the URL an app
//! builds from it (`${proto}://${host}${path}`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rip_server::server::edge::check_authority;

fuzz_target!(|data: &[u8]| {
    if check_authority(data).is_err() {
        return;
    }
    for b in b"/?#@ \t\r\n\\" {
        assert!(!data.contains(b), "{:?}", String::from_utf8_lossy(data));
    }
    let text = std::str::from_utf8(data).expect("accepted authorities are ASCII");
    let uri: http::Uri = format!("http://{text}/p").parse().expect("it makes a URL");
    assert_eq!(uri.path(), "/p");
});
