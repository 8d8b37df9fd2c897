//! The key pair a MySQL client without TLS encrypts its password to
//! (`caching_sha2_password`'s full authentication): the client asks for
//! the public key, encrypts its password XOR the nonce with RSA-OAEP
//! (SHA-1, as the protocol fixes it), and gatehouse decrypts it. The token
//! never crosses the network in clear, and gatehouse keeps only its hash.
//!
//! One key per process, generated on a background thread at start (a
//! 2048-bit key takes a moment; sessions that need it before it is ready
//! wait for it).

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey};
use std::sync::OnceLock;

struct KeyPair {
    private: RsaPrivateKey,
    public_pem: String,
}

static KEY: OnceLock<Result<KeyPair, String>> = OnceLock::new();
static STARTED: std::sync::Once = std::sync::Once::new();

const BITS: usize = 2048;

fn generate() -> Result<KeyPair, String> {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), BITS).map_err(|e| e.to_string())?;
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| e.to_string())?;
    Ok(KeyPair { private, public_pem })
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

/// The password a client encrypted: decrypted, XORed with the nonce
/// (repeated), its trailing NUL taken off.
pub async fn decrypt_password(cipher: &[u8], nonce: &[u8]) -> Result<Vec<u8>, String> {
    let k = key().await?;
    let mut plain = k
        .private
        .decrypt(Oaep::new::<sha1::Sha1>(), cipher)
        .map_err(|_| "the encrypted password could not be decrypted".to_string())?;
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
