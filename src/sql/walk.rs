//! A complete walk over a parse tree.
//!
//! `pg_query`'s own `nodes()` iterator visits only the nodes it needs for its
//! table and function summaries (it skips `LIMIT`, `VALUES` lists, locking
//! clauses, window definitions and more), so a side-effect function hidden in
//! one of those places would go unseen. Every protobuf type in `pg_query`
//! derives `serde::Serialize`, which lists *every* field of every node in
//! declaration order. [`Walker`] is a `serde::Serializer` that uses that as a
//! generic, exhaustive visitor: it serializes nothing, it only notes the facts
//! the classifier needs ([`Facts`]) as it passes the structs by name.
//!
//! Recursion depth is bounded by the tree, whose depth `prost` already bounds
//! when it decodes libpg_query's output (its recursion limit is 100 messages).

use serde::ser::{
    self, Impossible, Serialize, SerializeMap, SerializeSeq, SerializeStruct, SerializeStructVariant, SerializeTuple,
    SerializeTupleStruct, SerializeTupleVariant, Serializer,
};

use pg_query::protobuf::{AlterTableType, CmdType, OnConflictAction};

/// Any error type serde accepts; the walkers never fail on their own.
type Error = serde::de::value::Error;

/// One function call found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Call {
    /// The name as written, schema-qualified parts joined by `.`.
    pub name: String,
    /// The parts of the name as the parser gives them (a quoted name may
    /// hold a dot of its own).
    pub parts: Vec<String>,
    /// The first two arguments when they are plain constants
    /// (`set_config`'s setting name and value).
    pub consts: [Option<String>; 2],
}

/// What a walk over one statement found.
#[derive(Debug, Default)]
pub(super) struct Facts {
    pub inserts: u32,
    pub updates: u32,
    pub deletes: u32,
    pub merges: u32,
    /// A `MERGE … WHEN … THEN DELETE` action.
    pub merge_delete: bool,
    pub update_without_where: bool,
    pub delete_without_where: bool,
    /// `INSERT … ON CONFLICT DO UPDATE`.
    pub upsert: bool,
    /// A data-modifying statement inside a `WITH` clause.
    pub dml_in_cte: bool,
    /// `FOR UPDATE` / `FOR NO KEY UPDATE` / `FOR SHARE` / `FOR KEY SHARE`.
    pub locking: bool,
    /// `SELECT … INTO` (or the target of `CREATE TABLE AS`).
    pub into: bool,
    /// `ALTER TABLE … DROP COLUMN` / `DROP CONSTRAINT`.
    pub drop_column: bool,
    /// Column references (`ColumnRef`, and `CURRENT OF`) met.
    pub column_refs: u32,
    /// Casts and typed literals (`x::t`, `t 'literal'`) met.
    pub typecasts: u32,
    /// Names of utility statements nested below the root (`CREATE SCHEMA …
    /// CREATE TABLE … GRANT …`, SQL-standard function bodies).
    pub nested_utility: Vec<&'static str>,
    pub calls: Vec<Call>,
    /// Operators used, as written (`=`, `pg_catalog.+`), each once.
    pub operators: Vec<String>,
    /// Names the server may resolve to a function although the parse tree
    /// shows no call, each once: the field of `alias.name` or `(row).name`
    /// (attribute notation: `t.f` is `f(t)` when `t` has no column `f`), and
    /// the functions an older server calls for syntax this parser reads as
    /// SQL/JSON constructs (`json_object(…)`, `json_array(…)`, …).
    pub maybe_calls: Vec<String>,
    /// Relations named, `schema.name` or `name`, with their offsets in the
    /// text (the walk meets them in field order, not text order).
    pub tables: Vec<(i32, String)>,
    /// Relations that INSERT, UPDATE, DELETE or MERGE change, as in `tables`.
    pub dml_targets: Vec<String>,
    /// Names of common table expressions, so they are not listed as tables.
    pub ctes: Vec<String>,
}

impl Facts {
    fn maybe_call(&mut self, name: String) {
        if !name.is_empty() && !self.maybe_calls.contains(&name) {
            self.maybe_calls.push(name);
        }
    }
}

