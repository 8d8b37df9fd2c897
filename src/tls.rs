//! rustls configurations: the client-facing server side and the upstream
//! client side per `tls` mode.

use crate::config::{ServerTls, Target, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// *ring*'s provider with every suite it has, in gatehouse's order of
/// preference: TLS 1.3's suites before 1.2's, as *ring* lists them, and in
/// each AES-128-GCM with SHA-256 first, then AES-256-GCM with SHA-384, then
/// ChaCha20-Poly1305 (Go's TLS server's order on a host with AES
/// instructions).
///
/// Why: a handshake's key schedule and transcript run on the suite's hash.
/// *ring* computes SHA-256 with the SHA extensions (Intel and AMD) but
/// SHA-384 with scalar SHA-512 code (its AVX code runs on Intel only; it
/// has none for the newest CPUs' SHA-512 instructions), and SHA-384 was
/// 6.4 % of gatehouse's CPU in a TLS connection storm on an AMD host. With
/// an X25519 or P-256 key exchange and a P-256 or RSA-2048 certificate a
/// session has 128-bit security, which AES-256 does not raise. The order
/// only chooses among what a client offers: a client that must have
/// AES-256 offers it alone and gets it. A client without AES instructions
/// (which would rather have ChaCha20, and says so by offering it first)
/// gets AES-128 too: rustls cannot choose per client hello.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        (
            matches!(s, rustls::SupportedCipherSuite::Tls12(_)),
            suite_rank(s.suite()),
        )
    });
    Arc::new(p)
}

