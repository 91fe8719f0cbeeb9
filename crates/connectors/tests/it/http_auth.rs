//! `http.request` with named credentials: each scheme's header as a server
//! receives it, secrets kept out of outcomes and `Debug`, and mutual TLS
//! against a local server requiring client certificates made by the
//! `openssl` command at test time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use base64::Engine as _;
use connectors::{Auth, ClientIdentity, ClientTls, Config, Connectors, Credential, Secret};
use domain::{AttemptOutcome, FailureCause, PlannedCall};
use serde_json::{Value, json};
use test_support::Running;

const BEARER_TOKEN: &str = "eyJhbGciOi.bearer-token.Zm9vYmFy";
const PASSWORD: &str = "pa\"ss word/with json escapes\\";
const API_KEY: &str = "k-9f8e7d6c5b4a39281706";

fn credential(auth: Auth) -> Credential {
    Credential {
        auth: Some(auth),
        tls: None,
        hosts: Vec::new(),
    }
}

fn credentials() -> BTreeMap<String, Credential> {
    BTreeMap::from([
        (
            "bearer".to_owned(),
            credential(Auth::Bearer {
                token: Secret::new(BEARER_TOKEN),
            }),
        ),
        (
            "basic".to_owned(),
            credential(Auth::Basic {
                username: "opsgate".into(),
                password: Secret::new(PASSWORD),
            }),
        ),
        (
            "api-key".to_owned(),
            credential(Auth::Header {
                name: "X-Api-Key".into(),
                value: Secret::new(API_KEY),
            }),
        ),
        (
            "wrong-token".to_owned(),
            credential(Auth::Bearer {
                token: Secret::new("not-the-token"),
            }),
        ),
    ])
}

fn basic_value() -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("opsgate:{PASSWORD}"));
    format!("Basic {encoded}")
}

/// Every secret, as configured and as sent.
fn secrets() -> Vec<String> {
    vec![
        BEARER_TOKEN.to_owned(),
        PASSWORD.to_owned(),
        basic_value()["Basic ".len()..].to_owned(),
        API_KEY.to_owned(),
    ]
}

/// Requests the server received, by path: their headers.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, HeaderMap)>>>);

impl Received {
    fn header(&self, path: &str, name: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(seen, _)| seen == path)
            .and_then(|(_, headers)| headers.get(name))
            .map(|value| value.to_str().unwrap().to_owned())
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A server that checks each scheme on a path of its own
/// (`/bearer`, `/basic`, `/api-key`: 401 unless the header is right) and
/// echoes every request header on `/echo`, as debugging services do.
async fn server() -> (Running, Received) {
    let received = Received::default();
    let check = |path: &'static str, name: &'static str, expected: String| {
        let received = received.clone();
        get(move |headers: HeaderMap| async move {
            let presented = headers.get(name).map(|value| value.as_bytes().to_vec());
            received.0.lock().unwrap().push((path.to_owned(), headers));
            if presented.as_deref() == Some(expected.as_bytes()) {
                (StatusCode::OK, axum::Json(json!({"ok": true})))
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "unauthorized"})),
                )
            }
        })
    };
    let echo = {
        let received = received.clone();
        get(move |headers: HeaderMap| async move {
            let echoed: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or("?"))))
                .collect();
            received
                .0
                .lock()
                .unwrap()
                .push(("/echo".to_owned(), headers));
            axum::Json(json!({"headers": echoed}))
        })
    };
    let app = axum::Router::new()
        .route(
            "/bearer",
            check("/bearer", "authorization", format!("Bearer {BEARER_TOKEN}")),
        )
        .route("/basic", check("/basic", "authorization", basic_value()))
        .route(
            "/api-key",
            check("/api-key", "x-api-key", API_KEY.to_owned()),
        )
        .route("/echo", echo);
    let running = test_support::serve(app).await.expect("the server starts");
    (running, received)
}

fn connectors() -> Connectors {
    Connectors::new(Config {
        credentials: credentials(),
        ..Config::default()
    })
    .expect("connectors")
}

async fn request(connectors: &Connectors, request: Value) -> AttemptOutcome {
    connectors
        .call(&PlannedCall {
            action: "http.request".into(),
            request,
            timeout_ms: 10_000,
        })
        .await
}

#[track_caller]
fn assert_no_secret_in(text: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "a secret leaked into {text}");
    }
}

