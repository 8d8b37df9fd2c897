//! JSON Web Key Sets: the identity provider's public keys, parsed into
//! verification keys, and a cache that a background thread keeps fresh.
//!
//! The data path only ever loads the cached set (an atomic pointer load);
//! fetching happens on the refresher thread: at start, every
//! `refresh_secs`, and soon after a token names a key id the set does not
//! hold (at most once per `refresh_min_secs`), so that key rotation at the
//! provider works without a restart. Only asymmetric keys are kept: RSA
//! (RS256), P-256 (ES256) and Ed25519 (EdDSA); symmetric (`oct`) keys are
//! never used, whatever the set says.

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest JWKS document accepted, in bytes.
pub const MAX_JWKS_BYTES: u64 = 1 << 20;
/// Most keys kept from one set.
pub const MAX_KEYS: usize = 64;
/// Time allowed to connect to the JWKS URL, and for the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest RSA modulus accepted, in bits.
const RSA_MIN_BITS: usize = 2048;

/// A JWS signature algorithm gatehouse accepts. There is deliberately no
/// HMAC and no `none`: tokens are verified with public keys only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    ES256,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 3] = [Alg::RS256, Alg::ES256, Alg::EdDSA];

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::ES256 => "ES256",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// The algorithm a JOSE `alg` value names, when gatehouse supports it.
    /// `Ed25519` is the fully specified name (RFC 9864) for EdDSA over Ed25519.
    pub fn from_name(s: &str) -> Option<Alg> {
        match s {
            "RS256" => Some(Alg::RS256),
            "ES256" => Some(Alg::ES256),
            "EdDSA" | "Ed25519" => Some(Alg::EdDSA),
            _ => None,
        }
    }

    /// The kind of key this algorithm needs, for messages.
    pub fn key_kind(self) -> &'static str {
        match self {
            Alg::RS256 => "an RSA key",
            Alg::ES256 => "a P-256 EC key",
            Alg::EdDSA => "an Ed25519 OKP key",
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone)]
enum Material {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point: 0x04 || x || y.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// One public key, usable with exactly one algorithm (fixed by its type,
/// and by the JWK's `alg` when it has one).
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    material: Material,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish()
    }
}

impl VerifyKey {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self.material {
            Material::Rsa { .. } => Alg::RS256,
            Material::P256(_) => Alg::ES256,
            Material::Ed25519(_) => Alg::EdDSA,
        }
    }

    /// Checks `signature` over `message`. The caller has already checked
    /// that the token's algorithm is this key's.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        match &self.material {
            Material::Rsa { n, e } => sig::RsaPublicKeyComponents { n, e }
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Material::P256(point) => sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            Material::Ed25519(x) => sig::UnparsedPublicKey::new(&sig::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// A parsed key set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

impl KeySet {
    /// Keys with this id.
    pub fn by_kid<'a>(&'a self, kid: &'a str) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |k| k.kid.as_deref() == Some(kid))
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("not a JSON object with a `keys` array")]
    NotASet,
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("no usable signing key (RSA, P-256 or Ed25519){}", skipped_note(.0))]
    NoUsableKey(Vec<String>),
}

fn skipped_note(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!("; skipped: {}", skipped.join("; "))
    }
}

fn b64(v: &serde_json::Value, field: &str) -> Result<Vec<u8>, String> {
    let s = v
        .get(field)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("no `{field}`"))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("`{field}` is not base64url"))
}

fn strip_zeros(mut b: Vec<u8>) -> Vec<u8> {
    let z = b.iter().take_while(|&&x| x == 0).count();
    b.drain(..z);
    b
}

