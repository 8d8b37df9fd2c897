use super::*;

/// A smallest valid configuration: one target, one identity.
pub(crate) const GOOD: &str = r#"
[server]
listen = ["127.0.0.1:6432"]

[[target]]
name = "pg"
database = "postgres"
host = "127.0.0.1"
user = "postgres"

[[identity]]
name = "demo"
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
targets = ["pg"]
"#;

#[test]
fn accounts_reach_and_budgets_are_checked() {
    let ok = format!(
        "{GOOD}[[target.account]]\nname = \"ro\"\nuser = \"reader\"\n\
         [policy.roles.r]\ntargets = [\"pg\"]\naccounts = {{ pg = \"ro\" }}\nwrite = \"deny\"\ndelete = \"deny\"\n\
         [policy.roles.r.budget]\nrows_per_minute = 10\naction = \"deny\"\n"
    );
    Config::parse(&ok, "g.toml", Path::new(".")).unwrap();
    let e = Config::parse(&ok.replace("pg = \"ro\"", "pg = \"rw\""), "g.toml", Path::new(".")).unwrap_err();
    assert_eq!(e.key, "policy.roles.r.accounts.pg", "{e}");
    assert!(e.message.contains("no [[target.account]] named `rw`"), "{e}");
    assert_eq!(e.line, 20, "{e}");
    let e = Config::parse(
        &ok.replace("targets = [\"pg\"]", "targets = [\"x\"]"),
        "g.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert_eq!(e.key, "policy.roles.r.targets[0]", "{e}");
    let e = Config::parse(
        &ok.replace("rows_per_minute = 10", "rows_per_minute = 0"),
        "g.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert_eq!(e.key, "policy.roles.r.budget.rows_per_minute", "{e}");
    let e = Config::parse(
        &ok.replace("action = \"deny\"", "action = \"approve\""),
        "g.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert_eq!(
        e.key, "policy.roles.r.approvers",
        "a budget that holds needs approvers: {e}"
    );
    let e = Config::parse(
        &ok.replace("name = \"ro\"", "name = \"default\""),
        "g.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert_eq!(e.key, "target[0].account[0].name", "{e}");
}

#[test]
fn good_config_parses() {
    let c = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
    assert_eq!(c.targets[0].port, 5432);
    assert_eq!(c.targets[0].tls, UpstreamTls::Prefer);
}

#[test]
fn bad_value_names_line_and_key() {
    let bad = GOOD.replace("targets = [\"pg\"]", "targets = [\"nope\"]");
    let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
    assert_eq!(e.line, 14, "{e}");
    assert_eq!(e.key, "identity[0].targets[0]");
    assert!(
        e.to_string()
            .starts_with("g.toml:14: identity[0].targets[0]: no target"),
        "{e}"
    );
}

#[test]
fn bad_listen_names_line() {
    let bad = GOOD.replace("127.0.0.1:6432", "localhost");
    let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (3, "server.listen[0]"), "{e}");
}

#[test]
fn unknown_key_is_reported_with_line() {
    let bad = GOOD.replace("user = \"postgres\"", "user = \"postgres\"\nsslmode = \"x\"");
    let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
    assert_eq!(e.line, 10, "{e}");
    assert_eq!(e.key, "sslmode");
}

#[test]
fn wrong_type_is_reported_with_line() {
    let bad = GOOD.replace("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nport = \"x\"");
    let e = Config::parse(&bad, "g.toml", Path::new(".")).unwrap_err();
    assert_eq!(e.line, 9, "{e}");
}

#[test]
fn oidc_section() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
    // [oidc] is line 15.
    let oidc = |body: &str| format!("{GOOD}[oidc]\n{body}");
    let ok = oidc(
        "issuer = \"https://idp\"\naudience = [\"gh\", \"gh2\"]\njwks_file = \"jwks.json\"\n\
         [oidc.role_map]\n\"db-admins\" = \"admin\"\nops = [\"a\", \"b\"]\n\
         [oidc.role_targets]\nadmin = [\"*\"]\na = [\"pg\"]\n",
    );
    let c = Config::parse(&ok, "g.toml", dir.path()).unwrap();
    let o = c.oidc.unwrap();
    assert_eq!(o.audience.to_vec(), vec!["gh", "gh2"]);
    assert_eq!(o.jwks_file.unwrap(), dir.path().join("jwks.json"));
    assert_eq!(o.role_map["ops"].to_vec(), vec!["a", "b"]);
    assert_eq!(
        (o.leeway_secs, o.user_claim.as_str(), o.roles_claim.as_str()),
        (60, "sub", "groups")
    );
    assert!(o.user_must_match);
    assert!(Config::parse(GOOD, "g.toml", dir.path()).unwrap().oidc.is_none());

    let base = "issuer = \"https://idp\"\naudience = \"gh\"\n";
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "audience = \"gh\"\njwks_file = \"jwks.json\"\n",
            15,
            "oidc.issuer",
            "is required",
        ),
        (
            "issuer = \"i\"\njwks_file = \"jwks.json\"\n",
            15,
            "oidc.audience",
            "is required",
        ),
        (base, 15, "oidc", "one of jwks_file, jwks_url"),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"nope.json\"\n",
            18,
            "oidc.jwks_file",
            "not a readable file",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_url = \"http://idp.example/jwks\"\n",
            18,
            "oidc.jwks_url",
            "https://",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_url = \"http://127.0.0.1.evil/x\"\n",
            18,
            "oidc.jwks_url",
            "https://",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\njwks_url = \"https://x\"\n",
            19,
            "oidc.jwks_url",
            "only one",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\njwks_ca_file = \"jwks.json\"\n",
            19,
            "oidc.jwks_ca_file",
            "only with jwks_url",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"RS256\", \"HS256\"]\n",
            19,
            "oidc.algorithms[1]",
            "never accepted",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"none\"]\n",
            19,
            "oidc.algorithms[0]",
            "never accepted",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nalgorithms = [\"PS256\"]\n",
            19,
            "oidc.algorithms[0]",
            "not one of",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nleeway_secs = 7200\n",
            19,
            "oidc.leeway_secs",
            "at most",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\nrefresh_secs = 0\n",
            19,
            "oidc.refresh_secs",
            "between 1 and",
        ),
        (
            "issuer = \"i\"\naudience = \"gh\"\njwks_file = \"jwks.json\"\n[oidc.role_targets]\nadmin = [\"nope\"]\n",
            19,
            "oidc.role_targets",
            "no target is named `nope`",
        ),
    ];
    for (body, line, key, msg) in cases {
        let e = Config::parse(&oidc(body), "g.toml", dir.path()).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
    let e = Config::parse(&oidc("issuer = \"i\"\nbogus = 1\n"), "g.toml", dir.path()).unwrap_err();
    assert_eq!((e.line, e.key.as_str()), (17, "bogus"), "{e}");
    assert!(loopback_http("http://127.0.0.1:8080/jwks"));
    assert!(loopback_http("http://[::1]:80/"));
    assert!(!loopback_http("http://127.0.0.1@evil/"));
    assert!(!loopback_http("http://127.0.0.1:80@evil/"));
}

