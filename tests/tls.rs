//! HTTPS: handshakes with a real rustls client, ALPN h2 and HTTP/1.1,
//! SNI, redirect, HSTS, the certificate cache, bad-certificate errors and
//! certificate reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::harness::{clean_command, http1, node_app, Builder, Gate, Server, BIN};

/// A certificate and key written to `dir` as `NAME.pem` / `NAME.key`.
pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
}

pub fn make_cert(
    dir: &Path,
    name: &str,
    names: &[&str],
    alg: &'static rcgen::SignatureAlgorithm,
) -> TestCert {
    let key_pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    TestCert {
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
    }
}

/// A TLS client that trusts exactly `roots` and offers `alpn`.
pub fn connector(roots: &[CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS handshake with the server, bounded (10 s), so a server that never
/// answers fails the test instead of hanging the run.
pub async fn handshake(
    port: u16,
    sni: &str,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let handshake = async {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        connector
            .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
            .await
    };
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .unwrap_or_else(|_| panic!("no TLS handshake with port {port} within 10 s"))
}

/// The certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// The cached automatic certificate of a server.
pub fn cached_cert(server: &Server) -> CertificateDer<'static> {
    let pem = std::fs::read(server.home.join(".rip/certs/self-signed.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(&pem).unwrap()
}

fn get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_http1_and_h2_with_a_trusted_self_signed_certificate() {
    let server = Builder::gate().arg("w:2").https().start();
    server.wait_ready().await;
    let root = cached_cert(&server);

    // HTTP/1.1 over TLS.
    let tls = handshake(
        server.port,
        "localhost",
        &connector(std::slice::from_ref(&root), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, _conn) = http1(tls).await;
    let response = sender.send_request(get("/headers")).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let headers: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(headers["x-forwarded-proto"], "https");

    // HTTP/2, negotiated by ALPN; concurrent streams share the worker pool.
    let tls = handshake(
        server.port,
        "localhost",
        &connector(&[root], &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // The four streams hold their workers until the gate opens, so the
    // state below lasts until the test has seen it, however slow the
    // machine.
    let gate = Gate::new();
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let mut sender = sender.clone();
            let uri = format!("https://localhost{}", gate.hold());
            tokio::spawn(async move {
                let request = http::Request::get(uri)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    server
        .wait_status("two streams on workers, two queued", |s| {
            s["pool"]["busy"] == 2 && s["pool"]["queued"] == 2
        })
        .await;
    gate.open();
    for stream in streams {
        let (status, body) = tokio::time::timeout(Duration::from_secs(20), stream)
            .await
            .expect("every stream answered within 20 s of the gate opening")
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"released");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_port_redirects_to_the_https_url() {
    let server = Builder::rust().arg("w:1").https().start();
    let redirect = server.redirect_port.expect("a redirect listener");
    let request = http::Request::get("/a/b?c=d")
        .header("host", format!("example.test:{redirect}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = crate::harness::send(redirect, request).await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.headers["location"],
        format!("https://example.test:{}/a/b?c=d", server.port)
    );
    assert!(reply.headers.get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn hsts_on_https_only_and_never_over_the_apps_own() {
    let server = Builder::rust().arg("w:1").arg("--hsts").https().start();
    let root = cached_cert(&server);
    let tls = handshake(
        server.port,
        "localhost",
        &connector(&[root], &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut sender, _conn) = http1(tls).await;
    let response = sender.send_request(get("/ping")).await.unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    response.into_body().collect().await.unwrap();
    // The connection takes the next request once it has seen the last one end.
    sender.ready().await.unwrap();
    let response = sender.send_request(get("/with-sts")).await.unwrap();
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=60"
    );
    response.into_body().collect().await.unwrap();
    // The plain-HTTP side (the redirect) carries no HSTS.
    let reply = crate::harness::send(server.redirect_port.unwrap(), get("/ping")).await;
    assert_eq!(reply.status, 301);
    assert!(reply.headers.get("strict-transport-security").is_none());
}

fn fingerprint(log: &str) -> String {
    log.lines()
        .find_map(|l| l.trim().strip_prefix("sha256:"))
        .map(|f| f.trim().to_string())
        .expect("a fingerprint in the log")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cached_certificate_is_reused_and_regenerated_when_a_name_is_missing() {
    let home = tempfile::tempdir().unwrap();
    let first = Builder::rust().arg("w:1").https().home(home.path()).start();
    let print = fingerprint(&first.log());
    assert!(
        first.log().contains("created and cached"),
        "{}",
        first.log()
    );
    let key_mode = std::fs::metadata(home.path().join(".rip/certs/self-signed.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        key_mode.permissions().mode() & 0o777,
        0o600,
        "the cached key must be private"
    );
    drop(first);

    let second = Builder::rust().arg("w:1").https().home(home.path()).start();
    assert_eq!(
        fingerprint(&second.log()),
        print,
        "the cached certificate was not reused"
    );
    assert!(second.log().contains("reused from"), "{}", second.log());
    drop(second);

    // A cached certificate that lacks ::1 is replaced.
    let certs = home.path().join(".rip/certs");
    make_cert(
        &certs,
        "self-signed",
        &["localhost", "127.0.0.1"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let third = Builder::rust().arg("w:1").https().home(home.path()).start();
    assert_ne!(fingerprint(&third.log()), print);
    assert!(
        third.log().contains("created and cached"),
        "{}",
        third.log()
    );
    let names = third
        .log()
        .lines()
        .find_map(|l| l.trim().strip_prefix("names:").map(str::to_string))
        .unwrap();
    assert!(names.contains("::1"), "{names}");
}

fn start_expecting_failure(args: &[&str]) -> String {
    start_expecting_failure_with(&[], args)
}

fn start_expecting_failure_with(env: &[(&str, &str)], args: &[&str]) -> String {
    let runtime = tempfile::tempdir().unwrap();
    let app = node_app();
    let output = clean_command(BIN, runtime.path())
        .env("HOME", runtime.path())
        .envs(env.iter().copied())
        .arg(app.to_str().unwrap())
        .arg("https:0")
        .arg("--no-redirect-http")
        .arg("--runtime=node")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "expected exit 2 for {args:?}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it listened despite {args:?}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_certificates_exit_2_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = make_cert(d, "good", &["localhost"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let other = make_cert(d, "other", &["localhost"], &rcgen::PKCS_ECDSA_P256_SHA256);
    std::fs::write(d.join("text.pem"), "hello, I am not a certificate\n").unwrap();
    std::fs::create_dir(d.join("a-directory.pem")).unwrap();
    let arg = |flag: &str, p: &Path| format!("--{flag}={}", p.display());
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![arg("cert", &d.join("missing.pem")), arg("key", &good.key)],
            format!(
                "certificate file '{}' does not exist",
                d.join("missing.pem").display()
            ),
        ),
        (
            vec![
                arg("cert", &d.join("a-directory.pem")),
                arg("key", &good.key),
            ],
            format!(
                "cannot read certificate file '{}'",
                d.join("a-directory.pem").display()
            ),
        ),
        (
            vec![arg("cert", &d.join("text.pem")), arg("key", &good.key)],
            format!("'{}' is not a PEM file", d.join("text.pem").display()),
        ),
        (
            vec![arg("cert", &good.key), arg("key", &good.key)],
            format!("'{}' contains no certificate", good.key.display()),
        ),
        (
            vec![arg("cert", &good.cert), arg("key", &good.cert)],
            format!("'{}' contains no private key", good.cert.display()),
        ),
        (
            vec![arg("cert", &good.cert), arg("key", &other.key)],
            format!(
                "the private key in '{}' does not match the certificate in '{}'",
                other.key.display(),
                good.cert.display()
            ),
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = start_expecting_failure(&args);
        assert!(
            stderr.contains(&expected),
            "{args:?}: expected {expected:?}, got {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_ecdsa_and_ed25519_keys_are_accepted_and_expiry_warns() {
    let dir = tempfile::tempdir().unwrap();
    let ed = make_cert(dir.path(), "ed", &["localhost"], &rcgen::PKCS_ED25519);
    let ec = make_cert(
        dir.path(),
        "ec",
        &["localhost"],
        &rcgen::PKCS_ECDSA_P384_SHA384,
    );
    for cert in [&ed, &ec] {
        let server = Builder::rust()
            .arg("w:1")
            .arg(&format!("--cert={}", cert.cert.display()))
            .arg(&format!("--key={}", cert.key.display()))
            .https()
            .start();
        let tls = handshake(
            server.port,
            "localhost",
            &connector(std::slice::from_ref(&cert.der), &[b"http/1.1"]),
        )
        .await
        .unwrap();
        assert_eq!(presented(&tls), cert.der);
    }
    // RSA, made by openssl (rcgen cannot make RSA keys with ring).
    let rsa_key = dir.path().join("rsa.key");
    let rsa_cert = dir.path().join("rsa.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&rsa_key)
        .arg("-out")
        .arg(&rsa_cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install it (apt-get install openssl)")
        });
    assert!(
        made.status.success(),
        "openssl could not make an RSA certificate: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--cert={}", rsa_cert.display()))
        .arg(&format!("--key={}", rsa_key.display()))
        .https()
        .start();
    let pem = std::fs::read(&rsa_cert).unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let tls = handshake(
        server.port,
        "localhost",
        &connector(std::slice::from_ref(&der), &[b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(presented(&tls), der);
    // An expired certificate starts, with a loud warning.
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key_pair).unwrap();
    std::fs::write(dir.path().join("old.pem"), expired.pem()).unwrap();
    std::fs::write(dir.path().join("old.key"), key_pair.serialize_pem()).unwrap();
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--cert={}", dir.path().join("old.pem").display()))
        .arg(&format!("--key={}", dir.path().join("old.key").display()))
        .https()
        .start();
    server.wait_log("EXPIRED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sni_picks_the_certificate_for_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = make_cert(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let b = make_cert(dir.path(), "b", &["b.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--cert={}", a.cert.display()))
        .arg(&format!("--key={}", a.key.display()))
        .arg(&format!("--cert={}", b.cert.display()))
        .arg(&format!("--key={}", b.key.display()))
        .https()
        .start();
    let both = connector(&[a.der.clone(), b.der.clone()], &[b"http/1.1"]);
    assert_eq!(
        presented(&handshake(server.port, "a.test", &both).await.unwrap()),
        a.der
    );
    assert_eq!(
        presented(&handshake(server.port, "b.test", &both).await.unwrap()),
        b.der
    );
    // An unknown name gets the default (first) certificate, which does not match it.
    let err = handshake(server.port, "c.test", &both).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_certificates_and_keeps_the_old_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(
        dir.path(),
        "site",
        &["localhost"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--cert={}", first.cert.display()))
        .arg(&format!("--key={}", first.key.display()))
        .https()
        .start();
    server.wait_ready().await;
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = make_cert(
        renewed_dir.path(),
        "site",
        &["localhost"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.pid() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    hup();
    let trust = connector(&[first.der.clone(), renewed.der.clone()], &[b"http/1.1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while presented(&handshake(server.port, "localhost", &trust).await.unwrap()) != renewed.der {
        assert!(
            std::time::Instant::now() < deadline,
            "renewed certificate never served\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken renewal keeps the current certificate serving.
    std::fs::write(&first.cert, "garbage").unwrap();
    hup();
    server.wait_log("certificate reload failed").await;
    assert_eq!(
        presented(&handshake(server.port, "localhost", &trust).await.unwrap()),
        renewed.der
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_command_rereads_certificates_and_keeps_the_old_on_a_bad_one() {
    // POST /reload on the control socket (what `rip-server reload` sends)
    // re-reads the certificate files before it rolls, and answers when the
    // roll has ended: from then on the renewed certificate is served.
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(
        dir.path(),
        "site",
        &["localhost"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--cert={}", first.cert.display()))
        .arg(&format!("--key={}", first.key.display()))
        .https()
        .start();
    server.wait_ready().await;
    let renewed_dir = tempfile::tempdir().unwrap();
    let renewed = make_cert(
        renewed_dir.path(),
        "site",
        &["localhost"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let trust = connector(&[first.der.clone(), renewed.der.clone()], &[b"http/1.1"]);
    assert_eq!(
        presented(&handshake(server.port, "localhost", &trust).await.unwrap()),
        first.der
    );
    std::fs::copy(&renewed.cert, &first.cert).unwrap();
    std::fs::copy(&renewed.key, &first.key).unwrap();
    let reload = || async {
        let (code, body) = rip_server::control::call(
            &server.control_socket(),
            http::Method::POST,
            "/reload",
            Bytes::new(),
        )
        .await
        .unwrap();
        assert_eq!(code, 200, "{body}");
    };
    reload().await;
    assert_eq!(
        presented(&handshake(server.port, "localhost", &trust).await.unwrap()),
        renewed.der,
        "the renewed certificate is not served after POST /reload\n{}",
        server.log()
    );
    // A broken renewal keeps the current certificate serving.
    std::fs::write(&first.cert, "garbage").unwrap();
    reload().await;
    server.wait_log("certificate reload failed").await;
    assert_eq!(
        presented(&handshake(server.port, "localhost", &trust).await.unwrap()),
        renewed.der
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_443_falls_back_to_a_port_from_5000() {
    // Hold 443 ourselves (or find it unavailable already): the server must move on.
    let _held = std::net::TcpListener::bind(("0.0.0.0", 443));
    let runtime = tempfile::tempdir().unwrap();
    let mut child = clean_command(BIN, runtime.path())
        .env("HOME", runtime.path())
        .args([
            crate::harness::EXAMPLE_WORKER,
            "--name=fallback",
            "--no-redirect-http",
            "w:1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let line = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening on "));
        let _ = line_tx.send(line);
    });
    // Bounded: a server that never prints its URL fails the test (and is
    // stopped below, which also ends the reading thread).
    let line = tokio::time::timeout(crate::harness::PATIENCE, line_rx).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    if !crate::harness::wait_gone(pid, Duration::from_secs(15)).await {
        let _ = child.kill();
    }
    let _ = child.wait();
    let line = line
        .expect("no 'listening on' line in time")
        .unwrap()
        .expect("a listening line");
    let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
    assert!(port >= 5000, "{line}");
}

/// `tests/fixtures/fake-mkcert`, handing out `cert` and logging its calls.
struct FakeMkcert {
    program: PathBuf,
    calls: PathBuf,
    cert: TestCert,
}

impl FakeMkcert {
    fn new(dir: &Path) -> Self {
        let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-mkcert");
        let cert = make_cert(
            dir,
            "from-mkcert",
            &["localhost", "127.0.0.1", "::1"],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        FakeMkcert {
            program,
            calls: dir.join("mkcert-calls"),
            cert,
        }
    }

    fn env(&self, builder: Builder) -> Builder {
        builder
            .env("FAKE_MKCERT_LOG", self.calls.to_str().unwrap())
            .env("FAKE_MKCERT_CERT", self.cert.cert.to_str().unwrap())
            .env("FAKE_MKCERT_KEY", self.cert.key.to_str().unwrap())
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mkcert_makes_the_automatic_certificate_when_found_or_named() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeMkcert::new(dir.path());
    // On PATH, the harness's RIP_MKCERT=off keeps it out: self-signed.
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(&fake.program, bin.join("mkcert")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let off = fake
        .env(Builder::rust().arg("w:1").https())
        .env("PATH", &path)
        .start();
    assert!(off.log().contains("self-signed"), "{}", off.log());
    assert_eq!(
        fake.calls(),
        Vec::<String>::new(),
        "RIP_MKCERT=off ran mkcert"
    );
    drop(off);

    // Found on PATH (RIP_MKCERT empty), then named by RIP_MKCERT: each time
    // mkcert makes the certificate the server presents (and installs its CA
    // unless the server runs as root).
    let lookups = [
        ("", path.clone()),
        (
            fake.program.to_str().unwrap(),
            std::env::var("PATH").unwrap(),
        ),
    ];
    for (setting, path) in lookups {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(&fake.calls, "").unwrap();
        let server = fake
            .env(Builder::rust().arg("w:1").https().home(home.path()))
            .env("RIP_MKCERT", setting)
            .env("PATH", &path)
            .start();
        assert!(
            server.log().contains("from mkcert, cached at"),
            "RIP_MKCERT={setting:?}: {}",
            server.log()
        );
        let certs = home.path().join(".rip/certs");
        let made = format!(
            "-cert-file {} -key-file {} localhost 127.0.0.1 ::1",
            certs.join("mkcert.pem").display(),
            certs.join("mkcert.key").display()
        );
        let calls = fake.calls();
        // As root, mkcert's CA is never installed behind the operator's back.
        let installed = calls.iter().any(|c| c == "-install");
        if nix::unistd::geteuid().is_root() {
            assert!(!installed, "mkcert -install ran as root: {calls:?}");
            assert!(
                server.log().contains("run `mkcert -install` yourself"),
                "{}",
                server.log()
            );
        } else {
            assert!(installed, "{calls:?}");
        }
        assert!(calls.contains(&made), "expected {made:?} in {calls:?}");
        let tls = handshake(
            server.port,
            "localhost",
            &connector(std::slice::from_ref(&fake.cert.der), &[b"http/1.1"]),
        )
        .await
        .unwrap();
        assert_eq!(presented(&tls), fake.cert.der);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(certs.join("mkcert.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mkcert's key must be private");
    }

    // A named program that cannot run is an error, not a silent fallback.
    let stderr = start_expecting_failure_with(&[("RIP_MKCERT", "/nonexistent/mkcert")], &[]);
    assert!(
        stderr.contains("RIP_MKCERT=/nonexistent/mkcert: cannot run it"),
        "{stderr}"
    );
}
