//! rustls 0.23 configurations (ring provider, TLS 1.3 only) for quinn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// System CA bundle used when a client verifies without its own `ca`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// ring's provider with the key exchange groups of `kx` (`EngineConfig::key_exchange`, see
/// kx.rs: X25519MLKEM768 first by default). One per group list, built once.
fn provider(kx: u32) -> Result<Arc<CryptoProvider>, String> {
    static PROVIDERS: OnceLock<Mutex<HashMap<u32, Arc<CryptoProvider>>>> = OnceLock::new();
    let mut map = PROVIDERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(&kx) {
        return Ok(p.clone());
    }
    let p = Arc::new(CryptoProvider { kx_groups: crate::kx::groups(kx)?, ..rustls::crypto::ring::default_provider() });
    map.insert(kx, p.clone());
    Ok(p)
}

/// Every certificate of a PEM text (DER).
pub fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("certificate PEM: {e}"))
}

/// The first private key of a PEM text (PKCS#8, SEC1 or PKCS#1).
pub fn read_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no private key in the PEM data".to_string(),
        e => format!("key PEM: {e}"),
    })
}

/// Server side: the certificate chain and key, ALPN list, no client authentication, no 0-RTT.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8], alpn: Vec<Vec<u8>>, kx: u32) -> Result<QuicServerConfig, String> {
    let chain = read_certs(cert_pem)?;
    if chain.is_empty() {
        return Err("no certificate in the PEM data".into());
    }
    let key = read_key(key_pem)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider(kx)?)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    tls.alpn_protocols = alpn;
    tls.max_early_data_size = 0;
    QuicServerConfig::try_from(tls).map_err(|e| e.to_string())
}

/// Completes the handshake whatever the certificate: the caller checks it (e.g. against a
/// pinned fingerprint) from the peer certificates. rustls still verifies the handshake
/// signature against the presented key, so the peer holds that key.
#[derive(Debug)]
struct CallerVerifies(Arc<CryptoProvider>);

impl ServerCertVerifier for CallerVerifies {
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Client side. `verify`: check the server's chain and name with webpki against the roots in
/// `ca` (PEM; the system bundle when empty); otherwise accept any certificate (CallerVerifies).
/// `cert`/`key`: optional client identity.
pub fn client_config(alpn: Vec<Vec<u8>>, ca: &[u8], verify: bool, cert: &[u8], key: &[u8], kx: u32) -> Result<QuicClientConfig, String> {
    let provider = provider(kx)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let builder = if verify {
        let bundle;
        let pem: &[u8] = if ca.is_empty() {
            bundle = std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default();
            &bundle
        } else {
            ca
        };
        let mut roots = rustls::RootCertStore::empty();
        // Skip certificates webpki cannot use rather than refusing the whole bundle.
        let _ = roots.add_parsable_certificates(read_certs(pem)?);
        if roots.is_empty() {
            return Err("no usable CA certificate to verify the server against".into());
        }
        builder.with_root_certificates(roots)
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(CallerVerifies(provider)))
    };
    let mut cfg = if cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(|e| format!("client certificate/key: {e}"))?
    };
    cfg.alpn_protocols = alpn;
    cfg.enable_early_data = false;
    QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())
}
