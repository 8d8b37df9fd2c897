//! gatehouse's own secret rules (policies/secrets.toml) measured against
//! labelled public data and ordinary data:
//!
//! - every Nosey Parker rule whose token type we cover: its `examples` must be
//!   found by the rules we map it to, its `negative_examples` must not be;
//! - ordinary data (UUIDs, digests, images, prose, pgbench rows, JSON, SQL...)
//!   yields no finding at all;
//! - findings cover exactly the secret, for the types that matter most.
//!
//! Run with `cargo nextest run --test secret_rules --no-capture` to see the
//! per-rule table.

use gatehouse::scan::{Engine, Finding, Reach, RuleFile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/secrets.toml")
}

fn load() -> (RuleFile, Engine) {
    let rf = RuleFile::load(&rules_path()).expect("policies/secrets.toml parses");
    let engine = Engine::new(&rf.rules, [0x5a; 32]).expect("policies/secrets.toml compiles");
    (rf, engine)
}

/// Every confirmed finding of every rule, before overlapping findings are
/// merged (so that each rule is seen on its own).
fn raw_findings(engine: &Engine, data: &[u8]) -> Vec<Finding> {
    let mut hits = Vec::new();
    engine.scan(data, &mut hits).expect("scan");
    let mut out = Vec::new();
    for h in &hits {
        engine.confirm(data, 0, data.len(), h, Reach::Value, &mut out);
    }
    out
}

/// Nosey Parker's rules with their examples, kept in the repository with
/// their licence (`tests/fixtures/noseyparker`).
fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[derive(serde::Deserialize)]
struct NpFile {
    #[serde(default)]
    rules: Vec<NpRule>,
}

#[derive(serde::Deserialize)]
struct NpRule {
    id: String,
    name: String,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    negative_examples: Vec<String>,
}

fn nosey_parker_rules() -> Vec<NpRule> {
    let dir = reference_dir().join("noseyparker");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let parsed: NpFile = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        out.extend(parsed.rules);
    }
    out
}

