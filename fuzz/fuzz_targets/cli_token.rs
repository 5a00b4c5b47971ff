//! The positional CLI tokens (`w:`, `r:`, `http:`, ports): any text either
//! classifies, and prints back to the same value, or is an error that names
//! the token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rip_server::cli::Token;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Token::parse(text) {
        Ok(Token::Workers(w)) => assert_eq!(Token::parse(&w.to_string()), Ok(Token::Workers(w))),
        Ok(Token::Restart(r)) => assert_eq!(Token::parse(&r.to_string()), Ok(Token::Restart(r))),
        Ok(Token::Listen(l)) => assert_eq!(Token::parse(&l.to_string()), Ok(Token::Listen(l))),
        Ok(Token::App(_)) => {}
        Err(e) => assert_eq!(e.token, text),
    }
});
