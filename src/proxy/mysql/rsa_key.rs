//! The key pair a MySQL client without TLS encrypts its password to
//! (`caching_sha2_password`'s full authentication): the client asks for
//! the public key, encrypts its password XOR the nonce with RSA-OAEP
//! (SHA-1, as the protocol fixes it), and gatehouse decrypts it. The token
//! never crosses the network in clear, and gatehouse keeps only its hash.
//!
//! One key per process: read at start from `[server] mysql_rsa_key_file`
//! (a key clients can pin with `--server-public-key-path`, so that a man
//! in the middle cannot hand them a key of its own), or else generated on
//! a background thread when the first client needs it (a 2048-bit key
//! takes a moment; sessions that need it before it is ready wait for it).

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use std::path::Path;
use std::sync::OnceLock;

struct KeyPair {
    private: RsaPrivateKey,
    public_pem: String,
}

static KEY: OnceLock<Result<KeyPair, String>> = OnceLock::new();
static STARTED: std::sync::Once = std::sync::Once::new();

const BITS: usize = 2048;

fn generate() -> Result<KeyPair, String> {
    pair(RsaPrivateKey::new(&mut rand::thread_rng(), BITS).map_err(|e| e.to_string())?)
}

fn pair(private: RsaPrivateKey) -> Result<KeyPair, String> {
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    Ok(KeyPair { private, public_pem })
}

/// Reads and checks a private key file (PEM: PKCS#8 or PKCS#1).
pub fn read_key_file(path: &Path) -> Result<RsaPrivateKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = RsaPrivateKey::from_pkcs8_pem(&text)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&text))
        .map_err(|_| format!("{}: not an RSA private key in PEM (PKCS#8 or PKCS#1)", path.display()))?;
    if key.size() * 8 < BITS {
        return Err(format!("{}: the key must have at least {BITS} bits", path.display()));
    }
    key.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}

/// Uses the key in `path` for this process (before any client needs one).
pub fn load(path: &Path) -> Result<(), String> {
    let k = pair(read_key_file(path)?)?;
    STARTED.call_once(|| {});
    KEY.set(Ok(k))
        .map_err(|_| "the MySQL RSA key was already set".to_string())
}

/// Starts generating the key (once per process).
pub fn prepare() {
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new().name("gatehouse-rsa".into()).spawn(|| {
            let _ = KEY.get_or_init(generate);
        });
        if spawned.is_err() {
            let _ = KEY.get_or_init(generate);
        }
    });
}

/// The key, waiting (without blocking the worker) until it exists.
async fn key() -> Result<&'static KeyPair, String> {
    prepare();
    loop {
        if let Some(k) = KEY.get() {
            return k.as_ref().map_err(Clone::clone);
        }
        monoio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The public key as PEM (SubjectPublicKeyInfo), as clients expect it.
pub async fn public_pem() -> Result<&'static str, String> {
    Ok(key().await?.public_pem.as_str())
}

/// A password encrypted to gatehouse's key by a client that had the key
/// already (pinned, `server_public_key`) and so sent it without asking:
/// `None` unless the key exists, `cipher` has its size and decrypts.
pub fn decrypt_pinned(cipher: &[u8], nonce: &[u8]) -> Option<Vec<u8>> {
    let k = KEY.get()?.as_ref().ok()?;
    if cipher.len() != k.private.size() {
        return None;
    }
    let plain = k
        .private
        .decrypt_blinded(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), cipher)
        .ok()?;
    unmask(plain, nonce).ok()
}

fn unmask(mut plain: Vec<u8>, nonce: &[u8]) -> Result<Vec<u8>, String> {
    if nonce.is_empty() {
        return Err("no nonce".into());
    }
    for (i, b) in plain.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    if plain.last() == Some(&0) {
        plain.pop();
    }
    Ok(plain)
}

/// The password a client encrypted: decrypted, XORed with the nonce
/// (repeated), its trailing NUL taken off.
pub async fn decrypt_password(cipher: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
    let k = key().await?;
    // Blinded, so that timing many decryptions tells less of the key
    // (RUSTSEC-2023-0071 is about the timing of RSA decryption).
    let plain = k
        .private
        .decrypt_blinded(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), cipher)
        .map_err(|_| "the encrypted password could not be decrypted".to_string())?;
    unmask(plain, nonce)
}
