//! What comes back from the server for one command, read packet by packet:
//! where a result set's columns, rows and end are, its rows' values
//! masked, and what the client gets in place of what gatehouse withholds.
//!
//! The reader is fed each message's payload and says what to do with it;
//! the relay (`session`) does the I/O and keeps sequence ids right when a
//! masked row needs a different number of packets than the original.

use crate::scan::engine::resolve_overlaps;
use crate::scan::{values::find_in_values, Engine, Finding, Hit};
use crate::wire::mysql::bytes::{lenenc_int_len, put_lenenc_bytes, Reader};
use crate::wire::mysql::response::{
    EofPacket, ErrPacket, OkPacket, EOF_HEADER, ERR_HEADER, LOCAL_INFILE_HEADER, OK_HEADER,
};
use crate::wire::mysql::rows::{binary_row_values, column_definition_values, text_row_values, Column};
use crate::wire::mysql::{status, MyWireError};

/// What kind of answer a command gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// COM_QUERY (text rows) or COM_STMT_EXECUTE (binary rows): OK, ERR,
    /// LOCAL INFILE, or result sets, possibly several.
    Results { binary: bool },
    /// COM_STMT_FETCH: binary rows of an open cursor, then EOF.
    Fetch { columns: CursorColumns },
    /// COM_STMT_PREPARE: PREPARE_OK with parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions up to EOF.
    FieldList,
    /// One message (OK, ERR, EOF, or COM_STATISTICS' string).
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    First,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    PrepareParams { left: u64 },
    PrepareParamsEof,
    PrepareColumns { left: u64 },
    PrepareColumnsEof,
    FieldDefs,
    Done,
}

/// The columns of a result left open as a cursor: its rows come later, by
/// COM_STMT_FETCH, without definitions of their own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CursorColumns {
    pub types: Vec<u8>,
    pub flags: Vec<u16>,
    /// Kept when the reader keeps names (a recording lists them).
    pub names: Vec<Vec<u8>>,
}

/// What to do with one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Act {
    /// Pass it as it came.
    Keep,
    /// Send this payload in its place.
    Replace(Vec<u8>),
    /// The server asks for a local file (LOAD DATA LOCAL INFILE).
    LocalInfile,
}

/// What the message just read was, for a recording of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing a recording keeps (a column definition, a prepare's parts…).
    Other,
    /// The column definitions are complete and rows follow.
    ColumnsDone,
    Row,
    /// The EOF after a result set's rows.
    RowsEnd,
    /// An OK that is a result of its own: affected rows.
    Ok(u64),
    /// The server's error (`Reader41::error`).
    Error,
}

/// The reply to COM_STMT_PREPARE, as the server confirmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    pub statement_id: u32,
    pub params: u16,
    pub columns: u16,
}

/// Scratch buffers of the masking pass, kept for the session.
#[derive(Default)]
pub struct Scratch {
    values: Vec<(usize, usize, usize)>,
    seg: Vec<u8>,
    ends: Vec<usize>,
    hits: Vec<Hit>,
    found: Vec<(usize, Finding)>,
}

/// Reads one command's answer.
pub struct Reader41 {
    shape: Shape,
    stage: Stage,
    caps: u32,
    /// Column types of the current result set (for binary rows).
    pub types: Vec<u8>,
    /// Column flags of the current result set (unsigned, for recordings).
    pub flags: Vec<u16>,
    /// Column names of the current result set, when `keep_names` is set
    /// (a recording lists them).
    pub names: Vec<Vec<u8>>,
    pub keep_names: bool,
    binary: bool,
    /// Rows of this answer so far.
    pub rows: u64,
    /// The server's last status flags (OK or EOF).
    pub status: u16,
    /// Set by a PREPARE_OK.
    pub prepared: Option<Prepared>,
    /// A binary result left a cursor open: rows come by COM_STMT_FETCH.
    pub cursor: Option<CursorColumns>,
    /// The server's error, if the answer was one (code, message as sent).
    pub error: Option<(u16, String)>,
    /// Affected rows of the last OK.
    pub affected: u64,
    /// What the last message was.
    pub event: Event,
}

