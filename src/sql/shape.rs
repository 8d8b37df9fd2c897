//! Statement shapes: texts that differ only in their constants share one
//! classification, so a client that inlines values (`WHERE id = 42`,
//! `WHERE id = 43`, …) costs one parse and walk per shape, not per text.
//!
//! A text's shape is what libpg_query's normalisation makes of it (the one
//! `pg_stat_statements` uses): PostgreSQL's own grammar parses the text and
//! every constant token it found (`42`, `'x'`, `true`, `NULL`, a setting's
//! value, a `NOTIFY` payload, …) is replaced by `$n`; everything else is
//! kept byte for byte. Two texts with the same shape therefore differ only
//! in constants, or where one has a constant and the other a `$n`
//! parameter. No lexer of ours decides where a constant ends, so no quoting
//! trick can make a write take a read's shape.
//!
//! A classification is shared through its shape only when it cannot depend
//! on those constants, and the classifier checks that twice:
//!
//! 1. The rules that read a constant's value (a setting's value, `EXPLAIN`'s
//!    `ANALYZE` option, a constant truth in `WHERE … OR 1 = 1`,
//!    `set_config`'s arguments, a subscript) call [`note_value_read`]; a
//!    classification during which one did is kept for its exact text only.
//!    A new rule that looks at a constant must do the same: that is what
//!    keeps `DELETE … WHERE id = 5 OR 1 = 1` from taking the shape of
//!    `DELETE … WHERE id = 5 OR 1 = 2`.
//! 2. The shape itself (constants as parameters, values unknown) must
//!    classify to exactly the same result, or it is not shared. This is
//!    checked when a second text of the shape comes, so texts whose shape
//!    never repeats pay only the normalisation.
//! 3. The shape with a value in every slot ([`with_values`]) must parse
//!    too. A text that cannot be fully parsed is `Unknown`, and a shape's
//!    texts differ in how deep their trees are: a `NULL` or a `$n` is one
//!    message shallower than a constant with a value, so near the parse
//!    tree's depth limit one text of a shape parses and another does not.
//!    With values everywhere the shape is as deep as any of its texts.
//!
//! A shape that does not parse, or a text that cannot be normalised, is
//! simply not shared: the text is classified on its own, as before.

use std::cell::Cell;
use std::sync::Arc;

use super::Classification;

/// What a classifier knows of a shape.
#[derive(Clone)]
pub(super) enum Known {
    /// One text of it was classified, reading no constant's value: if
    /// another text comes, the shape is checked and the classification
    /// shared.
    SeenOnce(Arc<Classification>),
    /// Checked: the classification of every text of this shape.
    Shared(Arc<Classification>),
    /// A constant's value decides, or the shape does not classify alike:
    /// each text is classified on its own.
    Unshared,
}

thread_local! {
    /// Whether a rule read a constant's value since [`track_value_reads`]
    /// began. Classification runs on one thread (the parse may move to a
    /// bigger stack, not to another thread), so a thread-local reaches
    /// every rule without threading a context through all of them.
    static VALUE_READ: Cell<bool> = const { Cell::new(false) };
}

/// Called by every rule that decides on a constant's value.
pub(super) fn note_value_read() {
    VALUE_READ.with(|v| v.set(true));
}

/// Runs a classification, and says whether any rule read a constant's
/// value while it ran.
pub(super) fn track_value_reads<T>(f: impl FnOnce() -> T) -> (T, bool) {
    VALUE_READ.with(|v| v.set(false));
    let out = f();
    let read = VALUE_READ.with(|v| v.replace(false));
    (out, read)
}

/// The text's shape, or `None` when libpg_query cannot normalise it (a
/// syntax error, a NUL byte, too long to parse here).
pub(super) fn of(sql: &str) -> Option<String> {
    super::deep_stack(sql.len(), || pg_query::normalize(sql).ok())
        .ok()
        .flatten()
}

/// The shape with `'0'` in place of every `$n`: a value-bearing constant in
/// every slot, so its parse tree is as deep as any text of the shape has.
/// (A `$n` inside a string or identifier is changed too; that only makes
/// the check stricter.)
pub(super) fn with_values(shape: &str) -> String {
    let bytes = shape.as_bytes();
    let mut out = String::with_capacity(shape.len() + 8);
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            out.push_str(&shape[copied..i]);
            out.push_str("'0'");
            i += 1;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&shape[copied..]);
    out
}