/// Nosey Parker rule id -> the gatehouse rules that claim that token type.
const COVERED: &[(&str, &[&str])] = &[
    ("np.adafruit.1", &["adafruit-io-key"]),
    ("np.adobe.1", &["adobe-client-secret"]),
    ("np.age.2", &["age-secret-key"]),
    ("np.anthropic.1", &["anthropic-api-key"]),
    ("np.artifactory.1", &["artifactory-api-key"]),
    ("np.atlassian.1", &["atlassian-api-token"]),
    ("np.aws.1", &["aws-access-key-id"]),
    ("np.aws.2", &["aws-secret-access-key"]),
    ("np.aws.4", &["aws-session-token"]),
    ("np.aws.5", &["amazon-mws-auth-token"]),
    ("np.appsync.1", &["aws-appsync-api-key"]),
    ("np.aws.6", &["aws-secret-access-key-after-key-id"]),
    ("np.azure.1", &["azure-storage-account-key", "azure-shared-access-key"]),
    ("np.azure.2", &["azure-app-configuration-connection-string"]),
    ("np.azure.3", &["azure-devops-pat-legacy"]),
    ("np.azure.4", &["azure-devops-pat"]),
    ("np.bitbucket.1", &["bitbucket-app-password"]),
    ("np.blynk.1", &["blynk-device-token"]),
    ("np.blynk.2", &["blynk-organization-token"]),
    ("np.blynk.3", &["blynk-organization-token-url-after"]),
    ("np.blynk.8", &["blynk-client-secret"]),
    ("np.blynk.9", &["blynk-client-secret"]),
    ("np.codeclimate.1", &["codeclimate-reporter-id"]),
    ("np.cratesio.1", &["crates-io-api-token"]),
    ("np.databricks.1", &["databricks-token"]),
    ("np.dtrack.1", &["dependency-track-api-key"]),
    ("np.digitalocean.1", &["digitalocean-oauth-token"]),
    ("np.digitalocean.2", &["digitalocean-personal-access-token"]),
    ("np.digitalocean.3", &["digitalocean-refresh-token"]),
    ("np.django.1", &["django-insecure-secret-key", "django-secret-key"]),
    ("np.dockerhub.1", &["dockerhub-personal-access-token"]),
    ("np.doppler.1", &["doppler-cli-token"]),
    ("np.doppler.2", &["doppler-personal-token"]),
    ("np.doppler.3", &["doppler-service-token"]),
    ("np.doppler.4", &["doppler-service-account-token"]),
    ("np.doppler.5", &["doppler-scim-token"]),
    ("np.doppler.6", &["doppler-audit-token"]),
    ("np.dropbox.1", &["dropbox-access-token"]),
    ("np.dynatrace.1", &["dynatrace-api-token"]),
    ("np.facebook.1", &["facebook-app-secret"]),
    ("np.facebook.2", &["facebook-access-token"]),
    ("np.figma.1", &["figma-personal-access-token-legacy"]),
    ("np.firecrawl.1", &["firecrawl-api-key"]),
    ("np.generic.1", &["generic-secret-assignment"]),
    ("np.generic.2", &["generic-api-key-assignment"]),
    (
        "np.generic.3",
        &["generic-password-single-quoted", "generic-password-double-quoted"],
    ),
    ("np.generic.4", &["generic-password-unquoted"]),
    ("np.generic.5", &["generic-password-double-quoted"]),
    ("np.generic.6", &["generic-password-single-quoted"]),
    ("np.generic.7", &["dotnet-network-credential"]),
    ("np.generic.8", &["dotnet-directory-entry"]),
    ("np.generic.10", &["odbc-connection-string-password"]),
    ("np.generic.11", &["password-in-prose"]),
    ("np.generic.12", &["password-in-prose"]),
    ("np.generic.13", &["password-in-prose"]),
    ("np.generic.14", &["password-in-prose"]),
    ("np.generic.15", &["hardcoded-password-comparison"]),
    ("np.generic.16", &["hardcoded-password-comparison"]),
    ("np.github.1", &["github-personal-access-token"]),
    ("np.github.2", &["github-oauth-token"]),
    ("np.github.3", &["github-app-token"]),
    ("np.github.4", &["github-refresh-token"]),
    ("np.github.6", &["github-oauth-client-secret"]),
    ("np.github.7", &["github-fine-grained-pat"]),
    ("np.gitlab.1", &["gitlab-runner-registration-token"]),
    ("np.gitlab.2", &["gitlab-personal-access-token"]),
    ("np.gitlab.3", &["gitlab-pipeline-trigger-token"]),
    ("np.google.2", &["gcp-oauth-client-secret"]),
    ("np.google.3", &["gcp-oauth-client-secret-legacy"]),
    ("np.google.4", &["gcp-oauth-access-token"]),
    ("np.google.5", &["gcp-api-key"]),
    (
        "np.google.6",
        &["gcp-oauth-client-secret", "gcp-oauth-client-secret-legacy"],
    ),
    ("np.gradle.1", &["gradle-credentials"]),
    ("np.grafana.1", &["grafana-api-key"]),
    ("np.grafana.2", &["grafana-cloud-api-token"]),
    ("np.grafana.3", &["grafana-service-account-token"]),
    ("np.groq.1", &["groq-api-key"]),
    ("np.pwhash.1", &["password-hash-md5crypt"]),
    ("np.pwhash.2", &["password-hash-bcrypt"]),
    ("np.pwhash.3", &["password-hash-sha256crypt"]),
    ("np.pwhash.4", &["password-hash-sha512crypt"]),
    ("np.pwhash.5", &["password-hash-cisco-type8-9"]),
    ("np.krb5.asrep.23.1", &["password-hash-kerberos-asrep"]),
    ("np.hashicorp.1", &["vault-service-token-legacy"]),
    ("np.hashicorp.2", &["vault-batch-token-legacy"]),
    ("np.hashicorp.3", &["vault-recovery-token-legacy"]),
    ("np.hashicorp.4", &["vault-service-token"]),
    ("np.hashicorp.5", &["vault-batch-token"]),
    ("np.hashicorp.6", &["vault-recovery-token"]),
    ("np.hashicorp.7", &["vault-unseal-key"]),
    ("np.heroku.1", &["heroku-api-key"]),
    ("np.http.1", &["http-basic-auth-header"]),
    ("np.http.2", &["http-bearer-token-header"]),
    ("np.huggingface.1", &["huggingface-access-token"]),
    ("np.jenkins.1", &["jenkins-api-token"]),
    ("np.jenkins.2", &["jenkins-initial-admin-password"]),
    ("np.jina.1", &["jina-api-key"]),
    ("np.jwt.1", &["jwt"]),
    ("np.jwt.2", &["jwt-secret-double-quoted"]),
    ("np.jwt.3", &["jwt-secret-single-quoted"]),
    ("np.kagi.1", &["kagi-api-key"]),
    ("np.kubernetes.1", &["kubernetes-bootstrap-token"]),
    ("np.kubernetes.2", &["kubernetes-bootstrap-token-secret"]),
    ("np.linkedin.2", &["linkedin-client-secret"]),
    ("np.mailchimp.1", &["mailchimp-api-key"]),
    ("np.mailgun.1", &["mailgun-api-key"]),
    ("np.mapbox.2", &["mapbox-secret-token"]),
    ("np.mapbox.3", &["mapbox-temporary-token"]),
    ("np.msteams.1", &["microsoft-teams-webhook"]),
    ("np.mongodb.1", &["mongodb-uri-password"]),
    ("np.nasa.1", &["nasa-api-key"]),
    ("np.netrc.1", &["netrc-password"]),
    ("np.newrelic.1", &["new-relic-license-key"]),
    ("np.newrelic.2", &["new-relic-license-key-legacy"]),
    ("np.newrelic.3", &["new-relic-user-api-key"]),
    ("np.newrelic.4", &["new-relic-admin-api-key"]),
    ("np.newrelic.5", &["new-relic-insights-insert-key"]),
    ("np.newrelic.6", &["new-relic-insights-query-key"]),
    ("np.newrelic.7", &["new-relic-rest-api-key"]),
    ("np.newrelic.8", &["new-relic-pixie-api-key"]),
    ("np.newrelic.9", &["new-relic-pixie-deploy-key"]),
    ("np.npm.1", &["npm-access-token"]),
    ("np.nuget.1", &["nuget-api-key"]),
    ("np.odbc.1", &["odbc-connection-string-password"]),
    ("np.okta.1", &["okta-api-token"]),
    ("np.openai.1", &["openai-api-key"]),
    ("np.particleio.1", &["particle-access-token"]),
    ("np.particleio.2", &["particle-access-token-url-after"]),
    ("np.pem.1", &["pem-private-key", "openssh-private-key"]),
    ("np.pem.2", &["pem-private-key-base64"]),
    ("np.phpmailer.1", &["phpmailer-password"]),
    ("np.postgres.1", &["postgres-uri-password"]),
    ("np.postman.1", &["postman-api-key"]),
    ("np.postmark.1", &["postmark-server-token"]),
    ("np.psexec.1", &["psexec-password"]),
    ("np.pypi.1", &["pypi-upload-token"]),
    ("np.reactapp.2", &["generic-password-unquoted"]),
    ("np.rubygems.1", &["rubygems-api-key"]),
    ("np.salesforce.1", &["salesforce-access-token"]),
    ("np.sauce.1", &["sauce-labs-access-key"]),
    ("np.segment.1", &["segment-public-api-token"]),
    ("np.sendgrid.1", &["sendgrid-api-key"]),
    ("np.shopify.2", &["shopify-shared-secret"]),
    ("np.shopify.3", &["shopify-access-token"]),
    ("np.shopify.4", &["shopify-custom-app-access-token"]),
    ("np.shopify.5", &["shopify-private-app-access-token"]),
    ("np.slack.2", &["slack-bot-token"]),
    ("np.slack.4", &["slack-user-token"]),
    ("np.slack.5", &["slack-app-token"]),
    ("np.slack.6", &["slack-legacy-bot-token"]),
    ("np.slack.3", &["slack-webhook-url"]),
    ("np.sonarqube.1", &["sonarqube-token-legacy"]),
    ("np.sourcegraph.1", &["sourcegraph-access-token"]),
    ("np.square.1", &["square-access-token"]),
    ("np.square.2", &["square-oauth-secret"]),
    ("np.stackhawk.1", &["stackhawk-api-key"]),
    ("np.stripe.1", &["stripe-secret-key", "stripe-restricted-key"]),
    ("np.stripe.2", &["stripe-test-key"]),
    ("np.tavily.1", &["tavily-api-key"]),
    ("np.teamcity.1", &["teamcity-access-token"]),
    ("np.telegram.1", &["telegram-bot-token"]),
    ("np.thingsboard.1", &["thingsboard-access-token"]),
    ("np.thingsboard.2", &["thingsboard-provision-device-key"]),
    ("np.thingsboard.3", &["thingsboard-provision-device-secret"]),
    ("np.truenas.1", &["truenas-api-key"]),
    ("np.truenas.2", &["truenas-api-key"]),
    ("np.twilio.1", &["twilio-api-key"]),
    ("np.twitch.1", &["twitch-stream-key"]),
    ("np.twitter.1", &["twitter-consumer-key"]),
    ("np.twitter.2", &["twitter-consumer-secret"]),
    ("np.vmware.1", &["vmware-viserver-password"]),
    ("np.wireguard.1", &["wireguard-private-key"]),
    ("np.wireguard.2", &["wireguard-preshared-key"]),
];

