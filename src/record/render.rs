//! Recordings as people and spreadsheets read them: a plain-text
//! transcript, CSV, or JSON lines; used by `gatehouse replay` and the admin
//! API's downloads.

use serde_json::Value;
use std::fmt::Write as _;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "transcript" => Ok(Format::Text),
            "json" | "jsonl" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("`{s}` is not a format: text, json or csv")),
        }
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "seq,time,kind,n,class,decision,sql,params,rows,tag,error,detail\n";

/// `HH:MM:SS.mmm` (UTC) of a time in microseconds.
pub fn clock(t_us: u64) -> String {
    let s = t_us / 1_000_000;
    let ms = (t_us / 1000) % 1000;
    format!("{:02}:{:02}:{:02}.{ms:03}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn csv_field(out: &mut String, v: &str) {
    // A spreadsheet would run a field that starts like a formula: an
    // agent's statement or a row value must stay text.
    let guarded;
    let v = if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{v}");
        guarded.as_str()
    } else {
        v
    };
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One record as a line of the chosen format (newline included).
pub fn line(v: &Value, fmt: Format) -> String {
    match fmt {
        Format::Json => {
            let mut l = v.to_string();
            l.push('\n');
            l
        }
        Format::Csv => {
            let kind = s(&v["kind"]);
            let err = if v["error"].is_object() {
                format!("{} {}", s(&v["error"]["code"]), s(&v["error"]["message"]))
            } else {
                String::new()
            };
            let detail = match kind.as_str() {
                "open" => format!(
                    "identity={} roles={} client={} target={}",
                    s(&v["identity"]),
                    v["roles"],
                    s(&v["client"]),
                    s(&v["target"])
                ),
                "review" => format!(
                    "review={} outcome={} approvers={}",
                    s(&v["review"]),
                    s(&v["outcome"]),
                    v["approvers"]
                ),
                "close" => format!("end={} statements={}", s(&v["end"]), s(&v["statements"])),
                "rows" => v["rows"].to_string(),
                "gap" => format!("rows={} bytes={}", s(&v["rows"]), s(&v["bytes"])),
                "notice" => s(&v["message"]),
                _ => String::new(),
            };
            let fields = [
                s(&v["seq"]),
                s(&v["t"]),
                kind,
                s(&v["n"]),
                s(&v["class"]),
                s(&v["decision"]),
                s(&v["sql"]),
                if v["params"].is_null() {
                    String::new()
                } else {
                    v["params"].to_string()
                },
                s(&v["rows"]),
                s(&v["tag"]),
                err,
                detail,
            ];
            let mut out = String::new();
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(&mut out, f);
            }
            out.push('\n');
            out
        }
        Format::Text => text(v),
    }
}