/// Walk `node` (a statement or any part of one) and add what it contains to
/// `facts`. `root` says `node` is the statement itself, so its own struct is
/// not counted as a nested utility statement.
pub(super) fn walk<T: Serialize + ?Sized>(node: &T, facts: &mut Facts) {
    // The walker itself never fails; an error could only come from a
    // `Serialize` impl refusing a value, which prost's derived impls never do.
    let _ = node.serialize(Walker {
        facts,
        root: true,
        in_cte: false,
    });
}

/// The exhaustive visitor.
struct Walker<'f> {
    facts: &'f mut Facts,
    root: bool,
    in_cte: bool,
}

impl<'f> Walker<'f> {
    fn child(facts: &mut Facts, in_cte: bool) -> Walker<'_> {
        Walker {
            facts,
            root: false,
            in_cte,
        }
    }
}

macro_rules! ignore_scalars {
    ($ok:expr) => {
        fn serialize_bool(self, _: bool) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_i8(self, _: i8) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_i16(self, _: i16) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_i64(self, _: i64) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_u8(self, _: u8) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_u16(self, _: u16) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_u32(self, _: u32) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_u64(self, _: u64) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_f32(self, _: f32) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_f64(self, _: f64) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_char(self, _: char) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_bytes(self, _: &[u8]) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_unit(self) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
        fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<Self::Ok, Error> {
            Ok($ok)
        }
    };
}

/// Compound types whose elements are all walked with the same child walker.
macro_rules! compound_impls {
    ($ty:ident) => {
        impl SerializeSeq for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl SerializeTuple for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl SerializeTupleStruct for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl SerializeTupleVariant for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl SerializeMap for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_key<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
        impl SerializeStructVariant for $ty<'_> {
            type Ok = ();
            type Error = Error;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), Error> {
                v.serialize(self.child())
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    };
}

/// Elements of a sequence, tuple or map below a [`Walker`].
struct Seq<'f> {
    facts: &'f mut Facts,
    in_cte: bool,
}

impl Seq<'_> {
    fn child(&mut self) -> Walker<'_> {
        Walker::child(&mut *self.facts, self.in_cte)
    }
}

compound_impls!(Seq);

impl<'f> Serializer for Walker<'f> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'f>;
    type SerializeTuple = Seq<'f>;
    type SerializeTupleStruct = Seq<'f>;
    type SerializeTupleVariant = Seq<'f>;
    type SerializeMap = Seq<'f>;
    type SerializeStruct = Struct<'f>;
    type SerializeStructVariant = Seq<'f>;

    ignore_scalars!(());

    fn serialize_i32(self, _: i32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Struct<'f>, Error> {
        Ok(Struct {
            facts: self.facts,
            name,
            root: self.root,
            in_cte: self.in_cte,
            has_where: false,
            code: 0,
            call: None,
            schema: String::new(),
            relname: String::new(),
        })
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Seq<'f>, Error> {
        Ok(Seq {
            facts: self.facts,
            in_cte: self.in_cte,
        })
    }
}

/// The fields of one struct (one parse-tree node) below a [`Walker`].
struct Struct<'f> {
    facts: &'f mut Facts,
    name: &'static str,
    root: bool,
    in_cte: bool,
    /// `DeleteStmt`/`UpdateStmt`: a `WHERE` clause is present.
    has_where: bool,
    /// `MergeWhenClause.command_type`, `OnConflictClause.action`,
    /// `AlterTableCmd.subtype`, `RangeVar.location`.
    code: i32,
    /// `FuncCall`: the call being read.
    call: Option<Call>,
    /// `RangeVar`: its schema and name.
    schema: String,
    relname: String,
}

