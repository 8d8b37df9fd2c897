//! Where in the document a validation error is: a key path, turned into the
//! line and the dotted key of the deepest part the text holds.

/// A validation error: the key path it is about and what is wrong.
pub(super) type Invalid = (Vec<PathPart>, String);

/// One step of a key path.
#[derive(Debug, Clone)]
pub enum PathPart {
    Key(&'static str),
    /// A key named by the document (a role name, a rule id).
    Name(String),
    Idx(usize),
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

pub(super) fn key_from_message(m: &str) -> Option<String> {
    // serde messages name fields as "unknown field `x`" or "missing field `x`".
    let start = m.find('`')? + 1;
    let end = start + m[start..].find('`')?;
    Some(m[start..end].to_string())
}

/// The line of the deepest part of `path` present in the document, and the
/// dotted key.
pub(super) fn locate(text: &str, path: &[PathPart]) -> (usize, String) {
    let key = path
        .iter()
        .map(|p| match p {
            PathPart::Key(k) => k.to_string(),
            PathPart::Name(k) => k.clone(),
            PathPart::Idx(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(".")
        .replace(".[", "[");
    let Ok(doc) = text.parse::<toml_edit::ImDocument<String>>() else {
        return (0, key);
    };
    let mut item: &toml_edit::Item = doc.as_item();
    let mut line = 1;
    for p in path {
        let next = match p {
            PathPart::Key(k) => item.get(k),
            PathPart::Name(k) => item.get(k.as_str()),
            PathPart::Idx(i) => item.get(*i),
        };
        match next {
            Some(n) => {
                item = n;
                let span = match n {
                    toml_edit::Item::Value(v) => v.span(),
                    toml_edit::Item::Table(t) => t.span(),
                    toml_edit::Item::ArrayOfTables(a) => a.span(),
                    toml_edit::Item::None => None,
                };
                if let Some(s) = span {
                    line = line_of(text, s.start);
                }
            }
            None => break,
        }
    }
    (line, key)
}
