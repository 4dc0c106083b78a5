//! The HTTP side of `kybern bench apiserver`: HTTPS connections to a Kubernetes API server over
//! HTTP/2 (hyper + rustls, ALPN `h2`), each multiplexing many requests, as client-go shares one
//! connection per transport. Authentication by bearer token and/or client certificate; the
//! server is verified with a CA bundle, or not at all with `--insecure-skip-tls-verify`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// How to reach and authenticate to the API server.
pub struct Target {
    /// `https://host[:port]`.
    pub server: String,
    pub token: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub certificate_authority: Option<std::path::PathBuf>,
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
}

/// Opens connections to one API server; cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    /// host:port to dial.
    addr: String,
    /// `https://host:port`, prefixed to every path.
    base: Arc<str>,
    auth: Option<hyper::header::HeaderValue>,
}

/// One HTTP/2 connection (its driver runs in a spawned task).
#[derive(Clone)]
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    base: Arc<str>,
    auth: Option<hyper::header::HeaderValue>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (`--insecure-skip-tls-verify`), still checking the handshake
/// signatures so that the session is a real TLS session.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("parse {}", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no PEM private key", path.display()))
}

impl Dialer {
    pub fn new(t: &Target) -> Result<Dialer> {
        let uri: Uri = t
            .server
            .parse()
            .with_context(|| format!("--server {:?}", t.server))?;
        if uri.scheme_str() != Some("https") {
            return Err(crate::usage(format!(
                "--server must be an https:// URL (the API server serves HTTPS only), got {:?}",
                t.server
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| crate::usage(format!("--server {:?} has no host", t.server)))?;
        let port = uri.port_u16().unwrap_or(443);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(bare.to_string())
            .map_err(|e| crate::usage(format!("--server host {host:?}: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if t.insecure_skip_tls_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
        } else if let Some(ca) = &t.certificate_authority {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .with_context(|| format!("--certificate-authority {}", ca.display()))?;
            }
            builder.with_root_certificates(roots)
        } else {
            return Err(crate::usage(
                "give --certificate-authority FILE (or --cacert) to verify the server, or \
                 --insecure-skip-tls-verify"
                    .into(),
            ));
        };
        let mut cfg = match (&t.client_cert, &t.client_key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(read_certs(c)?, read_key(k)?)
                .context("client certificate and key")?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(crate::usage(
                    "--cert and --key go together (client certificate authentication)".into(),
                ))
            }
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let auth = match &t.token {
            Some(tok) => Some(
                hyper::header::HeaderValue::from_str(&format!("Bearer {tok}"))
                    .map_err(|_| crate::usage("--token holds characters a header cannot".into()))?,
            ),
            None => None,
        };
        Ok(Dialer {
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            server_name,
            addr: format!("{host}:{port}"),
            base: format!("https://{host}:{port}").into(),
            auth,
        })
    }

    /// Opens one HTTP/2 connection.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connect to {}", self.addr))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.addr))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("{} did not agree to HTTP/2 (ALPN h2)", self.addr);
        }
        let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        // Large LIST responses and many watch streams on one connection.
        b.initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20);
        let (tx, conn) = b
            .handshake(TokioIo::new(tls))
            .await
            .context("HTTP/2 handshake")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            tx,
            base: self.base.clone(),
            auth: self.auth.clone(),
        })
    }

    /// Opens `n` connections.
    pub async fn connect_n(&self, n: usize) -> Result<Vec<Conn>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.connect().await?);
        }
        Ok(v)
    }
}

/// A JSON body with its content type.
pub struct Body {
    pub content_type: &'static str,
    pub bytes: Bytes,
}

/// A failed request, as one line that groups equal failures together.
fn status_error(status: StatusCode, body: &[u8]) -> String {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_string))
        .unwrap_or_default();
    if reason.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else {
        format!("HTTP {} {reason}", status.as_u16())
    }
}

impl Conn {
    /// Sends one request; returns the response with its body still streaming.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Response<Incoming>, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(a) = &self.auth {
            req = req.header(hyper::header::AUTHORIZATION, a.clone());
        }
        let req = match body {
            Some(b) => req
                .header(hyper::header::CONTENT_TYPE, b.content_type)
                .body(Full::new(b.bytes)),
            None => req.body(Full::new(Bytes::new())),
        }
        .map_err(|e| format!("build request: {e}"))?;
        let mut tx = self.tx.clone();
        tx.ready().await.map_err(|e| format!("connection: {e}"))?;
        tx.send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// Sends one request and reads the whole answer; a status other than 2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Bytes, String> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        Ok(bytes)
    }

    /// Like `call`, also returning the status (so that 409 can be told apart).
    pub async fn call_status(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(StatusCode, Bytes), String> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read body: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    }
}

/// JSON body helper.
pub fn json(v: &serde_json::Value) -> Body {
    Body {
        content_type: "application/json",
        bytes: Bytes::from(serde_json::to_vec(v).expect("json")),
    }
}

/// JSON merge patch body helper.
pub fn merge_patch(v: &serde_json::Value) -> Body {
    Body {
        content_type: "application/merge-patch+json",
        bytes: Bytes::from(serde_json::to_vec(v).expect("json")),
    }
}