impl SerializeStruct for Struct<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<(), Error> {
        match (self.name, key) {
            ("FuncCall", "funcname") => {
                // A list of String nodes only: nothing else to walk.
                let mut parts = Vec::new();
                let _ = v.serialize(Strings {
                    out: &mut parts,
                    first_variant: &mut None,
                });
                self.call = Some(Call {
                    name: parts.join("."),
                    parts,
                    consts: [None, None],
                });
                return Ok(());
            }
            ("FuncCall", "args") => {
                // Only set_config's first arguments matter (the setting
                // and its value).
                if let Some(call) = self.call.as_mut() {
                    let bare = call.name.rsplit('.').next().unwrap_or_default();
                    if bare.eq_ignore_ascii_case("set_config") {
                        call.consts = leading_consts(v);
                    }
                }
            }
            ("AExpr", "name") | ("SubLink", "oper_name") | ("SortBy", "use_op") => {
                // An operator, `=` or `OPERATOR(schema.op)`: a function too
                // (also `x op ANY (SELECT …)` and `ORDER BY x USING op`).
                let mut parts = Vec::new();
                let _ = v.serialize(Strings {
                    out: &mut parts,
                    first_variant: &mut None,
                });
                let op = parts.join(".");
                if !op.is_empty() && !self.facts.operators.contains(&op) {
                    self.facts.operators.push(op);
                }
                return Ok(());
            }
            ("InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt", "relation") => {
                let before = self.facts.tables.len();
                v.serialize(Walker::child(&mut *self.facts, self.in_cte))?;
                let added: Vec<String> = self.facts.tables[before..].iter().map(|(_, t)| t.clone()).collect();
                self.facts.dml_targets.extend(added);
                return Ok(());
            }
            ("ColumnRef", "fields") => {
                // Only String and A_Star nodes: nothing else to walk.
                let mut parts = Vec::new();
                let _ = v.serialize(Strings {
                    out: &mut parts,
                    first_variant: &mut None,
                });
                if parts.len() >= 2 {
                    if let Some(last) = parts.pop() {
                        self.facts.maybe_call(last);
                    }
                }
                return Ok(());
            }
            ("AIndirection", "indirection") => {
                // `(row).name` selects a field or calls `name(row)`; the
                // subscripts among the indirections are walked below.
                // The strings taken may be a subscript's constants
                // (`(x)['name']`), so what this finds depends on them.
                super::shape::note_value_read();
                let mut parts = Vec::new();
                let _ = v.serialize(Strings {
                    out: &mut parts,
                    first_variant: &mut None,
                });
                for p in parts {
                    self.facts.maybe_call(p);
                }
            }
            ("RangeVar", "schemaname") => {
                self.schema = capture_str(v).unwrap_or_default();
                return Ok(());
            }
            ("RangeVar", "relname") => {
                self.relname = capture_str(v).unwrap_or_default();
                return Ok(());
            }
            ("RangeVar", "location") => {
                self.code = v.serialize(I32).unwrap_or(0);
                return Ok(());
            }
            ("CommonTableExpr", "ctename") => {
                if let Some(name) = capture_str(v) {
                    self.facts.ctes.push(name);
                }
                return Ok(());
            }
            ("DeleteStmt" | "UpdateStmt", "where_clause") => {
                self.has_where = v.serialize(Presence).unwrap_or(true);
            }
            ("MergeWhenClause", "command_type") | ("OnConflictClause", "action") | ("AlterTableCmd", "subtype") => {
                self.code = v.serialize(I32).unwrap_or(0);
                return Ok(());
            }
            _ => {}
        }
        let in_cte = self.in_cte || self.name == "CommonTableExpr";
        v.serialize(Walker::child(&mut *self.facts, in_cte))
    }

    fn end(self) -> Result<(), Error> {
        let f = self.facts;
        match self.name {
            "FuncCall" => {
                if let Some(call) = self.call {
                    f.calls.push(call);
                }
            }
            "RangeVar" => {
                let name = if self.schema.is_empty() {
                    self.relname
                } else {
                    format!("{}.{}", self.schema, self.relname)
                };
                if !name.is_empty() {
                    f.tables.push((self.code, name));
                }
            }
            "InsertStmt" => {
                f.inserts += 1;
                f.dml_in_cte |= self.in_cte;
            }
            "UpdateStmt" => {
                f.updates += 1;
                f.update_without_where |= !self.has_where;
                f.dml_in_cte |= self.in_cte;
            }
            "DeleteStmt" => {
                f.deletes += 1;
                f.delete_without_where |= !self.has_where;
                f.dml_in_cte |= self.in_cte;
            }
            "MergeStmt" => {
                f.merges += 1;
                f.dml_in_cte |= self.in_cte;
            }
            "MergeWhenClause" => f.merge_delete |= self.code == CmdType::CmdDelete as i32,
            "OnConflictClause" => f.upsert |= self.code == OnConflictAction::OnconflictUpdate as i32,
            "AlterTableCmd" => {
                f.drop_column |= self.code == AlterTableType::AtDropColumn as i32
                    || self.code == AlterTableType::AtDropConstraint as i32
            }
            // WHERE CURRENT OF picks a row as surely as a column does.
            "ColumnRef" | "CurrentOfExpr" => f.column_refs += 1,
            "TypeCast" => f.typecasts += 1,
            "LockingClause" => f.locking = true,
            // Syntax this parser reads as SQL/JSON (PostgreSQL 16 and
            // later) is an ordinary call on an older server, resolved
            // through search_path like any other.
            "JsonObjectConstructor" => f.maybe_call("json_object".into()),
            "JsonArrayConstructor" | "JsonArrayQueryConstructor" => f.maybe_call("json_array".into()),
            "JsonObjectAgg" => f.maybe_call("json_objectagg".into()),
            "JsonArrayAgg" => f.maybe_call("json_arrayagg".into()),
            "JsonParseExpr" => f.maybe_call("json".into()),
            "JsonScalarExpr" => f.maybe_call("json_scalar".into()),
            "JsonSerializeExpr" => f.maybe_call("json_serialize".into()),
            "JsonFuncExpr" => {
                for name in ["json_exists", "json_query", "json_value"] {
                    f.maybe_call(name.into());
                }
            }
            "JsonTable" => f.maybe_call("json_table".into()),
            "MergeSupportFunc" => f.maybe_call("merge_action".into()),
            "IntoClause" => f.into = true,
            // Plain queries nested anywhere are covered by the facts above.
            "SelectStmt" | "SetOperationStmt" | "ReturnStmt" | "RawStmt" => {}
            other if !self.root && other.ends_with("Stmt") => f.nested_utility.push(other),
            _ => {}
        }
        Ok(())
    }
}

