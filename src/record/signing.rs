//! Ed25519 signatures over the recordings' hash chains, so that someone who
//! can write the recordings directory but does not hold the key cannot
//! rewrite a recording (or the audit log) and re-chain it unseen.
//!
//! What is signed is a chain position: a context string (what the record
//! is), the record's `seq`, the `prev` it carries (the SHA-256 of the line
//! before it, which chains every earlier line) and its own time `t`. A
//! session's `seal`
//! and the audit log's `checkpoint` records carry `key` (the key id) and
//! `sig` (hex).
//!
//! The private key is a PKCS#8 PEM (from `gatehouse keygen --recordings`,
//! or `openssl genpkey -algorithm ed25519`); it must live outside the
//! recordings directory and be readable by its owner only. The public key
//! is an SPKI PEM (`openssl pkey -pubout` reads and writes the same).

use ring::signature::{self as sig, KeyPair};
use sha2::{Digest, Sha256};
use std::path::Path;

/// What a session file's seal signs.
pub const SEAL_CONTEXT: &[u8] = b"gatehouse recording seal v1\0";
/// What an audit log checkpoint signs.
pub const CHECKPOINT_CONTEXT: &[u8] = b"gatehouse audit checkpoint v1\0";

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key
/// bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The bytes a signature covers: context, `seq`, `prev`, `t`.
fn message(context: &[u8], seq: u64, prev: &[u8], t: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 16 + prev.len());
    m.extend_from_slice(context);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(prev);
    m.extend_from_slice(&t.to_be_bytes());
    m
}

/// A key's id: hex of the first 8 bytes of SHA-256 of its 32 public bytes.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The private key that signs seals and checkpoints.
pub struct Signer {
    key: sig::Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Signer {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Signer, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "not a PEM private key (PKCS#8, from `gatehouse keygen --recordings`)".to_string())?;
        let PrivateKeyDer::Pkcs8(k) = der else {
            return Err("not a PKCS#8 private key".into());
        };
        let key = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
            .map_err(|_| "not an Ed25519 private key".to_string())?;
        let id = key_id(key.public_key().as_ref());
        Ok(Signer { key, id })
    }

    /// Reads the key from a file that only its owner can read: a key that
    /// others can read signs nothing an auditor can trust.
    pub fn load(path: &Path) -> Result<Signer, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: the signing key is readable or writable by others (mode {mode:04o}); make it 0600 or 0400",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Signer::from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The key id written beside each signature.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public half, as a verifier holds it.
    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.key.public_key().as_ref());
        PublicKey {
            bytes,
            id: self.id.clone(),
        }
    }

    /// Signs a chain position and time; hex.
    pub fn sign(&self, context: &[u8], seq: u64, prev: &[u8], t: u64) -> String {
        hex::encode(self.key.sign(&message(context, seq, prev, t)).as_ref())
    }
}

/// A public key that checks signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
    id: String,
}

impl PublicKey {
    /// Reads an SPKI PEM (`PUBLIC KEY`) or the 32 key bytes in hex.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let t = text.trim();
        let raw: Vec<u8> = if t.starts_with("-----BEGIN") {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::SubjectPublicKeyInfoDer;
            let der = SubjectPublicKeyInfoDer::from_pem_slice(t.as_bytes())
                .map_err(|_| "not a PEM public key (PUBLIC KEY)".to_string())?;
            der.as_ref()
                .strip_prefix(&SPKI_PREFIX[..])
                .ok_or("not an Ed25519 public key")?
                .to_vec()
        } else {
            hex::decode(t).map_err(|_| "neither a PEM public key nor 64 hex digits".to_string())?
        };
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
        Ok(PublicKey {
            id: key_id(&bytes),
            bytes,
        })
    }

    pub fn load(path: &Path) -> Result<PublicKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        PublicKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SPKI PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.bytes);
        crate::identity::mint::pem("PUBLIC KEY", &der)
    }

    fn check(&self, context: &[u8], seq: u64, prev: &[u8], t: u64, signature: &[u8]) -> bool {
        sig::UnparsedPublicKey::new(&sig::ED25519, &self.bytes)
            .verify(&message(context, seq, prev, t), signature)
            .is_ok()
    }
}