impl Reader41 {
    pub fn new(shape: Shape, caps: u32) -> Reader41 {
        let (stage, columns, binary) = match &shape {
            Shape::Fetch { columns } => (Stage::Rows, columns.clone(), true),
            Shape::FieldList => (Stage::FieldDefs, CursorColumns::default(), false),
            Shape::Results { binary } => (Stage::First, CursorColumns::default(), *binary),
            _ => (Stage::First, CursorColumns::default(), false),
        };
        Reader41 {
            shape,
            stage,
            caps,
            types: columns.types,
            flags: columns.flags,
            names: columns.names,
            keep_names: false,
            binary,
            rows: 0,
            status: 0,
            prepared: None,
            cursor: None,
            error: None,
            affected: 0,
            event: Event::Other,
        }
    }

    pub fn done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Whether the message just read is a row of a result set.
    pub fn in_rows(&self) -> bool {
        self.stage == Stage::Rows
    }

    /// The current result set's rows are binary (COM_STMT_EXECUTE, fetch).
    pub fn binary(&self) -> bool {
        self.binary
    }

    /// Reads one message. `mask` is called for rows and errors that hold
    /// values to scan (it returns a replacement payload when something was
    /// masked).
    pub fn on_message(&mut self, p: &[u8], mask: &mut MaskFn<'_>) -> Result<Act, ReadFailure> {
        let first = *p.first().ok_or(ReadFailure::Protocol(MyWireError::Truncated))?;
        let is_eof = first == EOF_HEADER && p.len() < 9;
        self.event = Event::Other;
        if first == ERR_HEADER {
            self.event = Event::Error;
            let e = ErrPacket::parse(p)?;
            self.error = Some((e.code, String::from_utf8_lossy(e.message).into_owned()));
            self.stage = Stage::Done;
            return self.masked(mask(Value::Error(p))?);
        }
        match self.stage {
            Stage::First => match first {
                OK_HEADER if self.shape == Shape::Prepare => {
                    let mut r = Reader::new(p);
                    r.u8()?;
                    let statement_id = r.u32()?;
                    let columns = r.u16()?;
                    let params = r.u16()?;
                    self.prepared = Some(Prepared {
                        statement_id,
                        params,
                        columns,
                    });
                    self.stage = if params > 0 {
                        Stage::PrepareParams { left: params as u64 }
                    } else if columns > 0 {
                        Stage::PrepareColumns { left: columns as u64 }
                    } else {
                        Stage::Done
                    };
                    Ok(Act::Keep)
                }
                OK_HEADER => {
                    let ok = OkPacket::parse(p, self.caps)?;
                    self.status = ok.status;
                    self.affected += ok.affected_rows;
                    self.event = Event::Ok(ok.affected_rows);
                    self.stage = self.after_end(ok.status);
                    Ok(Act::Keep)
                }
                _ if self.shape == Shape::Single => {
                    if is_eof {
                        if let Ok(e) = EofPacket::parse(p) {
                            self.status = e.status;
                        }
                    }
                    self.stage = Stage::Done;
                    Ok(Act::Keep)
                }
                LOCAL_INFILE_HEADER if matches!(self.shape, Shape::Results { .. }) => Ok(Act::LocalInfile),
                _ if matches!(self.shape, Shape::Results { .. }) => {
                    let mut r = Reader::new(p);
                    let n = r.lenenc_int()?;
                    if !r.is_empty() || n == 0 || n > 4096 {
                        return Err(ReadFailure::Protocol(MyWireError::Malformed("bad column count")));
                    }
                    self.types.clear();
                    self.flags.clear();
                    self.names.clear();
                    self.stage = Stage::Columns { left: n };
                    Ok(Act::Keep)
                }
                _ => Err(ReadFailure::Protocol(MyWireError::Malformed(
                    "unexpected first message of a reply",
                ))),
            },
            Stage::Columns { left } => {
                let c = Column::parse(p)?;
                self.types.push(c.column_type);
                self.flags.push(c.flags);
                if self.keep_names {
                    self.names.push(c.name);
                }
                self.stage = if left <= 1 {
                    Stage::ColumnsEof
                } else {
                    Stage::Columns { left: left - 1 }
                };
                Ok(Act::Keep)
            }
            Stage::ColumnsEof => {
                if !is_eof {
                    return Err(ReadFailure::Protocol(MyWireError::Malformed(
                        "column definitions without their EOF",
                    )));
                }
                let e = EofPacket::parse(p)?;
                self.status = e.status;
                if self.binary && e.status & status::CURSOR_EXISTS != 0 {
                    self.cursor = Some(CursorColumns {
                        types: self.types.clone(),
                        flags: self.flags.clone(),
                        names: self.names.clone(),
                    });
                    self.stage = Stage::Done;
                } else {
                    self.stage = Stage::Rows;
                    self.event = Event::ColumnsDone;
                }
                Ok(Act::Keep)
            }
            Stage::Rows if is_eof => {
                self.event = Event::RowsEnd;
                let e = EofPacket::parse(p)?;
                self.status = e.status;
                self.stage = self.after_end(e.status);
                Ok(Act::Keep)
            }
            Stage::Rows => {
                self.rows += 1;
                self.event = Event::Row;
                let v = if self.binary {
                    Value::BinaryRow(p, &self.types)
                } else {
                    Value::TextRow(p, self.types.len())
                };
                let r = mask(v)?;
                self.masked(r)
            }
            Stage::PrepareParams { left } => {
                Column::parse(p)?;
                self.stage = if left <= 1 {
                    Stage::PrepareParamsEof
                } else {
                    Stage::PrepareParams { left: left - 1 }
                };
                Ok(Act::Keep)
            }
            Stage::PrepareParamsEof | Stage::PrepareColumnsEof => {
                if !is_eof {
                    return Err(ReadFailure::Protocol(MyWireError::Malformed(
                        "definitions without their EOF",
                    )));
                }
                let columns = self.prepared.map_or(0, |p| p.columns);
                self.stage = if self.stage == Stage::PrepareParamsEof && columns > 0 {
                    Stage::PrepareColumns { left: columns as u64 }
                } else {
                    Stage::Done
                };
                Ok(Act::Keep)
            }
            Stage::PrepareColumns { left } => {
                Column::parse(p)?;
                self.stage = if left <= 1 {
                    Stage::PrepareColumnsEof
                } else {
                    Stage::PrepareColumns { left: left - 1 }
                };
                Ok(Act::Keep)
            }
            Stage::FieldDefs if is_eof => {
                self.stage = Stage::Done;
                Ok(Act::Keep)
            }
            Stage::FieldDefs => {
                Column::parse(p)?;
                // COM_FIELD_LIST sends each column's default value: data.
                let r = mask(Value::ColumnDefinition(p))?;
                self.masked(r)
            }
            Stage::Done => Err(ReadFailure::Protocol(MyWireError::Malformed(
                "a message after the end of a reply",
            ))),
        }
    }