/// The first two arguments of a call when they are bare constants, as in
/// `set_config('role', 'x', …)`. A cast, a column or an expression gives
/// `None`.
fn leading_consts<T: Serialize + ?Sized>(args: &T) -> [Option<String>; 2] {
    // set_config('role', …) or set_config('work_mem', …): the values decide.
    super::shape::note_value_read();
    let mut first = FirstElement { out: [None, None] };
    let _ = args.serialize(&mut first);
    first.out
}

/// Reads elements 0 and 1 of a sequence of nodes with [`Strings`], keeping
/// the strings only when the node is a constant.
struct FirstElement {
    out: [Option<String>; 2],
}

impl<'a> Serializer for &'a mut FirstElement {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = FirstSeq<'a>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    ignore_scalars!(());
    fn serialize_i32(self, _: i32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_str(self, _: &str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<FirstSeq<'a>, Error> {
        Ok(FirstSeq { first: self, index: 0 })
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
        Err(ser::Error::custom("not a list"))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
        Err(ser::Error::custom("not a list"))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(ser::Error::custom("not a list"))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(ser::Error::custom("not a list"))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
        Err(ser::Error::custom("not a list"))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(ser::Error::custom("not a list"))
    }
}

struct FirstSeq<'a> {
    first: &'a mut FirstElement,
    index: usize,
}

impl SerializeSeq for FirstSeq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        if self.index < 2 {
            let mut parts = Vec::new();
            let mut variant = None;
            let _ = v.serialize(Strings {
                out: &mut parts,
                first_variant: &mut variant,
            });
            if variant == Some("AConst") && parts.len() == 1 {
                self.first.out[self.index] = parts.pop();
            }
        }
        self.index += 1;
        Ok(())
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Collects every string below a value, and the name of the first enum
/// variant met (for a `Node`, the node's type).
struct Strings<'a> {
    out: &'a mut Vec<String>,
    first_variant: &'a mut Option<&'static str>,
}