fn text(v: &Value) -> String {
    let t = clock(v["t"].as_u64().unwrap_or(0));
    let mut o = String::new();
    match v["kind"].as_str().unwrap_or("") {
        "open" => {
            let _ = writeln!(
                o,
                "{t}  session {} opened: identity {} (roles {}) from {} to target {} as {}; TLS client={} upstream={}; results {}",
                s(&v["id"]),
                s(&v["identity"]),
                v["roles"].as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                s(&v["client"]),
                s(&v["target"]),
                s(&v["account"]),
                v["tls"]["client"],
                v["tls"]["upstream"],
                s(&v["results"]),
            );
        }
        "statement" => {
            let _ = write!(
                o,
                "{t}  #{} [{} {}] {}",
                s(&v["n"]),
                s(&v["class"]),
                s(&v["decision"]),
                s(&v["sql"])
            );
            if let Some(p) = v["params"].as_array() {
                let _ = write!(o, "  params {}", Value::Array(p.clone()));
            }
            if v["error"].is_object() {
                let _ = write!(o, "  -> {} {}", s(&v["error"]["code"]), s(&v["error"]["message"]));
            }
            if v["review"].is_object() {
                let _ = write!(
                    o,
                    "  (review {} {} by {})",
                    s(&v["review"]["review"]),
                    s(&v["review"]["outcome"]),
                    v["review"]["approvers"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default()
                );
            }
            o.push('\n');
        }
        "result" => {
            let _ = write!(o, "{t}    #{} ", s(&v["n"]));
            if v["error"].is_object() {
                let _ = write!(o, "ERROR {} {}", s(&v["error"]["code"]), s(&v["error"]["message"]));
            } else if !v["skipped"].is_null() {
                let _ = write!(o, "skipped: {}", s(&v["skipped"]));
            } else {
                let _ = write!(o, "{}", s(&v["tag"]));
                if let Some(c) = v["columns"].as_array() {
                    let _ = write!(o, "  columns {}", c.iter().map(s).collect::<Vec<_>>().join(","));
                }
            }
            if let Some(m) = v["masked"].as_object() {
                let _ = write!(
                    o,
                    "  masked {}",
                    m.iter().map(|(k, n)| format!("{k}:{n}")).collect::<Vec<_>>().join(",")
                );
            }
            if let Some(d) = v["duration_us"].as_u64() {
                let _ = write!(o, "  ({:.3} ms)", d as f64 / 1000.0);
            }
            o.push('\n');
        }
        "rows" => {
            if let Some(rows) = v["rows"].as_array() {
                for r in rows {
                    let cells: Vec<String> = r
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|c| if c.is_null() { "NULL".into() } else { s(c) })
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = writeln!(o, "{t}      | {}", cells.join(" | "));
                }
            }
        }
        "review" => {
            let _ = writeln!(
                o,
                "{t}  review {} {}{}",
                s(&v["review"]),
                s(&v["outcome"]),
                v["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
            );
        }
        "notice" => {
            let _ = writeln!(o, "{t}    {} {}", s(&v["severity"]), s(&v["message"]));
        }
        "notification" => {
            let _ = writeln!(o, "{t}    NOTIFY {}: {}", s(&v["channel"]), s(&v["payload"]));
        }
        "gap" => {
            let _ = writeln!(
                o,
                "{t}    [gap: {} rows, {} bytes not recorded]",
                s(&v["rows"]),
                s(&v["bytes"])
            );
        }
        "close" => {
            let _ = writeln!(
                o,
                "{t}  session closed ({}): {} statements, {} rows, {} bytes in, {} bytes out, {} values masked, {} ms",
                s(&v["end"]),
                s(&v["statements"]),
                s(&v["rows"]),
                s(&v["bytes_in"]),
                s(&v["bytes_out"]),
                s(&v["masked"]),
                s(&v["duration_ms"]),
            );
        }
        "seal" => {
            let _ = writeln!(o, "{t}  sealed after {} records", s(&v["records"]));
        }
        "admin" => {
            let _ = writeln!(
                o,
                "{t}  {} ({}) {} {}: {}",
                s(&v["who"]),
                v["roles"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                s(&v["action"]),
                s(&v["object"]),
                s(&v["outcome"])
            );
        }
        other => {
            let _ = writeln!(o, "{t}  {other} {v}");
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_fields_never_start_a_formula() {
        for (v, want) in [
            ("=1+1", "'=1+1"),
            ("+x", "'+x"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("a=b", "a=b"),
        ] {
            let mut out = String::new();
            csv_field(&mut out, v);
            assert_eq!(out, want);
        }
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let v = json!({"seq": 3, "t": 1, "kind": "statement", "n": 0, "class": "read", "decision": "allow",
                       "sql": "select 'a,b', \"x\"", "params": ["1"]});
        let l = line(&v, Format::Csv);
        assert_eq!(
            l,
            "3,1,statement,0,read,allow,\"select 'a,b', \"\"x\"\"\",\"[\"\"1\"\"]\",,,,\n"
        );
    }

    #[test]
    fn transcript_lines() {
        let v = json!({"t": 3_723_004_000u64, "kind": "statement", "n": 2, "class": "write", "decision": "deny",
                       "sql": "delete from t", "error": {"code": "42501", "message": "no"}});
        assert_eq!(text(&v), "01:02:03.004  #2 [write deny] delete from t  -> 42501 no\n");
    }
}
