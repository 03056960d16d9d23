//! Shared helpers of the security suites: hostile loopback servers, TLS material, and running a
//! diagnosis through the library or the binary.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use pvediag::cli::{Cli, TargetArg};
use pvediag::lab::http::{read_request, Request};
use pvediag::report::Report;
use pvediag::settings::{Environment, Parts, Settings};
use pvediag::target::Targets;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub type Conn = BufReader<TcpStream>;
pub type Reply = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler = Arc<dyn Fn(Request, Conn) -> Reply + Send + Sync>;

/// A loopback server that reads one request per connection and hands the raw socket to a
/// handler, which writes whatever exact bytes the test wants (or nothing at all). It runs on its
/// own runtime so that the binary or the library can be driven from the test thread.
pub struct Hostile {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    pub fn start<F, Fut>(handler: F) -> Hostile
    where
        F: Fn(Request, Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |r, c| Box::pin(handler(r, c)));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let h = handler.clone();
                tokio::spawn(async move {
                    let mut conn = BufReader::new(sock);
                    if let Ok(Some(req)) = read_request(&mut conn, 2 * 1024 * 1024).await {
                        h(req, conn).await;
                    }
                });
            }
        });
        Hostile { addr, rt: Some(rt) }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes bytes, ignoring a peer that went away.
pub async fn send(c: &mut Conn, bytes: &[u8]) {
    let _ = c.get_mut().write_all(bytes).await;
    let _ = c.get_mut().flush().await;
}

/// Closes the connection with a TCP reset (SO_LINGER 0) instead of a FIN.
#[allow(deprecated)] // set_linger blocks on drop only for a non-zero linger
pub fn reset(c: Conn) {
    let _ = c.get_ref().set_linger(Some(Duration::ZERO));
    drop(c);
}

/// A complete response with `Content-Length` and `Connection: close`.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h: Vec<(&str, &str)> = headers.to_vec();
    h.push(("connection", "close"));
    pvediag::lab::http::response_bytes(status, &h, body)
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// The head of a chunked JSON-lines answer, as execd sends it.
pub const JSONLINES_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/jsonlines\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// A parsed and validated command line: the run's settings and its targets (VMIDs only: these
/// tests use no PVE API).
pub struct Config {
    pub settings: Settings,
    pub targets: Targets,
}

/// Parses a pvediag command line (without the program name) into validated settings.
pub fn config(args: &[&str]) -> Result<Config, pvediag::cli::UsageError> {
    config_with_token(args, None)
}

pub fn config_with_token(
    args: &[&str],
    token: Option<&str>,
) -> Result<Config, pvediag::cli::UsageError> {
    let cli = Cli::try_parse_from(std::iter::once("pvediag").chain(args.iter().copied()))
        .map_err(|e| pvediag::cli::UsageError::new(e.to_string()))?;
    let d = &cli.diag;
    let parts = Parts {
        reach: &d.reach,
        check: &d.check,
        pve: Some(&d.pve),
        wait: d.wait,
        output: &d.output,
        host_env: Vec::new(),
        state_dir: None,
    };
    let env = Environment {
        exec_token: token.map(str::to_string),
        ..Environment::read()
    };
    let settings = Settings::from_parts_reading_files(parts, &env)?;
    let vmids = cli
        .targets
        .iter()
        .filter_map(|t| match t {
            TargetArg::Vmid(v) => Some(*v),
            TargetArg::Name(_) => None,
        })
        .collect();
    Ok(Config {
        settings,
        targets: Targets::given(vmids),
    })
}

/// Arguments that send every public URL of VMID 202 to `addr` over plain HTTP.
/// A catalog directory holding only `services` (comma-separated), from the embedded catalog's
/// files: `--services` only selects what is shown, so a test that wants fewer probes names a
/// smaller catalog.
pub fn catalog_of(services: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "checks-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for name in services.split(',') {
        let from =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("checks/{name}.json"));
        std::fs::copy(from, dir.join(format!("{name}.json"))).unwrap();
    }
    dir.display().to_string()
}

pub fn plain_args(addr: SocketAddr, services: &str) -> Vec<String> {
    vec![
        "202".into(),
        "--domain".into(),
        "example.test".into(),
        "--url-template".into(),
        "http://{service}-{vmid}.{domain}".into(),
        "--connect-to".into(),
        addr.to_string(),
        "--checks".into(),
        catalog_of(services),
        "--no-origin-check".into(),
        "--color".into(),
        "never".into(),
    ]
}

/// Runs the diagnosis through the library on a fresh runtime; returns the report and how long
/// the run took.
pub fn diagnose(args: &[String]) -> (Report, Duration) {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let cfg = config(&a).expect("valid arguments");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let report = rt
        .block_on(pvediag::run::diagnose(&cfg.settings, &cfg.targets))
        .expect("the run starts");
    let took = start.elapsed();
    rt.shutdown_background();
    (report, took)
}

/// The report as JSON (the same serialisation as `--format json`).
pub fn report_json(r: &Report) -> serde_json::Value {
    use pvediag::report::Format as _;
    serde_json::from_str(&pvediag::report::json::Json.render(r)).unwrap()
}

/// The binary, with a clean environment.
pub fn pvediag() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("pvediag").unwrap();
    // Tests never write a state directory (as root the default is /var/lib/pvediag).
    c.env_clear().env("PVEDIAG_NO_STATE", "1");
    c.timeout(Duration::from_secs(30));
    c
}

/// TLS material: a CA, and a server config for a leaf it signed.
pub struct Tls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

pub enum CertKind {
    /// Signed by a CA nobody trusts (self-made), valid for `*.example.test`.
    Untrusted,
    /// Valid name, but expired in 2001.
    Expired,
    /// Valid dates, for `*.wrong.invalid` only.
    WrongName,
}

pub fn make_tls(kind: CertKind) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "hostile test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let names = match kind {
        CertKind::WrongName => vec!["*.wrong.invalid".to_string()],
        _ => vec!["*.example.test".to_string(), "example.test".to_string()],
    };
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(names).unwrap();
    leaf.is_ca = IsCa::ExplicitNoCa;
    if let CertKind::Expired = kind {
        leaf.not_before = rcgen::date_time_ymd(2000, 1, 1);
        leaf.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    }
}

/// A TLS server that answers every request with a healthy-looking 200 `ok`.
pub struct TlsServer {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl TlsServer {
    pub fn start(tls: &Tls) -> TlsServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        rt.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(s) = acceptor.accept(sock).await else {
                        return;
                    };
                    let mut s = BufReader::new(s);
                    if let Ok(Some(_)) = read_request(&mut s, 1 << 20).await {
                        let _ = s
                            .get_mut()
                            .write_all(&response(200, &[("content-type", "text/plain")], b"ok"))
                            .await;
                        let _ = s.get_mut().shutdown().await;
                    }
                });
            }
        });
        TlsServer { addr, rt: Some(rt) }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes `text` to `dir/name` with mode 600 and returns the path as a string.
pub fn write_private(dir: &Path, name: &str, text: &[u8]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}