struct StringsSeq<'a> {
    out: &'a mut Vec<String>,
    first_variant: &'a mut Option<&'static str>,
}

impl StringsSeq<'_> {
    fn child(&mut self) -> Strings<'_> {
        Strings {
            out: &mut *self.out,
            first_variant: &mut *self.first_variant,
        }
    }
}

compound_impls!(StringsSeq);

impl SerializeStruct for StringsSeq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self.child())
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

impl<'a> Serializer for Strings<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = StringsSeq<'a>;
    type SerializeTuple = StringsSeq<'a>;
    type SerializeTupleStruct = StringsSeq<'a>;
    type SerializeTupleVariant = StringsSeq<'a>;
    type SerializeMap = StringsSeq<'a>;
    type SerializeStruct = StringsSeq<'a>;
    type SerializeStructVariant = StringsSeq<'a>;

    ignore_scalars!(());
    fn serialize_i32(self, _: i32) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.out.push(v.to_owned());
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<(), Error> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        if self.first_variant.is_none() {
            *self.first_variant = Some(variant);
        }
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<StringsSeq<'a>, Error> {
        Ok(StringsSeq {
            out: self.out,
            first_variant: self.first_variant,
        })
    }
}

/// Leaf serializers: each reads one scalar shape and refuses compounds.
macro_rules! leaf_serializer {
    ($ty:ident, $ok:ty, $default:expr, { $($body:tt)* }) => {
        struct $ty;
        impl Serializer for $ty {
            type Ok = $ok;
            type Error = Error;
            type SerializeSeq = Impossible<$ok, Error>;
            type SerializeTuple = Impossible<$ok, Error>;
            type SerializeTupleStruct = Impossible<$ok, Error>;
            type SerializeTupleVariant = Impossible<$ok, Error>;
            type SerializeMap = Impossible<$ok, Error>;
            type SerializeStruct = Impossible<$ok, Error>;
            type SerializeStructVariant = Impossible<$ok, Error>;

            ignore_scalars!($default);
            $($body)*

            fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> Result<$ok, Error> {
                v.serialize(self)
            }
            fn serialize_newtype_variant<T: Serialize + ?Sized>(
                self, _: &'static str, _: u32, _: &'static str, _: &T,
            ) -> Result<$ok, Error> {
                Ok($default)
            }
            fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_tuple_variant(
                self, _: &'static str, _: u32, _: &'static str, _: usize,
            ) -> Result<Self::SerializeTupleVariant, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
            fn serialize_struct_variant(
                self, _: &'static str, _: u32, _: &'static str, _: usize,
            ) -> Result<Self::SerializeStructVariant, Error> {
                Err(ser::Error::custom("not a scalar"))
            }
        }
    };
}

leaf_serializer!(Presence, bool, true, {
    fn serialize_i32(self, _: i32) -> Result<bool, Error> {
        Ok(true)
    }
    fn serialize_str(self, _: &str) -> Result<bool, Error> {
        Ok(true)
    }
    fn serialize_none(self) -> Result<bool, Error> {
        Ok(false)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<bool, Error> {
        Ok(true)
    }
});

leaf_serializer!(I32, i32, 0, {
    fn serialize_i32(self, v: i32) -> Result<i32, Error> {
        Ok(v)
    }
    fn serialize_str(self, _: &str) -> Result<i32, Error> {
        Ok(0)
    }
    fn serialize_none(self) -> Result<i32, Error> {
        Ok(0)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<i32, Error> {
        v.serialize(self)
    }
});

leaf_serializer!(Str, Option<String>, None, {
    fn serialize_i32(self, _: i32) -> Result<Option<String>, Error> {
        Ok(None)
    }
    fn serialize_str(self, v: &str) -> Result<Option<String>, Error> {
        Ok(Some(v.to_owned()))
    }
    fn serialize_none(self) -> Result<Option<String>, Error> {
        Ok(None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Option<String>, Error> {
        v.serialize(self)
    }
});

fn capture_str<T: Serialize + ?Sized>(v: &T) -> Option<String> {
    v.serialize(Str).ok().flatten()
}