#[tokio::test]
async fn each_scheme_sends_its_header() {
    let (server, received) = server().await;
    let connectors = connectors();
    let cases = [
        (
            "bearer",
            "/bearer",
            "authorization",
            format!("Bearer {BEARER_TOKEN}"),
        ),
        ("basic", "/basic", "authorization", basic_value()),
        ("api-key", "/api-key", "x-api-key", API_KEY.to_owned()),
    ];
    for (credential, path, header, expected) in cases {
        let outcome = request(
            &connectors,
            json!({"method": "GET", "url": format!("{}{path}", server.url), "credential": credential}),
        )
        .await;
        assert!(
            matches!(&outcome, AttemptOutcome::Succeeded { response } if response["status"] == 200),
            "{credential}: {outcome:?}"
        );
        assert_eq!(
            received.header(path, header).as_deref(),
            Some(expected.as_str())
        );
        assert_no_secret_in(&serde_json::to_string(&outcome).unwrap());
    }

    // Without a credential, or with a wrong one, the server refuses.
    for credential in [Value::Null, json!("wrong-token")] {
        let outcome = request(
            &connectors,
            json!({"url": format!("{}/bearer", server.url), "credential": credential}),
        )
        .await;
        let AttemptOutcome::Failed { cause, .. } = outcome else {
            panic!("expected a refusal, got {outcome:?}");
        };
        assert_eq!(cause, FailureCause::Status(401));
    }
    assert_eq!(
        received.header("/bearer", "authorization").as_deref(),
        Some("Bearer not-the-token")
    );
}

#[tokio::test]
async fn an_echoed_secret_is_scrubbed_from_the_outcome() {
    let (server, _received) = server().await;
    let connectors = connectors();
    for credential in ["bearer", "basic", "api-key"] {
        let outcome = request(
            &connectors,
            json!({"url": format!("{}/echo", server.url), "credential": credential}),
        )
        .await;
        let AttemptOutcome::Succeeded { response } = &outcome else {
            panic!("expected a success, got {outcome:?}");
        };
        let echoed = &response["json"]["headers"];
        let sent = if credential == "api-key" {
            &echoed["x-api-key"]
        } else {
            &echoed["authorization"]
        };
        assert!(
            sent.as_str().is_some_and(|sent| sent.contains("***")),
            "{credential}: {response}"
        );
        assert_no_secret_in(&serde_json::to_string(&outcome).unwrap());
        assert_no_secret_in(&format!("{outcome:?}"));
    }
    assert_no_secret_in(&format!("{connectors:?}"));
}

#[tokio::test]
async fn a_request_that_sets_the_credentials_header_itself_is_refused() {
    let (server, received) = server().await;
    let outcome = request(
        &connectors(),
        json!({
            "url": format!("{}/bearer", server.url),
            "headers": {"authorization": "Bearer something-else"},
            "credential": "bearer",
        }),
    )
    .await;
    let AttemptOutcome::Failed { cause, error, .. } = outcome else {
        panic!("expected a refusal, got {outcome:?}");
    };
    assert_eq!(cause, FailureCause::Other);
    assert_eq!(
        error,
        "the request sets `authorization` itself and names credential `bearer`, which sets it too: give one or the other"
    );
    assert_eq!(received.count(), 0, "nothing was sent");
}

#[tokio::test]
async fn an_unknown_credential_fails_naming_it_and_the_known_ones() {
    let (server, received) = server().await;
    let outcome = request(
        &connectors(),
        json!({"url": format!("{}/bearer", server.url), "credential": "vault"}),
    )
    .await;
    let AttemptOutcome::Failed { cause, error, .. } = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert_eq!(cause, FailureCause::Other);
    assert_eq!(
        error,
        "no credential is named `vault` (`credentials:` in the config file; configured: api-key, basic, bearer, wrong-token)"
    );
    assert_eq!(received.count(), 0);
}

#[tokio::test]
async fn unusable_credentials_are_refused_when_the_connectors_are_built() {
    let refused = |credential: Credential| {
        Connectors::new(Config {
            credentials: BTreeMap::from([("broken".to_owned(), credential)]),
            ..Config::default()
        })
        .expect_err("refused")
        .to_string()
    };
    assert_eq!(
        refused(credential(Auth::Header {
            name: "X Api Key".into(),
            value: Secret::new(API_KEY),
        })),
        "credential `broken`: `header.name` `X Api Key` is not a header name"
    );
    let error = refused(Credential {
        auth: None,
        tls: Some(ClientTls {
            identity: Some(ClientIdentity {
                cert_pem: "not a certificate".into(),
                key_pem: Secret::new(API_KEY),
            }),
            ca: None,
        }),
        hosts: Vec::new(),
    });
    assert!(
        error.starts_with(
            "credential `broken`: `tls.client_cert` and `tls.client_key` are not a PEM certificate"
        ),
        "{error}"
    );
    assert_no_secret_in(&error);
}

