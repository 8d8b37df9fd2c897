//! Password scrambles of the authentication plugins gatehouse speaks to
//! upstream servers with the target's held password.
//!
//! - `mysql_native_password`: SHA1(pw) XOR SHA1(nonce ‖ SHA1(SHA1(pw))).
//!   The server stores SHA1(SHA1(pw)) and checks the XOR.
//! - `caching_sha2_password` (fast path): SHA256(pw) XOR
//!   SHA256(SHA256(SHA256(pw)) ‖ nonce). When the server has no cached
//!   entry it asks for the full password, which is sent only over TLS (or
//!   RSA-encrypted with the server's key).
//!
//! - `client_ed25519` (MariaDB): an Ed25519 signature of the server's
//!   32-byte nonce. The key is expanded as Ed25519 expands a seed
//!   (SHA-512, clamped), but from the whole password instead of a 32-byte
//!   seed; the server stores the public key. Nothing replayable crosses
//!   the wire.
//!
//! The nonce is the 20-byte scramble from the greeting or auth switch
//! (32 bytes for `client_ed25519`).

use ring::digest::{digest, Context, SHA1_FOR_LEGACY_USE_ONLY as SHA1};
use sha2::{Digest, Sha256};

pub const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &[u8] = b"caching_sha2_password";
pub const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";
pub const ED25519: &[u8] = b"client_ed25519";

/// caching_sha2_password's "more data" replies after the scramble.
pub const FAST_AUTH_SUCCESS: u8 = 3;
pub const PERFORM_FULL_AUTHENTICATION: u8 = 4;

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut c = Context::new(&SHA1);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The `mysql_native_password` response; empty for an empty password.
pub fn native_password(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1]);
    let mask = sha1(&[nonce, &stage2]);
    stage1.iter().zip(mask).map(|(a, b)| a ^ b).collect()
}

/// What a server stores for `mysql_native_password`: SHA1(SHA1(pw)).
pub fn native_password_stage2(password: &[u8]) -> [u8; 20] {
    let stage1 = digest(&SHA1, password);
    sha1(&[stage1.as_ref()])
}

/// Checks a `mysql_native_password` response the way a server does, from
/// the stored SHA1(SHA1(pw)) alone.
pub fn native_password_matches(stage2: &[u8; 20], nonce: &[u8], response: &[u8]) -> bool {
    if response.len() != 20 {
        return false;
    }
    let mask = sha1(&[nonce, stage2]);
    let stage1: Vec<u8> = response.iter().zip(mask).map(|(a, b)| a ^ b).collect();
    use subtle::ConstantTimeEq;
    bool::from(sha1(&[&stage1]).ct_eq(stage2))
}

/// The `client_ed25519` response: the 64-byte signature of `nonce`.
pub fn ed25519_password(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
    let expanded: [u8; 64] = sha2::Sha512::digest(password).into();
    let key = ExpandedSecretKey::from_bytes(&expanded);
    let public = ed25519_dalek::VerifyingKey::from(&key);
    raw_sign::<sha2::Sha512>(&key, nonce, &public).to_bytes().to_vec()
}

/// The public key `client_ed25519` derives from a password (what the
/// server stores, base64 in `mysql.global_priv`).
pub fn ed25519_public_key(password: &[u8]) -> [u8; 32] {
    let expanded: [u8; 64] = sha2::Sha512::digest(password).into();
    let key = ed25519_dalek::hazmat::ExpandedSecretKey::from_bytes(&expanded);
    ed25519_dalek::VerifyingKey::from(&key).to_bytes()
}

/// The `caching_sha2_password` fast-path response; empty for an empty password.
pub fn caching_sha2_password(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mask = Sha256::new().chain_update(stage2).chain_update(nonce).finalize();
    stage1.iter().zip(mask).map(|(a, b)| a ^ b).collect()
}

/// The full password for `caching_sha2_password` over TLS, and for
/// `mysql_clear_password`: the bytes and a NUL.
pub fn clear_password(password: &[u8]) -> Vec<u8> {
    let mut v = password.to_vec();
    v.push(0);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT PASSWORD('secret')` on MariaDB 10.11.
    const SECRET_STAGE2: &str = "14E65567ABDB5135D0CFD9A70B3032C179A49EE7";

    #[test]
    fn native_password_matches_what_the_server_stores() {
        assert_eq!(hex::encode_upper(native_password_stage2(b"secret")), SECRET_STAGE2);
        let nonce = b"ABCDEFGHIJKLMNOPQRST";
        let stage2 = native_password_stage2(b"secret");
        let r = native_password(b"secret", nonce);
        assert_eq!(r.len(), 20);
        assert!(native_password_matches(&stage2, nonce, &r));
        assert!(!native_password_matches(&stage2, b"ABCDEFGHIJKLMNOPQRSU", &r));
        assert!(!native_password_matches(&native_password_stage2(b"other"), nonce, &r));
        assert!(!native_password_matches(&stage2, nonce, &r[..19]));
        assert!(native_password(b"", nonce).is_empty());
    }

    /// The scramble XORed back with the mask gives SHA256(pw), whose
    /// double hash is what the server caches.
    #[test]
    fn caching_sha2_unmasks_to_the_password_hash() {
        let nonce = b"01234567890123456789";
        let r = caching_sha2_password(b"secret", nonce);
        let stage2 = Sha256::digest(Sha256::digest(b"secret"));
        let mask = Sha256::new().chain_update(stage2).chain_update(nonce).finalize();
        let stage1: Vec<u8> = r.iter().zip(mask).map(|(a, b)| a ^ b).collect();
        assert_eq!(
            hex::encode(&stage1),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
            "SHA2('secret', 256) on MariaDB"
        );
        assert!(caching_sha2_password(b"", nonce).is_empty());
        assert_eq!(clear_password(b"pw"), b"pw\0");
    }
}
