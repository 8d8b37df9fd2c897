//! The scanning engine: one Hyperscan block database for all rules, compiled
//! once and shared read-only; a scratch per worker thread; each Hyperscan
//! hit (an end offset) confirmed by the rule's own regex on a bounded window,
//! then by entropy and validator.

use super::rules::{MaskKind, Rule, Validator};
use hyperscan::prelude::*;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

/// How far before a Hyperscan end offset a match of a bounded rule may
/// start. A rule whose matches may be longer (a private key block, an
/// unbounded repetition: [`Compiled::long`]) is searched from its value's
/// start instead.
pub const WINDOW: usize = 8 * 1024;
/// How far back from its hits a rule's match is looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The text is one value (or the piece of one at hand): a rule whose
    /// matches may be longer than [`WINDOW`] is searched from its start.
    Value,
    /// The text is many rows, each ended by a newline (COPY data, a file
    /// read in chunks): a rule whose matches may be longer than [`WINDOW`]
    /// is searched from the start of the row its hits are in, or from
    /// [`WINDOW`] before them when that is earlier (a CSV value keeps its
    /// newlines), and its hits make one region per row. So a key block in
    /// one row is found whole, while a key block's first line in one row
    /// and a last line in a row far below make no match over the rows
    /// between.
    Rows,
}

/// Hit ranges recorded per scan call before scanning fails closed.
pub const MAX_HIT_RANGES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("rule {id}: pattern does not compile for Hyperscan: {message}")]
    Compile { id: String, message: String },
    #[error("rule {id}: {message}")]
    Regex { id: String, message: String },
    #[error("secret scanning failed: {0}")]
    Runtime(String),
    #[error("secret scanning gave up: more than {MAX_HIT_RANGES} candidate matches in one buffer")]
    TooManyHits,
}

struct Compiled {
    id: String,
    pattern: String,
    /// Compiled on the rule's first hit: most rules never hit, and 300
    /// compiled regexes cost tens of MiB.
    re: std::sync::OnceLock<Option<super::confirm::Confirmer>>,
    group: usize,
    entropy: Option<f64>,
    validator: Option<Validator>,
    mask: MaskKind,
    /// How far past a hit's end the secret may begin (see `prefilter::Cut`).
    secret_reach: usize,
    /// How far before a hit's end the secret begins, when Hyperscan looks
    /// for the rule cut in its secret (see `prefilter::Cut::secret_back`).
    secret_back: Option<usize>,
    /// A match may be longer than [`WINDOW`]: a PGP private key block with
    /// its subkeys, a PEM key of 8,192 bits or more, any unbounded
    /// repetition. Confirmation searches such a rule from the start of the
    /// value (a window that starts inside the match finds none, or a part
    /// of it), and a rule's ends in one text make one region, so that the
    /// search runs once per text, not once per region from its start.
    long: bool,
}

impl Compiled {
    fn regex(&self) -> Option<&super::confirm::Confirmer> {
        self.re
            .get_or_init(|| match super::confirm::Confirmer::new(&self.pattern, self.group) {
                Ok(re) => Some(re),
                Err(e) => {
                    // The syntax was checked when the rules loaded; only a
                    // size limit can fail here.
                    tracing::error!(target: "gatehouse::scan", rule = %self.id, error = %e, "rule's regex does not compile; its hits are not confirmed");
                    None
                }
            })
            .as_ref()
    }
}

/// A candidate region for one rule: Hyperscan reported match ends from
/// `first_end` to `last_end` (merged when within [`WINDOW`]; for a rule
/// whose matches may be longer, in one value, or in one row of rows: see
/// [`Reach`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub rule: u32,
    pub first_end: usize,
    pub last_end: usize,
}

/// Whether findings of `rule` are masked under `applies`: per rule, by
/// index, whether a role's findings of it are masked (`None`: every rule;
/// a rule past its end is masked).
#[inline]
pub fn masks(applies: Option<&[bool]>, rule: u32) -> bool {
    applies.is_none_or(|m| m.get(rule as usize).copied().unwrap_or(true))
}

/// A confirmed secret: `data[start..end]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finding {
    pub rule: u32,
    pub start: usize,
    pub end: usize,
}

