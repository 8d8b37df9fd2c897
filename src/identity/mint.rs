//! Development tokens: signing keys and the JWTs they sign, for
//! `gatehouse token keygen` and `gatehouse token mint`. A real deployment
//! gets its tokens from its identity provider; this is for trying OIDC
//! logins out and for tests.

use super::jwks::{thumbprint, Alg};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, KeyPair};
use serde_json::{Map, Value};

/// RSA modulus size of generated keys, in bits.
const RSA_BITS: usize = 2048;

/// A generated key pair.
pub struct Generated {
    pub kid: String,
    pub alg: Alg,
    /// PKCS#8, PEM.
    pub private_pem: String,
    /// The public key as a JWK, with `kid`, `alg` and `use`.
    pub jwk: Value,
}

/// A private key that signs JWTs.
pub enum SigningKey {
    Rsa(sig::RsaKeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Generates a key pair for `alg`. Without `kid`, the key id is the
/// key's RFC 7638 thumbprint.
pub fn keygen(alg: Alg, kid: Option<&str>) -> Result<Generated, String> {
    let rng = SystemRandom::new();
    let pkcs8: Vec<u8> = match alg {
        Alg::RS256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS).map_err(|e| e.to_string())?;
            key.to_pkcs8_der().map_err(|e| e.to_string())?.as_bytes().to_vec()
        }
        Alg::ES256 => sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "cannot generate a P-256 key")?
            .as_ref()
            .to_vec(),
        Alg::EdDSA => {
            let v2 = sig::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate an Ed25519 key")?;
            ed25519_pkcs8_v1(v2.as_ref()).ok_or("unexpected Ed25519 key encoding")?
        }
    };
    let private_pem = pem("PRIVATE KEY", &pkcs8);
    let key = SigningKey::from_pem(&private_pem, Some(alg))?;
    let jwk = key.public_jwk(kid);
    let kid = jwk["kid"].as_str().unwrap_or_default().to_string();
    Ok(Generated {
        kid,
        alg,
        private_pem,
        jwk,
    })
}

/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key),
/// which OpenSSL and others do not all read; this is the same key as the
/// plain v1 document (RFC 8410) they all read.
pub(crate) fn ed25519_pkcs8_v1(v2: &[u8]) -> Option<Vec<u8>> {
    const V2_PREFIX: &[u8] = &[
        0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    const V1_PREFIX: &[u8] = &[
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    let seed = v2.strip_prefix(V2_PREFIX)?.get(..32)?;
    let mut v1 = V1_PREFIX.to_vec();
    v1.extend_from_slice(seed);
    Some(v1)
}

impl SigningKey {
    /// Reads a PEM private key: PKCS#8 (any of the three kinds) or PKCS#1
    /// RSA. With `alg`, the key must be of that kind.
    pub fn from_pem(pem: &str, alg: Option<Alg>) -> Result<SigningKey, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let rng = SystemRandom::new();
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("not a PEM private key: {e}"))?;
        let key = match &der {
            PrivateKeyDer::Pkcs1(k) => {
                SigningKey::Rsa(sig::RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(|e| format!("RSA key: {e}"))?)
            }
            PrivateKeyDer::Pkcs8(k) => {
                let d = k.secret_pkcs8_der();
                if let Ok(r) = sig::RsaKeyPair::from_pkcs8(d) {
                    SigningKey::Rsa(r)
                } else if let Ok(e) = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, d, &rng) {
                    SigningKey::Ec(e)
                } else if let Ok(e) = sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(d) {
                    SigningKey::Ed(e)
                } else {
                    return Err("the key is not RSA (2048 bits or more), P-256 or Ed25519".into());
                }
            }
            _ => return Err("SEC1 keys are not supported: convert with `openssl pkcs8 -topk8 -nocrypt`".into()),
        };
        if let Some(a) = alg {
            if key.alg() != a {
                return Err(format!("the key is for {}, not {a}", key.alg()));
            }
        }
        Ok(key)
    }

    pub fn alg(&self) -> Alg {
        match self {
            SigningKey::Rsa(_) => Alg::RS256,
            SigningKey::Ec(_) => Alg::ES256,
            SigningKey::Ed(_) => Alg::EdDSA,
        }
    }

    /// The JWS signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let rng = SystemRandom::new();
        match self {
            SigningKey::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| "RSA signing failed")?;
                Ok(out)
            }
            SigningKey::Ec(k) => Ok(k
                .sign(&rng, message)
                .map_err(|_| "ECDSA signing failed")?
                .as_ref()
                .to_vec()),
            SigningKey::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
        }
    }

    /// The public key as a JWK; without `kid`, its thumbprint is the id.
    pub fn public_jwk(&self, kid: Option<&str>) -> Value {
        let e = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        let mut jwk = match self {
            SigningKey::Rsa(k) => {
                let c = sig::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                serde_json::json!({"kty": "RSA", "n": e(&c.n), "e": e(&c.e)})
            }
            SigningKey::Ec(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": e(&p[1..33]), "y": e(&p[33..65])})
            }
            SigningKey::Ed(k) => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": e(k.public_key().as_ref())}),
        };
        let kid = kid.map(str::to_string).or_else(|| thumbprint(&jwk)).unwrap_or_default();
        if let Value::Object(m) = &mut jwk {
            m.insert("kid".into(), kid.into());
            m.insert("alg".into(), self.alg().name().into());
            m.insert("use".into(), "sig".into());
        }
        jwk
    }
}

