mod common;
use common::*;

#[test]
fn psql_select_through_gatehouse() {
    let g = Gatehouse::start("", "");
    let (ok, out, err) = psql(&g, "postgres", &["-c", "select 40 + 2"]);
    assert!(ok, "{err}\n{}", g.log());
    assert_eq!(out.trim(), "42");
}
