//! Ed25519 signatures over the recordings, so that someone who can write
//! the recordings directory but does not hold the key cannot rewrite a
//! recording (or the audit log) and re-chain it unseen.
//!
//! What is signed is a whole record line: a context string (what the
//! file is), then the line's bytes as they read without the `sig` member
//! (`sig` is always the last member, right after `key`, the key id). The
//! line carries `seq` and `prev` (the SHA-256 of the line before it, which
//! chains every earlier line), so a signature vouches for the record and
//! for everything before it. A session's `seal` is signed; so are the
//! audit log's `start`, `sealed`, `deleted`, `recording` and `checkpoint`
//! records.
//!
//! The private key is a PKCS#8 PEM (from `gatehouse keygen --recordings`,
//! or `openssl genpkey -algorithm ed25519`); it must live outside the
//! recordings directory and be readable by its owner only. The public key
//! is an SPKI PEM (`openssl pkey -pubout` reads and writes the same).

use ring::signature::{self as sig, KeyPair};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A session file's seal is signed in this context.
pub const SEAL_CONTEXT: &[u8] = b"gatehouse recording seal v1\0";
/// The audit log's signed records are signed in this context.
pub const AUDIT_CONTEXT: &[u8] = b"gatehouse audit record v1\0";

/// How a signed line ends: `,"sig":"` 128 hex digits `"}`.
const SIG_PREFIX: &[u8] = b",\"sig\":\"";
const SIG_TAIL: usize = SIG_PREFIX.len() + 128 + 2;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key
/// bytes follow.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The bytes a signature covers: the context, then the line without
/// its `sig` member.
fn message(context: &[u8], unsigned_line: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + unsigned_line.len());
    m.extend_from_slice(context);
    m.extend_from_slice(unsigned_line);
    m
}

/// A signed line (without its newline) split into the line as it was
/// signed and the signature; `None` when it does not end with a `sig`.
fn split_signed(line: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = line.len().checked_sub(SIG_TAIL)?;
    let tail = &line[at..];
    if !tail.starts_with(SIG_PREFIX) || !tail.ends_with(b"\"}") {
        return None;
    }
    let sig = hex::decode(&tail[SIG_PREFIX.len()..SIG_TAIL - 2]).ok()?;
    let mut unsigned = line[..at].to_vec();
    unsigned.push(b'}');
    Some((unsigned, sig))
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

    /// Signs a line as it reads without its `sig` member; hex.
    pub fn sign_line(&self, context: &[u8], unsigned_line: &[u8]) -> String {
        hex::encode(self.key.sign(&message(context, unsigned_line)).as_ref())
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

    fn check(&self, context: &[u8], unsigned_line: &[u8], signature: &[u8]) -> bool {
        sig::UnparsedPublicKey::new(&sig::ED25519, &self.bytes)
            .verify(&message(context, unsigned_line), signature)
            .is_ok()
    }
}

/// The keys a verifier trusts (several while a key is being rotated).
#[derive(Debug, Clone, Default)]
pub struct Keyring(pub Vec<PublicKey>);

impl Keyring {
    /// Checks a signed line (without its newline) whose `key` member
    /// reads `key`; the id of the key that signed it.
    pub fn check(&self, context: &[u8], line: &[u8], key: Option<&str>) -> Result<String, String> {
        let (Some(key), Some((unsigned, sig))) = (key, split_signed(line)) else {
            return Err("not signed".into());
        };
        let Some(k) = self.0.iter().find(|k| k.id == key) else {
            return Err(format!("signed by key {key}, which is not one of the keys given"));
        };
        if k.check(context, &unsigned, &sig) {
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
    fn signatures_cover_the_whole_line_its_context_and_key() {
        use crate::record::{Chain, Fields};
        let (pem, public) = generate().unwrap();
        let s = Signer::from_pem(&pem).unwrap();
        assert_eq!(s.public(), public);
        let ring = Keyring(vec![public.clone()]);
        let mut c = Chain::default();
        let _ = c.line(1, "open", serde_json::json!({}));
        let mut f = Fields::default();
        f.u64("records", 1);
        let line = c.line_signed(7, "seal", &f, &s, SEAL_CONTEXT);
        let body = &line[..line.len() - 1];
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["key"], s.id());
        assert_eq!(v["records"], 1);
        let key = Some(s.id());
        assert!(ring.check(SEAL_CONTEXT, body, key).is_ok());
        // Another context, or any byte of the line changed: no.
        assert!(ring.check(AUDIT_CONTEXT, body, key).is_err());
        let text = String::from_utf8(body.to_vec()).unwrap();
        for (from, to) in [
            ("\"records\":1", "\"records\":2"),
            ("\"t\":7", "\"t\":8"),
            ("\"seq\":1", "\"seq\":2"),
        ] {
            let forged = text.replace(from, to);
            assert_ne!(forged, text);
            assert!(ring
                .check(SEAL_CONTEXT, forged.as_bytes(), key)
                .unwrap_err()
                .contains("does not verify"));
        }
        let stripped = &text[..text.find(",\"sig\"").unwrap()];
        assert!(ring
            .check(SEAL_CONTEXT, format!("{stripped}}}").as_bytes(), key)
            .unwrap_err()
            .contains("not signed"));
        // Another key: named as such; a forged id fails the check itself.
        let (other, _) = generate().unwrap();
        let o = Signer::from_pem(&other).unwrap();
        let mut c2 = Chain::default();
        let _ = c2.line(1, "open", serde_json::json!({}));
        let oline = c2.line_signed(7, "seal", &f, &o, SEAL_CONTEXT);
        let obody = &oline[..oline.len() - 1];
        let e = ring.check(SEAL_CONTEXT, obody, Some(o.id())).unwrap_err();
        assert!(e.contains("not one of the keys"), "{e}");
        let e = ring.check(SEAL_CONTEXT, obody, key).unwrap_err();
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