    /// After a LOCAL INFILE exchange the server answers OK or ERR.
    pub fn after_local_infile(&mut self) {
        self.stage = Stage::First;
    }

    fn after_end(&self, status: u16) -> Stage {
        if status & status::MORE_RESULTS_EXISTS != 0 && matches!(self.shape, Shape::Results { .. }) {
            Stage::First
        } else {
            Stage::Done
        }
    }

    fn masked(&self, r: Option<Vec<u8>>) -> Result<Act, ReadFailure> {
        Ok(match r {
            Some(p) => Act::Replace(p),
            None => Act::Keep,
        })
    }
}

/// Masks a row or error: a replacement payload, `None` when nothing
/// changes, `Err` when it cannot be scanned.
pub type MaskFn<'f> = dyn FnMut(Value<'_>) -> Result<Option<Vec<u8>>, String> + 'f;

/// A message whose values may hold secrets.
pub enum Value<'a> {
    TextRow(&'a [u8], usize),
    BinaryRow(&'a [u8], &'a [u8]),
    Error(&'a [u8]),
    /// A column definition's names and default value.
    ColumnDefinition(&'a [u8]),
}

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadFailure {
    #[error("the server broke the protocol: {0}")]
    Protocol(#[from] MyWireError),
    /// A value could not be scanned: the rest is withheld.
    #[error("{0}")]
    Scan(String),
}

impl From<String> for ReadFailure {
    fn from(s: String) -> Self {
        ReadFailure::Scan(s)
    }
}

/// Masks the secrets in a row or an error message. `None`: nothing to
/// change. Each masked rule is reported to `counted`.
pub fn mask_value(
    engine: &Engine,
    applies: Option<&[bool]>,
    scratch: &mut Scratch,
    v: Value<'_>,
    counted: &mut dyn FnMut(u32),
) -> Result<Option<Vec<u8>>, String> {
    match v {
        Value::Error(p) => {
            let e = ErrPacket::parse(p).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(e.message);
            let masked = engine.mask_text(&text);
            if masked == text {
                return Ok(None);
            }
            counted(0);
            let mut out = Vec::with_capacity(p.len());
            ErrPacket {
                code: e.code,
                sql_state: e.sql_state,
                message: masked.as_bytes(),
            }
            .write(&mut out);
            Ok(Some(out))
        }
        Value::TextRow(p, n) => {
            let spans = text_row_values(p, n).map_err(|e| e.to_string())?;
            mask_spans(
                engine,
                applies,
                scratch,
                p,
                spans.iter().map(|s| (s.range.clone(), s.textual)),
                counted,
            )
        }
        Value::ColumnDefinition(p) => {
            let spans = column_definition_values(p).map_err(|e| e.to_string())?;
            mask_spans(
                engine,
                applies,
                scratch,
                p,
                spans.iter().map(|s| (s.range.clone(), s.textual)),
                counted,
            )
        }
        Value::BinaryRow(p, types) => {
            let spans = binary_row_values(p, types).map_err(|e| e.to_string())?;
            mask_spans(
                engine,
                applies,
                scratch,
                p,
                spans.iter().map(|s| (s.range.clone(), s.textual)),
                counted,
            )
        }
    }
}

/// Masks the values at `spans` (each a length-encoded string in `p`), with
/// one scanning pass over them all; rebuilds the payload only when a value
/// changes, each changed value with its new length.
fn mask_spans(
    engine: &Engine,
    applies: Option<&[bool]>,
    s: &mut Scratch,
    p: &[u8],
    spans: impl Iterator<Item = (Option<std::ops::Range<usize>>, bool)>,
    counted: &mut dyn FnMut(u32),
) -> Result<Option<Vec<u8>>, String> {
    s.values.clear();
    for (i, (range, textual)) in spans.enumerate() {
        if let (Some(r), true) = (range, textual) {
            if !r.is_empty() {
                s.values.push((r.start, r.end, i));
            }
        }
    }
    s.found.clear();
    find_in_values(
        engine,
        p,
        &s.values,
        &mut s.seg,
        &mut s.ends,
        &mut s.hits,
        &mut s.found,
        applies,
    )
    .map_err(|e| e.to_string())?;
    if s.found.is_empty() {
        return Ok(None);
    }
    s.found.sort_by_key(|(i, f)| (*i, f.start));
    let mut out = Vec::with_capacity(p.len() + 64);
    let mut at = 0;
    let mut k = 0;
    while k < s.found.len() {
        let idx = s.found[k].0;
        let Some(&(vs, ve, _)) = s.values.iter().find(|v| v.2 == idx) else {
            k += 1;
            continue;
        };
        let mut findings: Vec<Finding> = Vec::new();
        while k < s.found.len() && s.found[k].0 == idx {
            findings.push(s.found[k].1);
            k += 1;
        }
        resolve_overlaps(&mut findings);
        let prefix = lenenc_int_len((ve - vs) as u64);
        out.extend_from_slice(&p[at..vs - prefix]);
        let mut value = Vec::with_capacity(ve - vs + 32);
        let mut q = vs;
        for f in &findings {
            if f.start < q {
                continue;
            }
            value.extend_from_slice(&p[q..f.start]);
            engine.mask(f.rule, &p[f.start..f.end], &mut value);
            counted(f.rule);
            q = f.end;
        }
        value.extend_from_slice(&p[q..ve]);
        put_lenenc_bytes(&mut out, &value);
        at = ve;
    }
    out.extend_from_slice(&p[at..]);
    Ok(Some(out))
}
