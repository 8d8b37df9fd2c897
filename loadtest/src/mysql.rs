//! The MySQL side of the harness: where a target's MySQL endpoint is, the
//! MariaDB tables the MySQL scenarios read, and their one operation (a
//! point select as COM_QUERY or as COM_STMT_EXECUTE), with `mysql_async`.

use anyhow::{bail, Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, Statement};

pub const POINT_SQL: &str = "SELECT abalance FROM gh_load_accounts WHERE aid = ?";

/// A target's MySQL endpoint.
#[derive(Clone, Debug)]
pub struct MyParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
}

pub async fn connect(p: &MyParams) -> Result<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(p.host.clone())
        .tcp_port(p.port)
        .user(Some(p.user.clone()))
        .pass(p.password.clone())
        .db_name(Some(p.dbname.clone()))
        // The socket the server names would bypass the endpoint under test.
        .prefer_socket(false);
    Conn::new(opts)
        .await
        .with_context(|| format!("MySQL connect to {}:{} as {}", p.host, p.port, p.user))
}

/// Creates the database and `gh_load_accounts` with `accounts` rows, if
/// missing, through `p` (the direct target).
pub async fn setup(p: &MyParams, accounts: u64) -> Result<()> {
    let db = &p.dbname;
    if db.is_empty()
        || !db
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("database {db:?}: lower-case letters, digits and _ only");
    }
    let mut admin = p.clone();
    admin.dbname = "mysql".into();
    let mut c = connect(&admin).await?;
    c.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await?;
    c.disconnect().await?;
    let mut c = connect(p).await?;
    c.query_drop(
        "CREATE TABLE IF NOT EXISTS gh_load_accounts (aid INT PRIMARY KEY, abalance INT NOT NULL DEFAULT 0, filler CHAR(84))",
    )
    .await?;
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM gh_load_accounts").await?;
    if n != Some(accounts) {
        c.query_drop("TRUNCATE gh_load_accounts").await?;
        // MariaDB's sequence engine: seq_1_to_N is a table of 1..N.
        c.query_drop(format!(
            "INSERT INTO gh_load_accounts SELECT seq, 0, '' FROM seq_1_to_{accounts}"
        ))
        .await?;
    }
    c.disconnect().await?;
    Ok(())
}

/// One client's connection and, for `prepared`, its statement.
pub struct MyClient {
    pub conn: Conn,
    stmt: Option<Statement>,
}

impl MyClient {
    pub async fn open(p: &MyParams, prepared: bool) -> Result<MyClient> {
        let mut conn = connect(p).await?;
        let stmt = if prepared {
            Some(conn.prep(POINT_SQL).await?)
        } else {
            None
        };
        Ok(MyClient { conn, stmt })
    }

    /// The balance of account `aid`: one row.
    pub async fn point_select(&mut self, aid: u64) -> Result<u64> {
        let row: Option<i64> = match &self.stmt {
            Some(s) => self.conn.exec_first(s, (aid,)).await?,
            None => {
                self.conn
                    .query_first(format!("SELECT abalance FROM gh_load_accounts WHERE aid = {aid}"))
                    .await?
            }
        };
        Ok(u64::from(row.is_some()))
    }

    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}
