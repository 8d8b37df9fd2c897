//! Reading a PostgreSQL target's function catalog (`pg_proc`,
//! `pg_operator`, `pg_type`) for the policy, on a connection of its own
//! logged in like the session's; `core::catalog` caches it.

use super::upstream;
use crate::core::state::{AccountRt, TargetRt};
use crate::sql::{Catalog, CatalogRow, Volatility};
use crate::wire::pg::{self, Side, HEADER_LEN};
use std::sync::Arc;

/// Largest catalog answer accepted (a big PostGIS-laden database is a few
/// MiB).
const MAX_CATALOG_BYTES: usize = 64 << 20;

/// Every function (signatures of user functions only), user-defined
/// operators, types, and the volatile user functions the server calls
/// without a statement naming them (operator classes' operators and
/// support functions: sorting, grouping, DISTINCT, IN, joins, set
/// operations; casts; type input functions). An aggregate is as volatile as the most volatile of
/// its support functions (its own label is `IMMUTABLE` whatever they do);
/// volatility letters order `i` < `s` < `v`.
const CATALOG_SQL: &str = "\
SELECT 'f', n.nspname, p.proname, \
       GREATEST(p.provolatile::text, COALESCE((SELECT max(f.provolatile::text) \
         FROM pg_catalog.pg_aggregate a JOIN pg_catalog.pg_proc f ON f.oid IN (a.aggtransfn, a.aggfinalfn, \
           a.aggcombinefn, a.aggserialfn, a.aggdeserialfn, a.aggmtransfn, a.aggminvtransfn, a.aggmfinalfn) \
         WHERE a.aggfnoid = p.oid), 'i')), \
       (p.oid < 16384)::text, p.oid::int8::text, \
       CASE WHEN p.oid >= 16384 THEN p.oid::regprocedure::text ELSE '' END \
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
UNION ALL \
SELECT 'o', n.nspname, o.oprname, p.provolatile::text, 'false', '0', '' \
  FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
  JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE o.oid >= 16384 \
UNION ALL \
SELECT 't', n.nspname, t.typname, 'i', 'true', '0', '' \
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
UNION ALL \
SELECT 'i', n.nspname, p.proname, 'v', 'false', '0', '' \
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
  WHERE p.oid >= 16384 AND p.provolatile = 'v' AND ( \
    p.oid IN (SELECT amproc::oid FROM pg_catalog.pg_amproc) \
    OR p.oid IN (SELECT o.oprcode::oid FROM pg_catalog.pg_amop a JOIN pg_catalog.pg_operator o ON o.oid = a.amopopr) \
    OR p.oid IN (SELECT castfunc FROM pg_catalog.pg_cast) \
    OR p.oid IN (SELECT typinput::oid FROM pg_catalog.pg_type))";

/// One round trip on a connection of its own.
pub async fn fetch(target: &TargetRt, account: &AccountRt, max_msg: usize) -> Result<Arc<Catalog>, String> {
    let mut up = upstream::connect(target, account, &[], max_msg)
        .await
        .map_err(|e| e.to_string())?;
    let mut q = Vec::with_capacity(CATALOG_SQL.len() + 8);
    pg::cstring_message(&mut q, b'Q', CATALOG_SQL.as_bytes());
    up.conn.write_all(q).await.map_err(|e| e.to_string())?;
    let mut rows = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    let mut error = None;
    loop {
        let (tag, body) = up
            .conn
            .read_frame(Side::Backend, max_msg)
            .await
            .map_err(|e| e.to_string())?;
        bytes += body.len() + HEADER_LEN;
        if bytes > MAX_CATALOG_BYTES {
            return Err(format!("the catalog is larger than {MAX_CATALOG_BYTES} bytes"));
        }
        match tag {
            b'D' => {
                if let Some(r) = row(&body) {
                    rows.push(r);
                }
            }
            b'E' => {
                let msg = pg::error_fields(&body)
                    .find(|(c, _)| *c == b'M')
                    .map(|(_, m)| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                error = Some(msg);
            }
            b'Z' => break,
            _ => {}
        }
    }
    let mut t = Vec::with_capacity(5);
    pg::terminate(&mut t);
    let _ = up.conn.write_all(t).await;
    if let Some(e) = error {
        return Err(format!("reading the catalog failed: {e}"));
    }
    Ok(Arc::new(Catalog::from_rows(rows)))
}

/// One DataRow of [`CATALOG_SQL`] (seven text columns).
fn row(body: &[u8]) -> Option<CatalogRow> {
    let mut c = pg::Cursor::new(body, "DataRow");
    let n = c.i16().ok()?;
    if n != 7 {
        return None;
    }
    let mut cols: Vec<String> = Vec::with_capacity(7);
    for _ in 0..7 {
        let len = c.i32().ok()?;
        if len < 0 {
            cols.push(String::new());
            continue;
        }
        cols.push(String::from_utf8_lossy(c.bytes(len as usize).ok()?).into_owned());
    }
    let mut it = cols.into_iter();
    let (kind, schema, name, vol, builtin, oid, signature) = (
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
        it.next()?,
    );
    Some(match kind.as_str() {
        "f" => CatalogRow::Function {
            oid: oid.parse().ok()?,
            schema,
            name,
            volatility: Volatility::from_code(&vol),
            builtin: builtin == "true",
            signature,
        },
        "o" => CatalogRow::Operator {
            schema,
            name,
            volatility: Volatility::from_code(&vol),
        },
        "i" => CatalogRow::Implicit { schema, name },
        _ => CatalogRow::Type { schema, name },
    })
}