pub struct Engine {
    db: Option<BlockDatabase>,
    rules: Vec<Compiled>,
    hash_key: [u8; 32],
    generation: u64,
    /// Values shorter than this cannot hold any secret.
    pub min_len: usize,
    /// Masked values per rule since start.
    counters: Vec<AtomicU64>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// A worker thread's scanning state for one engine generation.
struct ThreadScratch {
    generation: u64,
    scratch: Scratch,
    /// Per rule: the index (from the call's first) of its latest region
    /// in the call's hits, or [`NO_REGION`], and the value it is in; all
    /// `NO_REGION` between calls.
    last_region: Vec<(u32, u32)>,
}

const NO_REGION: u32 = u32::MAX;

#[cfg(test)]
thread_local! {
    /// Hits this thread confirmed (tests that a hit was left unconfirmed).
    pub(crate) static CONFIRMATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// This thread's scratch, sized for the engine generation it names.
    static SCRATCH: RefCell<Option<ThreadScratch>> = const { RefCell::new(None) };
}

impl Engine {
    /// Compiles `rules`. `hash_key` keys the `hash` mask.
    pub fn new(rules: &[Rule], hash_key: [u8; 32]) -> Result<Engine, ScanError> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut patterns = Vec::with_capacity(rules.len());
        let mut cut_patterns = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let captures = super::rules::capture_groups(&r.pattern).map_err(|e| ScanError::Regex {
                id: r.id.clone(),
                message: e,
            })?;
            let group = r.group.unwrap_or(if captures > 0 { 1 } else { 0 });
            let hs_pattern = |text: &str| -> Result<Pattern, ScanError> {
                let mut p = Pattern::new(text.to_string()).map_err(|e| ScanError::Compile {
                    id: r.id.clone(),
                    message: e.to_string(),
                })?;
                p.id = Some(i);
                // Multi-line: callers scan many values at once, each ended
                // by a newline, and `^`/`$` must hold at each value's edges
                // (hits are confirmed by the regex on the value alone).
                p.flags |= hyperscan::PatternFlags::MULTILINE;
                Ok(p)
            };
            let whole = hs_pattern(&r.pattern)?;
            // The rule's own prefilter (checked when the rules loaded: it
            // ends in or after the secret), else the rule cut short.
            let cut = match &r.prefilter {
                Some(pre) => Some(super::prefilter::Cut {
                    // Checked here too: `[[scan.rule]]` tables do not pass
                    // through a rules file's checks.
                    pattern: super::prefilter::check_run(&r.pattern, pre, group)
                        .map(|()| pre.clone())
                        .map_err(|e| ScanError::Regex {
                            id: r.id.clone(),
                            message: format!("prefilter: {e}"),
                        })?,
                    reach: 0,
                    // It ends in or after the secret, where is not known.
                    secret_back: None,
                }),
                None => super::prefilter::cut(&r.pattern, group),
            };
            cut_patterns.push(match &cut {
                Some(c) => hs_pattern(&c.pattern)?,
                None => whole.clone(),
            });
            patterns.push(whole);
            compiled.push(Compiled {
                id: r.id.clone(),
                pattern: r.pattern.clone(),
                re: std::sync::OnceLock::new(),
                group,
                entropy: r.entropy,
                validator: r.validator,
                mask: r.mask,
                secret_reach: cut.as_ref().map_or(0, |c| c.reach),
                secret_back: cut.and_then(|c| c.secret_back),
                long: super::rules::parse(&r.pattern)
                    .map_or(true, |h| h.properties().maximum_len().is_none_or(|n| n > WINDOW)),
            });
        }
        // Every class and escape read alike by Hyperscan and the regex
        // (see `classes`), before the patterns that hold them are compiled.
        super::classes::check(rules).map_err(|m| ScanError::Regex {
            id: rules.get(m.rule).map_or_else(|| "-".into(), |r| r.id.clone()),
            message: m.reason,
        })?;
        let db = if patterns.is_empty() {
            None
        } else {
            // The rules cut short (see `prefilter`); should Hyperscan refuse
            // a cut, the rules whole.
            match Patterns::from(cut_patterns).build::<hyperscan::Block>() {
                Ok(db) => Some(db),
                Err(e) => match Patterns::from(patterns.clone()).build::<hyperscan::Block>() {
                    Ok(db) => {
                        tracing::warn!(target: "gatehouse::scan", error = %e, "the rules cut short did not compile; scanning with the whole rules (slower)");
                        // Hits are now the whole matches' ends.
                        for c in &mut compiled {
                            c.secret_back = None;
                        }
                        Some(db)
                    }
                    Err(e) => {
                        // Name the rule at fault: compile one by one.
                        for (p, r) in patterns.into_iter().zip(rules) {
                            if let Err(e) = p.build::<hyperscan::Block>() {
                                return Err(ScanError::Compile {
                                    id: r.id.clone(),
                                    message: e.to_string(),
                                });
                            }
                        }
                        return Err(ScanError::Compile {
                            id: "-".into(),
                            message: e.to_string(),
                        });
                    }
                },
            }
        };
        if let Some(db) = &db {
            let mut backs: Vec<_> = compiled
                .iter()
                .map(|c| {
                    c.secret_back
                        .map(|back| super::examples::SecretBack { group: c.group, back })
                })
                .collect();
            super::examples::check_first_pass(db, rules, &mut backs).map_err(|m| ScanError::Regex {
                id: rules.get(m.rule).map_or_else(|| "-".into(), |r| r.id.clone()),
                message: m.reason,
            })?;
            for (c, b) in compiled.iter_mut().zip(backs) {
                c.secret_back = b.map(|b| b.back);
            }
        }
        // The shortest match any rule can have: shorter values hold none.
        let min_len = patterns
            .iter()
            .map(|p| p.info().map(|i| i.min_width()).unwrap_or(0))
            .min()
            .unwrap_or(0);
        let counters = (0..rules.len()).map(|_| AtomicU64::new(0)).collect();
        Ok(Engine {
            db,
            rules: compiled,
            hash_key,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            min_len,
            counters,
        })
    }

    /// `text` with every secret in it masked (statements put in reviews
    /// and recordings). Text that cannot be scanned is withheld whole.
    pub fn mask_text(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        if bytes.len() < self.min_len {
            return text.to_string();
        }
        match self.find(bytes) {
            Ok(found) if found.is_empty() => text.to_string(),
            Ok(found) => {
                let mut out = Vec::with_capacity(bytes.len());
                let mut p = 0;
                for f in found {
                    if f.start < p {
                        continue;
                    }
                    out.extend_from_slice(&bytes[p..f.start]);
                    self.mask(f.rule, &bytes[f.start..f.end], &mut out);
                    p = f.end;
                }
                out.extend_from_slice(&bytes[p..]);
                String::from_utf8_lossy(&out).into_owned()
            }
            Err(_) => "<withheld: it could not be scanned for secrets>".to_string(),
        }
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn rule_id(&self, rule: u32) -> &str {
        self.rules
            .get(rule as usize)
            .map(|r| r.id.as_str())
            .unwrap_or("unknown")
    }

    /// Masked values per rule id since start.
    pub fn counts(&self) -> Vec<(&str, u64)> {
        self.rules
            .iter()
            .zip(&self.counters)
            .map(|(r, c)| (r.id.as_str(), c.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn count(&self, rule: u32) {
        if let Some(c) = self.counters.get(rule as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Runs Hyperscan over `data` once, appending merged candidate regions
    /// to `hits` (sorted by rule, then position): a rule's match ends within
    /// [`WINDOW`] of each other make one region (all of them, for a rule
    /// whose matches may be longer than that).
    pub fn scan(&self, data: &[u8], hits: &mut Vec<Hit>) -> Result<(), ScanError> {
        self.scan_inner(data, hits, None, Reach::Value)
    }

    /// Like [`scan`](Self::scan) over values laid out one after another,
    /// value `k` ending at `value_ends[k]` with one separator byte after it:
    /// a region never spans two values (a rule's ends in one value make one
    /// region), so each region is confirmed on its own value only. A match
    /// ending on the separator belongs to the value before it.
    pub fn scan_values(&self, data: &[u8], value_ends: &[usize], hits: &mut Vec<Hit>) -> Result<(), ScanError> {
        self.scan_inner(data, hits, Some(value_ends), Reach::Value)
    }

    fn scan_inner(
        &self,
        data: &[u8],
        hits: &mut Vec<Hit>,
        value_ends: Option<&[usize]>,
        reach: Reach,
    ) -> Result<(), ScanError> {
        let Some(db) = &self.db else { return Ok(()) };
        let start_len = hits.len();
        let mut overflow = false;
        // The value a match ending at `to` (exclusive) belongs to. Matches
        // come in order of their ends, so the last answer is tried first.
        let mut last_value = 0usize;
        // Whether a long rule's hit ending at `to` joins its region that
        // ends at `last_end`: always in a value, within a row in rows.
        let long_joins = |id: u32, last_end: usize, to: usize| {
            self.rules.get(id as usize).is_some_and(|r| r.long)
                && match reach {
                    Reach::Value => true,
                    Reach::Rows => memchr::memchr(b'\n', &data[last_end.min(to)..to]).is_none(),
                }
        };
        let mut value_of = |to: usize| -> usize {
            let Some(ends) = value_ends else { return 0 };
            let fits = |k: usize| ends.get(k).is_some_and(|&en| en + 1 >= to) && (k == 0 || ends[k - 1] + 1 < to);
            if !fits(last_value) {
                last_value = ends.partition_point(|&en| en + 1 < to);
            }
            last_value
        };
        SCRATCH.with(|cell| -> Result<(), ScanError> {
            let mut slot = cell.borrow_mut();
            let fresh = !matches!(&*slot, Some(s) if s.generation == self.generation);
            if fresh {
                let s = db
                    .alloc_scratch()
                    .map_err(|e| ScanError::Runtime(format!("scratch: {e}")))?;
                *slot = Some(ThreadScratch {
                    generation: self.generation,
                    scratch: s,
                    last_region: vec![(NO_REGION, 0); self.rules.len()],
                });
            }
            let Some(ThreadScratch {
                scratch, last_region, ..
            }) = slot.as_mut()
            else {
                return Err(ScanError::Runtime("no scratch".into()));
            };
            let result = db.scan(data, scratch, |id: u32, _from: u64, to: u64, _flags: u32| {
                let to = to as usize;
                // Merge with this rule's last region when close (in the same
                // value, for values): long runs of matching bytes report an
                // end at every position.
                let value = value_of(to);
                if let Some(&(at, at_value)) = last_region.get(id as usize) {
                    if at != NO_REGION {
                        let h = &mut hits[start_len + at as usize];
                        let same = match value_ends {
                            Some(_) => value == at_value as usize,
                            None => to <= h.last_end + WINDOW || long_joins(id, h.last_end, to),
                        };
                        if same {
                            h.first_end = h.first_end.min(to);
                            h.last_end = h.last_end.max(to);
                            return Matching::Continue;
                        }
                    }
                }
                if hits.len() - start_len >= MAX_HIT_RANGES {
                    overflow = true;
                    return Matching::Terminate;
                }
                if let Some(at) = last_region.get_mut(id as usize) {
                    *at = ((hits.len() - start_len) as u32, value as u32);
                }
                hits.push(Hit {
                    rule: id,
                    first_end: to,
                    last_end: to,
                });
                Matching::Continue
            });
            // Leave the table clean for the next call: only the rules that
            // hit were touched.
            for h in &hits[start_len..] {
                if let Some(at) = last_region.get_mut(h.rule as usize) {
                    *at = (NO_REGION, 0);
                }
            }
            result.or_else(|e| match e {
                hyperscan::Error::Hyperscan(hyperscan::HsError::ScanTerminated) => Ok(()),
                e => Err(ScanError::Runtime(e.to_string())),
            })
        })?;
        if overflow {
            return Err(ScanError::TooManyHits);
        }
        hits[start_len..].sort_unstable_by_key(|h| (h.rule, h.first_end));
        Ok(())
    }

    /// Where in the value `data[lo..hi]` every secret that confirming `hit`
    /// could find lies, when Hyperscan's hits say so: the rule is cut in
    /// its secret, whose every match therefore ends a hit (the hits of
    /// one value all in `hit`: see [`scan_values`](Self::scan_values)) and
    /// begins `secret_back` bytes before it. `None` when only confirming
    /// can tell.
    pub fn secret_extent(&self, hit: &Hit, lo: usize, hi: usize) -> Option<Range<usize>> {
        let back = self.rules.get(hit.rule as usize)?.secret_back?;
        Some(hit.first_end.saturating_sub(back).clamp(lo, hi)..hi)
    }

    /// Confirms a hit inside the value `data[lo..hi]`: runs the rule's regex on
    /// a window around the hit, clipped to the value, and applies entropy and
    /// validator. Findings are appended with offsets into `data`.
    pub fn confirm(&self, data: &[u8], lo: usize, hi: usize, hit: &Hit, reach: Reach, out: &mut Vec<Finding>) {
        #[cfg(test)]
        CONFIRMATIONS.with(|c| c.set(c.get() + 1));
        let Some(r) = self.rules.get(hit.rule as usize) else {
            return;
        };
        let from = match (r.long, reach) {
            (true, Reach::Value) => lo,
            // The start of the row the region's first hit ends in (a match
            // ending on its row's newline is in that row), or the window's
            // start when that is earlier: a CSV value keeps its newlines, so
            // a key block in one spans rows.
            (true, Reach::Rows) => {
                let before = hit.first_end.saturating_sub(1).clamp(lo, hi);
                let row = memchr::memrchr(b'\n', &data[lo..before]).map_or(lo, |at| lo + at + 1);
                row.min(hit.first_end.saturating_sub(WINDOW).max(lo))
            }
            (false, _) => hit.first_end.saturating_sub(WINDOW).max(lo),
        };
        let to = hit.last_end.saturating_add(WINDOW).min(hi);
        if from >= to {
            return;
        }
        let Some(re) = r.regex() else {
            return;
        };
        // The value is the regex's haystack and the window a range of it:
        // look-around at the window's edges reads the value's bytes there,
        // as at the value's own edges it reads nothing (the value is the
        // string it is, whatever the message holds around it).
        let value = &data[lo..hi];
        re.matches(value, from - lo..to - lo, |_, whole_end, start, end| {
            let whole = whole_end + lo;
            // Keep matches that end where Hyperscan saw one (give or take the
            // regex's own choice of the longest match) and whose secret
            // starts where the cut pattern said it may.
            if whole < hit.first_end || start + lo > hit.last_end + r.secret_reach {
                return false;
            }
            let secret = &value[start..end];
            if secret.is_empty() {
                return false;
            }
            if let Some(min) = r.entropy {
                // A threshold is met when reached: rounding must not put a
                // secret of exactly that entropy under it.
                if entropy(secret) + ENTROPY_TOLERANCE < min {
                    return false;
                }
            }
            if let Some(v) = r.validator {
                if !validate(v, secret) {
                    return false;
                }
            }
            out.push(Finding {
                rule: hit.rule,
                start: start + lo,
                end: end + lo,
            });
            true
        });
    }

    /// All secrets in one value (a convenience over `scan` + `confirm`).
    pub fn find(&self, data: &[u8]) -> Result<Vec<Finding>, ScanError> {
        self.find_within(data, Reach::Value, None)
    }

    /// All secrets in a text of many rows (COPY data, a file read in
    /// chunks): see [`Reach::Rows`].
    pub fn find_in_rows(&self, data: &[u8]) -> Result<Vec<Finding>, ScanError> {
        self.find_within(data, Reach::Rows, None)
    }

    /// [`find`](Self::find) for the rules `applies` masks (see
    /// [`masks`]: a role may see some in clear). The other rules' hits are
    /// not confirmed at all: overlapping findings are merged into the
    /// earlier, longer one, and a finding of a rule seen in clear must
    /// not take in a secret that is masked and then be dropped with it.
    pub fn find_masked(&self, data: &[u8], applies: Option<&[bool]>) -> Result<Vec<Finding>, ScanError> {
        self.find_within(data, Reach::Value, applies)
    }

    /// [`find_in_rows`](Self::find_in_rows) for the rules `applies` masks
    /// (see [`find_masked`](Self::find_masked)).
    pub fn find_masked_in_rows(&self, data: &[u8], applies: Option<&[bool]>) -> Result<Vec<Finding>, ScanError> {
        self.find_within(data, Reach::Rows, applies)
    }

    fn find_within(&self, data: &[u8], reach: Reach, applies: Option<&[bool]>) -> Result<Vec<Finding>, ScanError> {
        let mut hits = Vec::new();
        self.scan_inner(data, &mut hits, None, reach)?;
        let mut out = Vec::new();
        for h in hits.iter().filter(|h| masks(applies, h.rule)) {
            self.confirm(data, 0, data.len(), h, reach, &mut out);
        }
        resolve_overlaps(&mut out);
        Ok(out)
    }

    /// The mask for a secret found by `rule`.
    pub fn mask(&self, rule: u32, secret: &[u8], out: &mut Vec<u8>) {
        let Some(r) = self.rules.get(rule as usize) else { return };
        mask_into(r.mask, &r.id, &self.hash_key, secret, out);
    }

    /// A mask of exactly `secret.len()` bytes, for values rewritten in place.
    pub fn mask_same_len(&self, rule: u32, secret: &mut [u8]) {
        let mut m = Vec::with_capacity(secret.len() + 32);
        self.mask(rule, secret, &mut m);
        let n = secret.len();
        m.resize(n.max(m.len()), b'*');
        secret.copy_from_slice(&m[..n]);
    }
}

/// Sorts findings and drops those overlapping an earlier, longer one.
pub fn resolve_overlaps(f: &mut Vec<Finding>) {
    if f.len() < 2 {
        return;
    }
    f.sort_unstable_by_key(|x| (x.start, std::cmp::Reverse(x.end)));
    let mut out: Vec<Finding> = Vec::with_capacity(f.len());
    for x in f.drain(..) {
        match out.last_mut() {
            Some(last) if x.start < last.end => last.end = last.end.max(x.end),
            _ => out.push(x),
        }
    }
    *f = out;
}

pub fn mask_into(kind: MaskKind, id: &str, key: &[u8; 32], secret: &[u8], out: &mut Vec<u8>) {
    match kind {
        MaskKind::Redact => {
            out.extend_from_slice(b"[MASKED:");
            out.extend_from_slice(id.as_bytes());
            out.push(b']');
        }
        MaskKind::Partial => {
            let keep = if secret.len() > 8 { 4 } else { 0 };
            out.extend(std::iter::repeat_n(b'*', secret.len() - keep));
            out.extend_from_slice(&secret[secret.len() - keep..]);
        }
        MaskKind::Hash => {
            use hmac::Mac;
            let mut mac =
                <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(secret);
            let tag = mac.finalize().into_bytes();
            out.extend_from_slice(b"[HASH:");
            out.extend_from_slice(id.as_bytes());
            out.push(b':');
            out.extend_from_slice(hex::encode(&tag[..8]).as_bytes());
            out.push(b']');
        }
    }
}

/// How far under a rule's entropy threshold a computed entropy may fall
/// and still meet it (floating-point rounding).
const ENTROPY_TOLERANCE: f64 = 1e-9;

/// Shannon entropy in bits per byte.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    // H = log2(n) - (1/n) * sum(c * log2(c)) over the byte counts c.
    static C_LOG2_C: std::sync::OnceLock<[f64; 256]> = std::sync::OnceLock::new();
    let table =
        C_LOG2_C.get_or_init(|| std::array::from_fn(|c| if c < 2 { 0.0 } else { c as f64 * (c as f64).log2() }));
    let n = s.len() as f64;
    let sum: f64 = if s.len() < 256 {
        // A secret (most are under 100 bytes): counted and summed in one
        // pass over its bytes, not over all 256 counts (which cost more than
        // the counting). A byte seen a second time or more adds the growth
        // of its c * log2(c).
        let mut counts = [0u8; 256];
        let mut sum = 0.0;
        for &b in s {
            let c = &mut counts[b as usize];
            *c += 1;
            if *c > 1 {
                sum += table[*c as usize] - table[*c as usize - 1];
            }
        }
        sum
    } else {
        let mut counts = [0u32; 256];
        for &b in s {
            counts[b as usize] += 1;
        }
        counts
            .iter()
            .filter(|&&c| c > 1)
            .map(|&c| {
                table
                    .get(c as usize)
                    .copied()
                    .unwrap_or_else(|| c as f64 * (c as f64).log2())
            })
            .sum()
    };
    (n.log2() - sum / n).max(0.0)
}

fn validate(v: Validator, s: &[u8]) -> bool {
    match v {
        Validator::Crc32Base62 => crc32_base62(s),
        Validator::Luhn => luhn(s),
        Validator::Jwt => jwt(s),
    }
}

/// `<prefix>_<body><6 base62 digits of crc32(body)>`.
fn crc32_base62(s: &[u8]) -> bool {
    let Some(us) = s.iter().rposition(|&b| b == b'_') else {
        return false;
    };
    let rest = &s[us + 1..];
    if rest.len() < 7 {
        return false;
    }
    let (body, check) = rest.split_at(rest.len() - 6);
    let mut crc = crc32fast::Hasher::new();
    crc.update(body);
    let mut v = crc.finalize() as u64;
    let mut enc = [b'0'; 6];
    const ALPHA: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    for d in enc.iter_mut().rev() {
        *d = ALPHA[(v % 62) as usize];
        v /= 62;
    }
    enc == check
}

fn luhn(s: &[u8]) -> bool {
    let digits: Vec<u32> = s
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|b| (b - b'0') as u32)
        .collect();
    if digits.len() < 12 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

fn jwt(s: &[u8]) -> bool {
    use base64::Engine as _;
    let mut parts = s.split(|&b| b == b'.');
    let Some(header) = parts.next() else { return false };
    let header = header.strip_suffix(b"=").unwrap_or(header);
    let Ok(h) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return false;
    };
    let h = String::from_utf8_lossy(&h);
    h.trim_start().starts_with('{') && h.contains("\"alg\"")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rule of `pattern` alone, masked by redaction.
    pub(crate) fn rule(id: &str, pattern: &str) -> Rule {
        Rule {
            id: id.into(),
            name: id.into(),
            pattern: pattern.into(),
            keywords: vec![],
            entropy: None,
            validator: None,
            mask: MaskKind::Redact,
            group: None,
            prefilter: None,
        }
    }

    /// The built-in rules, and the same rules with the URI rules' host
    /// whole (`@` and then a bracketed address or a host name), as they
    /// were written before their match ended at the host's first byte.
    fn engines_with_short_and_whole_uri_hosts() -> &'static (Engine, Engine) {
        static ENGINES: std::sync::OnceLock<(Engine, Engine)> = std::sync::OnceLock::new();
        ENGINES.get_or_init(|| {
            let rules = super::super::assemble(None, &[], Vec::new()).expect("built-in rules");
            let mut changed = 0;
            let whole: Vec<Rule> = rules
                .iter()
                .cloned()
                .map(|mut r| {
                    for (short, long) in [
                        (
                            r")@(?:\[|[A-Za-z0-9%_-])",
                            r")@(?:\[[0-9a-f:.]+\]|[A-Za-z0-9%_-][A-Za-z0-9%._-]*)",
                        ),
                        (r")@[A-Za-z0-9%_-]", r")@[A-Za-z0-9%_-][A-Za-z0-9%._-]*"),
                    ] {
                        if let Some(head) = r.pattern.strip_suffix(short) {
                            r.pattern = format!("{head}{long}");
                            changed += 1;
                            break;
                        }
                    }
                    r
                })
                .collect();
            assert_eq!(changed, 15, "the URI rules end at the host's first byte");
            (
                Engine::new(&rules, [0; 32]).expect("engine"),
                Engine::new(&whole, [0; 32]).expect("engine"),
            )
        })
    }

    /// Asserts that `value[secret]` is masked by a finding in `value` alone,
    /// in `mask_text`, and in `value` as the middle one of three values in
    /// a batch.
    fn assert_masked_alone_and_in_a_batch(e: &Engine, value: &str, secret: (usize, usize), what: &str) {
        let covered = |spans: &[(usize, usize)]| spans.iter().any(|&(s, e)| s <= secret.0 && e >= secret.1);
        let alone: Vec<_> = e
            .find(value.as_bytes())
            .unwrap()
            .iter()
            .map(|f| (f.start, f.end))
            .collect();
        assert!(covered(&alone), "{what}, alone: {alone:?}");
        assert!(
            !e.mask_text(value).contains(&value[secret.0..secret.1]),
            "{what}: the text masked"
        );
        let batch = format!("id 7{value}rotated");
        let vs = 4;
        let found = super::super::values::find_all(
            e,
            batch.as_bytes(),
            &[
                (0, vs, 0),
                (vs, vs + value.len(), 1),
                (vs + value.len(), batch.len(), 2),
            ],
        );
        let in_value: Vec<_> = found
            .iter()
            .filter(|(i, _)| *i == 1)
            .map(|(_, f)| (f.start - vs, f.end - vs))
            .collect();
        assert!(covered(&in_value), "{what}, in a batch: {in_value:?}");
    }

    /// The spans masked (findings merged where they overlap).
    fn masked(found: &[Finding]) -> Spans {
        let mut f = found.to_vec();
        resolve_overlaps(&mut f);
        f.iter().map(|f| (f.start, f.end)).collect()
    }

    /// Spans masked: (start, end).
    type Spans = Vec<(usize, usize)>;

    /// What the short-host and the whole-host rules mask in `text`, alone
    /// and as the middle one of three values in a batch.
    fn masked_both_ways(text: &str) -> [(Spans, Spans); 2] {
        let (short, whole) = engines_with_short_and_whole_uri_hosts();
        let buf = format!("before{text}after");
        let values = [(0, 6, 0), (6, 6 + text.len(), 1), (6 + text.len(), buf.len(), 2)];
        let in_values = |e: &Engine| {
            let f: Vec<Finding> = super::super::values::find_all(e, buf.as_bytes(), &values)
                .into_iter()
                .map(|(_, f)| f)
                .collect();
            masked(&f)
        };
        let alone = |e: &Engine| masked(&e.find(text.as_bytes()).unwrap());
        [(alone(short), alone(whole)), (in_values(short), in_values(whole))]
    }

    /// Fragments of URIs and of the text around them.
    fn uri_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = |v: Vec<&'static str>| proptest::sample::select(v);
        let uri = (
            piece(vec![
                "postgres://",
                "MySQL://",
                "redis://",
                "https://",
                "mongodb+srv://",
                "snowflake://",
                "postgres+psycopg://",
            ]),
            piece(vec!["", "app", "u"]),
            proptest::collection::vec(piece(vec!["s3cr3t", "@", ":", "P4ss!", "[", "x", "%", "é"]), 1..4),
            piece(vec![
                "@db1.internal",
                "@[::1]",
                "@[",
                "@-h",
                "@%2f",
                "@",
                "@db1.internal.postgres://",
            ]),
            piece(vec!["", ":5432/app", "/app?x=1", "#f", " ", "\n", "@x.y"]),
        )
            .prop_map(|(scheme, user, pw, host, tail)| format!("{scheme}{user}:{}{host}{tail}", pw.concat()));
        let filler =
            piece(vec![" ", "\n", "@", "[", "]", ":", "x@y.z", "'", "\"", "\t", "word"]).prop_map(String::from);
        proptest::collection::vec(prop_oneof![2 => uri, 1 => filler], 0..6).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Ending a URI rule's match at the host's first byte masks every
        /// byte the whole host masked, alone and in a batch of values
        /// (texts shorter than the confirmation window). It may mask more:
        /// a password before an `@[` with no address and `]` after it, and
        /// one whose scheme an earlier URI's host ran into.
        #[test]
        fn uri_rules_ending_at_the_host_mask_what_the_whole_host_masked(text in uri_text()) {
            for (new, old) in masked_both_ways(&text) {
                for o in &old {
                    proptest::prop_assert!(
                        new.iter().any(|&(s, e)| s <= o.0 && o.1 <= e),
                        "{:?}: {:?} not covered by {:?}", text, o, new
                    );
                }
            }
        }
    }

    #[test]
    fn uri_rules_ending_at_the_host_mask_passwords_the_whole_host_missed() {
        for (text, secret) in [
            // The first URI's host ran into the second's scheme.
            (
                "postgres://:s3cr3t@db1.internal.postgres://:P4ssw0rd!@db1.internal/app",
                "P4ssw0rd!",
            ),
            // An `@[` that no address and `]` follow.
            ("redis://u:P4ssw0rd!@[", "P4ssw0rd!"),
        ] {
            let at = text.rfind(secret).unwrap();
            for (i, (new, old)) in masked_both_ways(text).into_iter().enumerate() {
                let at = at + 6 * i; // in the batch, after "before"
                assert!(new.contains(&(at, at + secret.len())), "{text}: {new:?}");
                assert!(!old.iter().any(|&(s, _)| s == at), "{text}: {old:?}");
            }
        }
        // And the same span where both find one.
        let text = "mysql://root:p@ss@db.internal:3306/x";
        for (new, old) in masked_both_ways(text) {
            assert_eq!(new, old);
            assert_eq!(new.len(), 1);
        }
    }

    #[test]
    fn a_uri_password_is_one_hit_however_long_its_host() {
        let (short, whole) = engines_with_short_and_whole_uri_hosts();
        let text = format!(
            "postgres://app:Zx9vQ2mLp7Rt4kWs@db1.{}.internal:5432/app",
            "eu-west".repeat(40)
        );
        let ends = |e: &Engine| {
            let mut hits = Vec::new();
            e.scan(text.as_bytes(), &mut hits).unwrap();
            let h = hits
                .iter()
                .find(|h| e.rule_id(h.rule) == "postgres-uri-password")
                .copied()
                .expect("a hit");
            (h.first_end, h.last_end)
        };
        let at = text.find('@').unwrap();
        assert_eq!(ends(short), (at + 2, at + 2), "one end, after the host's first byte");
        assert!(ends(whole).1 > at + 200, "the whole host ended a match at each byte");
        let f = short.find(text.as_bytes()).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(&text[f[0].start..f[0].end], "Zx9vQ2mLp7Rt4kWs");
    }

    /// A rule's regex runs on a window of its value, and a window that
    /// starts inside the value must read the bytes before it: `\b` and `^`
    /// at the window's first byte hold only where they hold in the value.
    /// Read on a slice of its own, the window's edge is a word boundary and
    /// a line's start, so a match that the value does not hold (here the
    /// first branch, from the window's start into the real match) takes the
    /// place of the real one, which leftmost-first search then steps over,
    /// and the real match's secret is left unmasked.
    #[test]
    fn a_window_inside_its_value_reads_the_bytes_before_it() {
        let secret = "31415926";
        for pattern in [r"\ba+bc|bc([0-9]{8})", r"^a+bc|bc([0-9]{8})"] {
            let e = Engine::new(&[rule("t", pattern)], [0; 32]).unwrap();
            // A word byte before the run of `a`: no word boundary and no
            // line start anywhere in the run, so only the second branch
            // matches; the run is longer than the window, so the window
            // starts inside it.
            for run in [WINDOW - 16, WINDOW, WINDOW + 3, 3 * WINDOW] {
                let value = format!("z{}bc{secret}", "a".repeat(run));
                let at = value.len() - secret.len();
                let alone = e.find(value.as_bytes()).unwrap();
                assert_eq!(
                    alone.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>(),
                    vec![(at, value.len())],
                    "{pattern}, a run of {run}: the value alone"
                );
                // The same value in a batch, between two others.
                let batch = format!("x = 1;{value}; y = 2");
                let vs = "x = 1;".len();
                let found = super::super::values::find_all(
                    &e,
                    batch.as_bytes(),
                    &[
                        (0, 5, 0),
                        (vs, vs + value.len(), 1),
                        (vs + value.len() + 1, batch.len(), 2),
                    ],
                );
                assert_eq!(
                    found.iter().map(|(i, f)| (*i, f.start, f.end)).collect::<Vec<_>>(),
                    vec![(1, vs + at, vs + value.len())],
                    "{pattern}, a run of {run}: the value in a batch"
                );
            }
            // Where the value itself starts the first branch, it matches.
            let value = format!("{}bc{secret}", "a".repeat(20));
            let f = e.find(value.as_bytes()).unwrap();
            assert_eq!(
                f.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>(),
                vec![(0, 22)],
                "{pattern}"
            );
        }
    }

    /// A private key block longer than the window (a PGP key with its
    /// subkeys, an RSA key of 8,192 bits or more) is masked whole: its
    /// rule's match starts more than a window before the end Hyperscan
    /// reports, so its regex searches from the value's start.
    #[test]
    fn a_private_key_longer_than_the_window_is_masked_whole() {
        let e = &engines_with_short_and_whole_uri_hosts().0;
        let base = "MIIJKQIBAAKCAgEAx7Vq9Lm3Zp2Wr8Tn5Kd1Hs4Gf6Jc0Yb".repeat(2);
        let body = |n: usize| -> String { (0..n).map(|i| format!("{}\n", &base[i % 7..i % 7 + 64])).collect() };
        for lines in [40, 125, 140, 210, 600] {
            for (begin, end) in [
                ("-----BEGIN RSA PRIVATE KEY-----\n", "-----END RSA PRIVATE KEY-----"),
                (
                    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n",
                    "-----END PGP PRIVATE KEY BLOCK-----",
                ),
                (
                    "-----BEGIN OPENSSH PRIVATE KEY-----\n",
                    "-----END OPENSSH PRIVATE KEY-----",
                ),
            ] {
                let key = format!("{begin}{}{end}", body(lines));
                let value = format!("key of the deploy user: {key}\nrotated 2026-11-30");
                let at = value.find("-----BEGIN").unwrap();
                assert_masked_alone_and_in_a_batch(
                    e,
                    &value,
                    (at, at + key.len()),
                    &format!("{begin:?} of {} bytes", key.len()),
                );
            }
        }
    }

    /// A rule with no bound finds a match longer than the window whole,
    /// and its many hits in one long text make one search of the text.
    #[test]
    fn an_unbounded_rule_finds_a_match_longer_than_the_window_whole() {
        let e = Engine::new(&[rule("t", r"\b([A-Za-z0-9]{40,})\b")], [0; 32]).unwrap();
        for n in [WINDOW - 100, WINDOW + 100, 3 * WINDOW] {
            let token: String = (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let value = format!("x {token} y");
            let f = e.find(value.as_bytes()).unwrap();
            assert_eq!(
                f.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>(),
                vec![(2, 2 + n)],
                "{n}"
            );
            let batch = format!("x{value}");
            let found = super::super::values::find_all(&e, batch.as_bytes(), &[(0, 1, 0), (1, batch.len(), 1)]);
            assert_eq!(
                found.iter().map(|(i, f)| (*i, f.start, f.end)).collect::<Vec<_>>(),
                vec![(1, 3, 3 + n)],
                "{n} in a batch"
            );
        }
        // Tokens far apart in one text: one region, every token found.
        let text: String = (0..50)
            .map(|i| format!("{}{i:02} {}", "Q".repeat(40), "-".repeat(3 * WINDOW)))
            .collect();
        let mut hits = Vec::new();
        e.scan(text.as_bytes(), &mut hits).unwrap();
        assert_eq!(hits.len(), 1, "one region for the long rule");
        assert_eq!(e.find(text.as_bytes()).unwrap().len(), 50);
    }

    #[test]
    fn a_rule_seen_in_clear_does_not_take_a_masked_secret_inside_its_match_with_it() {
        // `wrap`'s match holds the key ID: merged, the key ID would be
        // under `wrap`'s finding, and dropped with it for a role that sees
        // `wrap` in clear.
        let rules = [
            rule("wrap", r"(wrap\[[^\]]{10,80}\])"),
            rule("aws", r"\b(AKIA[A-Z0-9]{16})\b"),
        ];
        let e = Engine::new(&rules, [0; 32]).unwrap();
        let text = b"x wrap[AKIAABCDEFGHIJKLMNOP]\nwrap[AKIAQRSTUVWXYZ234567 z]";
        let wraps = [
            Finding {
                rule: 0,
                start: 2,
                end: 28,
            },
            Finding {
                rule: 0,
                start: 29,
                end: 57,
            },
        ];
        assert_eq!(e.find_in_rows(text).unwrap(), wraps);
        let keys = [
            Finding {
                rule: 1,
                start: 7,
                end: 27,
            },
            Finding {
                rule: 1,
                start: 34,
                end: 54,
            },
        ];
        let wrap_in_clear = Some(&[false, true][..]);
        assert_eq!(e.find_masked_in_rows(text, wrap_in_clear).unwrap(), keys);
        assert_eq!(e.find(&text[..28]).unwrap(), wraps[..1]);
        assert_eq!(e.find_masked(&text[..28], wrap_in_clear).unwrap(), keys[..1]);
        assert_eq!(e.find_masked(&text[..28], Some(&[true, false])).unwrap(), wraps[..1]);
    }

    #[test]
    fn whole_rules_in_hyperscan_say_nothing_of_where_a_secret_begins() {
        // The first rule's cut, `()`, matches the empty text, which
        // Hyperscan refuses: every rule is handed over whole. A hit is
        // then a whole match's end, past the secret's.
        let rules = [
            rule("empty-cut", r"([a-z]{0,9});"),
            rule("key", r"key=([a-z0-9]{20,40})\b"),
        ];
        let e = Engine::new(&rules, [0; 32]).unwrap();
        let hit = Hit {
            rule: 1,
            first_end: 40,
            last_end: 40,
        };
        assert_eq!(e.secret_extent(&hit, 0, 40), None);
        // Cut alone, the key rule's secret begins 16 bytes before a hit.
        let alone = Engine::new(&rules[1..], [0; 32]).unwrap();
        let hit = Hit { rule: 0, ..hit };
        assert_eq!(alone.secret_extent(&hit, 0, 40), Some(24..40));
    }

    /// The engine keeps a rule's word on where its secret begins only as
    /// `check_first_pass` leaves it: checked on a rule of 100 keywords
    /// before 400 letters (about 42 KB of examples), taken from one of 200
    /// (about 84 KB: more than the check reads; its hits are then all
    /// confirmed).
    #[test]
    fn a_rule_keeps_where_its_secret_begins_only_when_checked() {
        let hit = Hit {
            rule: 0,
            first_end: 80,
            last_end: 80,
        };
        for (n, kept) in [(100, true), (200, false)] {
            let keywords: Vec<String> = (0..n).map(|k| format!("k{k:03}")).collect();
            let pattern = format!("(?:{})[a-z]{{400}}=([a-z]{{16,24}})\\b", keywords.join("|"));
            let e = Engine::new(&[rule("keywords", &pattern)], [0; 32]).unwrap();
            assert_eq!(e.secret_extent(&hit, 0, 100), kept.then_some(64..100), "{n} keywords");
        }
    }

    /// What the skip in `find_in_values` rests on: Hyperscan (the cut)
    /// and the regex (confirmation) read a rule alike, so every secret
    /// confirmation finds begins `secret_back` bytes before an end
    /// Hyperscan reports. Checked for every built-in rule cut in its
    /// secret, on every example `examples` makes of its pattern (every
    /// alternative, each class's edge bytes, optional parts present and
    /// absent, repetitions once more than their minimum), each example
    /// alone as a value and after other bytes in the same value.
    #[test]
    fn every_built_in_secret_begins_its_cut_length_before_an_end_hyperscan_reports() {
        let rules = super::super::assemble(None, &[], Vec::new()).expect("built-in rules");
        let e = Engine::new(&rules, [0; 32]).unwrap();
        let db = e.db.as_ref().expect("a database");
        let scratch = db.alloc_scratch().unwrap();
        let (mut rules_checked, mut secrets_checked) = (0, 0);
        for (k, c) in e.rules.iter().enumerate() {
            let Some(back) = c.secret_back else { continue };
            rules_checked += 1;
            let examples = super::super::examples::matched_examples(&c.pattern).expect("examples");
            for ex in examples {
                for before in [&b""[..], b"value ", b"x=1 "] {
                    let value = [before, &ex, b"\n"].concat();
                    let end = value.len() - 1;
                    let mut ends = Vec::new();
                    db.scan(&value, &scratch, |id: u32, _from: u64, to: u64, _flags: u32| {
                        if id as usize == k {
                            ends.push(to as usize);
                        }
                        Matching::Continue
                    })
                    .unwrap();
                    let (Some(&first_end), Some(&last_end)) = (ends.iter().min(), ends.iter().max()) else {
                        // `check_first_pass` requires a hit in each example
                        // alone; after other bytes before it the example may
                        // no longer match (a `^`, a `\b`).
                        assert!(
                            !before.is_empty(),
                            "{}: no hit in {:?}",
                            c.id,
                            String::from_utf8_lossy(&ex)
                        );
                        continue;
                    };
                    let hit = Hit {
                        rule: k as u32,
                        first_end,
                        last_end,
                    };
                    let mut found = Vec::new();
                    e.confirm(&value, 0, end, &hit, Reach::Value, &mut found);
                    for f in found {
                        secrets_checked += 1;
                        assert!(
                            ends.contains(&(f.start + back)),
                            "{}: the secret at {}..{} of {:?} does not begin {back} bytes before an end Hyperscan reports ({ends:?})",
                            c.id,
                            f.start,
                            f.end,
                            String::from_utf8_lossy(&value)
                        );
                    }
                }
            }
        }
        // 223 when this was written: the engine's own check (`check_first_pass`)
        // took the word from none of them.
        assert!(rules_checked >= 223, "{rules_checked} rules cut in their secret");
        assert!(secrets_checked > 4000, "{secrets_checked} secrets");
    }

    /// A match dropped for its secret (entropy, validator) does not hide a
    /// real match that starts inside it: the search goes on from the byte
    /// after the dropped match's start, not from its end.
    #[test]
    fn a_dropped_match_does_not_hide_a_secret_inside_it() {
        let e = &engines_with_short_and_whole_uri_hosts().0;
        let real = "Zx9vQ2mLp7Rt4kWsAb12Cd34";
        let placeholder = format!("secret={} ", "a".repeat(24));
        let text_after = " the rotation is due next month;".repeat(300);
        for (head, tail) in [
            ("secret=".to_string(), ""),
            // A long rule's match from the value's start, longer than the
            // window the rule was searched in before.
            (format!("secret{}=", "\t".repeat(WINDOW + 10)), ""),
            // Two dropped matches before it, and 9 KB after: the bound on
            // searching again counts what is read again, not the rest.
            (format!("{placeholder}{placeholder}secret="), text_after.as_str()),
        ] {
            let value = format!("{head}{}secret={real} end{tail}", "a".repeat(150));
            let at = value.find(real).unwrap();
            assert_masked_alone_and_in_a_batch(e, &value, (at, at + real.len()), &format!("{} bytes", value.len()));
        }
    }

    /// Rows (COPY data): a long rule is searched from the start of its
    /// hit's row, so a key block's first line in one row and a last line far
    /// below make no match over the rows between (the same text as one value
    /// is one key), while a key block longer than the window in one row is
    /// found whole.
    #[test]
    fn rows_far_apart_make_no_match_together() {
        let e = &engines_with_short_and_whole_uri_hosts().0;
        let rows: String = (0..2000).map(|i| format!("{i}\tcustomer {i}\tactive\n")).collect();
        assert!(rows.len() > 4 * WINDOW);
        for (begin, end) in [
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----",
                "-----END PGP PRIVATE KEY BLOCK-----",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"),
        ] {
            let text = format!("0\t{begin}\n{rows}1\t{end}\n");
            let in_rows = e.find_in_rows(text.as_bytes()).unwrap();
            assert!(
                in_rows.iter().all(|f| f.end - f.start <= 2 * WINDOW),
                "{begin}: {:?}",
                in_rows.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>()
            );
            let as_value = e.find(text.as_bytes()).unwrap();
            assert!(
                as_value.iter().any(|f| f.end - f.start > rows.len()),
                "{begin}: one value is one key"
            );
        }
        // A key block shorter than the window in a CSV value, whose newlines
        // CSV writes as they are: it spans rows, and is found whole.
        let key = format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}-----END RSA PRIVATE KEY-----",
            (0..40)
                .map(|i| format!("MIIJKQIBAAKCAgEAx7Vq9Lm3Zp2Wr8Tn5Kd1Hs4Gf6Jc0Yb{i:04}\n"))
                .collect::<String>()
        );
        let text = format!("{rows}7,deploy,\"{key}\"\n{rows}");
        let at = text.find("-----BEGIN").unwrap();
        let in_rows = e.find_in_rows(text.as_bytes()).unwrap();
        assert!(
            in_rows.iter().any(|f| f.start <= at && f.end >= at + key.len()),
            "a CSV value's key"
        );
        // A key block longer than the window in one row (COPY's text format
        // writes a value's newlines as `\n`) is found whole.
        let body: String = (0..200)
            .map(|i| format!("MIIJKQIBAAKCAgEAx7Vq9Lm3Zp2Wr8Tn5Kd1Hs4Gf6Jc0Yb{i:04}\\n"))
            .collect();
        for (begin, end) in [
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\\n\\n",
                "-----END PGP PRIVATE KEY BLOCK-----",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\\n", "-----END RSA PRIVATE KEY-----"),
        ] {
            let key = format!("{begin}{body}{end}");
            assert!(key.len() > WINDOW);
            let text = format!("{rows}7\tdeploy\t{key}\n{rows}");
            let at = text.find("-----BEGIN").unwrap();
            let in_rows = e.find_in_rows(text.as_bytes()).unwrap();
            assert!(
                in_rows.iter().any(|f| f.start <= at && f.end >= at + key.len()),
                "{begin}: {:?}",
                in_rows.iter().map(|f| (f.start, f.end)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn finds_and_bounds_secrets() {
        let e = Engine::new(&[rule("aws", r"\b((?:AKIA|ASIA)[A-Z0-9]{16})\b")], [7; 32]).unwrap();
        let data = b"key=AKIAABCDEFGHIJKLMNOP and ASIAABCDEFGHIJKLMNOQ.";
        let f = e.find(data).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(&data[f[0].start..f[0].end], b"AKIAABCDEFGHIJKLMNOP");
        assert_eq!(&data[f[1].start..f[1].end], b"ASIAABCDEFGHIJKLMNOQ");
        assert!(e.find(b"AKIAABCDEFGHIJKLMNO").unwrap().is_empty());
    }

    #[test]
    fn masks() {
        let key = [1; 32];
        let mut v = Vec::new();
        mask_into(MaskKind::Redact, "aws", &key, b"AKIAABCDEFGHIJKLMNOP", &mut v);
        assert_eq!(v, b"[MASKED:aws]");
        v.clear();
        mask_into(MaskKind::Partial, "aws", &key, b"AKIAABCDEFGHIJKLMNOP", &mut v);
        assert_eq!(v, b"****************MNOP");
        let mut a = Vec::new();
        let mut b = Vec::new();
        mask_into(MaskKind::Hash, "aws", &key, b"s3cret-value", &mut a);
        mask_into(MaskKind::Hash, "aws", &key, b"s3cret-value", &mut b);
        assert_eq!(a, b, "hash masks are stable");
        let mut c = Vec::new();
        mask_into(MaskKind::Hash, "aws", &[2; 32], b"s3cret-value", &mut c);
        assert_ne!(a, c, "and keyed");
        assert!(String::from_utf8(a).unwrap().starts_with("[HASH:aws:"));
    }

    #[test]
    fn entropy_and_validators() {
        assert!(entropy(b"aaaaaaaa") < 0.1);
        assert!((entropy(b"abcd") - 2.0).abs() < 1e-9);
        assert!((entropy(b"aabb") - 1.0).abs() < 1e-9);
        let long: Vec<u8> = (0..2000u32).map(|i| (i % 7) as u8).collect();
        assert!((entropy(&long) - 7f64.log2()).abs() < 1e-3);
        // A secret of exactly a rule's threshold meets it.
        let e = Engine::new(
            &[Rule {
                entropy: Some(3.0),
                ..rule("t", r"tok=([A-Z]{48})")
            }],
            [0; 32],
        )
        .unwrap();
        let f = e.find(b"tok=ABCDEFGHABCDEFGHABCDEFGHABCDEFGHABCDEFGHABCDEFGH").unwrap();
        assert_eq!(f.len(), 1, "8 distinct bytes, 6 of each: 3 bits a byte");
        assert!(entropy(b"a8Fk2Lq9Zx7Vb3Nm") > 3.5);
        // The short path (one pass over the bytes) agrees with the formula.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 1..300usize {
            let alphabet = 1 + len % 23;
            let s: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b'a' + (x % alphabet as u64) as u8
                })
                .collect();
            let mut counts = [0f64; 256];
            s.iter().for_each(|&b| counts[b as usize] += 1.0);
            let n = len as f64;
            let direct: f64 = -counts
                .iter()
                .filter(|&&c| c > 0.0)
                .map(|&c| c / n * (c / n).log2())
                .sum::<f64>();
            assert!(
                (entropy(&s) - direct).abs() < 1e-9,
                "{len}: {} vs {direct}",
                entropy(&s)
            );
        }
        assert!(luhn(b"4111111111111111"));
        assert!(!luhn(b"4111111111111112"));
        assert!(jwt(b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"));
        assert!(!jwt(b"eyJzdWIiOiIxIn0.eyJzdWIiOiIxIn0.sig"));
    }

    #[test]
    fn same_length_mask() {
        let e = Engine::new(&[rule("aws", r"AKIA[A-Z0-9]{16}")], [0; 32]).unwrap();
        let mut s = *b"AKIAABCDEFGHIJKLMNOP";
        e.mask_same_len(0, &mut s);
        assert_eq!(&s, b"[MASKED:aws]********");
    }
}