/// Mutual TLS: a server that requires a client certificate from a CA made
/// for the test accepts the credential that has one, and no other.
#[tokio::test]
async fn mutual_tls_presents_the_credentials_client_certificate() {
    if !openssl_installed("mutual_tls_presents_the_credentials_client_certificate") {
        return;
    }
    connectors::install_crypto_provider();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::generate(dir.path());
    let (address, _server) = tls_server(&pki).await;
    let url = format!("https://{address}/hello");
    let mtls = Credential {
        auth: Some(Auth::Bearer {
            token: Secret::new(BEARER_TOKEN),
        }),
        tls: Some(ClientTls {
            identity: Some(ClientIdentity {
                cert_pem: pki.read("client.pem"),
                key_pem: Secret::new(pki.read("client.key")),
            }),
            ca: Some(pki.read("ca.pem")),
        }),
        hosts: Vec::new(),
    };
    let ca_only = Credential {
        auth: None,
        tls: Some(ClientTls {
            identity: None,
            ca: Some(pki.read("ca.pem")),
        }),
        hosts: Vec::new(),
    };
    let connectors = Connectors::new(Config {
        credentials: BTreeMap::from([("mtls".to_owned(), mtls), ("ca-only".to_owned(), ca_only)]),
        ..Config::default()
    })
    .expect("connectors");

    let outcome = request(&connectors, json!({"url": url, "credential": "mtls"})).await;
    let AttemptOutcome::Succeeded { response } = &outcome else {
        panic!("expected a success, got {outcome:?}");
    };
    assert_eq!(response["json"], json!({"bearer_token_received": true}));
    let debug = format!("{connectors:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");

    // Trusting the server's CA is not enough: the server wants a
    // certificate; and the shared client does not trust the test CA.
    for (credential, refusal) in [
        (
            json!("ca-only"),
            "received fatal alert: CertificateRequired",
        ),
        (Value::Null, "invalid peer certificate: UnknownIssuer"),
    ] {
        let outcome = request(&connectors, json!({"url": url, "credential": credential})).await;
        let AttemptOutcome::Failed { error, .. } = &outcome else {
            panic!("{credential}: expected a failure, got {outcome:?}");
        };
        assert!(error.ends_with(refusal), "{credential}: {error}");
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in
/// `dir`, made by `openssl`.
struct Pki<'a> {
    dir: &'a Path,
}

impl<'a> Pki<'a> {
    fn generate(dir: &'a Path) -> Pki<'a> {
        let run = |args: &[&str]| {
            let output = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
            assert!(
                output.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=opsgate test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&ca);
        for (name, usage, subject_alt_name, serial) in [
            ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n", "2"),
            ("client", "clientAuth", "", "3"),
        ] {
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            let ext = format!("{name}.ext");
            let subject = format!("/CN=opsgate test {name}");
            std::fs::write(
                dir.join(&ext),
                format!("{subject_alt_name}extendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"),
            )
            .expect("write the extensions");
            let mut request = vec!["req"];
            request.extend(ec);
            request.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
            run(&request);
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ]);
        }
        Pki { dir }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).expect("a generated file")
    }
}

/// An HTTPS server on 127.0.0.1 that requires a client certificate from
/// the test CA; `/hello` answers whether it got the bearer token. Returns its
/// address and its task.
async fn tls_server(pki: &Pki<'_>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.read("ca.pem").as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .expect("a client verifier");
    let chain = vec![CertificateDer::from_pem_slice(pki.read("server.pem").as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.read("server.key").as_bytes()).unwrap();
    let config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("a server configuration");
    let listener = TlsListener {
        tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    let address = listener.tcp.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hello",
        get(|headers: HeaderMap| async move {
            let expected = format!("Bearer {BEARER_TOKEN}");
            let received = headers.get("authorization").map(|value| value.as_bytes());
            axum::Json(json!({"bearer_token_received": received == Some(expected.as_bytes())}))
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (address, task)
}

/// Accepts TCP connections and serves those whose TLS handshake succeeds.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, address)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Whether the `openssl` command runs; says the test is skipped when not,
/// and fails it instead under `OPSGATE_REQUIRE_EXTERNAL=1`.
fn openssl_installed(test: &str) -> bool {
    let found = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        let require = std::env::var("OPSGATE_REQUIRE_EXTERNAL").is_ok_and(|value| value == "1");
        assert!(
            !require,
            "{test}: the openssl command is not installed, and OPSGATE_REQUIRE_EXTERNAL=1 forbids skipping"
        );
        eprintln!(
            "SKIPPED {test}: the openssl command is not installed (Debian's `openssl` package; set OPSGATE_REQUIRE_EXTERNAL=1 to make this a failure)"
        );
    }
    found
}
