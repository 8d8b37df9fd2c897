//! Detection coverage of policies/secrets.toml, measured on a labelled
//! corpus of our own (`tests/fixtures/detection/corpus.jsonl`):
//!
//! - positives: a value of every token format of gitleaks' default rules
//!   (`tests/fixtures/gitleaks`) and of Nosey Parker's rules
//!   (`tests/fixtures/noseyparker`), plus formats documented by providers that
//!   neither set has, each written in many contexts (bare, prose, headers,
//!   env lines, JSON, YAML, URL queries, code, CSV, SQL, logs); passwords and
//!   secrets assigned in configuration, code and prose; connection strings;
//! - negatives: ordinary data that looks close (digests, UUIDs, ULIDs,
//!   base64 blobs, hex ids, public keys, certificates, placeholders...) and
//!   Nosey Parker's negative examples.
//!
//! The corpus is made by the deterministic generator below. The committed
//! file must equal what it makes; `GATEHOUSE_WRITE_CORPUS=1` rewrites it:
//!
//! ```text
//! GATEHOUSE_WRITE_CORPUS=1 cargo nextest run --test detection_corpus
//! cargo nextest run --test detection_corpus --no-capture   # the tables
//! ```
//!
//! A positive is detected when the findings of the data path
//! (`find_in_values` on the value, overlaps merged with
//! `resolve_overlaps`) cover every byte of the secret, so the masked value no
//! longer holds it (a `partial` mask keeps the last four characters of a
//! covered secret by design). A negative is a false positive when any finding
//! is made in it.

use gatehouse::scan::engine::resolve_overlaps;
use gatehouse::scan::values::find_in_values;
use gatehouse::scan::{Engine, Finding, RuleFile};
use regex_syntax::hir::{Class, Hir, HirKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn corpus_path() -> PathBuf {
    root().join("tests/fixtures/detection/corpus.jsonl")
}

/// One labelled value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Entry {
    /// "pos" or "neg".
    label: String,
    /// The value as a database would return it.
    text: String,
    /// Positives: the secret inside `text` that must be masked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    secret: String,
    /// Positives: provider or family (github, password, postgres-uri...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    provider: String,
    /// Positives: the format (a reference rule id, or a documented format).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    format: String,
    /// Positives: "self-identifying" (distinct prefix or structure: found in
    /// every context), "keyword" (generic alphabet: only identifiable next
    /// to its provider's name), "password", "secret", "connection-string".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    class: String,
    /// Positives: where the value sits (bare, prose, env, json...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    context: String,
    /// Positives: the reference rules the format comes from
    /// ("gitleaks:<id>", "np:<id>", "docs:<provider>").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    refs: Vec<String>,
    /// Negatives: what the value is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    kind: String,
}

fn pos(text: String, secret: &str, provider: &str, format: &str, class: &str, context: &str, refs: &[String]) -> Entry {
    assert!(
        text.contains(secret),
        "corpus generator: {format}/{context}: secret {secret:?} not in {text:?}"
    );
    Entry {
        label: "pos".into(),
        text,
        secret: secret.into(),
        provider: provider.into(),
        format: format.into(),
        class: class.into(),
        context: context.into(),
        refs: refs.to_vec(),
        kind: String::new(),
    }
}

fn neg(text: String, kind: &str) -> Entry {
    Entry {
        label: "neg".into(),
        text,
        secret: String::new(),
        provider: String::new(),
        format: String::new(),
        class: String::new(),
        context: String::new(),
        refs: Vec::new(),
        kind: kind.into(),
    }
}

// ---------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------

/// splitmix64: the same corpus on every run and platform.
struct Gen(u64);