/// Parses one JWK into a verification key, or says why it is not usable.
fn parse_key(k: &serde_json::Value) -> Result<VerifyKey, String> {
    let kty = k.get("kty").and_then(|x| x.as_str()).unwrap_or("");
    let kid = k.get("kid").and_then(|x| x.as_str()).map(str::to_string);
    if let Some(u) = k.get("use").and_then(|x| x.as_str()) {
        if u != "sig" {
            return Err(format!("use is `{u}`, not `sig`"));
        }
    }
    let material = match kty {
        "RSA" => {
            let n = strip_zeros(b64(k, "n")?);
            let e = strip_zeros(b64(k, "e")?);
            if n.len() * 8 < RSA_MIN_BITS {
                return Err(format!("RSA modulus shorter than {RSA_MIN_BITS} bits"));
            }
            if e.is_empty() || e.len() > 4 {
                return Err("bad RSA exponent".into());
            }
            Material::Rsa { n, e }
        }
        "EC" => {
            let crv = k.get("crv").and_then(|x| x.as_str()).unwrap_or("");
            if crv != "P-256" {
                return Err(format!("EC curve `{crv}` is not supported (only P-256)"));
            }
            let (x, y) = (b64(k, "x")?, b64(k, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::P256(point)
        }
        "OKP" => {
            let crv = k.get("crv").and_then(|x| x.as_str()).unwrap_or("");
            if crv != "Ed25519" {
                return Err(format!("OKP curve `{crv}` is not supported (only Ed25519)"));
            }
            let x = b64(k, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".into());
            }
            Material::Ed25519(x)
        }
        "oct" => return Err("symmetric keys (kty `oct`) are never used".into()),
        other => return Err(format!("key type `{other}` is not supported")),
    };
    let key = VerifyKey { kid, material };
    // A key that declares its algorithm is used with that algorithm only,
    // and it must be the one its type implies (RS384 or PS256 on an RSA
    // key, say, is not supported, so the key is not used at all).
    if let Some(a) = k.get("alg").and_then(|x| x.as_str()) {
        if Alg::from_name(a) != Some(key.alg()) {
            return Err(format!("alg `{a}` is not supported for key type `{kty}`"));
        }
    }
    Ok(key)
}

/// Parses a JWKS document. Keys gatehouse cannot use are skipped (and
/// named in the second value); a set with no usable key is an error.
pub fn parse(bytes: &[u8]) -> Result<(KeySet, Vec<String>), JwksError> {
    if bytes.len() as u64 > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotASet)?;
    let Some(list) = v.get("keys").and_then(|k| k.as_array()) else {
        return Err(JwksError::NotASet);
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, k) in list.iter().enumerate() {
        if keys.len() == MAX_KEYS {
            skipped.push(format!("keys past the first {MAX_KEYS}"));
            break;
        }
        match parse_key(k) {
            Ok(key) => keys.push(key),
            Err(why) => {
                let name = k
                    .get("kid")
                    .and_then(|x| x.as_str())
                    .map(|s| format!("kid `{}`", super::oidc::shown(s)))
                    .unwrap_or_else(|| format!("key {i}"));
                skipped.push(format!("{name}: {why}"));
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(skipped));
    }
    Ok((KeySet { keys }, skipped))
}

/// Where the key set comes from.
pub enum Source {
    File(PathBuf),
    Url { url: String, agent: ureq::Agent },
}

impl Source {
    /// An HTTPS (or loopback HTTP) source; `ca_file` replaces the built-in
    /// web roots.
    pub fn url(url: &str, ca_file: Option<&std::path::Path>) -> Result<Source, String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(f) => {
                for c in
                    rustls::pki_types::CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))?
                {
                    let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
                    roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: no certificate", f.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(tls))
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // A redirect could lead to a plain-http or another host's key
            // set: the URL configured is the one the keys come from.
            .redirects(0)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Source::Url {
            url: url.to_string(),
            agent,
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url { url, .. } => url.clone(),
        }
    }

    /// Reads and parses the set (blocking; never on the data path).
    pub fn load(&self) -> Result<(KeySet, Vec<String>), String> {
        let bytes = match self {
            Source::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                read_limited(f).map_err(|e| format!("cannot read {}: {e}", p.display()))?
            }
            Source::Url { url, agent } => match agent.get(url).call() {
                Ok(resp) if resp.status() >= 300 => {
                    return Err(format!(
                        "{url}: HTTP status {} (redirects are not followed: configure the key set's own URL)",
                        resp.status()
                    ))
                }
                Ok(resp) => read_limited(resp.into_reader()).map_err(|e| format!("{url}: {e}"))?,
                Err(ureq::Error::Status(code, _)) => return Err(format!("{url}: HTTP status {code}")),
                Err(e) => return Err(format!("{url}: {e}")),
            },
        };
        parse(&bytes).map_err(|e| format!("{}: {e}", self.describe()))
    }
}

fn read_limited(r: impl Read) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(MAX_JWKS_BYTES + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_JWKS_BYTES {
        return Err(std::io::Error::other(format!("larger than {MAX_JWKS_BYTES} bytes")));
    }
    Ok(out)
}

/// What the data path and the refresher share.
struct Shared {
    keys: ArcSwap<KeySet>,
    /// A token named an unknown key id: refresh soon.
    wanted: AtomicBool,
    stop: AtomicBool,
}