/// A signed JWT (compact JWS) with these claims.
pub fn mint(key: &SigningKey, kid: Option<&str>, claims: &Map<String, Value>) -> Result<String, String> {
    let mut header = Map::new();
    header.insert("alg".into(), key.alg().name().into());
    header.insert("typ".into(), "JWT".into());
    if let Some(k) = kid {
        header.insert("kid".into(), k.into());
    }
    let h = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
    let p = URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string());
    let message = format!("{h}.{p}");
    let s = key.sign(message.as_bytes())?;
    Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(s)))
}

/// A JWKS document holding `existing`'s keys (if any) and `jwk`, which
/// replaces a key with the same `kid`.
pub fn add_to_jwks(existing: Option<&str>, jwk: Value) -> Result<String, String> {
    let mut keys: Vec<Value> = match existing {
        Some(text) => {
            let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
            v.get("keys")
                .and_then(|k| k.as_array())
                .cloned()
                .ok_or("not a JWKS (no `keys` array)")?
        }
        None => Vec::new(),
    };
    keys.retain(|k| k.get("kid") != jwk.get("kid"));
    keys.push(jwk);
    serde_json::to_string_pretty(&serde_json::json!({ "keys": keys })).map_err(|e| e.to_string())
}

/// Seconds in `90`, `90s`, `15m`, `1h`, `2d`, optionally negative (`-1h`).
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h or 2d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}` is not a duration like 90s, 15m, 1h or 2d")),
    };
    let v = n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too long"))?;
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_and_sign_round_trip() {
        for alg in Alg::ALL {
            let g = keygen(alg, None).unwrap();
            assert_eq!(g.kid, thumbprint(&g.jwk).unwrap());
            assert!(g.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let key = SigningKey::from_pem(&g.private_pem, None).unwrap();
            assert_eq!(key.alg(), alg);
            // The key is refused for another algorithm.
            let other = Alg::ALL.into_iter().find(|a| *a != alg).unwrap();
            assert!(SigningKey::from_pem(&g.private_pem, Some(other)).is_err());
            let doc = add_to_jwks(None, g.jwk.clone()).unwrap();
            let (set, skipped) = super::super::jwks::parse(doc.as_bytes()).unwrap();
            assert!(skipped.is_empty());
            assert!(set.keys[0].verify(b"msg", &key.sign(b"msg").unwrap()));
            assert!(!set.keys[0].verify(b"msh", &key.sign(b"msg").unwrap()));
        }
    }

    #[test]
    fn jwks_merge_replaces_same_kid() {
        let a = serde_json::json!({"kid": "a", "kty": "OKP"});
        let b = serde_json::json!({"kid": "b", "kty": "OKP"});
        let one = add_to_jwks(None, a.clone()).unwrap();
        let two = add_to_jwks(Some(&one), b).unwrap();
        let again = add_to_jwks(Some(&two), a).unwrap();
        let v: Value = serde_json::from_str(&again).unwrap();
        let kids: Vec<&str> = v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, vec!["b", "a"]);
        assert!(add_to_jwks(Some("[]"), Value::Null).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("-2d").unwrap(), -172_800);
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
