//! rustls 0.23 configurations (ring provider, TLS 1.3 only) for quinn, the client's session
//! ticket store, and how a connection learns whether its handshake was a resumption.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, NamedGroup, SignatureAlgorithm, SignatureScheme};

/// System CA bundle used when a client verifies without its own `ca`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Sessions a server keeps for resumption (rustls' stateful store: each ticket resumes once).
/// Each holds a resumption secret and a few dozen bytes; two are issued per connection.
pub const SERVER_SESSIONS: usize = 4096;
/// TLS 1.3 tickets kept per server name (the server sends 2 per connection; each resumes once).
const TICKETS_PER_SERVER: usize = 4;

thread_local! {
    /// Set while a full handshake's certificate step runs (the client verifying the server's
    /// certificate, the server signing its CertificateVerify): a resumed handshake has none.
    static FULL_HANDSHAKE: Cell<bool> = const { Cell::new(false) };
}

/// Call before a quinn call that may feed TLS; `full_handshake_seen` after it says whether a
/// full handshake's certificate step ran inside. quinn drives rustls synchronously on this
/// thread, one connection at a time, so the flag belongs to the connection it worked on.
pub fn start_handshake_probe() {
    FULL_HANDSHAKE.with(|c| c.set(false));
}

/// See `start_handshake_probe`.
pub fn full_handshake_seen() -> bool {
    FULL_HANDSHAKE.with(|c| c.replace(false))
}

fn saw_full_handshake() {
    FULL_HANDSHAKE.with(|c| c.set(true));
}

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

/// The session store of a server identity (certificate chain, key, ALPN), shared by every
/// engine of this process serving it: the engine workers of one endpoint each run a server
/// config of their own, and a client resuming lands on any of them. Never shared between
/// identities (rustls would resume a session under another certificate).
fn server_sessions(cert_pem: &[u8], key_pem: &[u8], alpn: &[Vec<u8>]) -> Arc<ServerSessionMemoryCache> {
    type Registry = Mutex<HashMap<Vec<u8>, Weak<ServerSessionMemoryCache>>>;
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [cert_pem, key_pem] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    for a in alpn {
        ctx.update(&(a.len() as u64).to_le_bytes());
        ctx.update(a);
    }
    let id = ctx.finish().as_ref().to_vec();
    let mut reg = REGISTRY.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(store) = reg.get(&id).and_then(Weak::upgrade) {
        return store;
    }
    reg.retain(|_, w| w.strong_count() > 0);
    let store = ServerSessionMemoryCache::new(SERVER_SESSIONS);
    reg.insert(id, Arc::downgrade(&store));
    store
}

/// Server side: the certificate chain and key, ALPN list, no client authentication. Sessions
/// stay in memory ([`SERVER_SESSIONS`] per identity, see `server_sessions`; single use: rustls
/// takes a session out of the store when a client resumes it, which is also what lets it
/// accept 0-RTT). `early_data`: accept 0-RTT from resuming clients (QUIC allows only 0 or
/// u32::MAX as rustls' limit).
pub fn server_config(cert_pem: &[u8], key_pem: &[u8], alpn: Vec<Vec<u8>>, early_data: bool, kx: u32) -> Result<QuicServerConfig, String> {
    let provider = provider(kx)?;
    let chain = read_certs(cert_pem)?;
    if chain.is_empty() {
        return Err("no certificate in the PEM data".into());
    }
    let key = read_key(key_pem)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    tls.alpn_protocols = alpn;
    tls.max_early_data_size = if early_data { u32::MAX } else { 0 };
    tls.session_storage = server_sessions(cert_pem, key_pem, &tls.alpn_protocols);
    // with_single_cert checked that the key matches the chain: the same pair, with a signer
    // that tells a full handshake (it signs a CertificateVerify) from a resumed one (none).
    let signer = provider.key_provider.load_private_key(read_key(key_pem)?).map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(read_certs(cert_pem)?, Arc::new(TrackedKey(signer)));
    tls.cert_resolver = Arc::new(FixedCert(Arc::new(certified)));
    QuicServerConfig::try_from(tls).map_err(|e| e.to_string())
}

/// The server's one certificate and key (see `server_config`).
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A signing key whose signatures mark the handshake as full (`start_handshake_probe`).
#[derive(Debug)]
struct TrackedKey(Arc<dyn SigningKey>);

impl SigningKey for TrackedKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        self.0.choose_scheme(offered).map(|s| Box::new(TrackedSigner(s)) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.0.algorithm()
    }
}

