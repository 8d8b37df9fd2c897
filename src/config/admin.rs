//! `[admin]`: the admin API's listener, TLS and bearer tokens.

use super::locate::{Invalid, PathPart};
use super::policy::PolicyConfig;
use super::server::ServerTls;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;

/// The admin API: health, metrics, sessions; served by the control plane.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Address of the admin HTTP(S) server; no server without it.
    pub listen: Option<String>,
    pub tls: Option<ServerTls>,
    /// Bearer tokens for the API, stored hashed.
    #[serde(rename = "token")]
    pub tokens: Vec<AdminToken>,
    /// Connections open at once (default 256); past it new ones are
    /// closed at once, so a client holding many cannot starve the others
    /// of file descriptors.
    pub max_connections: usize,
    /// Time a connection has to finish TLS and send a request's headers
    /// (default 10 s): a client that trickles them is cut off.
    pub header_timeout_secs: u64,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: None,
            tls: None,
            tokens: Vec::new(),
            max_connections: 256,
            header_timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    /// `sha256:<64 hex>` of the token (`gatehouse token hash`).
    pub token_hash: String,
    /// Any of `admin`, `auditor`, `approver`.
    pub roles: Vec<String>,
}

impl Admin {
    /// Checks the listener, TLS files and tokens; a token's role is one of
    /// the API's or an approver role the policy names.
    pub(super) fn validate(&mut self, policy: Option<&PolicyConfig>, base: &Path) -> Result<(), Invalid> {
        use PathPart::{Idx, Key};
        if self.max_connections == 0 {
            return Err((vec![Key("admin"), Key("max_connections")], "must be at least 1".into()));
        }
        if self.header_timeout_secs == 0 {
            return Err((
                vec![Key("admin"), Key("header_timeout_secs")],
                "must be at least 1".into(),
            ));
        }
        if let Some(a) = &self.listen {
            if a.parse::<SocketAddr>().is_err() {
                return Err((
                    vec![Key("admin"), Key("listen")],
                    format!("`{a}` is not an address like 127.0.0.1:9090"),
                ));
            }
        }
        if let Some(tls) = &mut self.tls {
            tls.resolve(base, "admin")?;
        }
        for (i, t) in self.tokens.iter().enumerate() {
            let k = |k: &'static str| vec![Key("admin"), Key("token"), Idx(i), Key(k)];
            if super::identity::parse_token_hash(&t.token_hash).is_none() {
                return Err((
                    k("token_hash"),
                    "must be `sha256:` and 64 hex digits (make one with `gatehouse token hash`)".into(),
                ));
            }
            for (j, r) in t.roles.iter().enumerate() {
                // Beyond the API's roles, a token may carry a role that
                // approves held statements (`approvers` under [policy.roles]).
                let approver_role = policy.is_some_and(|p| p.roles.values().any(|pr| pr.approvers.contains(r)));
                if !matches!(r.as_str(), "admin" | "auditor" | "approver") && !approver_role {
                    return Err((
                        vec![Key("admin"), Key("token"), Idx(i), Key("roles"), Idx(j)],
                        format!(
                            "`{r}` is not one of admin, auditor, approver, nor an approver role under [policy.roles]"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