/// The cached key set, refreshed by a background thread that lives as long
/// as this value (dropping it stops the thread at its next wake-up).
pub struct Cache {
    shared: Arc<Shared>,
    thread: Option<std::thread::Thread>,
}

/// Refresh timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Regular refresh.
    pub every: Duration,
    /// Least time between two fetches (unknown key ids and failures).
    pub min_gap: Duration,
}

impl Cache {
    /// Loads the set once now, then starts the refresher. A file that
    /// cannot be loaded is an error (the configuration is wrong); a URL
    /// that cannot be fetched is logged and retried, so that an identity
    /// provider's outage does not stop the gateway (static tokens keep
    /// working, OIDC logins fail with a clear message until keys arrive).
    pub fn start(source: Source, timing: Timing) -> Result<Cache, String> {
        let first = source.load();
        let initial = match (&source, first) {
            (_, Ok((set, skipped))) => {
                log_loaded(&source, &set, &skipped, true);
                Some(set)
            }
            (Source::File(_), Err(e)) => return Err(e),
            (Source::Url { .. }, Err(e)) => {
                tracing::warn!(
                    target: "gatehouse::oidc",
                    error = %e,
                    retry_secs = timing.min_gap.as_secs(),
                    "JWKS could not be fetched; OIDC logins fail until it is"
                );
                None
            }
        };
        let loaded = initial.is_some();
        let shared = Arc::new(Shared {
            keys: ArcSwap::from_pointee(initial.unwrap_or_default()),
            wanted: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("gatehouse-jwks".into())
            .spawn(move || refresher(s, source, timing, loaded))
            .map_err(|e| format!("cannot start the JWKS refresher: {e}"))?;
        Ok(Cache {
            shared,
            thread: Some(handle.thread().clone()),
        })
    }

    /// A cache that never refreshes (tests).
    pub fn fixed(set: KeySet) -> Cache {
        Cache {
            shared: Arc::new(Shared {
                keys: ArcSwap::from_pointee(set),
                wanted: AtomicBool::new(false),
                stop: AtomicBool::new(true),
            }),
            thread: None,
        }
    }

    /// The current set: a pointer load, never blocks.
    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.shared.keys.load()
    }

    /// Asks the refresher for an early fetch (rate-limited there). Never blocks.
    pub fn request_refresh(&self) {
        if !self.shared.wanted.swap(true, Ordering::AcqRel) {
            if let Some(t) = &self.thread {
                t.unpark();
            }
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.unpark();
        }
    }
}

fn log_loaded(source: &Source, set: &KeySet, skipped: &[String], first: bool) {
    let kids = set.kids().join(",");
    let what = if first { "JWKS loaded" } else { "JWKS changed" };
    tracing::info!(
        target: "gatehouse::oidc",
        source = %source.describe(),
        keys = set.keys.len(),
        kids = %kids,
        "{what}"
    );
    for s in skipped {
        tracing::debug!(target: "gatehouse::oidc", key = %s, "JWKS key skipped");
    }
}

fn same_keys(a: &KeySet, b: &KeySet) -> bool {
    a.keys.len() == b.keys.len()
        && a.keys.iter().zip(&b.keys).all(|(x, y)| {
            x.kid == y.kid
                && match (&x.material, &y.material) {
                    (Material::Rsa { n: n1, e: e1 }, Material::Rsa { n: n2, e: e2 }) => n1 == n2 && e1 == e2,
                    (Material::P256(p), Material::P256(q)) => p == q,
                    (Material::Ed25519(p), Material::Ed25519(q)) => p == q,
                    _ => false,
                }
        })
}

/// `t + d`, or a year on when that does not fit.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(t)
}

fn refresher(shared: Arc<Shared>, source: Source, timing: Timing, loaded: bool) {
    let mut last = Instant::now();
    let mut due = later(last, if loaded { timing.every } else { timing.min_gap });
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let mut at = due;
        if shared.wanted.load(Ordering::Acquire) {
            at = at.min(later(last, timing.min_gap));
        }
        if now < at {
            std::thread::park_timeout(at - now);
            continue;
        }
        shared.wanted.store(false, Ordering::Release);
        last = Instant::now();
        match source.load() {
            Ok((set, skipped)) => {
                if !same_keys(&shared.keys.load(), &set) {
                    log_loaded(&source, &set, &skipped, false);
                }
                shared.keys.store(Arc::new(set));
                due = later(last, timing.every);
            }
            Err(e) => {
                // Keep the keys we have; try again after the least gap.
                tracing::warn!(target: "gatehouse::oidc", error = %e, "JWKS refresh failed; keeping the current keys");
                due = later(last, timing.min_gap);
            }
        }
    }
}