#[derive(Debug)]
struct TrackedSigner(Box<dyn Signer>);

impl Signer for TrackedSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        saw_full_handshake();
        self.0.sign(message)
    }

    fn scheme(&self) -> SignatureScheme {
        self.0.scheme()
    }
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

/// The verifier a client config uses, reporting each certificate check as a full handshake
/// (a resumed handshake has no certificate to check: `start_handshake_probe`).
#[derive(Debug)]
struct Tracked(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for Tracked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        saw_full_handshake();
        self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
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

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// The two configs of one client TLS setup, sharing verifier, identity and ticket store (so
/// tickets from either resume with either): without and with 0-RTT.
pub struct ClientTls {
    pub plain: Arc<QuicClientConfig>,
    pub early: Arc<QuicClientConfig>,
}

/// Client side. `verify`: check the server's chain and name with webpki against the roots in
/// `ca` (PEM; the system bundle when empty); otherwise accept any certificate (CallerVerifies).
/// `cert`/`key`: optional client identity. `store`: where tickets go (resumption).
pub fn client_config(
    alpn: Vec<Vec<u8>>,
    ca: &[u8],
    verify: bool,
    cert: &[u8],
    key: &[u8],
    store: Arc<dyn ClientSessionStore>,
    kx: u32,
) -> Result<ClientTls, String> {
    let provider = provider(kx)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify {
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
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(|e| e.to_string())?
    } else {
        Arc::new(CallerVerifies(provider))
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(Arc::new(Tracked(verifier)));
    let mut cfg = if cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_auth_cert(read_certs(cert)?, read_key(key)?).map_err(|e| format!("client certificate/key: {e}"))?
    };
    cfg.alpn_protocols = alpn;
    cfg.resumption = rustls::client::Resumption::store(store).tls12_resumption(rustls::client::Tls12Resumption::Disabled);
    cfg.enable_early_data = false;
    // A clone shares the Arcs rustls compares before resuming (verifier, client identity).
    let mut early = cfg.clone();
    early.enable_early_data = true;
    Ok(ClientTls {
        plain: Arc::new(QuicClientConfig::try_from(cfg).map_err(|e| e.to_string())?),
        early: Arc::new(QuicClientConfig::try_from(early).map_err(|e| e.to_string())?),
    })
}

type SessionKey = (u64, ServerName<'static>);

/// One server's entry: its key-exchange hint and TLS 1.3 tickets, oldest first.
struct SessionEntry {
    stamp: u64,
    kx_hint: Option<NamedGroup>,
    tickets: VecDeque<Tls13ClientSessionValue>,
}

#[derive(Default)]
struct CacheInner {
    /// Server entries kept at most; the least recently used goes first.
    cap: usize,
    clock: u64,
    entries: HashMap<SessionKey, SessionEntry>,
    /// Stamp → key: the least recently used entry first.
    order: BTreeMap<u64, SessionKey>,
}

impl CacheInner {
    /// The entry of `key`, made the most recently used (created when `create`; the least
    /// recently used goes when the cache is full).
    fn touch(&mut self, key: &SessionKey, create: bool) -> Option<&mut SessionEntry> {
        self.clock += 1;
        let stamp = self.clock;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.stamp);
            e.stamp = stamp;
            self.order.insert(stamp, key.clone());
            return self.entries.get_mut(key);
        }
        if !create || self.cap == 0 {
            return None;
        }
        while self.entries.len() >= self.cap {
            let Some((_, old)) = self.order.pop_first() else { break };
            self.entries.remove(&old);
        }
        self.order.insert(stamp, key.clone());
        Some(self.entries.entry(key.clone()).or_insert(SessionEntry { stamp, kx_hint: None, tickets: VecDeque::new() }))
    }

    fn trim(&mut self) {
        while self.entries.len() > self.cap {
            let Some((_, old)) = self.order.pop_first() else { break };
            self.entries.remove(&old);
        }
    }
}

/// The client's session tickets, one store per engine (endpoint), bounded by server entries:
/// a server is a (client config, server name) pair, so tickets from one TLS setup are never
/// offered under another (rustls would refuse them anyway), and a server is its name, as TLS
/// knows it (SNI), whatever its address.
#[derive(Default)]
pub struct SessionCache {
    inner: Mutex<CacheInner>,
}