/// Nosey Parker rules whose type we do not claim, and why.
const NOT_COVERED: &[(&str, &str)] = &[
    ("np.age.1", "an age recipient is a public key"),
    ("np.aws.3", "an AWS account ID is an identifier, not a credential"),
    ("np.s3.1", "S3 bucket names are identifiers"),
    ("np.s3.2", "S3 bucket names are identifiers"),
    ("np.arn.1", "ARNs are identifiers and common in ordinary data"),
    ("np.gcs.1", "GCS bucket names are identifiers"),
    ("np.gcs.2", "GCS bucket names are identifiers"),
    ("np.shopify.1", "a shop domain is public"),
    ("np.google.1", "an OAuth client ID is public"),
    ("np.github.5", "an OAuth client ID is public"),
    ("np.linkedin.1", "an OAuth client ID is public"),
    ("np.mapbox.1", "Mapbox public tokens are meant for browsers"),
    ("np.reactapp.1", "a user name is not a secret"),
    (
        "np.auth0.1",
        "its negative example is a genuine Auth0 client secret (listed only because of the order of the variables); \
         our auth0-client-secret rule masks it, so we do not claim the Nosey Parker type",
    ),
    (
        "np.gitalk.1",
        "its negative examples are genuine GitHub OAuth client secrets in other quoting; we do not claim the type",
    ),
    (
        "np.generic.9",
        "its negative example is a genuine NuGet ClearTextPassword (too long for the Nosey Parker pattern); \
         nuget-config-password masks it, so we do not claim the type",
    ),
];

fn short(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    if one_line.chars().count() > 140 {
        let head: String = one_line.chars().take(140).collect();
        format!("{head}…")
    } else {
        one_line
    }
}