/// The RFC 7638 thumbprint of a public JWK (base64url of SHA-256 over its
/// required members in lexicographic order), a natural key id.
pub fn thumbprint(jwk: &serde_json::Value) -> Option<String> {
    use sha2::{Digest, Sha256};
    let s = |f: &str| jwk.get(f).and_then(|x| x.as_str());
    let canonical = match s("kty")? {
        "RSA" => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e")?, s("n")?),
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv")?,
            s("x")?,
            s("y")?
        ),
        "OKP" => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv")?, s("x")?),
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed_jwk(kid: &str) -> serde_json::Value {
        serde_json::json!({"kty":"OKP","crv":"Ed25519","kid":kid,"x":URL_SAFE_NO_PAD.encode([7u8; 32])})
    }

    #[test]
    fn parses_and_skips() {
        let doc = serde_json::json!({"keys": [
            ed_jwk("a"),
            {"kty":"oct","kid":"h","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"},
            {"kty":"RSA","kid":"small","n":URL_SAFE_NO_PAD.encode([1u8; 128]),"e":"AQAB"},
            {"kty":"RSA","kid":"ps","alg":"PS256","n":URL_SAFE_NO_PAD.encode([1u8; 256]),"e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":URL_SAFE_NO_PAD.encode([1u8; 256]),"e":"AQAB"},
            {"kty":"RSA","kid":"r","alg":"RS256","n":URL_SAFE_NO_PAD.encode([1u8; 256]),"e":"AQAB"},
            {"kty":"OKP","crv":"Ed25519","kid":"wrongalg","alg":"ES256","x":URL_SAFE_NO_PAD.encode([7u8; 32])},
        ]});
        let (set, skipped) = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.kids(), vec!["a", "r"]);
        assert_eq!(set.keys[1].alg(), Alg::RS256);
        assert_eq!(skipped.len(), 6, "{skipped:?}");
        assert!(skipped[0].contains("symmetric"), "{skipped:?}");
    }

    #[test]
    fn rejects_non_sets() {
        assert_eq!(parse(b"[]").unwrap_err(), JwksError::NotASet);
        assert_eq!(parse(b"not json").unwrap_err(), JwksError::NotASet);
        assert!(matches!(
            parse(br#"{"keys":[]}"#).unwrap_err(),
            JwksError::NoUsableKey(_)
        ));
        let only_oct = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        let e = parse(only_oct).unwrap_err().to_string();
        assert!(e.contains("symmetric"), "{e}");
        let big = vec![b' '; MAX_JWKS_BYTES as usize + 1];
        assert_eq!(parse(&big).unwrap_err(), JwksError::TooLarge);
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 section 3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn file_cache_refreshes_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, serde_json::json!({"keys":[ed_jwk("one")]}).to_string()).unwrap();
        let timing = Timing {
            every: Duration::from_secs(3600),
            min_gap: Duration::from_millis(50),
        };
        let cache = Cache::start(Source::File(path.clone()), timing).unwrap();
        assert_eq!(cache.keys().kids(), vec!["one"]);
        std::fs::write(&path, serde_json::json!({"keys":[ed_jwk("two")]}).to_string()).unwrap();
        cache.request_refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.keys().kids() != vec!["two"] {
            assert!(Instant::now() < deadline, "not refreshed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // A broken file keeps the last good keys.
        std::fs::write(&path, "{").unwrap();
        cache.request_refresh();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(cache.keys().kids(), vec!["two"]);
        assert!(Cache::start(Source::File(path), timing).is_err());
    }

    #[test]
    fn redirects_are_not_followed() {
        use std::io::{Read, Write};
        // A server that answers every request with a redirect to a second
        // one, which would serve a valid key set.
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good_port = good.local_addr().unwrap().port();
        let redirect = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = redirect.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = redirect.accept() {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{good_port}/jwks\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = good.accept() {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let body = r#"{"keys":[]}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let src = Source::url(&format!("http://127.0.0.1:{port}/jwks"), None).unwrap();
        let e = src.load().unwrap_err();
        assert!(e.contains("302"), "{e}");
    }
}