const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn hex(&mut self, n: usize) -> String {
        hex::encode(self.bytes(n.div_ceil(2)))[..n].to_string()
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
    fn from(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }
    fn alnum(&mut self, n: usize) -> String {
        self.from(ALNUM, n)
    }
    fn b64(&mut self, n: usize) -> String {
        self.from(B64, n)
    }
    fn b64url(&mut self, n: usize) -> String {
        self.from(B64URL, n)
    }
    fn uuid4(&mut self) -> String {
        let h = self.hex(32);
        let v = ["8", "9", "a", "b"][self.below(4)];
        format!(
            "{}-{}-4{}-{v}{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
}

fn b64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn b64_url_nopad(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn crc32_base62(body: &[u8]) -> String {
    let mut crc = crc32fast::Hasher::new();
    crc.update(body);
    let mut v = crc.finalize() as u64;
    let mut enc = [b'0'; 6];
    let alpha = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for d in enc.iter_mut().rev() {
        *d = alpha[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(enc.to_vec()).unwrap()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Values from a reference regex
// ---------------------------------------------------------------------------

/// Drops case-insensitivity from a pattern's inline flags: reference
/// patterns use `(?i)` for the names around a token, and a token's own
/// alphabet is the case it is written in.
fn strip_case_insensitive(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            out.push_str(&p[i..i + 2]);
            i += 2;
            continue;
        }
        if b[i] == b'(' && i + 1 < b.len() && b[i + 1] == b'?' {
            let mut j = i + 2;
            while j < b.len() && (b[j].is_ascii_alphabetic() || b[j] == b'-') {
                j += 1;
            }
            if j < b.len() && (b[j] == b':' || b[j] == b')') && j > i + 2 {
                let flags: String = p[i + 2..j].chars().filter(|&c| c != 'i').collect();
                let flags = flags.trim_end_matches('-').to_string();
                let flags = if flags.starts_with('-') && flags.len() == 1 {
                    String::new()
                } else {
                    flags
                };
                if b[j] == b')' {
                    if !flags.is_empty() {
                        out.push_str(&format!("(?{flags})"));
                    }
                } else {
                    out.push_str(&format!("(?{flags}:"));
                }
                i = j + 1;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn parse_hir(p: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .multi_line(true)
        .build()
        .parse(p)
        .ok()
}

/// A string matching a regex, emitted with its capture spans and which bytes
/// came from literals of the pattern.
#[derive(Default)]
struct Emitted {
    s: Vec<u8>,
    literal: Vec<bool>,
    caps: Vec<(u32, usize, usize)>,
}

/// Lengths as the formats have them: a reference range such as `{20,1024}`
/// or `+` stays near its lower bound.
fn cap_repeat(min: u32, max: Option<u32>) -> u32 {
    let soft = min + 24;
    match max {
        Some(m) => m.min(soft.max(min)),
        None => soft,
    }
}

fn pick_byte(c: &Class, g: &mut Gen) -> u8 {
    let mut all: Vec<u8> = Vec::new();
    match c {
        Class::Bytes(b) => {
            for r in b.ranges() {
                all.extend(r.start()..=r.end());
            }
        }
        Class::Unicode(u) => {
            for r in u.ranges() {
                let (s, e) = (r.start() as u32, (r.end() as u32).min(0x7f));
                if s <= e {
                    all.extend((s..=e).map(|x| x as u8));
                }
            }
        }
    }
    let printable: Vec<u8> = all
        .iter()
        .copied()
        .filter(|b| (0x21..=0x7e).contains(b) && !b"\"'`\\".contains(b))
        .collect();
    // `=` is base64 padding: tokens carry it only at their end (a class
    // made only of `=`).
    let printable: Vec<u8> = if printable.len() > 1 {
        printable.into_iter().filter(|&b| b != b'=').collect()
    } else {
        printable
    };
    // A class such as `.` or `[\s\S]`: a token's ordinary alphabet.
    let pool: Vec<u8> = if printable.len() >= 80 {
        printable
            .iter()
            .copied()
            .filter(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(b))
            .collect()
    } else if !printable.is_empty() {
        printable
    } else if all.contains(&b' ') {
        vec![b' ']
    } else if !all.is_empty() {
        all
    } else {
        vec![b'x']
    };
    pool[g.below(pool.len())]
}

fn emit(h: &Hir, g: &mut Gen, o: &mut Emitted) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(l) => {
            o.s.extend_from_slice(&l.0);
            o.literal.extend(std::iter::repeat_n(true, l.0.len()));
        }
        HirKind::Class(c) => {
            o.s.push(pick_byte(c, g));
            o.literal.push(false);
        }
        HirKind::Repetition(r) => {
            // Padding (`=*`) is at most two characters.
            let padding = matches!(r.sub.kind(), HirKind::Literal(l) if l.0.as_ref() == b"=");
            let max = if padding {
                r.min.max(2)
            } else {
                cap_repeat(r.min, r.max)
            };
            let n = g.range(r.min as usize, max as usize);
            for _ in 0..n {
                emit(&r.sub, g, o);
            }
        }
        HirKind::Capture(c) => {
            let start = o.s.len();
            emit(&c.sub, g, o);
            o.caps.push((c.index, start, o.s.len()));
        }
        HirKind::Concat(v) => {
            for x in v {
                emit(x, g, o);
            }
        }
        HirKind::Alternation(v) => {
            let i = g.below(v.len());
            emit(&v[i], g, o);
        }
    }
}

/// A generated value of a reference format: the secret and whether it
/// carries a distinctive literal (three or more fixed characters).
struct Sample {
    value: String,
    literal_run: usize,
}

/// Hyperscan's `(?# ...)` comments, which the regex crate does not know.
fn strip_comments(p: &str) -> String {
    let mut out = String::new();
    let mut rest = p;
    while let Some(i) = rest.find("(?#") {
        out.push_str(&rest[..i]);
        match rest[i..].find(')') {
            Some(j) => rest = &rest[i + j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Which capture group of a reference pattern is the secret.
#[derive(Clone, Copy)]
enum Pick {
    /// gitleaks: `secretGroup`, else group 1 (else the whole match).
    Group(u32),
    /// Nosey Parker: the last group that matched (user names come first).
    Last,
}

fn sample_from_regex(pattern: &str, pick: Pick, g: &mut Gen) -> Option<Sample> {
    let hir = parse_hir(&strip_case_insensitive(&strip_comments(pattern)))?;
    let mut o = Emitted::default();
    emit(&hir, g, &mut o);
    let mut caps: Vec<_> = o.caps.iter().filter(|c| c.2 > c.1).copied().collect();
    caps.sort_by_key(|c| c.0);
    let chosen = match pick {
        Pick::Group(want) => caps.iter().find(|c| c.0 == want).or(caps.first()),
        Pick::Last => caps.last(),
    };
    let span = chosen
        .map(|c| (c.1, c.2))
        // A group inside a repetition (`([a-z0-9]{4}-){3}`) is not the secret.
        .filter(|c| matches!(pick, Pick::Last) || c.1 - c.0 >= 8)
        .unwrap_or((0, o.s.len()));
    let value = String::from_utf8(o.s[span.0..span.1].to_vec()).ok()?;
    // Quotes around a value are the context's, not the secret's.
    let value = value.trim().trim_matches('"').trim_matches('\'').to_string();
    let mut best = 0;
    let mut run = 0;
    for &l in &o.literal[span.0..span.1] {
        if l {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    if value.len() < 3 {
        return None;
    }
    Some(Sample {
        value,
        literal_run: best,
    })
}

/// Formats with a checksum: recompute it, as the issuer would.
fn with_checksum(v: String) -> String {
    let crc_prefixes = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "npm_"];
    if let Some(p) = crc_prefixes.iter().find(|p| v.starts_with(*p)) {
        let body = &v[p.len()..];
        if body.len() == 36 && body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let head = &body[..30];
            return format!("{p}{head}{}", crc32_base62(head.as_bytes()));
        }
    }
    v
}

// ---------------------------------------------------------------------------
// Reference rule sets
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct GitleaksFile {
    rules: Vec<GitleaksRule>,
}

#[derive(Deserialize)]
struct GitleaksRule {
    id: String,
    #[serde(default)]
    regex: String,
    #[serde(default, rename = "secretGroup")]
    secret_group: Option<u32>,
    #[serde(default)]
    keywords: Vec<String>,
}

fn gitleaks_rules() -> Vec<GitleaksRule> {
    let p = root().join("tests/fixtures/gitleaks/gitleaks.toml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let f: GitleaksFile = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    f.rules
}

#[derive(Deserialize)]
struct NpFile {
    #[serde(default)]
    rules: Vec<NpRule>,
}

#[derive(Deserialize)]
struct NpRule {
    id: String,
    name: String,
    pattern: String,
    #[serde(default)]
    examples: Vec<String>,
    #[serde(default)]
    negative_examples: Vec<String>,
}

fn nosey_parker_rules() -> Vec<NpRule> {
    let dir = root().join("tests/fixtures/noseyparker");
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

/// Reference rules with no corpus entry of their own, and why.
const EXCLUDED: &[(&str, &str)] = &[
    ("gitleaks:pkcs12-file", "matches a file path (*.p12), not a value"),
    // Public identifiers: the client half of OAuth credentials is sent to
    // browsers by design. Consistent with the Nosey Parker types
    // tests/secret_rules.rs does not claim (np.google.1, np.github.5,
    // np.linkedin.1).
    ("gitleaks:adobe-client-id", "an OAuth client ID is public"),
    ("gitleaks:asana-client-id", "an OAuth client ID is public"),
    ("gitleaks:bitbucket-client-id", "an OAuth client ID is public"),
    ("gitleaks:discord-client-id", "an OAuth client ID is public"),
    ("gitleaks:linkedin-client-id", "an OAuth client ID is public"),
    ("gitleaks:looker-client-id", "an OAuth client ID is public"),
    ("gitleaks:messagebird-client-id", "an OAuth client ID is public"),
    (
        "gitleaks:plaid-client-id",
        "a client ID is an identifier; the secret is plaid-secret-key",
    ),
    (
        "gitleaks:sendbird-access-id",
        "a Sendbird application ID is shipped in client apps",
    ),
    ("gitleaks:flutterwave-public-key", "FLWPUBK- keys are public by design"),
    ("gitleaks:lob-pub-api-key", "Lob publishable keys are public by design"),
    ("np:np.age.1", "an age recipient is a public key"),
    ("np:np.aws.3", "an AWS account ID is an identifier, not a credential"),
    ("np:np.s3.1", "S3 bucket names are identifiers"),
    ("np:np.s3.2", "S3 bucket names are identifiers"),
    ("np:np.arn.1", "ARNs are identifiers and common in ordinary data"),
    ("np:np.gcs.1", "GCS bucket names are identifiers"),
    ("np:np.gcs.2", "GCS bucket names are identifiers"),
    ("np:np.shopify.1", "a shop domain is public"),
    ("np:np.google.1", "an OAuth client ID is public"),
    ("np:np.github.5", "an OAuth client ID is public"),
    ("np:np.linkedin.1", "an OAuth client ID is public"),
    ("np:np.mapbox.1", "Mapbox public tokens (pk.) are meant for browsers"),
    (
        "gitleaks:mapbox-api-token",
        "its pattern is Mapbox public tokens (pk.), meant for browsers",
    ),
    ("np:np.reactapp.1", "a user name is not a secret"),
];

/// Nosey Parker rules whose context is a syntax (a connection string, a
/// command line, a constructor call, a config file), not a variable named
/// after a provider: their values are written only in the contexts of the
/// rule's own examples (see `reference_formats`). `true`: the secret is a
/// password, made as people and generators make passwords (the rule's
/// pattern allows three characters).
const NP_STRUCTURAL: &[(&str, bool)] = &[
    ("np.aws.6", false),
    ("np.azure.1", false),
    ("np.azure.2", false),
    ("np.auth0.1", false),
    ("np.blynk.8", false),
    ("np.blynk.9", false),
    ("np.django.1", false),
    ("np.gitalk.1", false),
    ("np.google.6", false),
    ("np.http.2", false),
    ("np.generic.7", true),
    ("np.generic.8", true),
    ("np.generic.9", true),
    ("np.generic.15", true),
    ("np.generic.16", true),
    ("np.gradle.1", true),
    ("np.phpmailer.1", true),
    ("np.psexec.1", true),
    ("np.vmware.1", true),
];

/// Nosey Parker negative examples that are genuine secrets (see
/// NOT_COVERED in tests/secret_rules.rs): not used as negatives.
///
/// Nosey Parker's negative examples say what one rule must not match, not
/// that the text holds no secret: many are credentials of another type
/// (a Slack user token is a negative example of the bot-token rule) or
/// passwords in a syntax the rule does not cover. These rules' negative
/// examples are credentials, so they are not ordinary data:
///
/// - np.aws.2: secret-shaped values assigned to AWS_SECRET_ACCESS_KEY;
/// - np.generic.1: an Azure AD client secret (`Q~`), a secret_access_key;
/// - np.generic.4, np.generic.5: passwords (`open_sesame`, `super$ecret`);
/// - np.hashicorp.1 to 6: Vault tokens of the other generations;
/// - np.jwt.1: a TeamCity access token;
/// - np.mongodb.1, np.postgres.1: passwords in connection URIs;
/// - np.newrelic.2: a New Relic license key; np.newrelic.8: a Pixie API key
///   (documentation's example) assigned to apiKey;
/// - np.npm.1: a legacy (UUID) npm token assigned to NPM_TOKEN;
/// - np.okta.1: an Okta API token assigned to okta_api_key;
/// - np.slack.2, 4, 6: Slack tokens of the other types;
/// - np.newrelic.1: a documentation placeholder (`a1b2c3d4...NRAL`) of the
///   license key's shape, assigned to licenseKey: nothing tells it from a
///   real key.
const NP_NEGATIVES_NOT_NEGATIVE: &[&str] = &[
    "np.auth0.1",
    "np.gitalk.1",
    "np.generic.9",
    "np.aws.2",
    "np.generic.1",
    "np.generic.4",
    "np.generic.5",
    "np.hashicorp.1",
    "np.hashicorp.2",
    "np.hashicorp.3",
    "np.hashicorp.4",
    "np.hashicorp.5",
    "np.hashicorp.6",
    "np.jwt.1",
    "np.mongodb.1",
    "np.postgres.1",
    "np.newrelic.2",
    "np.newrelic.8",
    "np.npm.1",
    "np.okta.1",
    "np.slack.2",
    "np.slack.4",
    "np.slack.6",
    "np.newrelic.1",
];

/// Single negative examples that hold a password (np.odbc.1: a C string
/// assigned to `server->password`; np.generic.10: an appSettings
/// `FromEmailPassword` value; np.odbc.1: `String password = "password";`,
/// a weak password, but a string literal assigned to a password in code,
/// which the quoted-password rules mask above 2.7 bits per byte).
const NP_NEGATIVE_EXAMPLES_WITH_PASSWORDS: &[&str] = &["busybox@", "Prestigitariu$", "String password = \"password\";"];

/// Reference rules whose values are made by hand (a structure the random
/// generator cannot follow), or whose type is the password/secret
/// assignments generated below.
const HAND_MADE: &[(&str, &str)] = &[
    ("gitleaks:private-key", "pem"),
    ("np:np.pem.1", "pem"),
    ("np:np.pem.2", "pem-base64"),
    ("gitleaks:jwt", "jwt"),
    ("np:np.jwt.1", "jwt"),
    ("np:np.jwt.2", "jwt"),
    ("np:np.jwt.3", "jwt"),
    ("gitleaks:jwt-base64", "jwt-base64"),
    ("gitleaks:generic-api-key", "assignments"),
    ("gitleaks:curl-auth-header", "cli"),
    ("gitleaks:curl-auth-user", "cli"),
    ("gitleaks:kubernetes-secret-yaml", "k8s"),
    ("gitleaks:gitlab-session-cookie", "cookie"),
    ("gitleaks:nuget-config-password", "nuget"),
    ("gitleaks:sidekiq-secret", "sidekiq"),
    ("gitleaks:sidekiq-sensitive-url", "sidekiq"),
    ("np:np.kubernetes.1", "k8s"),
    ("np:np.kubernetes.2", "k8s"),
    ("np:np.generic.1", "assignments"),
    ("np:np.generic.2", "assignments"),
    ("np:np.generic.3", "assignments"),
    ("np:np.generic.4", "assignments"),
    ("np:np.generic.5", "assignments"),
    ("np:np.generic.6", "assignments"),
    ("np:np.generic.11", "assignments"),
    ("np:np.generic.12", "assignments"),
    ("np:np.generic.13", "assignments"),
    ("np:np.generic.14", "assignments"),
    ("np:np.postgres.1", "connection strings"),
    ("np:np.mongodb.1", "connection strings"),
    ("np:np.odbc.1", "connection strings"),
    ("np:np.generic.10", "connection strings"),
    ("np:np.http.1", "connection strings"),
    ("np:np.netrc.1", "connection strings"),
];

/// Reference formats whose pattern is looser than the format (any length,
/// `(?i)` over a token's alphabet, an unescaped `.` in a host name): values
/// are made from the documented shape instead, still labelled with the
/// reference rule.
const OVERRIDES: &[(&str, &str)] = &[
    ("np:np.pwhash.2", r"\$2[aby]\$1[0-2]\$[./A-Za-z0-9]{53}"),
    (
        "gitleaks:slack-config-access-token",
        r"xoxe\.xox[bp]-1-[A-Za-z0-9]{163,166}",
    ),
    (
        "gitleaks:slack-bot-token",
        r"xoxb-[0-9]{10,13}-[0-9]{10,13}-[A-Za-z0-9]{24}",
    ),
    (
        "gitleaks:twitter-bearer-token",
        r"A{22}[A-Za-z0-9]{20,30}%2F[A-Za-z0-9]{10,20}%3D[A-Za-z0-9]{40,50}",
    ),
    ("gitleaks:dynatrace-api-token", r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}"),
    (
        "gitleaks:slack-app-token",
        r"xapp-1-A[A-Z0-9]{10}-[0-9]{13}-[a-f0-9]{64}",
    ),
    (
        "np:np.slack.3",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{8,10}/B[A-Z0-9]{8,10}/[A-Za-z0-9]{24}",
    ),
    (
        "gitleaks:slack-webhook-url",
        r"https://hooks\.slack\.com/(services/T[A-Z0-9]{8,10}/B[A-Z0-9]{8,10}/[A-Za-z0-9]{24}|workflows/T[A-Z0-9]{8,10}/A[A-Z0-9]{8,10}/[0-9]{17,19}/[A-Za-z0-9]{24}|triggers/T[A-Z0-9]{8,10}/[0-9]{10,13}/[a-f0-9]{32})",
    ),
    ("np:np.newrelic.1", r"[a-f0-9]{36}NRAL"),
    ("np:np.newrelic.3", r"NRAK-[A-Z0-9]{27}"),
    ("np:np.newrelic.4", r"NRAA-[a-f0-9]{27}"),
    ("np:np.newrelic.5", r"NRII-[A-Za-z0-9_-]{32}"),
    ("np:np.newrelic.6", r"NRIQ-[A-Za-z0-9_-]{32}"),
    ("np:np.newrelic.7", r"NRRA-[a-f0-9]{42}"),
    ("np:np.twilio.1", r"SK[a-f0-9]{32}"),
    ("gitleaks:dropbox-short-lived-api-token", r"sl\.[A-Za-z0-9_-]{135}"),
    (
        "gitleaks:dropbox-long-lived-api-token",
        r"[A-Za-z0-9]{11}AAAAAAAAAA[A-Za-z0-9_-]{43}",
    ),
    (
        "gitleaks:sendgrid-api-token",
        r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    ),
    ("gitleaks:vault-service-token", r"hvs\.[A-Za-z0-9_-]{90,120}"),
    (
        "gitleaks:stripe-access-token",
        r"(sk|rk)_(test|live)_[A-Za-z0-9]{24,99}",
    ),
    ("np:np.facebook.2", r"EAACEdEose0cBA[A-Za-z0-9]{100,180}"),
    (
        "gitleaks:square-access-token",
        r"EAAA[A-Za-z0-9_-]{60}|sq0atp-[A-Za-z0-9_-]{22}",
    ),
    (
        "gitleaks:yandex-access-token",
        r"t1\.[A-Za-z0-9_-]{80,90}\.[A-Za-z0-9_-]{86}",
    ),
    (
        "gitleaks:sentry-org-token",
        r"sntrys_eyJpYXQiOjE3[A-Za-z0-9+/]{40,60}LCJyZWdpb25fdXJs[A-Za-z0-9+/]{60,100}_[A-Za-z0-9+/]{43}",
    ),
    (
        "gitleaks:microsoft-teams-webhook",
        r"https://[a-z0-9]{4,20}\.webhook\.office\.com/webhookb2/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}@[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}/IncomingWebhook/[a-f0-9]{32}/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
    ),
    (
        "np:np.msteams.1",
        r"https://outlook\.office\.com/webhook/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}@[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}/IncomingWebhook/[a-f0-9]{32}/[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}",
    ),
    ("np:np.telegram.1", r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}"),
    ("np:np.django.1", r"[a-z0-9!@#$%^&*(\-_=+)]{50}"),
    ("np:np.facebook.1", r"[a-f0-9]{32}"),
    ("np:np.truenas.1", r"[0-9]{1,3}-[A-Za-z0-9]{64}"),
    ("np:np.truenas.2", r"[0-9]{1,3}-[A-Za-z0-9]{64}"),
    ("np:np.mailchimp.1", r"[a-f0-9]{32}-us[0-9]{1,2}"),
    ("np:np.http.2", r"[A-Za-z0-9._~+/-]{24,64}={0,2}"),
    ("gitleaks:telegram-bot-api-token", r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}"),
    (
        "gitleaks:aws-amazon-bedrock-api-key-short-lived",
        r"bedrock-api-key-YmVkcm9jay5hbWF6b25hd3MuY29tLz9BY3Rpb249Q2FsbFdpdGhCZWFyZXJUb2tlbi[A-Za-z0-9+/]{600,700}",
    ),
];

/// Formats providers document that neither reference set has (or has in
/// an older form): (provider, format name, regex of the documented shape).
const DOCUMENTED: &[(&str, &str, &str)] = &[
    (
        "openai",
        "openai-project-key",
        r"sk-proj-[A-Za-z0-9_-]{74}T3BlbkFJ[A-Za-z0-9_-]{74}",
    ),
    (
        "openai",
        "openai-service-account-key",
        r"sk-svcacct-[A-Za-z0-9_-]{74}T3BlbkFJ[A-Za-z0-9_-]{74}",
    ),
    (
        "openai",
        "openai-admin-key",
        r"sk-admin-[A-Za-z0-9_-]{74}T3BlbkFJ[A-Za-z0-9_-]{74}",
    ),
    (
        "anthropic",
        "anthropic-admin-key",
        r"sk-ant-admin01-[A-Za-z0-9_-]{93}AA",
    ),
    ("stripe", "stripe-restricted-live-key", r"rk_live_[A-Za-z0-9]{99}"),
    ("stripe", "stripe-webhook-secret", r"whsec_[A-Za-z0-9]{32}"),
    (
        "tailscale",
        "tailscale-auth-key",
        r"tskey-(auth|api|client|scim|webhook)-[A-Za-z0-9]{12}CNTRL-[A-Za-z0-9]{32}",
    ),
    ("hashicorp", "vault-service-token", r"hvs\.[A-Za-z0-9_-]{90,100}"),
    ("hashicorp", "vault-batch-token", r"hvb\.[A-Za-z0-9_-]{138}"),
    ("gitlab", "gitlab-runner-token", r"glrt-[A-Za-z0-9_-]{20}"),
    ("gitlab", "gitlab-deploy-token", r"gldt-[A-Za-z0-9_-]{20}"),
    ("gitlab", "gitlab-feed-token", r"glft-[A-Za-z0-9_-]{20}"),
    ("gitlab", "gitlab-incoming-mail-token", r"glimt-[A-Za-z0-9_-]{25}"),
    ("gitlab", "gitlab-oauth-app-secret", r"gloas-[a-f0-9]{64}"),
    (
        "gitlab",
        "gitlab-ci-build-token",
        r"glcbt-[a-f0-9]{1,5}_[A-Za-z0-9_-]{20}",
    ),
    ("gitlab", "gitlab-agent-token", r"glagent-[A-Za-z0-9_-]{50}"),
    ("sentry", "sentry-user-token", r"sntryu_[a-f0-9]{64}"),
    ("notion", "notion-integration-token", r"ntn_[0-9]{11}[A-Za-z0-9]{35}"),
    ("linear", "linear-api-key", r"lin_api_[A-Za-z0-9]{40}"),
    ("figma", "figma-personal-access-token", r"figd_[A-Za-z0-9_-]{40}"),
    ("huggingface", "huggingface-token", r"hf_[A-Za-z]{34}"),
    ("groq", "groq-api-key", r"gsk_[A-Za-z0-9]{52}"),
    ("xai", "xai-api-key", r"xai-[A-Za-z0-9]{80}"),
    ("replicate", "replicate-api-token", r"r8_[A-Za-z0-9]{37}"),
    ("perplexity", "perplexity-api-key", r"pplx-[A-Za-z0-9]{48}"),
    ("supabase", "supabase-access-token", r"sbp_[a-f0-9]{40}"),
    ("planetscale", "planetscale-password", r"pscale_pw_[A-Za-z0-9_-]{43}"),
    ("databricks", "databricks-token", r"dapi[a-f0-9]{32}(-[0-9])?"),
    (
        "doppler",
        "doppler-service-token",
        r"dp\.st\.[a-z0-9_-]{2,35}\.[A-Za-z0-9]{40}",
    ),
    ("postman", "postman-api-key", r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}"),
    ("pypi", "pypi-upload-token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{70,90}"),
    ("shopify", "shopify-admin-token", r"shpat_[a-f0-9]{32}"),
    ("slack", "slack-bot-token", r"xoxb-[0-9]{11}-[0-9]{13}-[A-Za-z0-9]{24}"),
    (
        "slack",
        "slack-user-token",
        r"xoxp-[0-9]{11}-[0-9]{11}-[0-9]{13}-[a-f0-9]{32}",
    ),
    (
        "slack",
        "slack-app-token",
        r"xapp-1-A[A-Z0-9]{10}-[0-9]{13}-[a-f0-9]{64}",
    ),
    (
        "slack",
        "slack-webhook-url",
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{10}/B[A-Z0-9]{10}/[A-Za-z0-9]{24}",
    ),
    (
        "github",
        "github-fine-grained-pat",
        r"github_pat_11[A-Z0-9]{20}_[A-Za-z0-9]{59}",
    ),
    (
        "sendgrid",
        "sendgrid-api-key",
        r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    ),
    (
        "atlassian",
        "atlassian-api-token",
        r"ATATT3xFfGF0[A-Za-z0-9_=-]{170}=[A-F0-9]{8}",
    ),
    (
        "grafana",
        "grafana-service-account-token",
        r"glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}",
    ),
    ("digitalocean", "digitalocean-pat", r"dop_v1_[a-f0-9]{64}"),
    (
        "cloudflare",
        "cloudflare-origin-ca-key",
        r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}",
    ),
    (
        "age",
        "age-secret-key",
        r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
    ),
    ("dockerhub", "dockerhub-pat", r"dckr_pat_[A-Za-z0-9_-]{27}"),
    ("npm", "npm-access-token", r"npm_[A-Za-z0-9]{36}"),
    ("github", "github-pat", r"ghp_[A-Za-z0-9]{36}"),
    ("github", "github-app-installation-token", r"ghs_[A-Za-z0-9]{36}"),
    ("square", "square-access-token", r"EAAA[A-Za-z0-9_-]{60}"),
    ("google", "gcp-api-key", r"AIza[A-Za-z0-9_-]{35}"),
    ("google", "gcp-oauth-client-secret", r"GOCSPX-[A-Za-z0-9_-]{28}"),
    ("aws", "aws-access-key-id", r"AKIA[A-Z2-7]{16}"),
    ("aws", "aws-temporary-access-key-id", r"ASIA[A-Z2-7]{16}"),
];

// ---------------------------------------------------------------------------
// Contexts
// ---------------------------------------------------------------------------

fn upper_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// A variable name for a format: its reference id or name ("adafruit-api-key"
/// -> ADAFRUIT_API_KEY).
fn var_name(format: &str) -> String {
    // The names providers document, where the format's name is not one.
    let documented = [("CodeClimate Reporter ID", "CC_TEST_REPORTER_ID")];
    if let Some((_, n)) = documented.iter().find(|d| d.0 == format) {
        return n.to_string();
    }
    let n = upper_name(format);
    let n = n.trim_start_matches("NP_").to_string();
    if n.is_empty() {
        "API_TOKEN".into()
    } else {
        n
    }
}

fn url_safe(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn bearer_safe(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)) && !v.starts_with("http")
}

/// Every context for a token that identifies itself (prefix, structure).
fn self_identifying_contexts(
    v: &str,
    provider: &str,
    format: &str,
    refs: &[String],
    g: &mut Gen,
    out: &mut Vec<Entry>,
) {
    let up = var_name(format);
    let low = up.to_ascii_lowercase();
    let class = "self-identifying";
    let mut add = |text: String, context: &str, secret: &str| {
        out.push(pos(text, secret, provider, format, class, context, refs));
    };
    add(v.to_string(), "bare", v);
    let prose = [
        format!("use {v} to deploy"),
        format!("The new key is {v}, rotate it monthly."),
        format!("Customer pasted {v} into the support chat by mistake"),
        format!("please revoke {v} asap"),
    ];
    add(prose[g.below(prose.len())].clone(), "prose", v);
    if bearer_safe(v) {
        add(format!("Authorization: Bearer {v}"), "bearer-header", v);
        if provider == "github" {
            add(format!("Authorization: token {v}"), "token-header", v);
        }
    }
    add(format!("{up}={v}"), "env", v);
    add(format!("export {up}=\"{v}\""), "env-quoted", v);
    add(format!("{{\"{low}\": \"{v}\", \"region\": \"eu-west-1\"}}"), "json", v);
    add(format!("  {low}: {v}"), "yaml", v);
    // A value that would need percent-encoding in a URL is another string
    // there: only URL-safe formats get the URL context.
    if !v.starts_with("http") && url_safe(v) {
        add(
            format!("https://api.example.com/v1/items?access_token={v}&page=2"),
            "url-query",
            v,
        );
    }
    add(format!("{low} = \"{v}\""), "code", v);
    add(format!("42,deploy-bot,{v},2026-03-01"), "csv", v);
    add(
        format!("INSERT INTO integrations (id, name, credential) VALUES (7, '{provider}', '{v}');"),
        "sql",
        v,
    );
    add(
        format!("2026-03-01T12:00:03.114Z WARN [worker-3] upstream rejected credential {v} (401)"),
        "log",
        v,
    );
}

/// Contexts for a value of a generic alphabet: only next to its provider's
/// name is it identifiable.
fn keyword_contexts(v: &str, provider: &str, format: &str, refs: &[String], out: &mut Vec<Entry>) {
    let up = var_name(format);
    let low = up.to_ascii_lowercase();
    let flag = low.replace('_', "-");
    let class = "keyword";
    let mut add = |text: String, context: &str| {
        out.push(pos(text, v, provider, format, class, context, refs));
    };
    add(format!("{up}={v}"), "env");
    add(format!("export {up}=\"{v}\""), "env-quoted");
    add(format!("{{\"{low}\": \"{v}\"}}"), "json");
    add(format!("{low}: {v}"), "yaml");
    add(format!("{low} = \"{v}\""), "code");
    add(format!("deploy --{flag} {v} --region eu-west-1"), "cli-flag");
}

// ---------------------------------------------------------------------------
// Hand-made structured formats
// ---------------------------------------------------------------------------

fn pem_private_key(g: &mut Gen, kind: &str) -> String {
    let lines = g.range(8, 25);
    let mut body = String::new();
    for i in 0..lines {
        let n = if i + 1 == lines { g.range(8, 60) } else { 64 };
        body.push_str(&g.b64(n));
        body.push('\n');
    }
    format!("-----BEGIN {kind}-----\n{body}-----END {kind}-----")
}

fn jwt(g: &mut Gen) -> String {
    let alg = g.pick(&["HS256", "RS256", "ES256", "HS512"]);
    let header = format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"}}");
    let payload = format!(
        "{{\"sub\":\"{}\",\"name\":\"user{}\",\"iat\":{},\"exp\":{}}}",
        g.range(1000, 999_999),
        g.below(1000),
        1_700_000_000 + g.below(50_000_000),
        1_760_000_000 + g.below(50_000_000)
    );
    let sig_len = if alg.starts_with("RS") {
        342
    } else if alg == "HS512" {
        86
    } else {
        43
    };
    format!(
        "{}.{}.{}",
        b64_url_nopad(header.as_bytes()),
        b64_url_nopad(payload.as_bytes()),
        g.b64url(sig_len)
    )
}

fn hand_made(g: &mut Gen, out: &mut Vec<Entry>) {
    let refs_of = |kind: &str| -> Vec<String> {
        HAND_MADE
            .iter()
            .filter(|h| h.1 == kind)
            .map(|h| h.0.to_string())
            .collect()
    };
    // PEM private keys: multi-line, JSON-escaped (service-account files),
    // in an env value.
    let pem_refs = refs_of("pem");
    for kind in [
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "DSA PRIVATE KEY",
    ] {
        let k = pem_private_key(g, kind);
        out.push(pos(
            k.clone(),
            &k,
            "pem",
            "private-key",
            "self-identifying",
            "bare",
            &pem_refs,
        ));
        let esc = k.replace('\n', "\\n");
        out.push(pos(
            format!("{{\"type\": \"service_account\", \"private_key\": \"{esc}\\n\", \"client_email\": \"ci@proj.iam.gserviceaccount.com\"}}"),
            &esc,
            "pem",
            "private-key",
            "self-identifying",
            "json",
            &pem_refs,
        ));
        out.push(pos(
            format!("TLS_KEY=\"{k}\""),
            &k,
            "pem",
            "private-key",
            "self-identifying",
            "env-quoted",
            &pem_refs,
        ));
        out.push(pos(
            format!("INSERT INTO certs (host, key) VALUES ('db1', '{k}');"),
            &k,
            "pem",
            "private-key",
            "self-identifying",
            "sql",
            &pem_refs,
        ));
    }
    // Base64 of a whole PEM file (Kubernetes secrets, CI variables).
    let refs = refs_of("pem-base64");
    for kind in ["RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY"] {
        let k = b64_std(format!("{}\n", pem_private_key(g, kind)).as_bytes());
        out.push(pos(
            k.clone(),
            &k,
            "pem",
            "private-key-base64",
            "self-identifying",
            "bare",
            &refs,
        ));
        out.push(pos(
            format!("SSH_PRIVATE_KEY={k}"),
            &k,
            "pem",
            "private-key-base64",
            "self-identifying",
            "env",
            &refs,
        ));
        out.push(pos(
            format!("  tls.key: {k}"),
            &k,
            "pem",
            "private-key-base64",
            "self-identifying",
            "yaml",
            &refs,
        ));
        out.push(pos(
            format!("{{\"key\": \"{k}\"}}"),
            &k,
            "pem",
            "private-key-base64",
            "self-identifying",
            "json",
            &refs,
        ));
    }
    // JWTs.
    let refs = refs_of("jwt");
    for _ in 0..4 {
        let t = jwt(g);
        self_identifying_contexts(&t, "jwt", "jwt", &refs, g, out);
    }
    let refs = refs_of("jwt-base64");
    for _ in 0..2 {
        let t = b64_std(jwt(g).as_bytes());
        out.push(pos(
            t.clone(),
            &t,
            "jwt",
            "jwt-base64",
            "self-identifying",
            "bare",
            &refs,
        ));
        out.push(pos(
            format!("SESSION_TOKEN={t}"),
            &t,
            "jwt",
            "jwt-base64",
            "self-identifying",
            "env",
            &refs,
        ));
        out.push(pos(
            format!("{{\"auth\": \"{t}\"}}"),
            &t,
            "jwt",
            "jwt-base64",
            "self-identifying",
            "json",
            &refs,
        ));
    }
    // curl on a command line.
    let refs = refs_of("cli");
    for _ in 0..3 {
        let t = g.alnum(40);
        out.push(pos(
            format!("curl -H \"Authorization: Bearer {t}\" https://api.example.com/v2/me"),
            &t,
            "curl",
            "curl-auth-header",
            "secret",
            "cli",
            &refs,
        ));
        out.push(pos(
            format!("curl --header 'X-API-Key: {t}' https://api.example.com/v2/me"),
            &t,
            "curl",
            "curl-auth-header",
            "secret",
            "cli",
            &refs,
        ));
        let p = random_password(g);
        out.push(pos(
            format!("curl -u admin:{p} https://registry.example.com/v2/_catalog"),
            &p,
            "curl",
            "curl-auth-user",
            "password",
            "cli",
            &refs,
        ));
        out.push(pos(
            format!("curl --user 'deploy:{p}' -X POST https://ci.example.com/job/build"),
            &p,
            "curl",
            "curl-auth-user",
            "password",
            "cli",
            &refs,
        ));
    }
    // NuGet package source credentials in nuget.config.
    let refs = refs_of("nuget");
    for _ in 0..4 {
        let p = random_password(g);
        for text in [
            format!("<packageSourceCredentials><feed><add key=\"Username\" value=\"ci\" /><add key=\"ClearTextPassword\" value=\"{p}\" /></feed></packageSourceCredentials>"),
            format!("    <add key=\"Password\" value=\"{p}\" />"),
        ] {
            out.push(pos(text, &p, "nuget", "nuget-config-password", "password", "xml-attr", &refs));
        }
    }
    // GitLab session cookies.
    let refs = refs_of("cookie");
    for _ in 0..3 {
        let c = g.hex(32);
        for (text, context) in [
            (format!("Cookie: _gitlab_session={c}; event_filter=all"), "http-header"),
            (
                format!("Set-Cookie: _gitlab_session={c}; path=/; HttpOnly; SameSite=Lax"),
                "http-header",
            ),
            (format!("_gitlab_session={c}"), "bare"),
            (
                format!("curl -b '_gitlab_session={c}' https://gitlab.example.com/api/v4/user"),
                "cli",
            ),
        ] {
            out.push(pos(
                text,
                &c,
                "gitlab",
                "gitlab-session-cookie",
                "self-identifying",
                context,
                &refs,
            ));
        }
    }
    // Sidekiq Enterprise/Pro gem server credentials (user:password, 8 hex each).
    let refs = refs_of("sidekiq");
    for _ in 0..3 {
        let c = format!("{}:{}", g.hex(8), g.hex(8));
        for (text, context) in [
            (format!("BUNDLE_ENTERPRISE__CONTRIBSYS__COM={c}"), "env"),
            (format!("export BUNDLE_GEMS__CONTRIBSYS__COM=\"{c}\""), "env-quoted"),
            (format!("bundle config --local gems.contribsys.com {c}"), "cli"),
            (format!("source \"https://{c}@gems.contribsys.com/\""), "code"),
            (format!("https://{c}@enterprise.contribsys.com/"), "url"),
        ] {
            out.push(pos(
                text,
                &c,
                "sidekiq",
                "sidekiq-credentials",
                "keyword",
                context,
                &refs,
            ));
        }
    }
    // Kubernetes Secret manifests: base64 values under data:.
    let refs = refs_of("k8s");
    for _ in 0..3 {
        let p = b64_std(random_password(g).as_bytes());
        let t = b64_std(g.alnum(40).as_bytes());
        out.push(pos(
            format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db-credentials\ntype: Opaque\ndata:\n  password: {p}\n"),
            &p,
            "kubernetes",
            "kubernetes-secret-yaml",
            "secret",
            "yaml",
            &refs,
        ));
        out.push(pos(
            format!("{{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{{\"name\":\"api\"}},\"data\":{{\"api-token\":\"{t}\"}}}}"),
            &t,
            "kubernetes",
            "kubernetes-secret-yaml",
            "secret",
            "json",
            &refs,
        ));
    }
}

// ---------------------------------------------------------------------------
// Passwords, secrets, connection strings
// ---------------------------------------------------------------------------

/// Passwords people choose.
const HUMAN_PASSWORDS: &[&str] = &[
    "Summer2024!",
    "Tr0ub4dor&3",
    "correct-horse-battery-staple",
    "P@ssw0rd123",
    "Winter#2025",
    "hunter2hunter2",
    "MyDogRex2019",
    "Qwerty!234",
    "letmein-42",
    "Dragon$1987",
    "Welcome@2026",
    "blue-monkey-77",
    "Passw0rd!",
    "s3cr3tSauce",
    "Admin#4321",
    "purple elephant dances",
];

fn random_password(g: &mut Gen) -> String {
    match g.below(5) {
        0 => {
            let n = g.range(12, 24);
            g.alnum(n)
        }
        1 => {
            let n = g.range(14, 28);
            g.from(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#%^*_-+=?~",
                n,
            )
        }
        2 => g.hex(32),
        3 => {
            let w = [
                "maple", "orbit", "cactus", "velvet", "harbor", "quartz", "lantern", "meadow", "falcon", "tundra",
            ];
            format!("{}-{}-{}-{}", g.pick(&w), g.pick(&w), g.pick(&w), g.range(10, 99))
        }
        _ => {
            let n = g.range(12, 24);
            b64_std(&g.bytes(n)).trim_end_matches('=').to_string()
        }
    }
}

/// Random secrets as services issue them (client secrets, API keys, signing
/// keys).
fn random_secret(g: &mut Gen) -> String {
    match g.below(4) {
        0 => {
            let n = g.range(24, 48);
            g.alnum(n)
        }
        1 => {
            let n = [32, 40, 64][g.below(3)];
            g.hex(n)
        }
        2 => {
            let n = g.range(32, 48);
            g.b64url(n)
        }
        _ => b64_std(&g.bytes(32)),
    }
}

/// A password written in a YAML/INI/env value: quoted where the syntax needs
/// it, as people write it.
fn yaml_value(p: &str) -> String {
    let special_start = p.starts_with(|c: char| "!&*%@`|>{[#?-:,\"'".contains(c));
    if special_start || p.contains(": ") || p.contains(" #") || p.contains(' ') {
        format!("\"{p}\"")
    } else {
        p.to_string()
    }
}

fn env_value(p: &str) -> String {
    if p.contains(|c: char| " #$\"'`\\".contains(c)) {
        format!("'{p}'")
    } else {
        p.to_string()
    }
}

fn assignments(g: &mut Gen, out: &mut Vec<Entry>) {
    let refs: Vec<String> = HAND_MADE
        .iter()
        .filter(|h| h.1 == "assignments")
        .map(|h| h.0.to_string())
        .collect();
    let mut pws: Vec<String> = HUMAN_PASSWORDS.iter().map(|s| s.to_string()).collect();
    for _ in 0..24 {
        pws.push(random_password(g));
    }
    for (i, p) in pws.iter().enumerate() {
        let kind = if i < HUMAN_PASSWORDS.len() { "human" } else { "random" };
        let provider = format!("password-{kind}");
        let mut add = |text: String, context: &str| {
            out.push(pos(
                text,
                p,
                &provider,
                "password-assignment",
                "password",
                context,
                &refs,
            ));
        };
        let y = yaml_value(p);
        let e = env_value(p);
        add(format!("DB_PASSWORD={e}"), "env");
        add(format!("password={e}"), "env");
        add(format!("export PGPASSWORD=\"{p}\""), "env-quoted");
        add(
            format!("[database]\nhost = db.internal\nuser = app\npassword = {p}\n"),
            "ini",
        );
        add(format!("password = {p}"), "ini");
        add(format!("database:\n  username: app\n  password: {y}\n"), "yaml");
        add(format!("passwd: {y}"), "yaml");
        add(format!("spring.datasource.password={p}"), "properties");
        add(
            format!("<connection host=\"db1\" user=\"app\" password=\"{p}\" />"),
            "xml-attr",
        );
        add(format!("{{\"username\": \"app\", \"password\": \"{p}\"}}"), "json");
        add(
            format!("{{\"user\":\"svc\",\"passwd\":\"{p}\",\"host\":\"10.0.0.5\"}}"),
            "json",
        );
        add(
            format!("db.connect(host=\"db1\", user=\"app\", password=\"{p}\")"),
            "code",
        );
        add(format!("$password = '{p}';"), "code");
        add(format!("pwd={e}"), "env");
        add(format!("pass={e}"), "env");
        add(format!("the password is {p}"), "prose");
        add(
            format!("Hi team, the staging db password is \"{p}\" until Friday."),
            "prose",
        );
        add(format!("login with user admin and password: {p}"), "prose");
        add(format!("you can connect using pwd={e} for now"), "prose");
        add(format!("mysql -h db1 -u root --password={p} app"), "cli");
        if !p.contains(' ') {
            add(format!("./migrate --db-password {p} --host db1"), "cli");
        }
        add(format!("if (password === \"{p}\") {{ grant(); }}"), "code");
        add(format!("ALTER USER app WITH PASSWORD '{p}';"), "sql");
        add(format!("CREATE USER 'app'@'%' IDENTIFIED BY '{p}';"), "sql");
        add(
            format!("2026-03-01 12:00:03 INFO config loaded: user=app password={e} host=db1"),
            "log",
        );
    }
    // Secrets, client secrets and API keys assigned by name.
    for _ in 0..20 {
        let s = random_secret(g);
        let mut add = |text: String, context: &str, name: &str| {
            out.push(pos(text, &s, name, "secret-assignment", "secret", context, &refs));
        };
        add(format!("{{\"secret\": \"{s}\"}}"), "json", "secret");
        add(format!("SECRET_KEY={s}"), "env", "secret_key");
        add(format!("secret_key = \"{s}\""), "code", "secret_key");
        add(format!("client_secret={s}"), "env", "client_secret");
        add(format!("  client_secret: {s}"), "yaml", "client_secret");
        add(format!("api_key={s}"), "env", "api_key");
        add(
            format!("{{\"api_key\":\"{s}\",\"endpoint\":\"https://api.example.com\"}}"),
            "json",
            "api_key",
        );
        add(format!("set api_key={s} in the config and restart"), "prose", "api_key");
        add(format!("the client secret is {s}"), "prose", "client_secret");
        add(
            format!("<add key=\"ClientSecret\" value=\"{s}\" />"),
            "xml-attr",
            "client_secret",
        );
        add(format!("app.secret = {s}"), "properties", "secret");
        add(format!("auth_token: \"{s}\""), "yaml", "token");
    }
}

fn connection_strings(g: &mut Gen, out: &mut Vec<Entry>) {
    let refs: Vec<String> = HAND_MADE
        .iter()
        .filter(|h| h.1 == "connection strings")
        .map(|h| h.0.to_string())
        .collect();
    let mut pws: Vec<String> = HUMAN_PASSWORDS.iter().map(|s| s.to_string()).collect();
    for _ in 0..16 {
        pws.push(random_password(g));
    }
    for p in &pws {
        let u = percent_encode(p);
        let mut add = |text: String, provider: &str, secret: &str| {
            out.push(pos(
                text,
                secret,
                provider,
                "connection-string",
                "connection-string",
                provider,
                &refs,
            ));
        };
        add(
            format!("postgres://app:{u}@db.internal:5432/orders"),
            "postgres-uri",
            &u,
        );
        add(
            format!("postgresql://app:{u}@10.0.3.7/orders?sslmode=require"),
            "postgres-uri",
            &u,
        );
        add(
            format!("DATABASE_URL=postgresql+psycopg://app:{u}@db:5432/app"),
            "postgres-uri",
            &u,
        );
        add(format!("mysql://root:{u}@mysql.internal:3306/shop"), "mysql-uri", &u);
        add(format!("mariadb://app:{u}@maria:3306/app"), "mysql-uri", &u);
        add(
            format!("mongodb://admin:{u}@mongo1:27017,mongo2:27017/?replicaSet=rs0"),
            "mongodb-uri",
            &u,
        );
        add(
            format!("mongodb+srv://app:{u}@cluster0.ab1cd.mongodb.net/test?retryWrites=true"),
            "mongodb-uri",
            &u,
        );
        add(format!("redis://:{u}@cache.internal:6379/0"), "redis-uri", &u);
        add(
            format!("rediss://default:{u}@redis-12345.c1.cloud.redislabs.com:12345"),
            "redis-uri",
            &u,
        );
        add(format!("amqp://guest:{u}@rabbit:5672/%2F"), "amqp-uri", &u);
        add(
            format!("amqps://app:{u}@b-1.mq.eu-west-1.amazonaws.com:5671"),
            "amqp-uri",
            &u,
        );
        add(format!("mssql://sa:{u}@sql1:1433/master"), "mssql-uri", &u);
        add(format!("sqlserver://sa:{u}@sql1:1433?database=master"), "mssql-uri", &u);
        add(
            format!("jdbc:postgresql://db:5432/app?user=app&password={u}&ssl=true"),
            "jdbc",
            &u,
        );
        add(format!("jdbc:mysql://db:3306/app?user=root&password={u}"), "jdbc", &u);
        let semi_safe = !p.contains(';') && !p.contains(' ');
        if semi_safe {
            add(
                format!("jdbc:sqlserver://sql1:1433;databaseName=app;user=sa;password={p};encrypt=true"),
                "jdbc",
                p,
            );
            add(
                format!("Driver={{ODBC Driver 18 for SQL Server}};Server=tcp:sql1,1433;Database=app;Uid=sa;Pwd={p};Encrypt=yes;"),
                "odbc",
                p,
            );
            add(
                format!("Server=sql1;Database=app;User Id=app;Password={p};TrustServerCertificate=True"),
                "dotnet",
                p,
            );
            add(
                format!("Data Source=db1;Initial Catalog=app;User ID=svc;Password={p}"),
                "dotnet",
                p,
            );
            add(
                format!("host=db1 port=5432 dbname=app user=app password={p} sslmode=require"),
                "libpq",
                p,
            );
            add(format!("machine api.example.com login deploy password {p}"), "netrc", p);
        } else {
            add(
                format!("host=db1 port=5432 dbname=app user=app password='{p}' sslmode=require"),
                "libpq",
                p,
            );
            add(
                format!("Server=sql1;Database=app;User Id=app;Password=\"{p}\";"),
                "dotnet",
                p,
            );
        }
        add(
            format!("https://admin:{u}@jenkins.example.com/job/deploy"),
            "http-url",
            &u,
        );
    }
}

// ---------------------------------------------------------------------------
// Negatives: ordinary data that looks close
// ---------------------------------------------------------------------------

fn negatives(g: &mut Gen, out: &mut Vec<Entry>) {
    use sha2::Digest as _;
    for i in 0..60 {
        let data = g.bytes(20 + i);
        let md5 = hex::encode(md5_like(&data));
        let sha1 = g.hex(40);
        let sha256 = hex::encode(sha2::Sha256::digest(&data));
        let sha512 = hex::encode(sha2::Sha512::digest(&data));
        out.push(neg(md5.clone(), "md5"));
        out.push(neg(md5.to_uppercase(), "md5"));
        out.push(neg(format!("{{\"etag\": \"{md5}\"}}"), "md5"));
        out.push(neg(sha1.clone(), "sha1"));
        out.push(neg(format!("commit {sha1}\nAuthor: Dev <dev@example.com>"), "git-sha"));
        out.push(neg(format!("Merge {} into {}", &sha1[..7], &g.hex(7)), "git-sha"));
        out.push(neg(sha256.clone(), "sha256"));
        out.push(neg(format!("sha256:{sha256}"), "sha256"));
        out.push(neg(format!("registry.example.com/app@sha256:{sha256}"), "image-digest"));
        out.push(neg(format!("{sha256}  release-1.4.2.tar.gz"), "sha256"));
        out.push(neg(sha512.clone(), "sha512"));
        out.push(neg(
            format!("sha512-{}", b64_std(&sha2::Sha512::digest(&data))),
            "sri-integrity",
        ));
        out.push(neg(format!("{{\"checksum\": \"sha1={sha1}\"}}"), "sha1"));
        // UUIDs.
        let u4 = g.uuid4();
        out.push(neg(u4.clone(), "uuid-v4"));
        out.push(neg(u4.to_uppercase(), "uuid-v4"));
        out.push(neg(format!("{{\"id\": \"{u4}\", \"status\": \"active\"}}"), "uuid-v4"));
        let h = g.hex(32);
        out.push(neg(
            format!(
                "{}-{}-1{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[13..16],
                &h[16..20],
                &h[20..32]
            ),
            "uuid-v1",
        ));
        let ms = 0x0190_0000_0000u64 + g.below(1 << 30) as u64;
        out.push(neg(
            format!(
                "{:08x}-{:04x}-7{}-a{}-{}",
                ms >> 16,
                ms & 0xffff,
                &h[0..3],
                &h[3..6],
                &h[6..18]
            ),
            "uuid-v7",
        ));
        out.push(neg(h.clone(), "uuid-hex"));
        // ULID, KSUID, ObjectId, snowflake ids.
        out.push(neg(
            format!("01{}", g.from("0123456789ABCDEFGHJKMNPQRSTVWXYZ", 24)),
            "ulid",
        ));
        out.push(neg(format!("2{}", g.alnum(26)), "ksuid"));
        out.push(neg(format!("ObjectId(\"{}\")", g.hex(24)), "mongo-objectid"));
        out.push(neg(g.hex(24), "mongo-objectid"));
        out.push(neg(
            format!("{}", 1_100_000_000_000_000_000u64 + g.next() % 100_000_000_000_000_000),
            "snowflake-id",
        ));
        // Hex ids.
        out.push(neg(g.hex(16), "hex-id"));
        out.push(neg(format!("trace_id={} span_id={}", g.hex(32), g.hex(16)), "trace-id"));
        out.push(neg(format!("request-id: {}", g.hex(40)), "hex-id"));
        // Base64 blobs.
        let n = g.range(12, 600);
        out.push(neg(b64_std(&g.bytes(n)), "base64-blob"));
        out.push(neg(b64_url_nopad(&g.bytes(n)), "base64url-blob"));
        let n = g.range(16, 200);
        out.push(neg(
            format!("{{\"payload\": \"{}\"}}", b64_std(&g.bytes(n))),
            "base64-blob",
        ));
    }
    for _ in 0..20 {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        let n = g.range(40, 400);
        png.extend(g.bytes(n));
        out.push(neg(format!("data:image/png;base64,{}", b64_std(&png)), "data-uri"));
        out.push(neg(
            format!("<img src=\"data:image/gif;base64,R0lGODlh{}\">", b64_std(&g.bytes(60))),
            "data-uri",
        ));
        // Public keys and certificates.
        let ssh_rsa = format!("AAAAB3NzaC1yc2EAAAADAQABAAABgQ{}", g.b64(500));
        out.push(neg(format!("ssh-rsa {ssh_rsa} deploy@build-01"), "ssh-public-key"));
        out.push(neg(
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} alice@laptop", g.b64(43)),
            "ssh-public-key",
        ));
        let lines: Vec<String> = (0..6).map(|_| g.b64(64)).collect();
        out.push(neg(
            format!("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA{}\n{}\nIDAQAB\n-----END PUBLIC KEY-----", g.b64(20), lines.join("\n")),
            "pem-public-key",
        ));
        out.push(neg(
            format!(
                "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE{}\n{}\n-----END CERTIFICATE-----",
                g.b64(44),
                lines.join("\n")
            ),
            "certificate",
        ));
        // Stripe publishable keys and other public identifiers.
        out.push(neg(format!("pk_live_{}", g.alnum(99)), "stripe-publishable-key"));
        out.push(neg(
            format!("STRIPE_PUBLISHABLE_KEY=pk_test_{}", g.alnum(99)),
            "stripe-publishable-key",
        ));
        out.push(neg(
            format!(
                "channel C0{} user U0{}",
                g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 9),
                g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 9)
            ),
            "slack-ids",
        ));
        out.push(neg(
            format!(
                "arn:aws:iam::{}:role/deploy-{}",
                g.range(100_000_000_000, 999_999_999_999),
                g.below(99)
            ),
            "aws-arn",
        ));
        out.push(neg(
            format!("G-{}", g.from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)),
            "analytics-id",
        ));
    }
    // Placeholders and words around credentials.
    let placeholders = [
        "password=${DB_PASSWORD}",
        "password=<your-password>",
        "password: ********",
        "api_key=YOUR_API_KEY",
        "token: xxxxxxxx",
        "password: \"{{ vault_db_password }}\"",
        "password=%DB_PASS%",
        "PASSWORD=",
        "password: null",
        "password = os.environ[\"DB_PASSWORD\"]",
        "password = os.getenv('DB_PASSWORD')",
        "secret: ${{ secrets.DEPLOY_KEY }}",
        "client_secret=<client-secret>",
        "api_key: REPLACE_ME",
        "password: [REDACTED]",
        "password=***",
        "Server=db;User Id=app;Password=********;",
        "postgres://app:${PGPASSWORD}@db:5432/app",
        "postgres://app@db:5432/app",
        "postgresql://db.internal:5432/orders?sslmode=require",
        "mysql://localhost/test",
        "redis://cache:6379/0",
        "password reset email sent to user 4411",
        "Forgot password?",
        "{\"password\": \"Enter your password\", \"password_confirm\": \"Repeat the password\"}",
        "{\"label\": \"Password\", \"secret\": false, \"token\": null}",
        "password_min_length: 12",
        "require_password: true",
        "Passwords must contain at least one digit.",
        "Enter your password:",
        "password_hash_algorithm = argon2id",
        "api_key=",
        "token: null",
        "SECRET_KEY=changeme",
        "DB_PASSWORD=password",
        "password: example",
        "password=\"\"",
        "password: !vault |",
        "<password>${env.DB_PASS}</password>",
        "auth_token = get_token()",
        "\"password\": \"\"",
        "secret_key = settings.SECRET_KEY",
        "token = request.headers['Authorization']",
        "Authorization: Bearer <token>",
        "Authorization: Bearer $TOKEN",
        "Authorization: Bearer ${ACCESS_TOKEN}",
        "curl -H \"Authorization: Bearer $GITHUB_TOKEN\" https://api.github.com/user",
        "The password field is required.",
        "user=app password= host=db1",
        "api_key: ${API_KEY}",
        "client_secret: {{ .Values.clientSecret }}",
        "password: <%= ENV['DB_PASSWORD'] %>",
        "secret_key_base: <%= ENV[\"SECRET_KEY_BASE\"] %>",
    ];
    for p in placeholders {
        out.push(neg(p.to_string(), "placeholder"));
    }
    // Ordinary rows.
    let words = [
        "alpha", "river", "stone", "market", "orange", "window", "signal", "harbor", "copper", "meadow",
    ];
    for i in 0..200u64 {
        let w1 = words[(i % 10) as usize];
        let w2 = words[(i / 10 % 10) as usize];
        out.push(neg(format!("{w1}.{w2}{i}@example.com"), "email"));
        out.push(neg(format!("+1-555-{:03}-{:04}", i % 1000, (i * 37) % 10000), "phone"));
        out.push(neg(
            format!(
                "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                i % 12 + 1,
                i % 28 + 1,
                i % 24,
                i % 60,
                (i * 7) % 60,
                i % 1000
            ),
            "timestamp",
        ));
        out.push(neg(
            format!("v{}.{}.{}-rc.{}+build.{}", i % 5, i % 17, i % 31, i % 4, i * 13),
            "semver",
        ));
        out.push(neg(format!("/var/lib/app/{w1}/{w2}_{i}.parquet"), "path"));
        out.push(neg(
            format!("https://www.example.com/{w1}/{w2}?page={i}&sort=desc&utm_source=newsletter"),
            "url",
        ));
        out.push(neg(
            format!("{i}\t{}\t{}\t{}", i % 10, (i * 7919) % 100000, " ".repeat(84)),
            "pgbench-row",
        ));
        out.push(neg(
            format!("SELECT id, name, email FROM users WHERE id = {i} AND status = 'active';"),
            "sql",
        ));
        out.push(neg(
            format!("{{\"id\":\"{}\",\"object\":\"charge\",\"amount\":{},\"currency\":\"eur\",\"customer\":\"cus_{}\",\"created\":{}}}", format_args!("ch_{}", g.alnum(24)), i * 100, g.alnum(14), 1_700_000_000 + i),
            "json-api-response",
        ));
        out.push(neg(
            format!("The {w1} near the {w2} was quiet on day {i} of the season."),
            "prose",
        ));
        out.push(neg(
            format!(
                "order #{:08} shipped via DHL tracking {}",
                i * 7,
                g.range(1_000_000_000, 9_999_999_999)
            ),
            "prose",
        ));
        out.push(neg(
            format!("Error: relation \"{w1}_{w2}\" does not exist at character {i}"),
            "error-text",
        ));
    }
    // Nosey Parker's negative examples.
    for r in nosey_parker_rules() {
        if NP_NEGATIVES_NOT_NEGATIVE.contains(&r.id.as_str()) {
            continue;
        }
        for n in &r.negative_examples {
            if NP_NEGATIVE_EXAMPLES_WITH_PASSWORDS.iter().any(|p| n.contains(p)) {
                continue;
            }
            out.push(neg(n.clone(), &format!("np-negative:{}", r.id)));
        }
    }
}

/// A 16-byte digest of `data` (MD5-shaped; the bytes only need to look like one).
fn md5_like(data: &[u8]) -> [u8; 16] {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(data);
    let mut o = [0u8; 16];
    o.copy_from_slice(&d[..16]);
    o
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// Values per reference format.
const VALUES_PER_FORMAT: usize = 2;

fn reference_formats(g: &mut Gen, out: &mut Vec<Entry>, failed: &mut Vec<String>) {
    let hand: BTreeSet<&str> = HAND_MADE.iter().map(|h| h.0).collect();
    let excluded: BTreeSet<&str> = EXCLUDED.iter().map(|h| h.0).collect();
    // (reference key, provider, format name, secret group, pattern, examples)
    type Format = (String, String, String, Pick, String, Vec<String>);
    let mut formats: Vec<Format> = Vec::new();
    for r in gitleaks_rules() {
        let key = format!("gitleaks:{}", r.id);
        if hand.contains(key.as_str()) || excluded.contains(key.as_str()) || r.regex.is_empty() {
            continue;
        }
        let provider = r
            .keywords
            .iter()
            .find(|k| k.len() >= 3 && k.bytes().all(|b| b.is_ascii_alphabetic()))
            .cloned()
            .unwrap_or_else(|| r.id.split('-').next().unwrap_or("").to_string());
        let group = Pick::Group(r.secret_group.unwrap_or(1));
        formats.push((key, provider, r.id.clone(), group, r.regex.clone(), Vec::new()));
    }
    for r in nosey_parker_rules() {
        let key = format!("np:{}", r.id);
        if hand.contains(key.as_str()) || excluded.contains(key.as_str()) {
            continue;
        }
        let provider = r.id.split('.').nth(1).unwrap_or("").to_string();
        // "TrueNAS API Key (WebSocket)" -> TRUENAS_API_KEY
        let name = r.name.split('(').next().unwrap_or(&r.name).trim().to_string();
        formats.push((key, provider, name, Pick::Last, r.pattern.clone(), r.examples.clone()));
    }
    for (provider, name, re) in DOCUMENTED {
        formats.push((
            format!("docs:{name}"),
            provider.to_string(),
            name.to_string(),
            Pick::Group(1),
            format!("({re})"),
            Vec::new(),
        ));
    }
    for (key, provider, format, group, pattern, examples) in formats {
        let reference = regex::Regex::new(&strip_comments(&pattern)).ok();
        let (gen_pattern, gen_group) = match OVERRIDES.iter().find(|o| o.0 == key) {
            // An override with a group of its own says where the secret is.
            Some(o) if o.1.contains("=(") => (o.1.to_string(), Pick::Group(1)),
            Some(o) => (format!("({})", o.1), Pick::Group(1)),
            None => (pattern.clone(), group),
        };
        let refs = vec![key.clone()];
        let mut made = 0;
        let mut tries = 0;
        let mut seen = BTreeSet::new();
        let mut values = Vec::new();
        while made < VALUES_PER_FORMAT && tries < 40 {
            tries += 1;
            let Some(s) = sample_from_regex(&gen_pattern, gen_group, g) else {
                continue;
            };
            let v = with_checksum(s.value);
            if v.len() > 1200 || v.contains('\n') || !seen.insert(v.clone()) {
                continue;
            }
            // Self-identifying: the reference finds the value with nothing
            // around it and it carries fixed characters, or it carries a
            // long fixed part of its own.
            let bare = reference.as_ref().is_some_and(|re| re.is_match(&v));
            let self_id = (bare && s.literal_run >= 2) || s.literal_run >= 6;
            let structural = NP_STRUCTURAL.iter().find(|x| key == format!("np:{}", x.0));
            if let Some((_, password)) = structural {
                let v = if *password { random_password(g) } else { v };
                values.push((v, self_id));
                made += 1;
                continue;
            }
            if self_id {
                self_identifying_contexts(&v, &provider, &format, &refs, g, out);
            } else {
                keyword_contexts(&v, &provider, &format, &refs, out);
            }
            values.push((v, self_id));
            made += 1;
        }
        if made == 0 {
            failed.push(key.clone());
        }
        // Nosey Parker's examples show the context a format is written in
        // (connection strings, command lines, config files): each example
        // with its secret replaced by a new value.
        if let Some(re) = &reference {
            let per_rule = if NP_STRUCTURAL.iter().any(|x| key == format!("np:{}", x.0)) {
                8
            } else {
                2
            };
            for (ex, (v, self_id)) in examples
                .iter()
                .cycle()
                .zip(values.iter().cycle())
                .take(per_rule.min(examples.len() * 2))
            {
                let Some(c) = re.captures(ex) else { continue };
                let Some(m) = (1..c.len()).rev().find_map(|i| c.get(i)) else {
                    continue;
                };
                let text = format!("{}{}{}", &ex[..m.start()], v, &ex[m.end()..]);
                if !re.is_match(&text) {
                    continue;
                }
                let class = if *self_id { "self-identifying" } else { "keyword" };
                out.push(pos(text, v, &provider, &format, class, "reference-example", &refs));
            }
        }
    }
}

fn generate() -> (Vec<Entry>, Vec<String>) {
    let mut g = Gen(0xde7e_c710_c0a5_0001);
    let mut out = Vec::new();
    let mut failed = Vec::new();
    reference_formats(&mut g, &mut out, &mut failed);
    hand_made(&mut g, &mut out);
    assignments(&mut g, &mut out);
    connection_strings(&mut g, &mut out);
    negatives(&mut g, &mut out);
    (out, failed)
}

fn to_jsonl(entries: &[Entry]) -> String {
    let mut s = String::new();
    for e in entries {
        s.push_str(&serde_json::to_string(e).unwrap());
        s.push('\n');
    }
    s
}

fn load_corpus() -> Vec<Entry> {
    let p = corpus_path();
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

#[test]
fn corpus_fixture_is_what_the_generator_makes() {
    let (entries, failed) = generate();
    assert!(failed.is_empty(), "no value could be made for: {failed:?}");
    let text = to_jsonl(&entries);
    if std::env::var_os("GATEHOUSE_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(corpus_path().parent().unwrap()).unwrap();
        std::fs::write(corpus_path(), &text).unwrap();
        eprintln!("wrote {} entries to {}", entries.len(), corpus_path().display());
        return;
    }
    let committed = std::fs::read_to_string(corpus_path()).unwrap_or_default();
    assert!(
        committed == text,
        "tests/fixtures/detection/corpus.jsonl is not what the generator makes; \
         rewrite it with GATEHOUSE_WRITE_CORPUS=1 cargo nextest run --test detection_corpus"
    );
}

#[test]
fn every_reference_rule_is_represented() {
    let corpus = load_corpus();
    let mut have: BTreeSet<String> = BTreeSet::new();
    for e in &corpus {
        have.extend(e.refs.iter().cloned());
    }
    let excluded: BTreeSet<&str> = EXCLUDED.iter().map(|h| h.0).collect();
    let mut missing = Vec::new();
    let mut all = Vec::new();
    for r in gitleaks_rules() {
        all.push(format!("gitleaks:{}", r.id));
    }
    for r in nosey_parker_rules() {
        all.push(format!("np:{}", r.id));
    }
    for k in &all {
        if !have.contains(k) && !excluded.contains(k.as_str()) {
            missing.push(k.clone());
        }
    }
    for k in &excluded {
        assert!(all.iter().any(|a| a == k), "exclusion for unknown rule {k}");
        assert!(!have.contains(*k), "{k} is excluded but has corpus entries");
    }
    eprintln!(
        "{} reference rules: {} in the corpus, {} excluded with a reason",
        all.len(),
        all.len() - missing.len() - excluded.len(),
        excluded.len()
    );
    assert!(missing.is_empty(), "reference rules with no corpus entry: {missing:?}");
}

/// Findings the data path makes in one value, overlaps merged.
fn findings(engine: &Engine, text: &str) -> Vec<Finding> {
    let buf = text.as_bytes();
    let (mut seg, mut ends, mut hits, mut found) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    find_in_values(
        engine,
        buf,
        &[(0, buf.len(), 0)],
        &mut seg,
        &mut ends,
        &mut hits,
        &mut found,
        None,
    )
    .expect("scan");
    let mut f: Vec<Finding> = found.into_iter().map(|(_, f)| f).collect();
    resolve_overlaps(&mut f);
    f
}

/// Every occurrence of the secret is covered by findings.
fn detected(f: &[Finding], text: &str, secret: &str) -> bool {
    let mut any = false;
    for (at, _) in text.match_indices(secret) {
        any = true;
        let (s, e) = (at, at + secret.len());
        let mut p = s;
        for x in f {
            if x.start <= p && x.end > p {
                p = x.end;
            }
        }
        if p < e {
            return false;
        }
    }
    any
}

fn short(s: &str) -> String {
    let one: String = s.chars().map(|c| if c == '\n' { '⏎' } else { c }).collect();
    if one.chars().count() > 160 {
        format!("{}…", one.chars().take(160).collect::<String>())
    } else {
        one
    }
}

#[test]
fn recall_and_false_positives() {
    // GATEHOUSE_DETECTION_RULES=<file> measures another rules file (for a
    // before/after comparison); the thresholds hold for the project's own.
    let other = std::env::var_os("GATEHOUSE_DETECTION_RULES").map(PathBuf::from);
    let path = other.clone().unwrap_or_else(|| root().join("policies/secrets.toml"));
    let rf = RuleFile::load(&path).expect("the rules file parses");
    let engine = Engine::new(&rf.rules, [0x5a; 32]).expect("policies/secrets.toml compiles");
    let corpus = load_corpus();
    let mut per_context: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut per_class: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut fps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (mut p_total, mut p_hit, mut n_total) = (0usize, 0usize, 0usize);
    let mut formats = BTreeSet::new();
    let mut neg_kinds = BTreeSet::new();
    for e in &corpus {
        let f = findings(&engine, &e.text);
        if e.label == "pos" {
            p_total += 1;
            formats.insert(e.refs.first().cloned().unwrap_or_else(|| e.format.clone()));
            let ok = detected(&f, &e.text, &e.secret);
            let c = per_context.entry(e.context.clone()).or_default();
            c.0 += 1;
            let k = per_class.entry(e.class.clone()).or_default();
            k.0 += 1;
            if ok {
                p_hit += 1;
                c.1 += 1;
                k.1 += 1;
            } else {
                let fired: Vec<&str> = f.iter().map(|x| engine.rule_id(x.rule)).collect();
                misses.push(format!(
                    "{} | {} | {} | {} | {} | fired {:?}",
                    e.refs.join(","),
                    e.class,
                    e.context,
                    short(&e.text),
                    short(&e.secret),
                    fired
                ));
            }
        } else {
            n_total += 1;
            neg_kinds.insert(e.kind.clone());
            for x in &f {
                fps.entry(e.kind.clone()).or_default().push(format!(
                    "{}: {:?} in {:?}",
                    engine.rule_id(x.rule),
                    short(&e.text[x.start..x.end]),
                    short(&e.text)
                ));
            }
        }
    }
    let recall = p_hit as f64 / p_total.max(1) as f64;
    eprintln!(
        "corpus: {p_total} positives ({} formats, {} contexts), {n_total} negatives ({} kinds)",
        formats.len(),
        per_context.len(),
        neg_kinds.len()
    );
    eprintln!("recall: {p_hit}/{p_total} = {:.4}", recall);
    eprintln!("\n| class | positives | detected | recall |\n|---|---:|---:|---:|");
    for (k, (n, h)) in &per_class {
        eprintln!("| {k} | {n} | {h} | {:.4} |", *h as f64 / *n as f64);
    }
    eprintln!("\n| context | positives | detected | recall |\n|---|---:|---:|---:|");
    for (k, (n, h)) in &per_context {
        eprintln!("| {k} | {n} | {h} | {:.4} |", *h as f64 / *n as f64);
    }
    eprintln!("\nmisses ({}):", misses.len());
    for m in &misses {
        eprintln!("  {m}");
    }
    let fp_count: usize = fps.values().map(|v| v.len()).sum();
    eprintln!("\nfalse positives: {fp_count} findings in negatives");
    for (k, v) in &fps {
        eprintln!("  {k}: {}", v.len());
        for x in v {
            eprintln!("    {x}");
        }
    }
    if other.is_some() {
        return;
    }
    assert!(fp_count == 0, "false positives on ordinary data");
    assert!(recall >= 0.99, "recall {recall:.4} < 0.99");
}