#[test]
fn nosey_parker_examples() {
    let (rf, engine) = load();
    assert!(rf.rules.len() >= 150, "only {} rules", rf.rules.len());
    assert_eq!(engine.rule_count(), rf.rules.len());
    let ids: BTreeSet<&str> = rf.rules.iter().map(|r| r.id.as_str()).collect();

    let np = nosey_parker_rules();
    let covered: BTreeMap<&str, &[&str]> = COVERED.iter().copied().collect();
    let not_covered: BTreeMap<&str, &str> = NOT_COVERED.iter().copied().collect();
    assert_eq!(
        covered.len(),
        COVERED.len(),
        "a Nosey Parker id is listed twice in COVERED"
    );
    for r in &np {
        assert!(
            covered.contains_key(r.id.as_str()) ^ not_covered.contains_key(r.id.as_str()),
            "Nosey Parker rule {} ({}) must be in exactly one of COVERED / NOT_COVERED",
            r.id,
            r.name
        );
    }
    for (np_id, ours) in COVERED {
        assert!(np.iter().any(|r| r.id == *np_id), "{np_id} is not a Nosey Parker rule");
        for id in *ours {
            assert!(
                ids.contains(id),
                "{np_id} maps to {id}, which is not in policies/secrets.toml"
            );
        }
    }
    assert!(
        COVERED.len() > 4 * NOT_COVERED.len(),
        "most Nosey Parker rules must be covered"
    );

    let (mut tp, mut pos, mut fp, mut neg) = (0usize, 0usize, 0usize, 0usize);
    let mut misses = Vec::new();
    let mut false_positives = Vec::new();
    let mut other_rules_on_negatives: BTreeMap<String, usize> = BTreeMap::new();
    eprintln!(
        "{:<22} {:>9} {:>9}  gatehouse rules",
        "nosey parker rule", "found", "neg. hit"
    );
    for r in &np {
        let Some(ours) = covered.get(r.id.as_str()) else {
            continue;
        };
        let fired = |text: &str| -> Vec<String> {
            let mut v: Vec<String> = raw_findings(&engine, text.as_bytes())
                .iter()
                .map(|f| engine.rule_id(f.rule).to_string())
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let (mut rtp, mut rfp) = (0, 0);
        for ex in &r.examples {
            let f = fired(ex);
            if f.iter().any(|id| ours.contains(&id.as_str())) {
                rtp += 1;
            } else {
                misses.push(format!("{} example {:?} (fired: {:?})", r.id, short(ex), f));
            }
        }
        for ex in &r.negative_examples {
            let f = fired(ex);
            let (mine, other): (Vec<String>, Vec<String>) = f.into_iter().partition(|id| ours.contains(&id.as_str()));
            if !mine.is_empty() {
                rfp += 1;
                false_positives.push(format!("{} negative {:?} (fired: {:?})", r.id, short(ex), mine));
            }
            for id in other {
                *other_rules_on_negatives.entry(id).or_default() += 1;
            }
        }
        tp += rtp;
        pos += r.examples.len();
        fp += rfp;
        neg += r.negative_examples.len();
        eprintln!(
            "{:<22} {:>4}/{:<4} {:>4}/{:<4}  {}",
            r.id,
            rtp,
            r.examples.len(),
            rfp,
            r.negative_examples.len(),
            ours.join(", ")
        );
    }
    let recall = tp as f64 / pos as f64;
    let fp_rate = fp as f64 / neg.max(1) as f64;
    eprintln!(
        "\n{} rules in policies/secrets.toml; Nosey Parker rules covered: {} of {} ({} not covered)",
        rf.rules.len(),
        COVERED.len(),
        np.len(),
        NOT_COVERED.len()
    );
    eprintln!("overall recall {tp}/{pos} = {recall:.4}; false positives {fp}/{neg} = {fp_rate:.4}");
    for m in &misses {
        eprintln!("  missed: {m}");
    }
    for f in &false_positives {
        eprintln!("  false positive: {f}");
    }
    if !other_rules_on_negatives.is_empty() {
        eprintln!(
            "  (other gatehouse rules firing on negative examples, which Nosey Parker lists as negatives of a \
             different type: {other_rules_on_negatives:?})"
        );
    }
    assert!(recall >= 0.98, "recall {recall:.4} < 0.98");
    assert!(fp_rate <= 0.02, "false-positive rate {fp_rate:.4} > 0.02");
}

/// Each rule's keywords: every match of its pattern contains one of them.
#[test]
fn keywords_hold_for_every_match() {
    let (rf, _) = load();
    let np = nosey_parker_rules();
    let mut texts: Vec<String> = Vec::new();
    for r in &np {
        texts.extend(r.examples.iter().cloned());
        texts.extend(r.negative_examples.iter().cloned());
    }
    texts.extend(bound_cases().into_iter().map(|c| c.0));
    texts.extend(format_samples().into_iter().map(|c| c.1));
    let mut bad = Vec::new();
    for rule in &rf.rules {
        for kw in &rule.keywords {
            assert_eq!(kw, &kw.to_lowercase(), "rule {}: keywords are lowercase", rule.id);
        }
        if rule.keywords.is_empty() {
            continue;
        }
        let re = regex::bytes::Regex::new(&rule.pattern).unwrap();
        for t in &texts {
            for m in re.find_iter(t.as_bytes()) {
                let s = String::from_utf8_lossy(m.as_bytes()).to_lowercase();
                if !rule.keywords.iter().any(|k| s.contains(k.as_str())) {
                    bad.push(format!(
                        "{}: match {:?} has none of {:?}",
                        rule.id,
                        short(&s),
                        rule.keywords
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "keywords do not hold:\n{}", bad.join("\n"));
}

/// A small deterministic generator (splitmix64), so the corpus is the same on
/// every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn hex(&mut self, n: usize) -> String {
        hex::encode(self.bytes(n.div_ceil(2)))[..n].to_string()
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
    fn from(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len() as u64) as usize] as char).collect()
    }
    fn alnum(&mut self, n: usize) -> String {
        self.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", n)
    }
    fn lower(&mut self, n: usize) -> String {
        self.from("abcdefghijklmnopqrstuvwxyz0123456789", n)
    }
    fn upper(&mut self, n: usize) -> String {
        self.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", n)
    }
    fn letters(&mut self, n: usize) -> String {
        self.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", n)
    }
    fn digits(&mut self, n: usize) -> String {
        self.from("123456789", n)
    }
    /// base64url alphabet, starting and ending with an alphanumeric.
    fn url(&mut self, n: usize) -> String {
        format!(
            "{}{}{}",
            self.alnum(1),
            self.from(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                n - 2
            ),
            self.alnum(1)
        )
    }
    fn b64(&mut self, n: usize) -> String {
        self.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", n)
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

fn ordinary_corpus() -> Vec<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut g = Gen(0x6761_7465_686f_7573);
    let mut out: Vec<String> = Vec::new();

    // Hand-written ordinary text: prose, JSON, SQL, URLs, paths, config.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ordinary_data.txt");
    let text = std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    // Paragraphs (blank-line separated) are values of their own.
    out.extend(
        text.split("\n\n")
            .map(|p| p.trim_end().to_string())
            .filter(|p| !p.is_empty()),
    );

    // UUIDs, upper and lower case.
    for i in 0..300 {
        let h = g.hex(32);
        let u = format!(
            "{}-{}-4{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[16..20],
            &h[20..32]
        );
        out.push(if i % 3 == 0 { u.to_uppercase() } else { u });
    }
    // Digests: random md5/sha1/sha256-shaped hex and real SHA-256 of words.
    for i in 0..200 {
        out.push(g.hex(32));
        out.push(g.hex(40));
        out.push(g.hex(64));
        let d = sha2::Sha256::digest(format!("document-{i}").as_bytes());
        out.push(format!("sha256:{}", hex::encode(d)));
        out.push(format!("{}  ./build/artifact-{i}.tar.gz", hex::encode(d)));
    }
    // Images as data URIs: base64 of a PNG signature and random bytes.
    for i in 0..6 {
        let mut img = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
        img.extend(g.bytes(2048 + 512 * i));
        let b64 = base64::engine::general_purpose::STANDARD.encode(&img);
        out.push(format!("data:image/png;base64,{b64}"));
        out.push(format!("<img alt=\"chart {i}\" src=\"data:image/png;base64,{b64}\">"));
        out.push(format!("{{\"avatar\": \"data:image/jpeg;base64,{}\"}}", &b64[8..]));
    }
    // Base64 of random bytes, plain.
    for n in [16, 24, 32, 48, 64, 96, 128, 256] {
        out.push(base64::engine::general_purpose::STANDARD.encode(g.bytes(n)));
        out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(g.bytes(n)));
    }
    // E-mail addresses.
    let first = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    ];
    let last = [
        "smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "moore",
    ];
    let domains = ["example.com", "example.org", "mail.example.net", "corp.example.co.uk"];
    for i in 0..150 {
        let f = g.pick(&first);
        let l = g.pick(&last);
        let d = g.pick(&domains);
        out.push(match i % 3 {
            0 => format!("{f}.{l}@{d}"),
            1 => format!("{f}{}@{d}", g.below(1000)),
            _ => format!("\"{} {}\" <{f}+orders@{d}>", f.to_uppercase(), l),
        });
    }
    // pgbench rows as psql prints them, and as COPY text.
    for aid in 1..=300u64 {
        let bid = 1 + (aid - 1) / 100_000;
        out.push(format!("{aid}|{bid}|0|{}", " ".repeat(84)));
        out.push(format!(
            "{aid}\t{bid}\t{}\t{}",
            g.below(10_000) as i64 - 5000,
            " ".repeat(84)
        ));
    }
    for tid in 1..=50u64 {
        out.push(format!("{tid}|1|{}|{}", g.below(100), " ".repeat(84)));
        out.push(format!(
            "{tid}|1|{}|{}|2024-03-{:02} 12:{:02}:{:02}.{:06}|",
            g.below(100_000) + 1,
            g.below(10_000) as i64 - 5000,
            1 + g.below(28),
            g.below(60),
            g.below(60),
            g.below(1_000_000)
        ));
    }
    // JSON documents with ordinary fields.
    for i in 0..200 {
        let f = g.pick(&first);
        let l = g.pick(&last);
        out.push(format!(
            "{{\"id\": {i}, \"uuid\": \"{}\", \"name\": \"{} {}\", \"email\": \"{f}.{l}@example.com\", \
             \"created_at\": \"2024-0{}-1{}T0{}:1{}:2{}Z\", \"password_hint\": \"ask admin\", \"token_count\": {}, \
             \"active\": {}, \"score\": {}.{}, \"tags\": [\"beta\", \"eu-west\"], \"etag\": \"W/\\\"{}\\\"\"}}",
            g.hex(32),
            f,
            l,
            1 + g.below(9),
            g.below(10),
            g.below(10),
            g.below(10),
            g.below(10),
            g.below(5000),
            i % 2 == 0,
            g.below(100),
            g.below(100),
            g.hex(16),
        ));
    }
    // ISO dates and times, IP addresses, ports.
    for _ in 0..100 {
        out.push(format!(
            "2025-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+00:00",
            1 + g.below(12),
            1 + g.below(28),
            g.below(24),
            g.below(60),
            g.below(60),
            g.below(1000)
        ));
        out.push(format!(
            "{}.{}.{}.{}:{}",
            g.below(256),
            g.below(256),
            g.below(256),
            g.below(256),
            g.below(65536)
        ));
        out.push(format!(
            "2001:db8:{:x}:{:x}::{:x}",
            g.below(65536),
            g.below(65536),
            g.below(65536)
        ));
    }
    out
}

#[test]
fn ordinary_data_has_no_findings() {
    let (_, engine) = load();
    let corpus = ordinary_corpus();
    let bytes: usize = corpus.iter().map(|v| v.len()).sum();
    let mut found = Vec::new();
    for value in &corpus {
        for f in engine.find(value.as_bytes()).unwrap() {
            found.push(format!(
                "{}: {:?} in {:?}",
                engine.rule_id(f.rule),
                &value[f.start..f.end],
                short(value)
            ));
        }
    }
    // The whole corpus as one buffer too (as in a COPY stream).
    let all = corpus.join("\n");
    for f in engine.find(all.as_bytes()).unwrap() {
        found.push(format!(
            "(joined) {}: {:?}",
            engine.rule_id(f.rule),
            short(&all[f.start..f.end])
        ));
    }
    eprintln!(
        "ordinary corpus: {} values, {bytes} bytes, {} findings",
        corpus.len(),
        found.len()
    );
    for f in &found {
        eprintln!("  {f}");
    }
    assert!(found.is_empty(), "ordinary data must yield no findings");
}

/// (input, rule that must find it, the exact secret the finding must cover).
fn bound_cases() -> Vec<(String, &'static str, String)> {
    let pem_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\\n\
                    MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\\n\
                    NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\\n";
    let pem = format!("-----BEGIN PRIVATE KEY-----\\n{pem_body}-----END PRIVATE KEY-----");
    let ppk = "AAABAQCxQ1nbG2U5dH8Yf4Uu0Xk0mN5pQ2rT7vW9yZ1bC3dE5fG7hI9jK1lM3nO5\n\
               pQ7rS9tU1vW3xY5zA7bC9dE1fG3hI5jK7lM9nO1pQ3rS5tU7vW9xY1zA3bC5dE7\n\
               fG9hI1jK3lM5nO7pQ9rS1tU3vW5x";
    vec![
        ("postgres://app:Sup3rS3cretPw@db:5432/x".into(), "postgres-uri-password", "Sup3rS3cretPw".into()),
        (
            "DATABASE_URL=postgresql+psycopg2://report:c0rrect-h0rse@10.1.2.3/reports?sslmode=require".into(),
            "postgres-uri-password",
            "c0rrect-h0rse".into(),
        ),
        ("mysql://root:Tr0ub4dor&3@mysql.internal:3306/shop".into(), "mysql-uri-password", "Tr0ub4dor&3".into()),
        (
            "mongodb+srv://svc:p%40ssW0rd-9@cluster0.abcde.mongodb.net/app?retryWrites=true".into(),
            "mongodb-uri-password",
            "p%40ssW0rd-9".into(),
        ),
        ("redis://:r3dis-Pa55@cache:6379/0".into(), "redis-uri-password", "r3dis-Pa55".into()),
        ("amqp://guest:Bunny-2024@rabbit:5672/%2f".into(), "amqp-uri-password", "Bunny-2024".into()),
        ("key id AKIAIOSFODNN7EXAMPLE, region us-east-1".into(), "aws-access-key-id", "AKIAIOSFODNN7EXAMPLE".into()),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n".into(),
            "aws-secret-access-key",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ),
        (
            "clone with ghp_Hc1YaN8bJxQ0rT4mWv7sK2pLd9eUf3gZ5iO6 please".into(),
            "github-personal-access-token",
            "ghp_Hc1YaN8bJxQ0rT4mWv7sK2pLd9eUf3gZ5iO6".into(),
        ),
        (
            "git remote add origin https://oauth2:glpat-Xy8kP2mQ7rT4vW9zB3nC@gitlab.example.com/g/p.git".into(),
            "gitlab-personal-access-token",
            "glpat-Xy8kP2mQ7rT4vW9zB3nC".into(),
        ),
        (
            "{\"slack\": \"xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx\"}".into(),
            "slack-bot-token",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
        ),
        (
            "charge with sk_live_51HqLyjWDarjtT1zdp7dcXGkJm and retry".into(),
            "stripe-secret-key",
            "sk_live_51HqLyjWDarjtT1zdp7dcXGkJm".into(),
        ),
        (
            "OPENAI key: sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fT3BlbkFJGh2iJk5lMn8oPq1rSt4uVw7xYz0aBc3dEf6g."
                .into(),
            "openai-api-key",
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fT3BlbkFJGh2iJk5lMn8oPq1rSt4uVw7xYz0aBc3dEf6g".into(),
        ),
        (
            "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq reporting".into(),
            "telegram-bot-token",
            "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq".into(),
        ),
        (
            format!("{{\"type\": \"service_account\", \"private_key\": \"{pem}\\n\", \"client_email\": \"x@y.iam.gserviceaccount.com\"}}"),
            "pem-private-key",
            pem.clone(),
        ),
        ("DB_PASSWORD=Xk9-mP2vL7q!\nDB_USER=app\n".into(), "generic-password-unquoted", "Xk9-mP2vL7q!".into()),
        (
            "3|carol|$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW|2024-01-01".into(),
            "password-hash-bcrypt",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".into(),
        ),
        (
            "app_rw | SCRAM-SHA-256$4096:pGJoAmNETtWy4K2o0L4Thw==$+6wRFQz6N0Eb3y9bsAQMe0LHBsW8d/T/rPx/TjH5Ucg=:PDTGsGYalaj4tFgdo3NXV/wD6YuNfOPQyrA2XA6mJCg=".into(),
            "postgres-scram-verifier",
            "SCRAM-SHA-256$4096:pGJoAmNETtWy4K2o0L4Thw==$+6wRFQz6N0Eb3y9bsAQMe0LHBsW8d/T/rPx/TjH5Ucg=:PDTGsGYalaj4tFgdo3NXV/wD6YuNfOPQyrA2XA6mJCg=".into(),
        ),
        (
            format!(
                "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: rsa-key-20240601\nPublic-Lines: 2\n\
                 AAAAB3NzaC1yc2EAAAABJQAAAQEAhGF3\nc2Vy\nPrivate-Lines: 3\n{ppk}\nPrivate-MAC: 3f2c1a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a39\n"
            ),
            "putty-private-key",
            ppk.to_string(),
        ),
        (
            "ALTER ROLE app WITH LOGIN PASSWORD 'n0t-in-the-logs';".into(),
            "sql-password-literal",
            "n0t-in-the-logs".into(),
        ),
    ]
}

