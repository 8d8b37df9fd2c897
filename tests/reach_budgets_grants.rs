//! Policy through the real gateway, beyond verdicts: which targets a role
//! reaches and as which upstream account, budgets per identity (deny and
//! hold), N-of-M approvals and time-boxed grants that expire.
mod common;
use common::*;
use std::time::Duration;

const ADMIN: &str = "reach-admin-token";
const DBA1: &str = "reach-dba-one-token";
const DBA2: &str = "reach-dba-two-token";
/// An admin token named like the requesting identity.
const SELF: &str = "reach-self-token";
const READER: &str = "reach-reader-token";
const COUNTED: &str = "reach-counted-token";
const HOLDER: &str = "reach-holder-token";

struct Setup {
    g: Gatehouse,
    admin_port: u16,
    ro_role: String,
}

fn setup() -> Setup {
    let admin_port = free_port();
    let ro_role = unique("gh_ro");
    let status = std::process::Command::new("psql")
        .args(["-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("create role {ro_role} login"))
        .status()
        .expect("psql");
    assert!(status.success());
    let extra = format!(
        r#"
# The last [[target]] is `test`: a second upstream account on it.
[[target.account]]
name = "ro"
user = "{ro_role}"

[[identity]]
name = "reader"
token_hash = "{reader}"
targets = ["*"]
roles = ["reader"]

[[identity]]
name = "counted"
token_hash = "{counted}"
targets = ["*"]
roles = ["metered"]

[[identity]]
name = "holder"
token_hash = "{holder}"
targets = ["*"]
roles = ["metered_hold"]

[admin]
listen = "127.0.0.1:{admin_port}"
[[admin.token]]
name = "ops"
token_hash = "{admin}"
roles = ["admin"]
[[admin.token]]
name = "dba-one"
token_hash = "{dba1}"
roles = ["approver", "dba"]
[[admin.token]]
name = "dba-two"
token_hash = "{dba2}"
roles = ["approver", "dba"]
[[admin.token]]
name = "agent"
token_hash = "{me}"
roles = ["approver", "dba"]

[policy]
default_role = "agent"
[policy.roles.agent]
write = "approve"
delete = "approve"
approvers = ["dba"]
approvals_required = 2
approval_timeout_secs = 20

[policy.roles.reader]
targets = ["test"]
accounts = {{ test = "ro" }}
write = "deny"
delete = "deny"

[policy.roles.metered]
write = "allow"
delete = "allow"
[policy.roles.metered.budget]
statements_per_minute = 5
action = "deny"

[policy.roles.metered_hold]
approvers = ["dba"]
approval_timeout_secs = 20
[policy.roles.metered_hold.budget]
rows_per_minute = 10
action = "approve"
"#,
        reader = token_hash(READER),
        counted = token_hash(COUNTED),
        holder = token_hash(HOLDER),
        admin = token_hash(ADMIN),
        dba1 = token_hash(DBA1),
        dba2 = token_hash(DBA2),
        me = token_hash(SELF),
    );
    Setup {
        g: Gatehouse::start("", &extra),
        admin_port,
        ro_role,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-X", "-q", "-h", PG_HOST, "-U", "postgres", "-d", "postgres", "-c"])
            .arg(format!("drop role if exists {}", self.ro_role))
            .status();
    }
}

fn conninfo(g: &Gatehouse, user: &str, token: &str, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} password={token} dbname={db} sslmode=disable",
        g.port
    )
}

async fn post(port: u16, path: String, token: &'static str, body: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http(port, "POST", &path, token, body))
        .await
        .unwrap()
}

async fn next_notice(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a hold notice within 10 s")
        .expect("notice")
}

