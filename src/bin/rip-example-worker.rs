//! A fast example worker built on `rip_server::worker_kit`, used by the tests
//! and the load benchmark. Run it as an app: `rip-server target/release/rip-example-worker http:5002`.
//!
//! Routes: `/ping` → `pong`; `/` → JSON naming the worker; `/sleep?ms=N`;
//! `/echo` → the method, path and body length; `/exit` → the process exits
//! mid-request (a crash, for tests); `/with-sts` → sets its own Strict-Transport-Security;
//! `/status/N` → an empty response with status N.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rip_server::worker_kit::{self, text, WorkerEnv};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let env = match WorkerEnv::from_env() {
        Ok(env) => env,
        Err(e) => {
            eprintln!("rip-example-worker: {e}");
            std::process::exit(2);
        }
    };
    let (id, version) = (env.id, env.version);
    if let Err(e) = worker_kit::run(env, move |request| handle(request, id, version)).await {
        eprintln!("rip-example-worker: {e}");
        std::process::exit(1);
    }
}

async fn handle(request: Request<Incoming>, id: u64, version: u64) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    match path.as_str() {
        "/ping" => text(200, "pong"),
        "/" => text(
            200,
            format!("{{\"hello\":\"rip-server\",\"worker\":{id},\"version\":{version}}}"),
        ),
        "/sleep" => {
            let ms = query_number(&query, "ms").unwrap_or(100).min(60_000);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            text(200, format!("slept {ms}"))
        }
        "/echo" => {
            let method = request.method().clone();
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return text(400, format!("body: {e}")),
            };
            text(200, format!("{method} {path} {}", body.len()))
        }
        "/exit" => std::process::exit(1),
        "/with-sts" => {
            // An app that sets its own HSTS policy (the server must not override it).
            let mut response = text(200, "own policy");
            response.headers_mut().insert(
                "strict-transport-security",
                http::HeaderValue::from_static("max-age=60"),
            );
            response
        }
        _ => match path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
        {
            Some(code) => text(code, ""),
            None => text(404, "not found"),
        },
    }
}

fn query_number(query: &str, key: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}