#[test]
fn findings_cover_exactly_the_secret() {
    let (_, engine) = load();
    let mut bad = Vec::new();
    for (input, rule, secret) in bound_cases() {
        let data = input.as_bytes();
        let start = input.find(&secret).expect("the case contains its secret");
        let end = start + secret.len();
        let found = engine.find(data).unwrap();
        let raw = raw_findings(&engine, data);
        let by_rule = raw
            .iter()
            .any(|f| engine.rule_id(f.rule) == rule && f.start == start && f.end == end);
        let exact = found.len() == 1 && found[0].start == start && found[0].end == end;
        if !(exact && by_rule) {
            bad.push(format!(
                "{rule} in {:?}: want {:?}, found {:?}",
                short(&input),
                short(&secret),
                found
                    .iter()
                    .map(|f| format!("{}={:?}", engine.rule_id(f.rule), short(&input[f.start..f.end])))
                    .collect::<Vec<_>>()
            ));
        }
        // And the mask replaces exactly that span.
        let mut masked = Vec::new();
        let mut last = 0;
        for f in &found {
            masked.extend_from_slice(&data[last..f.start]);
            engine.mask(f.rule, &data[f.start..f.end], &mut masked);
            last = f.end;
        }
        masked.extend_from_slice(&data[last..]);
        let masked = String::from_utf8_lossy(&masked);
        if exact && (masked.contains(secret.as_str()) || !masked.starts_with(&input[..start])) {
            bad.push(format!("{rule}: masked value {:?} is wrong", short(&masked)));
        }
    }
    assert!(bad.is_empty(), "bounds:\n{}", bad.join("\n"));
}

