//! HTTPS serving: the serving certificate (given, or self-signed once into `--cert-dir` as
//! upstream does), the optional client CA, and the accept loop that hands every connection's
//! verified client certificate to the authentication layer.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tower::ServiceExt;

use crate::authn::{self, PeerCert};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert_dir: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// Extra names and addresses the self-signed certificate is valid for.
    pub alt_names: Vec<String>,
    pub alt_ips: Vec<IpAddr>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate in it",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{}: not a PEM private key", path.display()))?
        .with_context(|| format!("{}: no private key in it", path.display()))
}

/// Writes `data` to `path` through a temporary file and a rename, owner-only when `secret`.
pub(crate) fn write_atomic(path: &Path, data: &[u8], secret: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// A CA and a serving certificate it signs for `names` and `ips` (ECDSA P-256), as PEM: the
/// certificate chain (serving certificate, then the CA) and the serving key.
pub fn self_signed(names: &[String], ips: &[IpAddr]) -> anyhow::Result<(String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let now = jiff::Timestamp::now().as_second();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, format!("127.0.0.1-ca@{now}"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, format!("127.0.0.1@{now}"));
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    ))
}

/// The serving certificate chain and key: the given files, else `apiserver.crt`/`apiserver.key`
/// in the cert dir, generated there (self-signed) the first time.
fn serving_material(
    f: &TlsFiles,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match (&f.cert_file, &f.key_file) {
        (Some(c), Some(k)) => return Ok((read_certs(c)?, read_key(k)?)),
        (None, None) => {}
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file go together"),
    }
    let crt = f.cert_dir.join("apiserver.crt");
    let key = f.cert_dir.join("apiserver.key");
    if !(crt.exists() && key.exists()) {
        std::fs::create_dir_all(&f.cert_dir)
            .with_context(|| format!("--cert-dir {}", f.cert_dir.display()))?;
        let mut names = vec!["localhost".to_string()];
        names.extend(f.alt_names.iter().cloned());
        let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into()];
        ips.extend(f.alt_ips.iter().filter(|i| !i.is_unspecified()));
        ips.dedup();
        let (c, k) = self_signed(&names, &ips)?;
        write_atomic(&key, k.as_bytes(), true)?;
        write_atomic(&crt, c.as_bytes(), false)?;
        tracing::info!(cert = %crt.display(), "generated a self-signed serving certificate");
    }
    Ok((read_certs(&crt)?, read_key(&key)?))
}

/// Asks for a client certificate and checks the handshake signature (the client holds the
/// certificate's key) but leaves the chain check to after the handshake, so that an untrusted
/// certificate is a 401 Status, as upstream answers, rather than a TLS alert.
#[derive(Debug)]
struct DeferredChainCheck(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for DeferredChainCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The TLS settings: the rustls configuration and the client CA's verifier.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl Tls {
    /// Who the connection's client certificate says it is, checked against the client CA.
    fn peer(&self, certs: Option<&[CertificateDer<'static>]>) -> PeerCert {
        let (Some(v), Some([leaf, intermediates @ ..])) = (&self.client_verifier, certs) else {
            return PeerCert::None;
        };
        match v.verify_client_cert(leaf, intermediates, UnixTime::now()) {
            Ok(_) => match authn::user_from_cert(leaf.as_ref()) {
                Some(u) => PeerCert::User(u),
                // Upstream ignores a certificate without a CN (other authenticators may apply).
                None => PeerCert::None,
            },
            Err(e) => PeerCert::Invalid(format!("verifying certificate failed: {e}")),
        }
    }
}

/// The TLS server configuration: HTTP/2 and HTTP/1.1, and (with a client CA) client
/// certificates requested, but not required (tokens and anonymous requests are authenticated
/// later).
pub fn server_config(f: &TlsFiles) -> anyhow::Result<Tls> {
    let (chain, key) = serving_material(f)?;
    let mut client_verifier = None;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &f.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca).with_context(|| format!("--client-ca-file {}", ca.display()))? {
                roots
                    .add(c)
                    .with_context(|| format!("--client-ca-file {}", ca.display()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .context("--client-ca-file")?;
            client_verifier = Some(v.clone());
            builder.with_client_cert_verifier(Arc::new(DeferredChainCheck(v)))
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .context("the serving certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        config: Arc::new(cfg),
        client_verifier,
    })
}

/// Accepts TLS connections on `listener` forever and serves `app` on each; what the client
/// certificate (if any) proves rides along in the request extensions.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Tls,
    app: axum::Router,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls.peer(stream.get_ref().1.peer_certificates());
            let svc = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
            let conn = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(svc))
                .await
            {
                tracing::debug!(%remote, "connection: {e}");
            }
        });
    }
}
