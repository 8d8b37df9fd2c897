//! The process id a client sees. A session that holds its own upstream
//! connection from its login is given the server's backend pid, so that
//! BackendKeyData, `pg_backend_pid()`, NotificationResponse and
//! `pg_terminate_backend` agree as they do direct. A session that gets its
//! connection from the pool at its first message is given an id of
//! gatehouse's: its own notifications carry that id (clients tell their
//! own notifications by it), and the id is above any process id Linux
//! hands out, so terminating "its own backend" by it can never end
//! another session's server process.
mod common;
mod pgraw;
use common::*;
use pgraw::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// `pooled` and `own` (pool_size = 0) targets on the local PostgreSQL; one
/// worker so that consecutive sessions share its pool.
fn start() -> Gatehouse {
    let port = free_port();
    let extra = format!(
        "[[target]]\nname = \"own\"\ndatabase = \"own\"\nupstream_database = \"postgres\"\n\
         host = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ntls = \"disable\"\npool_size = 0\n\n\
         [[target]]\nname = \"pooled\"\ndatabase = \"pooled\"\nupstream_database = \"postgres\"\n\
         host = \"{PG_HOST}\"\nport = {PG_PORT}\nuser = \"postgres\"\ntls = \"disable\"\npool_size = 4\n"
    );
    let config = config_text(port, "", &extra).replace("workers = 2", "workers = 1");
    Gatehouse::start_with(port, &config)
}

/// Logs in; the BackendKeyData pid.
fn login(g: &Gatehouse, db: &str) -> (Raw, u32) {
    let (c, frames) = Raw::login(g.port, &[("user", "agent"), ("database", db)], TOKEN)
        .unwrap_or_else(|e| panic!("login: {:?}\n{}", first_error(&[(b'E', e)]), g.log()));
    let key = frames.iter().find(|(t, _)| *t == b'K').expect("BackendKeyData");
    (c, u32::from_be_bytes(key.1[..4].try_into().unwrap()))
}

/// The pid of the first NotificationResponse among `frames`.
fn notification_pid(frames: &[(u8, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|(t, _)| *t == b'A')
        .map(|(_, b)| u32::from_be_bytes(b[..4].try_into().unwrap()))
}

#[test]
fn a_session_with_its_own_connection_sees_the_server_pid_everywhere() {
    let g = start();
    let (mut c, pid) = login(&g, "own");
    let server: u32 = first_value(&c.simple("select pg_backend_pid()"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(pid, server, "BackendKeyData and pg_backend_pid() agree");
    // Its own notification carries that pid too.
    c.simple("listen gh_pid_own");
    let frames = c.simple("notify gh_pid_own, 'x'");
    assert_eq!(notification_pid(&frames), Some(pid), "{frames:?}");
    // Terminating its backend by the pid it was given ends the session
    // as it would direct.
    c.send(&query(&format!("select pg_terminate_backend({pid})"))).unwrap();
    let (frames, closed) = c.until_closed(T);
    let (code, msg) = first_error(&frames).unwrap_or_else(|| panic!("no error: {frames:?}"));
    assert_eq!(code, "57P01", "{msg}");
    assert!(closed);
}

#[test]
fn a_pooled_session_sees_its_own_notifications_under_its_own_id() {
    let g = start();
    // The first login to a pool connects at once; it goes back idle.
    let (mut first, _) = login(&g, "pooled");
    first.simple("select 1");
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let (mut c, pid) = login(&g, "pooled");
    assert!(pid >= 1 << 22, "a gateway id is above any Linux pid: {pid}");
    let server: u32 = first_value(&c.simple("select pg_backend_pid()"))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, server);
    c.simple("listen gh_pid_pooled");
    let frames = c.simple("notify gh_pid_pooled, 'mine'");
    assert_eq!(notification_pid(&frames), Some(pid), "its own: the id it was given");
    // Another session's notification keeps the sender's server pid.
    let (mut other, _) = login(&g, "own");
    let sender: u32 = first_value(&other.simple("select pg_backend_pid()"))
        .unwrap()
        .parse()
        .unwrap();
    other.simple("notify gh_pid_pooled, 'theirs'");
    let frames = c.simple("select 1");
    assert_eq!(notification_pid(&frames), Some(sender), "{frames:?}");
    // Terminating by the gateway id reaches no server process.
    let v = first_value(&c.simple(&format!("select pg_terminate_backend({pid})")));
    assert_eq!(v.as_deref(), Some("f"));
}
