//! rip-bench-tls-client: one new TCP + TLS connection per request, for the
//! handshake rows of benches/tls.sh.
//!
//!   rip-bench-tls-client --addr 127.0.0.1:PORT [--name localhost] [--path /ping]
//!       [-c 16] [-z 10] [--cacert FILE] [--resume]
//!
//! `-c` tasks each loop until `-z` seconds have passed: connect, TLS handshake
//! (SNI and certificate check against `--name`, trusting `--cacert`), send
//! `GET PATH HTTP/1.1` with `Connection: close`, read the answer to the end,
//! record the time from connect to the last byte. Requests in flight at the
//! deadline finish and count (like oha -w). Without `--resume` the client keeps
//! no TLS sessions, so every handshake is a full one whatever the server
//! offers; with it, rustls' default session cache is used (as oha does).
//!
//! Prints JSON on stdout shaped like `oha --output-format json` for the fields
//! benches/load/summarize.py reads (summary.total, statusCodeDistribution,
//! errorDistribution, latencyPercentiles), plus `handshakes` {full, resumed}
//! counted from rustls' own record of each connection, and `uncleanClose`
//! (answers read in full whose connection ended without a TLS close_notify).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Args {
    addr: SocketAddr,
    name: String,
    path: String,
    connections: usize,
    seconds: f64,
    cacert: Option<String>,
    resume: bool,
}

fn usage(message: &str) -> ! {
    eprintln!("rip-bench-tls-client: {message}");
    eprintln!("usage: rip-bench-tls-client --addr HOST:PORT [--name localhost] [--path /ping] [-c 16] [-z 10] [--cacert FILE] [--resume]");
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut out = Args {
        addr: "127.0.0.1:0".parse().unwrap(),
        name: "localhost".into(),
        path: "/ping".into(),
        connections: 16,
        seconds: 10.0,
        cacert: None,
        resume: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().unwrap_or_else(|| usage(&format!("{what} needs a value")));
        match arg.as_str() {
            "--addr" => addr = Some(value("--addr").parse().unwrap_or_else(|_| usage("--addr: expected HOST:PORT with an IP"))),
            "--name" => out.name = value("--name"),
            "--path" => out.path = value("--path"),
            "-c" => out.connections = value("-c").parse().ok().filter(|&c| c > 0).unwrap_or_else(|| usage("-c: expected a positive number")),
            "-z" => out.seconds = value("-z").trim_end_matches('s').parse().ok().filter(|&s: &f64| s > 0.0).unwrap_or_else(|| usage("-z: expected seconds")),
            "--cacert" => out.cacert = Some(value("--cacert")),
            "--resume" => out.resume = true,
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    out.addr = addr.unwrap_or_else(|| usage("--addr is required"));
    out
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    full: u64,
    resumed: u64,
    unclean: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.full += other.full;
        self.resumed += other.resumed;
        self.unclean += other.unclean;
    }
}

enum Outcome {
    Answer { status: u16, kind: Option<HandshakeKind>, unclean: bool },
    Failed(String),
}

async fn one(connector: &TlsConnector, addr: SocketAddr, name: &ServerName<'static>, request: &[u8]) -> Outcome {
    let tcp = match TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    };
    let _ = tcp.set_nodelay(true);
    let mut tls = match connector.connect(name.clone(), tcp).await {
        Ok(tls) => tls,
        Err(e) => return Outcome::Failed(format!("handshake: {e}")),
    };
    let kind = tls.get_ref().1.handshake_kind();
    if let Err(e) = tls.write_all(request).await {
        return Outcome::Failed(format!("write: {e}"));
    }
    let mut buf = Vec::with_capacity(512);
    let mut unclean = false;
    if let Err(e) = tls.read_to_end(&mut buf).await {
        // A server that closes without close_notify: accept an answer read in full.
        if e.kind() == std::io::ErrorKind::UnexpectedEof && complete(&buf) {
            unclean = true;
        } else {
            return Outcome::Failed(format!("read: {e}"));
        }
    }
    match status_of(&buf) {
        Some(status) => Outcome::Answer { status, kind, unclean },
        None => Outcome::Failed(format!("bad answer ({} bytes)", buf.len())),
    }
}

fn status_of(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.trim().parse().ok()
}

/// Headers ended and, where given, Content-Length bytes of body followed.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
    match length {
        Some(n) => buf.len() >= end + 4 + n,
        None => false,
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1e6
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &args.cacert {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .unwrap_or_else(|e| usage(&format!("--cacert {path}: {e}")));
        for cert in certs {
            roots.add(cert).unwrap_or_else(|e| usage(&format!("--cacert {path}: {e}")));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if args.resume { Resumption::default() } else { Resumption::disabled() };
    let connector = TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(args.name.clone()).unwrap_or_else(|_| usage("--name: not a valid server name"));
    let request = Arc::new(
        format!("GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rip-bench-tls-client\r\nConnection: close\r\n\r\n", args.path, args.name)
            .into_bytes(),
    );

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (connector, name, request, addr) = (connector.clone(), name.clone(), request.clone(), args.addr);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let outcome = tokio::time::timeout(Duration::from_secs(10), one(&connector, addr, &name, &request))
                    .await
                    .unwrap_or_else(|_| Outcome::Failed("timeout (10 s)".into()));
                match outcome {
                    Outcome::Answer { status, kind, unclean } => {
                        tally.latencies_us.push(t0.elapsed().as_micros() as u64);
                        *tally.statuses.entry(status).or_default() += 1;
                        match kind {
                            Some(HandshakeKind::Resumed) => tally.resumed += 1,
                            _ => tally.full += 1,
                        }
                        tally.unclean += unclean as u64;
                    }
                    Outcome::Failed(e) => {
                        *tally.errors.entry(e).or_default() += 1;
                        // do not spin on a refused connection
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        all.merge(task.await.expect("client task"));
    }
    let total = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let n = all.latencies_us.len() as f64;
    let mean = if n > 0.0 { all.latencies_us.iter().sum::<u64>() as f64 / n / 1e6 } else { 0.0 };
    let statuses: Vec<String> = all.statuses.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let errors: Vec<String> = all.errors.iter().map(|(k, v)| format!("{}:{v}", json_str(k))).collect();
    let l = &all.latencies_us;
    println!(
        "{{\"summary\":{{\"total\":{total},\"requestsPerSec\":{},\"average\":{mean}}},\
         \"latencyPercentiles\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p99.9\":{}}},\
         \"statusCodeDistribution\":{{{}}},\"errorDistribution\":{{{}}},\
         \"handshakes\":{{\"full\":{},\"resumed\":{}}},\"uncleanClose\":{},\"resume\":{}}}",
        n / total,
        percentile(l, 50.0),
        percentile(l, 90.0),
        percentile(l, 99.0),
        percentile(l, 99.9),
        statuses.join(","),
        errors.join(","),
        all.full,
        all.resumed,
        all.unclean,
        args.resume,
    );
}