impl SessionCache {
    pub fn new(cap: usize) -> Self {
        SessionCache { inner: Mutex::new(CacheInner { cap, ..CacheInner::default() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding it left plain data behind: go on with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep at most `cap` servers (0: no resumption); the least recently used go first.
    pub fn set_cap(&self, cap: usize) {
        let mut c = self.lock();
        c.cap = cap;
        c.trim();
    }

    /// (servers, tickets, cap).
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = self.lock();
        (c.entries.len(), c.entries.values().map(|e| e.tickets.len()).sum(), c.cap)
    }

    /// Forget what a client config (`scope`) stored: the config is gone.
    pub fn forget_scope(&self, scope: u64) {
        let mut c = self.lock();
        let CacheInner { entries, order, .. } = &mut *c;
        entries.retain(|k, e| {
            let keep = k.0 != scope;
            if !keep {
                order.remove(&e.stamp);
            }
            keep
        });
    }
}

/// The view of a [`SessionCache`] one client config stores into.
pub struct ScopedStore {
    pub cache: Arc<SessionCache>,
    pub scope: u64,
}

impl std::fmt::Debug for ScopedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tickets (secrets).
        f.debug_struct("ScopedStore").field("scope", &self.scope).finish()
    }
}

impl ClientSessionStore for ScopedStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        if let Some(e) = self.cache.lock().touch(&(self.scope, server_name), true) {
            e.kx_hint = Some(group);
        }
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.lock().entries.get(&(self.scope, server_name.to_owned())).and_then(|e| e.kx_hint)
    }

    // TLS 1.3 only: no TLS 1.2 sessions.
    fn set_tls12_session(&self, _server_name: ServerName<'static>, _value: Tls12ClientSessionValue) {}

    fn tls12_session(&self, _server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        None
    }

    fn remove_tls12_session(&self, _server_name: &ServerName<'static>) {}

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        if let Some(e) = self.cache.lock().touch(&(self.scope, server_name), true) {
            if e.tickets.len() >= TICKETS_PER_SERVER {
                e.tickets.pop_front();
            }
            e.tickets.push_back(value);
        }
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.cache.lock().touch(&(self.scope, server_name.clone()), false).and_then(|e| e.tickets.pop_back())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn session_cache_is_bounded_lru_and_scoped() {
        let cache = Arc::new(SessionCache::new(2));
        let a = ScopedStore { cache: cache.clone(), scope: 1 };
        let b = ScopedStore { cache: cache.clone(), scope: 2 };
        a.set_kx_hint(name("one.test"), NamedGroup::X25519);
        a.set_kx_hint(name("two.test"), NamedGroup::X25519);
        // Using "one" makes "two" the least recently used.
        assert!(a.take_tls13_ticket(&name("one.test")).is_none());
        a.set_kx_hint(name("three.test"), NamedGroup::secp256r1);
        assert_eq!(cache.counts(), (2, 0, 2));
        assert_eq!(a.kx_hint(&name("one.test")), Some(NamedGroup::X25519));
        assert_eq!(a.kx_hint(&name("two.test")), None);
        assert_eq!(a.kx_hint(&name("three.test")), Some(NamedGroup::secp256r1));
        // Another config's view sees nothing of it.
        assert_eq!(b.kx_hint(&name("one.test")), None);
        b.set_kx_hint(name("one.test"), NamedGroup::X25519);
        assert_eq!(cache.counts().0, 2);
        cache.forget_scope(2);
        assert_eq!(b.kx_hint(&name("one.test")), None);
        cache.set_cap(0);
        assert_eq!(cache.counts(), (0, 0, 0));
        a.set_kx_hint(name("four.test"), NamedGroup::X25519);
        assert_eq!(cache.counts(), (0, 0, 0));
    }

    #[test]
    fn one_session_store_per_server_identity() {
        let alpn = vec![b"stoq/1".to_vec()];
        let s1 = server_sessions(b"cert a", b"key a", &alpn);
        let s2 = server_sessions(b"cert a", b"key a", &alpn);
        let s3 = server_sessions(b"cert b", b"key a", &alpn);
        assert!(Arc::ptr_eq(&s1, &s2));
        assert!(!Arc::ptr_eq(&s1, &s3));
        drop((s1, s2));
        // Once no engine holds it, a new engine of that identity starts afresh.
        let s4 = server_sessions(b"cert a", b"key a", &alpn);
        assert!(!Arc::ptr_eq(&s4, &s3));
        assert_eq!(Arc::strong_count(&s4), 1);
    }
}