/// A sample of each token format that no Nosey Parker example exercises,
/// made from the format's public description with random characters:
/// (rule, text the rule must find something in).
fn format_samples() -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let mut g = Gen(0x5ec2_e75a_3b1e_0001);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let b64nopad = |b: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b);
    let uuid = g.uuid();
    let pem_lines = (0..6).map(|_| g.b64(64)).collect::<Vec<_>>().join("\n");
    let sentry_claims =
        r#"{"iat":1700000000.0,"url":"https://sentry.io","region_url":"https://us.sentry.io","org":"example"}"#;
    vec![
        (
            "aws-bedrock-api-key",
            format!("AWS_BEARER_TOKEN_BEDROCK=ABSK{}", g.b64(132)),
        ),
        (
            "gcp-service-account-private-key-id",
            format!(
                "{{\"type\": \"service_account\", \"private_key_id\": \"{}\"}}",
                g.hex(40)
            ),
        ),
        (
            "firebase-cloud-messaging-server-key",
            format!("key=AAAA{}:APA91b{}", g.url(7), g.url(134)),
        ),
        (
            "azure-sas-token",
            format!(
                "https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=co&sp=r&se=2025-01-01T00:00:00Z\
                 &st=2024-01-01T00:00:00Z&spr=https&sig={}%3D",
                g.alnum(43)
            ),
        ),
        (
            "azure-ad-client-secret",
            format!("AZURE_CLIENT_SECRET=\"aB3{}Q~{}\"", g.digits(1), g.alnum(34)),
        ),
        ("alibaba-access-key-id", format!("AccessKeyId: LTAI{}", g.alnum(20))),
        (
            "alibaba-access-key-secret",
            format!("ALIBABA_CLOUD_ACCESS_KEY_SECRET={}", g.alnum(30)),
        ),
        ("tencent-cloud-secret-id", format!("SecretId: AKID{}", g.alnum(32))),
        ("ibm-cloud-api-key", format!("IBMCLOUD_API_KEY={}", g.url(44))),
        (
            "oracle-oci-key-passphrase",
            format!(
                "[DEFAULT]\nkey_file=~/.oci/oci_api_key.pem\npass_phrase={}\n",
                g.alnum(16)
            ),
        ),
        ("scaleway-access-key", format!("SCW_ACCESS_KEY=SCW{}", g.upper(17))),
        ("scaleway-secret-key", format!("SCW_SECRET_KEY={uuid}")),
        ("heroku-api-key-v2", format!("HRKU-AA{}", g.url(58))),
        ("cloudflare-api-token", format!("CLOUDFLARE_API_TOKEN={}", g.url(40))),
        ("cloudflare-global-api-key", format!("CLOUDFLARE_API_KEY={}", g.hex(37))),
        ("cloudflare-origin-ca-key", format!("v1.0-{}-{}", g.hex(24), g.hex(146))),
        ("flyio-access-token", format!("FLY_API_TOKEN=fo1_{}", g.url(43))),
        ("supabase-access-token", format!("sbp_{}", g.hex(40))),
        ("planetscale-api-token", format!("pscale_tkn_{}", g.alnum(43))),
        ("planetscale-oauth-token", format!("pscale_oauth_{}", g.alnum(43))),
        ("planetscale-password", format!("pscale_pw_{}", g.alnum(43))),
        ("openshift-user-token", format!("oc login --token=sha256~{}", g.url(43))),
        ("scalingo-api-token", format!("tk-us-{}", g.url(48))),
        ("pulumi-access-token", format!("PULUMI_ACCESS_TOKEN=pul-{}", g.hex(40))),
        (
            "terraform-cloud-api-token",
            format!("token = \"{}.atlasv1.{}\"", g.alnum(14), g.alnum(67)),
        ),
        ("infracost-api-token", format!("ico-{}", g.alnum(32))),
        ("clickhouse-cloud-api-secret", format!("4b1d{}", g.alnum(38))),
        (
            "harness-api-key",
            format!("pat.{}.{}.{}", g.url(22), g.alnum(24), g.alnum(20)),
        ),
        ("octopus-deploy-api-key", format!("API-{}", g.upper(26))),
        (
            "defined-networking-api-token",
            format!("dnkey-{}-{}", g.alnum(26), g.alnum(52)),
        ),
        ("yandex-cloud-iam-token", format!("t1.{}.{}", g.url(20), g.url(86))),
        ("yandex-cloud-api-key", format!("AQVN{}", g.url(36))),
        (
            "yandex-cloud-static-access-key",
            format!("YANDEX_SECRET_KEY=YC{}", g.url(38)),
        ),
        (
            "onepassword-secret-key",
            format!(
                "A3-{}-{}-{}-{}-{}",
                g.upper(6),
                g.upper(11),
                g.upper(5),
                g.upper(5),
                g.upper(5)
            ),
        ),
        (
            "onepassword-service-account-token",
            format!("OP_SERVICE_ACCOUNT_TOKEN=ops_eyJ{}", g.b64(300)),
        ),
        (
            "gitlab-runner-authentication-token",
            format!("token = \"glrt-{}\"", g.url(20)),
        ),
        ("gitlab-deploy-token", format!("gldt-{}", g.url(20))),
        ("gitlab-feed-token", format!("glft-{}", g.url(20))),
        ("gitlab-incoming-mail-token", format!("glimt-{}", g.url(25))),
        ("gitlab-kubernetes-agent-token", format!("glagent-{}", g.url(50))),
        ("gitlab-oauth-app-secret", format!("gloas-{}", g.url(64))),
        ("gitlab-ci-job-token", format!("glcbt-64_{}", g.url(20))),
        ("gitlab-feature-flags-client-token", format!("glffct-{}", g.url(20))),
        ("gitlab-scim-token", format!("glsoat-{}", g.url(20))),
        (
            "gitlab-session-cookie",
            format!("Cookie: _gitlab_session={}", g.lower(32)),
        ),
        (
            "circleci-personal-token",
            format!("CCIPAT_{}_{}", g.alnum(22), g.hex(40)),
        ),
        ("circleci-token", format!("CIRCLECI_TOKEN={}", g.hex(40))),
        ("travis-ci-token", format!("TRAVIS_API_TOKEN={}", g.url(22))),
        ("buildkite-user-token", format!("bkua_{}", g.hex(40))),
        ("drone-ci-token", format!("DRONE_TOKEN={}", g.alnum(32))),
        ("sonarqube-token", format!("SONAR_TOKEN=squ_{}", g.hex(40))),
        ("codecov-token", format!("CODECOV_TOKEN={}", g.uuid())),
        ("snyk-api-token", format!("SNYK_TOKEN={}", g.uuid())),
        ("prefect-api-token", format!("pnu_{}", g.alnum(36))),
        ("readme-api-token", format!("rdme_{}", g.lower(70))),
        (
            "npm-legacy-auth-token",
            format!("//registry.npmjs.org/:_authToken={}", g.uuid()),
        ),
        ("clojars-deploy-token", format!("CLOJARS_{}", g.lower(60))),
        ("dockerhub-organization-access-token", format!("dckr_oat_{}", g.url(32))),
        (
            "docker-config-auth",
            format!(
                "{{\"auths\": {{\"registry.example.com\": {{\"auth\": \"{}\"}}}}}}",
                b64("deploy:Reg1stry-Pa55")
            ),
        ),
        ("artifactory-reference-token", format!("cmVmd{}", g.alnum(59))),
        ("slack-config-access-token", format!("xoxe.xoxp-1-{}", g.upper(164))),
        ("slack-config-refresh-token", format!("xoxe-1-{}", g.upper(146))),
        ("slack-workspace-token", format!("xoxa-2-{}", g.alnum(40))),
        (
            "slack-legacy-token",
            format!("xoxs-{}-{}-{}-{}", g.digits(10), g.digits(11), g.digits(12), g.hex(64)),
        ),
        (
            "discord-bot-token",
            format!("DISCORD_TOKEN=M{}.{}.{}", g.alnum(23), g.url(6), g.url(27)),
        ),
        (
            "discord-webhook-url",
            format!("https://discord.com/api/webhooks/{}/{}", g.digits(18), g.url(68)),
        ),
        ("discord-client-secret", format!("DISCORD_CLIENT_SECRET={}", g.url(32))),
        (
            "google-chat-webhook",
            format!(
                "https://chat.googleapis.com/v1/spaces/AAAA{}/messages?key=AIza{}&token={}%3D",
                g.url(7),
                g.url(35),
                g.url(43)
            ),
        ),
        (
            "zapier-webhook-url",
            format!("https://hooks.zapier.com/hooks/catch/{}/{}/", g.digits(7), g.lower(7)),
        ),
        (
            "mailgun-private-api-key",
            format!("MAILGUN_API_KEY={}-{}-{}", g.hex(32), g.hex(8), g.hex(8)),
        ),
        ("mailgun-public-key", format!("pubkey-{}", g.hex(32))),
        ("brevo-api-key", format!("xkeysib-{}-{}", g.hex(64), g.alnum(16))),
        ("messagebird-api-key", format!("MESSAGEBIRD_API_KEY={}", g.alnum(25))),
        ("intercom-access-token", format!("INTERCOM_ACCESS_TOKEN={}", g.url(60))),
        ("zendesk-api-token", format!("ZENDESK_API_TOKEN={}", g.alnum(40))),
        ("hubspot-private-app-token", format!("pat-na1-{}", g.uuid())),
        ("mattermost-access-token", format!("MATTERMOST_TOKEN={}", g.lower(26))),
        (
            "asana-personal-access-token",
            format!("1/{}:{}", g.digits(16), g.hex(32)),
        ),
        ("linear-api-key", format!("lin_api_{}", g.alnum(40))),
        (
            "notion-integration-token",
            format!("ntn_{}{}", g.digits(11), g.alnum(35)),
        ),
        (
            "airtable-personal-access-token",
            format!("pat{}.{}", g.alnum(14), g.hex(64)),
        ),
        ("clickup-personal-token", format!("pk_{}_{}", g.digits(8), g.upper(32))),
        ("contentful-personal-access-token", format!("CFPAT-{}", g.url(43))),
        ("typeform-personal-access-token", format!("tfp_{}", g.url(59))),
        ("figma-personal-access-token", format!("figd_{}", g.url(40))),
        ("frameio-api-token", format!("fio-u-{}", g.url(64))),
        (
            "twitter-bearer-token",
            format!(
                "TWITTER_BEARER_TOKEN={}{}%3D{}",
                "A".repeat(22),
                g.alnum(40),
                g.alnum(50)
            ),
        ),
        ("splunk-hec-token", format!("Authorization: Splunk {}", g.uuid())),
        ("maxmind-license-key", format!("{}_{}_mmk", g.alnum(6), g.alnum(29))),
        ("datadog-api-key", format!("DD_API_KEY={}", g.hex(32))),
        ("datadog-application-key", format!("DD_APP_KEY={}", g.hex(40))),
        (
            "sentry-org-token",
            format!("sntrys_{}_{}", b64(sentry_claims), g.b64(43)),
        ),
        ("sentry-user-token", format!("sntryu_{}", g.hex(64))),
        ("new-relic-browser-api-key", format!("NRJS-{}", g.hex(19))),
        ("stripe-restricted-key", format!("rk_live_{}", g.alnum(99))),
        (
            "stripe-webhook-secret",
            format!("STRIPE_WEBHOOK_SECRET=whsec_{}", g.alnum(32)),
        ),
        (
            "braintree-access-token",
            format!("access_token$production${}${}", g.lower(16), g.hex(32)),
        ),
        ("paypal-client-secret", format!("PAYPAL_CLIENT_SECRET={}", g.url(80))),
        ("adyen-api-key", format!("ADYEN_API_KEY=AQE{}", g.b64(120))),
        ("plaid-access-token", format!("access-sandbox-{}", g.uuid())),
        ("flutterwave-secret-key", format!("FLWSECK_TEST-{}-X", g.hex(32))),
        ("flutterwave-encryption-key", format!("FLWSECK_TEST{}", g.hex(12))),
        ("easypost-api-key", format!("EZAK{}", g.alnum(54))),
        ("easypost-test-api-key", format!("EZTK{}", g.alnum(54))),
        ("shippo-api-token", format!("shippo_live_{}", g.hex(40))),
        ("duffel-api-token", format!("duffel_test_{}", g.url(43))),
        (
            "gocardless-api-token",
            format!("GOCARDLESS_ACCESS_TOKEN=live_{}", g.url(40)),
        ),
        ("coinbase-api-secret", format!("COINBASE_API_SECRET={}", g.url(64))),
        ("anthropic-admin-key", format!("sk-ant-admin01-{}AA", g.url(93))),
        ("huggingface-organization-token", format!("api_org_{}", g.letters(34))),
        ("cohere-api-key", format!("COHERE_API_KEY={}", g.alnum(40))),
        ("replicate-api-token", format!("REPLICATE_API_TOKEN=r8_{}", g.alnum(37))),
        ("perplexity-api-key", format!("pplx-{}", g.alnum(48))),
        ("mistral-api-key", format!("MISTRAL_API_KEY={}", g.alnum(32))),
        ("xai-api-key", format!("xai-{}", g.alnum(80))),
        ("openrouter-api-key", format!("sk-or-v1-{}", g.hex(64))),
        ("deepseek-api-key", format!("DEEPSEEK_API_KEY=sk-{}", g.hex(32))),
        ("langsmith-api-key", format!("lsv2_pt_{}_{}", g.hex(32), g.hex(10))),
        ("pinecone-api-key", format!("pcsk_{}_{}", g.alnum(5), g.alnum(64))),
        (
            "openssh-private-key",
            format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{pem_lines}\n-----END OPENSSH PRIVATE KEY-----\n"),
        ),
        (
            "pgp-private-key-block",
            format!(
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{pem_lines}\n={}\n-----END PGP PRIVATE KEY BLOCK-----",
                g.b64(4)
            ),
        ),
        (
            "password-hash-yescrypt",
            format!(
                "root:$y$j9T${}${}:19700:0:99999:7:::",
                g.from("./abcdefABCDEF0123456789", 22),
                g.from("./abcdefABCDEF0123456789", 43)
            ),
        ),
        (
            "password-hash-argon2",
            format!(
                "$argon2id$v=19$m=65536,t=3,p=4${}${}",
                b64nopad(&g.bytes(16)),
                b64nopad(&g.bytes(32))
            ),
        ),
        (
            "password-hash-django-pbkdf2",
            format!("pbkdf2_sha256$600000${}${}=", g.alnum(22), g.b64(43)),
        ),
        ("postgres-md5-password-hash", format!("app | md5{}", g.hex(32))),
        (
            "mysql-native-password-hash",
            format!("app@% | *{}", g.hex(40).to_uppercase()),
        ),
        (
            "ldap-ssha-password-hash",
            format!("userPassword: {{SSHA}}{}", g.b64(32)),
        ),
        (
            "mssql-uri-password",
            "sqlserver://sa:Str0ng!Pass@db.example.com:1433".into(),
        ),
        (
            "clickhouse-uri-password",
            "clickhouse://default:ch-Secret-9@ch.example.com:9000/default".into(),
        ),
        (
            "oracle-uri-password",
            "oracle+cx_oracle://scott:tiger-2024@orahost:1521/?service_name=ORCL".into(),
        ),
        (
            "jdbc-oracle-thin-password",
            "jdbc:oracle:thin:scott/tiger2024@//orahost:1521/ORCL".into(),
        ),
        (
            "snowflake-uri-password",
            "snowflake://etl_user:Sn0w-Fl4ke@acme-xy12345/analytics/public".into(),
        ),
        (
            "neo4j-uri-password",
            "neo4j+s://neo4j:graph-Pa55@abcd1234.databases.neo4j.io".into(),
        ),
        ("nats-uri-password", "nats://svc:n4ts-pw@nats.internal:4222".into()),
        (
            "mqtt-uri-password",
            "mqtts://device17:mq77-secret@broker.example.com:8883".into(),
        ),
        (
            "ftp-uri-password",
            "ftp://backup:Ftp-pass-01@files.example.com/dumps/".into(),
        ),
        (
            "smtp-uri-password",
            "smtps://mailer:Sm7p-pass@smtp.example.com:465".into(),
        ),
        (
            "jdbc-url-password",
            "jdbc:postgresql://db:5432/app?user=app&password=Jdbc-Pass-77".into(),
        ),
        (
            "url-query-password",
            "https://legacy.example.com/login.cgi?user=admin&password=Adm1n-2024".into(),
        ),
        (
            "libpq-conninfo-password",
            "host=db.internal port=5432 dbname=app user=app password=Lq-secret-9 sslmode=require".into(),
        ),
        (
            "aws-bedrock-api-key-short-term",
            format!(
                "bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbi{}",
                g.b64(640)
            ),
        ),
        (
            "tailscale-key",
            format!("TS_AUTHKEY=tskey-auth-{}CNTRL-{}", g.alnum(12), g.alnum(32)),
        ),
        (
            "sidekiq-gem-server-credentials",
            format!("BUNDLE_ENTERPRISE__CONTRIBSYS__COM={}:{}", g.hex(8), g.hex(8)),
        ),
        (
            "dropbox-long-lived-access-token",
            format!("{}AAAAAAAAAA{}", g.alnum(11), g.url(43)),
        ),
        ("dropbox-app-credential", "DROPBOX_APP_SECRET=k3x9q7w2m5z8r1t".into()),
        (
            "authress-access-key",
            format!(
                "authress_{}.{}.acc_{}.{}",
                g.lower(20),
                g.lower(5),
                g.lower(16),
                g.b64(64)
            ),
        ),
        ("intra42-client-secret", format!("s-s4t2ud-{}", g.hex(64))),
        ("settlemint-access-token", format!("sm_pat_{}", g.alnum(16))),
        (
            "facebook-app-access-token",
            format!("access_token={}|{}", g.digits(16), g.url(32)),
        ),
        (
            "twitter-app-bearer-token",
            format!(
                "AAAAAAAAAAAAAAAAAAAAA{}%2F{}%3D{}",
                g.alnum(24),
                g.alnum(14),
                g.alnum(44)
            ),
        ),
        ("sumologic-access-id", format!("SUMO_ACCESS_ID=su{}", g.alnum(12))),
        ("sumologic-access-key", format!("SUMO_ACCESS_KEY={}", g.alnum(64))),
        (
            "new-relic-user-api-id",
            format!("NEW_RELIC_USER_API_ID={}", g.lower(64)),
        ),
        (
            "jwt-base64",
            b64(&format!(
                "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI{}.{}",
                g.url(40),
                g.url(43)
            )),
        ),
        (
            "secret-stated-in-prose",
            format!("the client secret is {} for staging", g.alnum(32)),
        ),
        (
            "password-stated-in-prose",
            "Hi team, the staging db password is Tr0ub4dor&3 until Friday.".into(),
        ),
        (
            "cli-password-flag",
            "./migrate --db-password Summer2024! --host db1".into(),
        ),
        (
            "cli-secret-flag",
            format!("deploy --api-key {} --region eu-west-1", g.alnum(40)),
        ),
        (
            "dotnet-appsettings-secret",
            format!("<add key=\"ClientSecret\" value=\"{}\" />", g.alnum(40)),
        ),
    ]
}

