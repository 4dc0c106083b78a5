//! TLS. Client URLs: server certificate from --cert-file/--key-file, client certificates verified
//! against --trusted-ca-file when --client-cert-auth is set. Peer URLs: the same with the --peer-*
//! flags, and the peer certificate is also this member's client certificate when it dials others.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::StoreArgs;

fn certs(path: &std::path::Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no valid PEM certificate", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

fn key(path: &std::path::Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .with_context(|| format!("{} holds no valid PEM private key", path.display()))?
        .with_context(|| format!("{} holds no PEM private key", path.display()))
}

/// The TLS configuration for https client URLs, if certificates are configured.
pub fn server_config(args: &StoreArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(k)) = (&args.cert_file, &args.key_file) else {
        return Ok(None);
    };
    let ca = args
        .client_cert_auth
        .then(|| {
            args.trusted_ca_file
                .as_deref()
                .context("--client-cert-auth needs --trusted-ca-file")
        })
        .transpose()?;
    let alpn = [b"h2".to_vec(), b"http/1.1".to_vec()];
    listener_config(cert, k, ca, &alpn).map(Some)
}

/// The TLS configuration for https peer URLs (HTTP/2 only), if peer certificates are configured.
pub fn peer_server_config(args: &StoreArgs) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(k)) = (&args.peer_cert_file, &args.peer_key_file) else {
        return Ok(None);
    };
    let ca = args
        .peer_client_cert_auth
        .then(|| {
            args.peer_trusted_ca_file
                .as_deref()
                .context("--peer-client-cert-auth needs --peer-trusted-ca-file")
        })
        .transpose()?;
    listener_config(cert, k, ca, &[b"h2".to_vec()]).map(Some)
}

/// What this member uses to dial https peer URLs: other members' certificates are verified
/// against --peer-trusted-ca-file (the system's CA bundle without it), and the peer certificate,
/// when configured, is presented as client certificate.
pub fn peer_client_config(args: &StoreArgs) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &args.peer_trusted_ca_file {
        Some(ca) => {
            for c in certs(ca)? {
                roots.add(c)?;
            }
        }
        None => {
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
            if let Ok(system) = certs(&bundle) {
                roots.add_parsable_certificates(system);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match (&args.peer_cert_file, &args.peer_key_file) {
        (Some(cert), Some(k)) => builder
            .with_client_auth_cert(certs(cert)?, key(k)?)
            .context("--peer-cert-file and --peer-key-file do not match")?,
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A listener's TLS: its certificate, and when `client_ca` is given, client certificates required
/// and verified against it.
fn listener_config(
    cert: &std::path::Path,
    k: &std::path::Path,
    client_ca: Option<&std::path::Path>,
    alpn: &[Vec<u8>],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(certs(cert)?, key(k)?)
        .context("certificate and key do not match")?;
    cfg.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(cfg))
}
