//! The control database's schema: versioned migrations, applied at start
//! by whichever instance gets there first (an advisory lock keeps two
//! instances starting together from applying one twice).

use tokio_postgres::Client;

/// The schema gatehouse owns in the control database.
pub const SCHEMA: &str = "gatehouse";

/// Migration `i` takes the schema from version `i` to `i + 1`. Append
/// only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: instances, and reviews with their decisions and grants.
    r#"
    CREATE TABLE gatehouse.instances (
        name text PRIMARY KEY,
        admin text,
        started timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE gatehouse.reviews (
        id text PRIMARY KEY,
        instance text NOT NULL,
        identity text NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'withdrawn')),
        -- Unix seconds past which any instance withdraws a pending review
        -- (its own instance may be gone).
        deadline bigint NOT NULL,
        grant_until bigint,
        review jsonb NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        updated timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX reviews_pending ON gatehouse.reviews (deadline) WHERE status = 'pending';
    CREATE INDEX reviews_granting ON gatehouse.reviews (grant_until) WHERE status = 'approved' AND grant_until IS NOT NULL;
    CREATE INDEX reviews_updated ON gatehouse.reviews (updated);
    "#,
    // 2: budgets: each instance's counts per identity and minute.
    r#"
    CREATE TABLE gatehouse.budget_usage (
        identity text NOT NULL,
        instance text NOT NULL,
        minute bigint NOT NULL,
        statements bigint NOT NULL,
        rows bigint NOT NULL,
        bytes bigint NOT NULL,
        PRIMARY KEY (identity, instance, minute)
    );
    CREATE INDEX budget_usage_minute ON gatehouse.budget_usage (minute);
    "#,
    // 3: live sessions of every instance, and where to pass a cancel.
    r#"
    ALTER TABLE gatehouse.instances ADD COLUMN data text;
    CREATE TABLE gatehouse.sessions (
        instance text NOT NULL,
        session bigint NOT NULL,
        identity text NOT NULL,
        target text NOT NULL,
        client text NOT NULL,
        started bigint NOT NULL,
        statements bigint NOT NULL DEFAULT 0,
        rows bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (instance, session)
    );
    CREATE INDEX sessions_session ON gatehouse.sessions (session);
    "#,
    // 4: the index of recordings uploaded to the bucket.
    r#"
    CREATE TABLE gatehouse.recordings (
        instance text NOT NULL,
        id text NOT NULL,
        session bigint NOT NULL,
        identity text NOT NULL,
        roles text[] NOT NULL,
        target text NOT NULL,
        client text NOT NULL,
        started_us bigint NOT NULL,
        ended_us bigint,
        end_reason text,
        statements bigint NOT NULL,
        decisions text[] NOT NULL,
        bytes bigint NOT NULL,
        sha256 text NOT NULL,
        key text NOT NULL,
        uploaded timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (instance, id)
    );
    CREATE INDEX recordings_id ON gatehouse.recordings (id);
    CREATE INDEX recordings_started ON gatehouse.recordings (started_us);
    "#,
    // 5: each instance's last configuration reload and how it went.
    r#"
    ALTER TABLE gatehouse.instances ADD COLUMN reloaded timestamptz;
    ALTER TABLE gatehouse.instances ADD COLUMN reload_outcome text;
    "#,
    // 6: requests between instances (kills, reloads) live in a table only
    // gatehouse's role writes: a NOTIFY, which any role of the database
    // may send, carries only a request's id. An instance's incarnation
    // tells two live instances under one name apart.
    r#"
    CREATE TABLE gatehouse.requests (
        id bigserial PRIMARY KEY,
        kind text NOT NULL CHECK (kind IN ('kill', 'reload')),
        body jsonb NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE gatehouse.instances ADD COLUMN incarnation text;
    "#,
];

/// The version this build's schema has.
pub fn current() -> i32 {
    MIGRATIONS.len() as i32
}

/// Creates or migrates the schema; returns the version it is at.
pub async fn migrate(client: &mut Client) -> Result<i32, String> {
    let tx = client.transaction().await.map_err(|e| e.to_string())?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(hashtext('gatehouse fleet schema'));
         CREATE SCHEMA IF NOT EXISTS gatehouse;
         CREATE TABLE IF NOT EXISTS gatehouse.schema_version (version integer NOT NULL);",
    )
    .await
    .map_err(|e| format!("creating the schema: {e}"))?;
    let row = tx
        .query_opt("SELECT version FROM gatehouse.schema_version", &[])
        .await
        .map_err(|e| e.to_string())?;
    let mut version: i32 = match row {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO gatehouse.schema_version VALUES (0)", &[])
                .await
                .map_err(|e| e.to_string())?;
            0
        }
    };
    if version > current() {
        return Err(format!(
            "the control database's schema is at version {version}, newer than this gatehouse knows ({}): upgrade this instance",
            current()
        ));
    }
    while version < current() {
        tx.batch_execute(MIGRATIONS[version as usize])
            .await
            .map_err(|e| format!("migration {}: {e}", version + 1))?;
        version += 1;
        tx.execute("UPDATE gatehouse.schema_version SET version = $1", &[&version])
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(version)
}