/// Every rule is exercised: by a Nosey Parker example, a bounds case or a
/// sample of its documented format, and finds what it must there.
#[test]
fn every_rule_finds_its_format() {
    let (rf, engine) = load();
    let mut seen = BTreeSet::new();
    for r in nosey_parker_rules() {
        for ex in &r.examples {
            for f in raw_findings(&engine, ex.as_bytes()) {
                seen.insert(engine.rule_id(f.rule).to_string());
            }
        }
    }
    for (input, _, _) in bound_cases() {
        for f in raw_findings(&engine, input.as_bytes()) {
            seen.insert(engine.rule_id(f.rule).to_string());
        }
    }
    let mut bad = Vec::new();
    for (rule, sample) in format_samples() {
        assert!(rf.rules.iter().any(|r| r.id == rule), "sample for unknown rule {rule}");
        let fired: Vec<&str> = raw_findings(&engine, sample.as_bytes())
            .iter()
            .map(|f| engine.rule_id(f.rule))
            .collect();
        if fired.contains(&rule) {
            seen.insert(rule.to_string());
        } else {
            bad.push(format!("{rule} did not find {:?} (fired: {fired:?})", short(&sample)));
        }
    }
    for r in &rf.rules {
        if !seen.contains(&r.id) {
            bad.push(format!("{} is exercised by no example or sample", r.id));
        }
    }
    eprintln!("{} rules, all exercised: {}", rf.rules.len(), bad.is_empty());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