#[tokio::test]
async fn roles_choose_targets_and_upstream_accounts() {
    let s = setup();
    // The reader's role reaches `test`, as the `ro` account.
    let (c, _) = connect_collecting(&conninfo(&s.g, "reader", READER, "test"))
        .await
        .expect("reader reaches test");
    let who: String = c.query_one("select current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, s.ro_role);
    // ...and not `postgres`, although the identity's own targets are `*`.
    let Err(e) = connect_collecting(&conninfo(&s.g, "reader", READER, "postgres")).await else {
        panic!("reader must not reach postgres")
    };
    assert_eq!(code(&e), "28000");
    assert!(message(&e).contains("reaches target \"postgres\""), "{}", message(&e));
    // A role without `accounts` logs in as the target's default account.
    let (c, _) = connect_collecting(&conninfo(&s.g, "agent", TOKEN, "test"))
        .await
        .unwrap();
    let who: String = c.query_one("select current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "postgres");
    s.g.wait_log_line("account=ro", LOG_WAIT, |l| {
        l.contains("account=ro") || l.contains("account=\"ro\"")
    });
}

#[tokio::test]
async fn statements_past_the_budget_are_denied_across_sessions() {
    let s = setup();
    let (a, _) = connect_collecting(&conninfo(&s.g, "counted", COUNTED, "postgres"))
        .await
        .unwrap();
    let (b, _) = connect_collecting(&conninfo(&s.g, "counted", COUNTED, "postgres"))
        .await
        .unwrap();
    for i in 0..5 {
        let c = if i % 2 == 0 { &a } else { &b };
        c.simple_query("select 1").await.unwrap();
    }
    // The sixth statement of the minute, in either session, and in the
    // extended protocol too.
    let e = a.simple_query("select 1").await.unwrap_err();
    assert_eq!(code(&e), "42501");
    assert!(message(&e).contains("budget exceeded"), "{}", message(&e));
    assert!(message(&e).contains("limit is 5 per minute"), "{}", message(&e));
    let e = b.query("select $1::int", &[&1i32]).await.unwrap_err();
    assert_eq!(code(&e), "42501");
    // Another identity has a budget of its own (none here).
    let (c, _) = connect_collecting(&conninfo(&s.g, "agent", TOKEN, "postgres"))
        .await
        .unwrap();
    for _ in 0..8 {
        c.simple_query("select 1").await.unwrap();
    }
}

#[tokio::test]
async fn rows_past_the_budget_hold_until_approved_and_a_grant_lifts_it() {
    let s = setup();
    let (c, mut notices) = connect_collecting(&conninfo(&s.g, "holder", HOLDER, "postgres"))
        .await
        .unwrap();
    let rows = c.query("select generate_series(1, 20)", &[]).await.unwrap();
    assert_eq!(rows.len(), 20, "the statement that crosses the budget runs");
    let q = c.query_one("select 42", &[]);
    let port = s.admin_port;
    let approve = async {
        let n = next_notice(&mut notices).await;
        assert!(n.contains("budget exceeded: 20 rows"), "{n}");
        let id = review_id(&n);
        let (st, body) = post(
            port,
            format!("/api/v1/reviews/{id}/approve"),
            DBA1,
            r#"{"grant_seconds": 60}"#,
        )
        .await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("\"budget\""), "the review names what it grants: {body}");
    };
    let (r, _) = tokio::join!(q, approve);
    assert_eq!(r.unwrap().get::<_, i32>(0), 42);
    // The grant lifts the budget: no more holds.
    let r = tokio::time::timeout(Duration::from_secs(5), c.query_one("select 43", &[]))
        .await
        .expect("not held while the grant lasts")
        .unwrap();
    assert_eq!(r.get::<_, i32>(0), 43);
    assert!(notices.try_recv().is_err(), "no new hold");
}

#[tokio::test]
async fn two_approvals_are_needed_and_the_requester_cannot_give_one() {
    let s = setup();
    let t = unique("gh_nofm");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let (c, mut notices) = through(&s.g).await;
    let sql = format!("insert into {t} values (1)");
    let q = c.execute(sql.as_str(), &[]);
    let port = s.admin_port;
    let tt = t.clone();
    let approve = async move {
        let id = review_id(&next_notice(&mut notices).await);
        let path = format!("/api/v1/reviews/{id}/approve");
        // The requester, even holding an approver role, cannot approve.
        let (st, body) = post(port, path.clone(), SELF, "").await;
        assert_eq!(st, 403, "{body}");
        assert!(body.contains("own review"), "{body}");
        let (st, body) = post(port, path.clone(), DBA1, "").await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("\"state\":\"pending\""), "one of two: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count(&tt).await, 0, "still held after one approval");
        // The same approver twice does not count twice.
        let (st, _) = post(port, path.clone(), DBA1, "").await;
        assert_eq!(st, 409);
        let (st, body) = post(port, path, DBA2, "").await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("\"state\":\"approved\""), "{body}");
    };
    let (r, _) = tokio::join!(q, approve);
    assert_eq!(r.unwrap(), 1);
    assert_eq!(count(&t).await, 1);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test]
async fn a_time_boxed_grant_expires() {
    let s = setup();
    let t = unique("gh_grant");
    direct()
        .await
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let (c, mut notices) = through(&s.g).await;
    let port = s.admin_port;

    let sql = format!("insert into {t} values (1)");
    let q = c.execute(sql.as_str(), &[]);
    let approve = async {
        let id = review_id(&next_notice(&mut notices).await);
        let path = format!("/api/v1/reviews/{id}/approve");
        let (st, body) = post(port, path.clone(), DBA1, r#"{"grant_seconds": 3}"#).await;
        assert_eq!(st, 200, "{body}");
        let (st, body) = post(port, path, DBA2, r#"{"grant_seconds": 3}"#).await;
        assert_eq!(st, 200, "{body}");
        assert!(body.contains("grant_until"), "{body}");
    };
    let (r, _) = tokio::join!(q, approve);
    assert_eq!(r.unwrap(), 1);
    // Within the grant: writes of the class run without a review.
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        c.execute(&format!("insert into {t} values (2)"), &[]),
    )
    .await
    .expect("not held within the grant");
    assert_eq!(r.unwrap(), 1);
    // Other classes are not granted.
    let del = format!("delete from {t} where id = 2");
    let q = c.execute(del.as_str(), &[]);
    let deny = async {
        let n = next_notice(&mut notices).await;
        assert!(n.contains("delete statement"), "{n}");
        let (st, _) = post(port, format!("/api/v1/reviews/{}/deny", review_id(&n)), DBA1, "").await;
        assert_eq!(st, 200);
    };
    let (r, _) = tokio::join!(q, deny);
    assert_eq!(code(&r.unwrap_err()), "42501");

    // After it: held again.
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let ins = format!("insert into {t} values (3)");
    let q = c.execute(ins.as_str(), &[]);
    let deny = async {
        let n = next_notice(&mut notices).await;
        assert!(n.contains("write statement"), "{n}");
        assert_eq!(count(&t).await, 2, "held after the grant expired");
        let (st, _) = post(
            port,
            format!("/api/v1/reviews/{}/deny", review_id(&n)),
            DBA1,
            r#"{"reason":"grant is over"}"#,
        )
        .await;
        assert_eq!(st, 200);
    };
    let (r, _) = tokio::join!(q, deny);
    let e = r.unwrap_err();
    assert!(message(&e).contains("grant is over"), "{}", message(&e));
    assert_eq!(count(&t).await, 2);
    direct().await.batch_execute(&format!("drop table {t}")).await.unwrap();
}