/// A suite's place in gatehouse's order within its TLS version (lower
/// first); suites of one rank keep *ring*'s order (the sort is stable).
fn suite_rank(s: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match s {
        S::TLS13_AES_128_GCM_SHA256
        | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384
        | S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

/// The server configuration for client connections.
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    server_config_for(tls, &[b"postgresql".as_slice()])
}

/// A server configuration with the given ALPN protocols.
pub fn server_config_for(tls: &ServerTls, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", tls.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", tls.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| format!("{}: {e}", tls.key_file.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not fit: {e}"))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // gatehouse's order, not the client's (which puts AES-256 first in
    // OpenSSL's and rustls' defaults): see `provider`.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// The client configuration for a target, `None` when TLS is off.
pub fn upstream_config(t: &Target) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = match t.tls {
        UpstreamTls::Disable => return Ok(None),
        // As libpq: `prefer` and `require` encrypt without checking who the
        // server is; `verify-full` checks the chain and the host name.
        UpstreamTls::Prefer | UpstreamTls::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
        UpstreamTls::VerifyFull => builder
            .with_root_certificates(roots(t.ca_file.as_deref())?)
            .with_no_client_auth(),
    };
    Ok(Some(Arc::new(cfg)))
}

/// The CAs a verifying client trusts: those of `ca_file`, else the
/// public web's (webpki-roots).
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for c in CertificateDer::pem_file_iter(f).map_err(|e| format!("{}: {e}", f.display()))? {
                let c = c.map_err(|e| format!("{}: {e}", f.display()))?;
                roots.add(c).map_err(|e| format!("{}: {e}", f.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// A client configuration that checks the server's chain and name (a
/// fleet's control database).
pub fn verifying_client_config(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The server name to check or send (SNI) for a target.
pub fn server_name(t: &Target) -> Result<ServerName<'static>, String> {
    let n = t.tls_server_name.clone().unwrap_or_else(|| t.host.clone());
    ServerName::try_from(n).map_err(|e| format!("invalid TLS server name: {e}"))
}

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::cipher_suite as suites;
    use rustls::{ClientConnection, Connection, ServerConnection, SupportedCipherSuite};

    /// A server configuration of gatehouse's with a fresh self-signed
    /// certificate (P-256, rcgen's default).
    fn server() -> (tempfile::TempDir, Arc<rustls::ServerConfig>) {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let tls = ServerTls {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
        };
        std::fs::write(&tls.cert_file, ck.cert.pem()).unwrap();
        std::fs::write(&tls.key_file, ck.key_pair.serialize_pem()).unwrap();
        let cfg = server_config(&tls).unwrap();
        (dir, cfg)
    }

    /// A client that offers `offered`, in that order, and checks nothing.
    fn client(offered: &[SupportedCipherSuite]) -> Arc<rustls::ClientConfig> {
        let mut p = rustls::crypto::ring::default_provider();
        p.cipher_suites = offered.to_vec();
        let p = Arc::new(p);
        let cfg = rustls::ClientConfig::builder_with_provider(p.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
            .with_no_client_auth();
        Arc::new(cfg)
    }

    /// Runs a handshake in memory; the suite the two agreed on, or the
    /// error that ended it.
    fn negotiate(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<rustls::CipherSuite, rustls::Error> {
        let mut c =
            Connection::from(ClientConnection::new(client, ServerName::try_from("localhost").unwrap()).unwrap());
        let mut s = Connection::from(ServerConnection::new(server).unwrap());
        for _ in 0..20 {
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
            deliver(&mut c, &mut s)?;
            deliver(&mut s, &mut c)?;
        }
        assert!(
            !c.is_handshaking() && !s.is_handshaking(),
            "the handshake did not finish"
        );
        let suite = s.negotiated_cipher_suite().unwrap().suite();
        assert_eq!(c.negotiated_cipher_suite().unwrap().suite(), suite);
        Ok(suite)
    }

    /// Hands what `from` has to send to `to`, which takes it in.
    fn deliver(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).unwrap();
        }
        let mut r = &wire[..];
        while !r.is_empty() {
            to.read_tls(&mut r).unwrap();
        }
        to.process_new_packets().map(|_| ())
    }

    /// A client that prefers AES-256 (OpenSSL's and rustls' default order)
    /// gets AES-128-GCM with SHA-256: gatehouse chooses, in TLS 1.3 and 1.2.
    #[test]
    fn the_server_chooses_aes_128_gcm_whatever_the_clients_order() {
        let (_dir, server) = server();
        let default_order = client(rustls::crypto::ring::DEFAULT_CIPHER_SUITES);
        assert_eq!(
            negotiate(server.clone(), default_order).unwrap(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let reversed: Vec<_> = rustls::crypto::ring::DEFAULT_CIPHER_SUITES
            .iter()
            .rev()
            .copied()
            .collect();
        assert_eq!(
            negotiate(server.clone(), client(&reversed)).unwrap(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        let tls12 = [
            suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        assert_eq!(
            negotiate(server, client(&tls12)).unwrap(),
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        );
    }

    /// The order only chooses among what a client offers: one that offers
    /// AES-256 alone gets it; one that offers ChaCha20 first but AES-256
    /// too gets AES-256.
    #[test]
    fn a_client_gets_a_suite_it_offers() {
        let (_dir, server) = server();
        for (offered, expected) in [
            (
                vec![suites::TLS13_AES_256_GCM_SHA384],
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            ),
            (
                vec![suites::TLS13_CHACHA20_POLY1305_SHA256],
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                vec![suites::TLS13_CHACHA20_POLY1305_SHA256, suites::TLS13_AES_256_GCM_SHA384],
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            ),
            (
                vec![suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384],
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
        ] {
            assert_eq!(
                negotiate(server.clone(), client(&offered)).unwrap(),
                expected,
                "{offered:?}"
            );
        }
    }

    /// The whole order, which the upstream side offers as it is (a server
    /// that prefers its own order, as PostgreSQL does by default, still
    /// chooses there), and no suite of *ring*'s default left out.
    #[test]
    fn the_order_is_gatehouses_and_keeps_every_suite() {
        use rustls::CipherSuite as S;
        let order: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            order,
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        let mut default: Vec<_> = rustls::crypto::ring::DEFAULT_CIPHER_SUITES
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut ours = order.clone();
        default.sort_by_key(|s| format!("{s:?}"));
        ours.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(ours, default);
    }
}
