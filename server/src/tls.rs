//! TLS for every listener (REST, gRPC, metrics) with rustls: the certificate and key read
//! from PEM files and re-read when they change — the next handshake gets the new
//! certificate, connections already open keep theirs, a pair that does not load keeps the
//! one in force — and optionally **mTLS**: client certificates verified against a CA, their
//! names (URI and DNS SANs, then the subject's CN) usable as the principal.
//!
//! tonic's own TLS has no reload hook, so inferd accepts TLS itself ([`crate::listen`]) and
//! hands the finished connections to axum and tonic alike. One crypto provider, ring, is
//! compiled in and installed as the process default (two providers would panic at the
//! first handshake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files TLS is served from (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to: mTLS. `None`: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client without a certificate may still connect (and authenticate
    /// with a key or token); one that presents a certificate must present a valid one.
    pub client_cert_optional: bool,
}

/// Which protocol a listener speaks, offered by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// REST and metrics (HTTP/1.1).
    Http1,
    /// gRPC (HTTP/2).
    H2,
}

/// The server's TLS configurations, swapped whole on reload.
pub struct Tls {
    files: TlsFiles,
    http1: ArcSwap<ServerConfig>,
    h2: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Reads the files (an error says which and why) and builds the configurations.
    pub fn open(files: TlsFiles) -> anyhow::Result<Arc<Tls>> {
        // The process-wide provider; an error only means one is installed already (ring:
        // nothing else is compiled in).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (http1, h2) = build(&files)?;
        Ok(Arc::new(Tls {
            files,
            http1: ArcSwap::from_pointee(http1),
            h2: ArcSwap::from_pointee(h2),
        }))
    }

    /// The configuration the next handshake on a listener of `alpn` uses.
    pub fn config(&self, alpn: Alpn) -> Arc<ServerConfig> {
        match alpn {
            Alpn::Http1 => self.http1.load_full(),
            Alpn::H2 => self.h2.load_full(),
        }
    }

    /// Rebuilds from the files; on any error the configuration in force stays (and the log
    /// says why). Returns whether it changed.
    pub fn reload(&self) -> bool {
        match build(&self.files) {
            Ok((http1, h2)) => {
                self.http1.store(Arc::new(http1));
                self.h2.store(Arc::new(h2));
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the TLS files do not load; keeping the certificate in force");
                false
            }
        }
    }

    /// Re-reads the files each time one of them changes (polled every second).
    pub fn watch(self: &Arc<Self>) {
        let files = [
            Some(self.files.cert.clone()),
            Some(self.files.key.clone()),
            self.files.client_ca.clone(),
        ];
        for file in files.into_iter().flatten() {
            let tls = Arc::clone(self);
            crate::auth::on_change(file, move || {
                tls.reload();
            });
        }
    }

    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

fn build(files: &TlsFiles) -> anyhow::Result<(ServerConfig, ServerConfig)> {
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {}: {e} (expected a PEM private key: PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let builder = ServerConfig::builder();
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca, "--tls-client-ca")? {
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if files.client_cert_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| anyhow::anyhow!("--tls-client-ca {}: {e}", ca.display()))?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut http1 = builder.with_single_cert(certs, key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-cert {} with --tls-key {}: {e} (is the key the certificate's?)",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let mut h2 = http1.clone();
    http1.alpn_protocols = vec![b"http/1.1".to_vec()];
    h2.alpn_protocols = vec![b"h2".to_vec()];
    Ok((http1, h2))
}

fn read_certs(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{flag} {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
        path.display()
    );
    Ok(certs)
}

/// The names a verified client certificate vouches for, most specific first: its URI SANs
/// (a SPIFFE ID), its DNS SANs, then its subject's common name. Empty when none parse.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_cert::der::{Decode, Encode};
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return Vec::new();
    };
    let tbs = &cert.tbs_certificate;
    let (mut uris, mut dns) = (Vec::new(), Vec::new());
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id != x509_cert::der::oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for name in san.0 {
            match name {
                GeneralName::UniformResourceIdentifier(u) => uris.push(u.to_string()),
                GeneralName::DnsName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    let mut names = uris;
    names.append(&mut dns);
    for rdn in tbs.subject.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != x509_cert::der::oid::db::rfc4519::CN {
                continue;
            }
            // The value as DER: a UTF8String, PrintableString or IA5String.
            let Ok(bytes) = atv.value.to_der() else {
                continue;
            };
            let cn = x509_cert::der::asn1::Utf8StringRef::from_der(&bytes)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    x509_cert::der::asn1::PrintableStringRef::from_der(&bytes)
                        .map(|s| s.as_str().to_owned())
                })
                .or_else(|_| {
                    x509_cert::der::asn1::Ia5StringRef::from_der(&bytes)
                        .map(|s| s.as_str().to_owned())
                });
            if let Ok(cn) = cn {
                names.push(cn);
            }
        }
    }
    names
}