#[test]
fn notify_section() {
    std::env::set_var("GH_TEST_NOTIFY_SECRET", "s3cret");
    // [notify] is line 15.
    let notify = |body: &str| format!("{GOOD}[notify]\n{body}");
    let ok = notify(
        "admin_url = \"https://gh.example:9090/\"\n\
         [[notify.webhook]]\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/x\"\n\
         [[notify.webhook]]\nkind = \"json\"\nurl = \"http://127.0.0.1:8080/hook\"\nsecret_env = \"GH_TEST_NOTIFY_SECRET\"\n\
         [notify.smtp]\nserver = \"127.0.0.1:2525\"\nfrom = \"gh@example.com\"\nto = [\"dba@example.com\"]\nstarttls = false\n",
    );
    let c = Config::parse(&ok, "g.toml", Path::new(".")).unwrap();
    assert_eq!(c.notify.webhooks.len(), 2);
    assert_eq!(c.notify.webhooks[1].kind, WebhookKind::Json);
    assert!(!c.notify.smtp.as_ref().unwrap().starttls);
    let d = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
    assert!(d.notify.webhooks.is_empty() && d.notify.smtp.is_none());
    let smtp = "[notify.smtp]\nserver = \"127.0.0.1:2525\"\nfrom = \"gh@example.com\"\n";
    let cases: &[(&str, usize, &str, &str)] = &[
        ("admin_url = \"ftp://x\"\n", 16, "notify.admin_url", "http://"),
        ("[[notify.webhook]]\nkind = \"slack\"\nurl = \"http://hooks.example/x\"\n", 18, "notify.webhook[0].url", "https://"),
        ("[[notify.webhook]]\nkind = \"slack\"\n", 16, "notify.webhook[0]", "one of url, url_env"),
        ("[[notify.webhook]]\nkind = \"slack\"\nurl_env = \"GH_TEST_NOTIFY_UNSET\"\n", 18, "notify.webhook[0].url_env", "not set"),
        ("[[notify.webhook]]\nkind = \"json\"\nurl = \"https://x/h\"\n", 16, "notify.webhook[0].secret_env", "signed"),
        ("[[notify.webhook]]\nkind = \"json\"\nurl = \"https://x/h\"\nsecret_env = \"GH_TEST_NOTIFY_UNSET\"\n", 19, "notify.webhook[0].secret_env", "not set"),
        ("[[notify.webhook]]\nkind = \"slack\"\nurl = \"https://x/h\"\nsecret_env = \"GH_TEST_NOTIFY_SECRET\"\n", 19, "notify.webhook[0].secret_env", "only json"),
        ("[notify.smtp]\nserver = \"mail\"\nfrom = \"a@b\"\nto = [\"c@d\"]\n", 17, "notify.smtp.server", "host:port"),
        ("[notify.smtp]\nserver = \"mail:25\"\nfrom = \"a\"\nto = [\"c@d\"]\n", 18, "notify.smtp.from", "not an address"),
        (&format!("{smtp}to = []\n"), 19, "notify.smtp.to", "at least one"),
        (&format!("{smtp}to = [\"ok@x\", \"a@b>\\r\\nRCPT TO:<c@d\"]\n"), 19, "notify.smtp.to[1]", "not an address"),
        (&format!("{smtp}to = [\"c@d\"]\nusername = \"u\"\n"), 16, "notify.smtp.password_env", "needs password_env"),
        ("[notify.smtp]\nserver = \"mail.example:25\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nstarttls = false\nusername = \"u\"\npassword_env = \"GH_TEST_NOTIFY_SECRET\"\n", 20, "notify.smtp.starttls", "only over TLS"),
    ];
    for (body, line, key, msg) in cases {
        let e = Config::parse(&notify(body), "g.toml", Path::new(".")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
    let e = Config::parse(
        &notify("[[notify.webhook]]\nkind = \"teams\"\n"),
        "g.toml",
        Path::new("."),
    )
    .unwrap_err();
    assert!(e.message.contains("unknown variant"), "{e}");
}

#[test]
fn admin_tokens_may_carry_approver_roles() {
    let tok = "[admin]\n[[admin.token]]\nname = \"t\"\ntoken_hash = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\nroles = [\"approver\", \"dba\"]\n";
    let e = Config::parse(&format!("{GOOD}{tok}"), "g.toml", Path::new(".")).unwrap_err();
    assert_eq!(e.key, "admin.token[0].roles[1]", "{e}");
    let policy = "[policy.roles.agent]\napprovers = [\"dba\"]\n";
    Config::parse(&format!("{GOOD}{tok}{policy}"), "g.toml", Path::new(".")).unwrap();
}

/// The TLS files of both listeners are checked by the same code; the error
/// names the section it came from.
#[test]
fn tls_files_are_checked_per_section() {
    for section in ["server", "admin"] {
        let text = format!("{GOOD}\n[{section}.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n");
        let text = if section == "server" {
            text.replacen("[server]\nlisten = [\"127.0.0.1:6432\"]\n", "", 1)
                .replace("[server.tls]", "[server]\nlisten = [\"127.0.0.1:6432\"]\n[server.tls]")
        } else {
            text
        };
        let e = Config::parse(&text, "g.toml", Path::new("/nonexistent")).unwrap_err();
        assert_eq!(e.key, format!("{section}.tls.cert_file"), "{e}");
        assert!(e.message.contains("/nonexistent/missing.crt"), "{e}");
    }
}

/// Every section's check runs: one bad value per section is reported at its key.
#[test]
fn each_section_reports_its_own_key() {
    let cases = [
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[scan]\nmax_value_bytes = 0\n", "scan.max_value_bytes"),
        ("[scan.masks]\naws = \"scramble\"\n", "scan.masks.aws"),
        ("[admin]\nlisten = \"nowhere\"\n", "admin.listen"),
        ("[notify]\nadmin_url = \"ftp://x\"\n", "notify.admin_url"),
        ("[recording]\ndir = \"r\"\nwriters = 0\n", "recording.writers"),
        ("[policy]\ndefault_role = \"ghost\"\n", "policy.default_role"),
    ];
    for (extra, key) in cases {
        let e = Config::parse(&format!("{GOOD}\n{extra}"), "g.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.key, key, "{extra}: {e}");
        assert!(e.line > 14, "{extra}: {e}");
    }
}

#[test]
fn upstream_auth_defaults_to_scram_or_nothing_and_is_checked() {
    let c = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
    assert_eq!(c.targets[0].auth, [UpstreamAuth::ScramSha256, UpstreamAuth::None]);
    assert!(c.targets[0].credential_warnings().is_empty());
    let with = |auth: &str, tls: &str| {
        GOOD.replace(
            "user = \"postgres\"\n",
            &format!("user = \"postgres\"\nauth = {auth}\ntls = \"{tls}\"\n"),
        )
    };
    let md5 = Config::parse(&with("[\"md5\"]", "prefer"), "g.toml", Path::new(".")).unwrap();
    let w = md5.targets[0].credential_warnings();
    assert!(
        w.len() == 1 && w[0].contains("replay") && w[0].contains("does not verify"),
        "{w:?}"
    );
    let cases = [
        (with("[]", "prefer"), "at least one"),
        (with("[\"password\"]", "require"), "verify-full"),
        (with("[\"kerberos\"]", "prefer"), "unknown variant"),
        (with("\"md5\"", "prefer"), "sequence"),
    ];
    for (text, want) in cases {
        let e = Config::parse(&text, "g.toml", Path::new(".")).unwrap_err();
        assert!(e.line == 10 && e.to_string().contains(want), "{want}: {e}");
    }
    let mysql = with("[\"md5\"]", "prefer").replace("name = \"pg\"\n", "name = \"pg\"\nprotocol = \"mysql\"\n");
    let e = Config::parse(&mysql, "g.toml", Path::new(".")).unwrap_err();
    assert!(e.to_string().contains("PostgreSQL targets"), "{e}");
}

#[test]
fn a_reload_keeps_only_sessions_whose_identity_still_holds() {
    use crate::identity::{survives_reload, IdentitySource};
    let c = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
    let digest = parse_token_hash(&c.identities[0].token_hash).unwrap();
    let same = IdentitySource::Static { digest };
    assert!(survives_reload("demo", &same, "pg", &c));
    // Another token, another name, a target out of reach or gone.
    assert!(!survives_reload(
        "demo",
        &IdentitySource::Static { digest: [1; 32] },
        "pg",
        &c
    ));
    assert!(!survives_reload("other", &same, "pg", &c));
    assert!(!survives_reload("demo", &same, "gone", &c));
    let narrowed = Config::parse(
        &format!(
            "{}[[target]]\nname = \"pg2\"\ndatabase = \"p2\"\nhost = \"127.0.0.1\"\nuser = \"u\"\n",
            GOOD
        ),
        "g.toml",
        Path::new("."),
    )
    .unwrap();
    assert!(
        !survives_reload("demo", &same, "pg2", &narrowed),
        "pg2 is not in demo's targets"
    );
    // An OIDC session holds while [oidc] is configured.
    assert!(!survives_reload("sub-1", &IdentitySource::Oidc, "pg", &c));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
    let with_oidc = Config::parse(
        &format!("{GOOD}[oidc]\nissuer = \"https://idp\"\naudience = [\"gh\"]\njwks_file = \"jwks.json\"\n"),
        "g.toml",
        dir.path(),
    )
    .unwrap();
    assert!(survives_reload("sub-1", &IdentitySource::Oidc, "pg", &with_oidc));
}

#[test]
fn idle_sessions_end_after_an_hour_unless_configured() {
    let c = Config::parse(GOOD, "g.toml", Path::new(".")).unwrap();
    assert_eq!(c.server.idle_timeout_secs, 3600);
    let never = GOOD.replace(
        "listen = [\"127.0.0.1:6432\"]",
        "listen = [\"127.0.0.1:6432\"]\nidle_timeout_secs = 0",
    );
    let c = Config::parse(&never, "g.toml", Path::new(".")).unwrap();
    assert_eq!(c.server.idle_timeout_secs, 0);
}

#[test]
fn the_admin_audience_differs_from_the_database_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), "{}").unwrap();
    let oidc = |admin: &str| {
        format!("{GOOD}[oidc]\nissuer = \"https://idp\"\naudience = [\"gh\"]\njwks_file = \"jwks.json\"\nadmin_audience = {admin}\n")
    };
    let c = Config::parse(&oidc("\"gh-admin\""), "g.toml", dir.path()).unwrap();
    assert_eq!(c.oidc.unwrap().admin_audience.to_vec(), ["gh-admin"]);
    for bad in ["\"gh\"", "[\"x\", \"gh\"]", "\"\""] {
        let e = Config::parse(&oidc(bad), "g.toml", dir.path()).unwrap_err();
        assert!(e.to_string().contains("admin_audience"), "{bad}: {e}");
    }
}