/// The keys a verifier trusts (several while a key is being rotated).
#[derive(Debug, Clone, Default)]
pub struct Keyring(pub Vec<PublicKey>);

impl Keyring {
    /// Checks a record's `key` and `sig` at a chain position and time.
    pub fn check(
        &self,
        context: &[u8],
        seq: u64,
        prev: &[u8],
        t: u64,
        key: Option<&str>,
        sig_hex: Option<&str>,
    ) -> Result<String, String> {
        let (Some(key), Some(sig_hex)) = (key, sig_hex) else {
            return Err("not signed".into());
        };
        let Some(k) = self.0.iter().find(|k| k.id == key) else {
            return Err(format!("signed by key {key}, which is not one of the keys given"));
        };
        let sig = hex::decode(sig_hex).map_err(|_| "the signature is not hex".to_string())?;
        if k.check(context, seq, prev, t, &sig) {
            Ok(k.id.clone())
        } else {
            Err(format!(
                "the signature does not verify with key {key} (the record or one before it was changed)"
            ))
        }
    }
}

/// A new key pair: the private key's PEM (PKCS#8 v1, as OpenSSL writes
/// it) and the public key.
pub fn generate() -> Result<(String, PublicKey), String> {
    let rng = ring::rand::SystemRandom::new();
    let v2 = sig::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate an Ed25519 key")?;
    let v1 = crate::identity::mint::ed25519_pkcs8_v1(v2.as_ref()).ok_or("unexpected Ed25519 key encoding")?;
    let pem = crate::identity::mint::pem("PRIVATE KEY", &v1);
    let public = Signer::from_pem(&pem)?.public();
    Ok((pem, public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_context_position_time_and_key() {
        let (pem, public) = generate().unwrap();
        let s = Signer::from_pem(&pem).unwrap();
        assert_eq!(s.public(), public);
        let ring = Keyring(vec![public.clone()]);
        let prev = [b'a'; 64];
        let id = Some(s.id());
        let sig = s.sign(SEAL_CONTEXT, 7, &prev, 99);
        assert!(ring.check(SEAL_CONTEXT, 7, &prev, 99, id, Some(&sig)).is_ok());
        // Another position, context, chain or time: no.
        assert!(ring.check(SEAL_CONTEXT, 8, &prev, 99, id, Some(&sig)).is_err());
        assert!(ring.check(CHECKPOINT_CONTEXT, 7, &prev, 99, id, Some(&sig)).is_err());
        assert!(ring.check(SEAL_CONTEXT, 7, &[b'b'; 64], 99, id, Some(&sig)).is_err());
        assert!(ring.check(SEAL_CONTEXT, 7, &prev, 98, id, Some(&sig)).is_err());
        let e = ring.check(SEAL_CONTEXT, 7, &prev, 99, None, None).unwrap_err();
        assert!(e.contains("not signed"));
        // Another key: named as such.
        let (other, _) = generate().unwrap();
        let o = Signer::from_pem(&other).unwrap();
        let osig = o.sign(SEAL_CONTEXT, 7, &prev, 99);
        let e = ring
            .check(SEAL_CONTEXT, 7, &prev, 99, Some(o.id()), Some(&osig))
            .unwrap_err();
        assert!(e.contains("not one of the keys"), "{e}");
        // A forged id with the other key's signature fails the check itself.
        let e = ring.check(SEAL_CONTEXT, 7, &prev, 99, id, Some(&osig)).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn public_keys_read_as_pem_or_hex() {
        let (_, public) = generate().unwrap();
        assert_eq!(PublicKey::parse(&public.to_pem()).unwrap(), public);
        assert_eq!(PublicKey::parse(&hex::encode(public.bytes)).unwrap(), public);
        assert!(PublicKey::parse("00").is_err());
        assert!(PublicKey::parse("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (pem, _) = generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, pem).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Signer::load(&p).unwrap_err().contains("0600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Signer::load(&p).is_ok());
        std::fs::write(&p, "nonsense").unwrap();
        assert!(Signer::load(&p).is_err());
    }
}
