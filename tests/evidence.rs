//! Evidence an insider cannot rewrite unseen: recordings signed with an
//! Ed25519 key kept outside the recordings directory, the audit log's
//! account of every sealed session and every deletion, and `gatehouse
//! verify --key` catching what someone who can write the directory (but
//! does not hold the key) does to it: a rewritten and re-chained session,
//! a stripped signature, a deleted file, an audit log cut at a signed
//! checkpoint or edited and re-chained. Also: the key's own protections
//! and retention that never deletes young evidence.
mod common;
use common::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn gatehouse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gatehouse"))
}

fn run(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `gatehouse keygen --recordings` into `dir`: (private, public).
fn keygen(dir: &Path) -> (PathBuf, PathBuf) {
    let (code, out) = run(gatehouse().args(["keygen", "--recordings", "--out"]).arg(dir));
    assert_eq!(code, 0, "{out}");
    let private = dir.join("recording-key.pem");
    let public = dir.join("recording-key.pub.pem");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&public).unwrap().contains("BEGIN PUBLIC KEY"));
    // A second keygen does not replace a key by accident.
    let (code, out) = run(gatehouse().args(["keygen", "--recordings", "--out"]).arg(dir));
    assert_ne!(code, 0, "{out}");
    (private, public)
}

fn verify(path: &Path, keys: &[&Path]) -> (i32, String) {
    let mut cmd = gatehouse();
    cmd.args(["verify", "-v"]).arg(path);
    for k in keys {
        cmd.arg("--key").arg(k);
    }
    run(&mut cmd)
}

fn records(path: &Path) -> Vec<Value> {
    gatehouse::record::records(std::fs::File::open(path).unwrap()).collect()
}

fn session_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    gatehouse::record::collect(dir, &mut out).unwrap();
    out.retain(|p| !gatehouse::record::is_audit(p));
    out.sort();
    out
}

/// Stops gatehouse as a service manager does (SIGTERM) and waits.
fn stop(g: &mut Gatehouse) {
    g.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if g.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("gatehouse did not stop: {}", g.log());
}

/// A recordings directory written by a gateway with a signing key: three
/// sessions, then a clean stop. Returns the gateway (its temporary
/// directory holds the recordings) and the key pair.
fn signed_recordings(keys: &Path) -> (Gatehouse, PathBuf, PathBuf) {
    let (private, public) = keygen(keys);
    let mut g = Gatehouse::start(
        "",
        &format!(
            "[recording]\ndir = \"rec\"\nsigning_key = {:?}\ncheckpoint_interval_secs = 1\n",
            private.display().to_string()
        ),
    );
    for i in 0..3 {
        let (ok, out, err) = psql(&g, "postgres", &["-c", &format!("select {i} as n")]);
        assert!(ok, "{out}{err}");
    }
    let rec = g.dir.path().join("rec");
    let deadline = Instant::now() + Duration::from_secs(30);
    while session_files(&rec)
        .iter()
        .filter(|f| records(f).last().is_some_and(|v| v["kind"] == "seal"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "sessions not sealed: {}", g.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(&mut g);
    (g, private, public)
}

fn copy_dir(src: &Path, dst: &Path) {
    let (code, out) = run(Command::new("cp").arg("-a").arg(src).arg(dst));
    assert_eq!(code, 0, "{out}");
}

/// Re-chains a file after an edit: every `prev` made to match the line
/// before it again, as someone without the key would.
fn rechain(lines: &mut [String]) {
    let mut prev = "0".repeat(64);
    for l in lines.iter_mut() {
        let at = l.find("\"prev\":\"").unwrap() + 8;
        l.replace_range(at..at + 64, &prev);
        prev = hex::encode(Sha256::digest(l.as_bytes()));
    }
}

fn rewrite(path: &Path, f: impl Fn(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    f(&mut lines);
    rechain(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn signed_recordings_verify_with_their_key_only() {
    let keys = tempfile::tempdir().unwrap();
    let (g, _private, public) = signed_recordings(keys.path());
    let rec = g.dir.path().join("rec");
    let (code, out) = verify(&rec, &[&public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("4 intact, 0 failed (signatures checked)"), "{out}");
    assert!(out.contains("signed by key"), "{out}");
    assert!(out.contains("audit.ghrec: signed through record"), "{out}");

    // Every seal is signed; the audit log names every session with its
    // seal's hash and ends with a checkpoint (the clean stop).
    let audit = records(&rec.join("audit.ghrec"));
    assert_eq!(audit.first().unwrap()["kind"], "start");
    assert_eq!(audit.first().unwrap()["seals"], true);
    assert!(
        audit.last().unwrap()["sig"].is_string(),
        "the log ends signed: {audit:?}"
    );
    assert!(
        audit
            .iter()
            .filter(|v| v["kind"] != "admin")
            .all(|v| v["sig"].is_string()),
        "{audit:?}"
    );
    let sealed: Vec<&Value> = audit.iter().filter(|v| v["kind"] == "sealed").collect();
    assert_eq!(sealed.len(), 3);
    for f in session_files(&rec) {
        let recs = records(&f);
        let seal = recs.last().unwrap();
        assert_eq!(seal["kind"], "seal");
        assert_eq!(seal["sig"].as_str().map(str::len), Some(128), "{seal}");
        let line = std::fs::read_to_string(&f).unwrap().lines().last().unwrap().to_string();
        let hash = hex::encode(Sha256::digest(line.as_bytes()));
        let file = f.strip_prefix(&rec).unwrap().display().to_string();
        assert!(
            sealed
                .iter()
                .any(|s| s["file"] == file.as_str() && s["hash"] == hash.as_str()),
            "{file} {sealed:?}"
        );
    }
    // The checkpoints are also in the service log, outside the directory.
    assert!(g.log().contains("audit log checkpoint"), "{}", g.log());

    // Another key: every file fails, named.
    let other = tempfile::tempdir().unwrap();
    let (_, other_public) = keygen(other.path());
    let (code, out) = verify(&rec, &[&other_public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not one of the keys given"), "{out}");
    // Both keys (a rotation): fine.
    let (code, out) = verify(&rec, &[&other_public, &public]);
    assert_eq!(code, 0, "{out}");
    // Without a key: the chains and the audit log's account still check.
    let (code, out) = verify(&rec, &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn rewrites_deletions_and_cut_audit_logs_are_caught() {
    let keys = tempfile::tempdir().unwrap();
    let (g, _private, public) = signed_recordings(keys.path());
    let rec = g.dir.path().join("rec");
    let work = tempfile::tempdir().unwrap();
    let variant = |name: &str| {
        let d = work.path().join(name);
        copy_dir(&rec, &d);
        d
    };

    // A statement rewritten and the file re-chained, signature kept.
    let d = variant("rechained");
    let f = session_files(&d)[0].clone();
    rewrite(&f, |lines| {
        let i = lines.iter().position(|l| l.contains("\"kind\":\"statement\"")).unwrap();
        lines[i] = lines[i].replace(" as n", " as m");
        assert!(lines[i].contains(" as m"), "{}", lines[i]);
    });
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seal: the signature does not verify"), "{out}");
    // Without the key the audit log's account still catches it.
    let (code, out) = verify(&d, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the recording was rewritten"), "{out}");

    // The same, with the signature stripped from the seal.
    let d = variant("unsigned");
    let f = session_files(&d)[1].clone();
    rewrite(&f, |lines| {
        let last = lines.len() - 1;
        let v: Value = serde_json::from_str(&lines[last]).unwrap();
        let sig = v["sig"].as_str().unwrap().to_string();
        let key = v["key"].as_str().unwrap().to_string();
        lines[last] = lines[last]
            .replace(&format!(",\"key\":\"{key}\""), "")
            .replace(&format!(",\"sig\":\"{sig}\""), "");
        assert!(!lines[last].contains("sig"));
    });
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seal: not signed"), "{out}");

    // A whole session file deleted.
    let d = variant("deleted");
    let f = session_files(&d)[2].clone();
    std::fs::remove_file(&f).unwrap();
    for keys in [vec![public.as_path()], vec![]] {
        let (code, out) = verify(&d, &keys);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("{}: FAILED", f.display())) && out.contains("missing"),
            "{out}"
        );
    }

    // The audit log cut after its first record (the signed start): every
    // session sealed later is unaccounted for.
    let d = variant("cut");
    let audit = d.join("audit.ghrec");
    let text = std::fs::read_to_string(&audit).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("\"kind\":\"start\"") && lines[0].contains("\"sig\""),
        "{}",
        lines[0]
    );
    std::fs::write(&audit, lines[..1].join("\n") + "\n").unwrap();
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("not in the audit log").count(), 3, "{out}");

    // An audit record edited and the log re-chained: undetectable without
    // the key, caught with it.
    let d = variant("audit-edited");
    rewrite(&d.join("audit.ghrec"), |lines| {
        let v: Value = serde_json::from_str(&lines[0]).unwrap();
        let pid = v["pid"].as_u64().unwrap();
        lines[0] = lines[0].replace(&format!("\"pid\":{pid}"), &format!("\"pid\":{}", pid + 1));
    });
    let (code, out) = verify(&d, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("start: the signature does not verify"), "{out}");
}

#[test]
fn the_signing_key_must_be_private_and_outside_the_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let (private, public) = keygen(&keys);
    let check = |recording: &str, env: Option<(&str, &str)>| {
        let cfg = dir.path().join("gatehouse.toml");
        std::fs::write(&cfg, config_text(free_port(), "", recording)).unwrap();
        let mut cmd = gatehouse();
        cmd.args(["check", "--config"]).arg(&cfg).env_remove("GH_TEST_REC_KEY");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        run(&mut cmd)
    };
    let with_key = |p: &Path| {
        format!(
            "[recording]\ndir = \"rec\"\nsigning_key = {:?}\n",
            p.display().to_string()
        )
    };
    let (code, out) = check(&with_key(&private), None);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("no signing_key"), "{out}");
    // No key: a warning.
    let (code, out) = check("[recording]\ndir = \"rec\"\n", None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: recording: no signing_key"), "{out}");
    // Readable by others: refused by check and by serve.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = check(&with_key(&private), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mode 0644"), "{out}");
    let cfg = dir.path().join("serve.toml");
    std::fs::write(&cfg, config_text(free_port(), "", &with_key(&private))).unwrap();
    let (code, out) = run(gatehouse().args(["serve", "--config"]).arg(&cfg));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("0600"), "{out}");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Inside the recordings directory: a configuration error.
    let inside = dir.path().join("rec").join("k.pem");
    let (code, out) = check(&with_key(&inside), None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("outside the recordings directory"), "{out}");
    // The public key is no signing key.
    let (code, out) = check(&with_key(&public), None);
    assert_eq!(code, 1, "{out}");
    // From an environment variable.
    let pem = std::fs::read_to_string(&private).unwrap();
    let by_env = "[recording]\ndir = \"rec\"\nsigning_key_env = \"GH_TEST_REC_KEY\"\n";
    let (code, out) = check(by_env, Some(("GH_TEST_REC_KEY", &pem)));
    assert_eq!(code, 0, "{out}");
    let (code, out) = check(by_env, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GH_TEST_REC_KEY") && out.contains("not set"), "{out}");
    let (code, out) = check(by_env, Some(("GH_TEST_REC_KEY", "not a key")));
    assert_eq!(code, 1, "{out}");
    // Both ways at once: which one would be meant?
    let both = format!("{}signing_key_env = \"X\"\n", with_key(&private));
    let (code, out) = check(&both, None);
    assert_eq!(code, 1, "{out}");
    // A retention shorter than the minimum is refused.
    let (code, out) = check("[recording]\ndir = \"rec\"\nretention_days = 3\n", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("retention_min_days"), "{out}");
}

#[test]
fn retention_keeps_young_evidence_and_audits_each_deletion() {
    let rec = tempfile::tempdir().unwrap();
    let old = fake_recording(rec.path(), "old", 10 * 86_400, 1000);
    let young = fake_recording(rec.path(), "young", 7200, 20_000);
    let cfg = |extra: &str| format!("[recording]\ndir = {:?}\n{extra}", rec.path().display().to_string());
    // Far over max_total_bytes, but only what is older than
    // retention_min_days (7 by default) goes.
    let mut g = Gatehouse::start("", &cfg("max_total_bytes = 1000\n"));
    let (ok, out, err) = psql(&g, "postgres", &["-c", "select 1"]);
    assert!(ok, "{out}{err}");
    assert!(!old.exists());
    assert!(young.exists());
    stop(&mut g);
    let sessions = session_files(rec.path());
    assert_eq!(sessions.len(), 2, "the young fake and the new session: {sessions:?}");
    let audit = records(&rec.path().join("audit.ghrec"));
    let deleted: Vec<&Value> = audit.iter().filter(|v| v["kind"] == "deleted").collect();
    assert_eq!(deleted.len(), 1, "{audit:?}");
    assert_eq!(deleted[0]["file"], "2020-01-01/old.ghrec");
    assert_eq!(deleted[0]["why"], "max_total_bytes");
    assert!(g.log().contains("younger than retention_min_days"), "{}", g.log());

    // With no minimum, the gateway's own sealed session goes too, and
    // `verify` tells the deletion (on record) from a file removed by hand.
    let mut g = Gatehouse::start("", &cfg("max_total_bytes = 1\nretention_min_days = 0\n"));
    stop(&mut g);
    assert!(session_files(rec.path()).is_empty());
    let audit = records(&rec.path().join("audit.ghrec"));
    assert_eq!(audit.iter().filter(|v| v["kind"] == "deleted").count(), 3);
    let (code, out) = verify(rec.path(), &[]);
    assert_eq!(code, 0, "{out}");
    drop(g);
}

/// A small tmpfs the test mounts (and unmounts when dropped): a recordings
/// disk it can fill.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let (code, out) = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0750"), "tmpfs"])
            .arg(dir.path()));
        assert_eq!(
            code, 0,
            "mounting a tmpfs for the recordings (the tests run as root): {out}"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

async fn statement(c: &tokio_postgres::Client) -> Result<(), String> {
    c.simple_query("select repeat('x', 20000)")
        .await
        .map(|_| ())
        .map_err(|e| code(&e))
}

/// Recordings that cannot be written (the disk is full): with the default
/// `on_failure = "refuse"`, statements of open sessions and new sessions
/// are refused with 58030 until writing works again; then both work and
/// the audit log says what happened. With `continue`, nothing is refused.
#[tokio::test]
async fn a_full_recordings_disk_refuses_statements_until_it_has_room() {
    for policy in ["refuse", "continue"] {
        let disk = SmallDisk::mount(2 << 20);
        let g = Gatehouse::start(
            "",
            &format!(
                "[recording]\ndir = {:?}\nresults = \"full\"\nsync_interval_ms = 50\non_failure = \"{policy}\"\n",
                disk.path().display().to_string()
            ),
        );
        let (c, _n) = through(&g).await;
        statement(&c).await.unwrap();
        let filler = disk.fill();
        // The first writes that fail start the failure; from then on:
        let mut refused = None;
        for _ in 0..200 {
            if let Err(code) = statement(&c).await {
                refused = Some(code);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let new_session = tokio_postgres::connect(&g.conninfo("postgres"), tokio_postgres::NoTls).await;
        if policy == "refuse" {
            assert_eq!(refused.as_deref(), Some("58030"), "{}", g.log());
            // However large: a statement over the relay buffer too.
            let big = format!("select 1 /* {} */", "x".repeat(100_000));
            let e = c.simple_query(&big).await.unwrap_err();
            assert_eq!(code(&e), "58030", "{e}");
            let e = new_session.err().expect("a new session is refused");
            assert_eq!(code(&e), "58030", "{e}");
            let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
            assert!(msg.contains("cannot write session recordings"), "{msg}");
        } else {
            assert_eq!(refused, None, "continue: nothing is refused");
            // Closed at once: an unpolled connection would hold the drain.
            assert!(new_session.is_ok());
            drop(new_session);
        }
        assert!(g.log().contains("recording: cannot write"), "{}", g.log());
        // Room again: the next probe ends the failure.
        std::fs::remove_file(&filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while statement(&c).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "still refused after the disk has room: {}",
                g.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while !g.log().contains("writing works again") {
            assert!(Instant::now() < deadline, "no recovery: {}", g.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (c2, _n2) = through(&g).await;
        statement(&c2).await.unwrap();
        drop((c, c2));
        // The clients' connection tasks say goodbye on this runtime.
        let g = tokio::task::spawn_blocking(move || {
            let mut g = g;
            stop(&mut g);
            g
        })
        .await
        .unwrap();
        let audit = records(&disk.path().join("audit.ghrec"));
        let rec: Vec<&Value> = audit.iter().filter(|v| v["kind"] == "recording").collect();
        assert_eq!(rec.len(), 1, "{audit:?}");
        assert_eq!(rec[0]["outcome"], "recovered");
        assert_eq!(rec[0]["policy"], policy);
        assert!(rec[0]["write_errors_total"].as_u64().unwrap() > 0);
        drop(g);
    }
}

/// Appends a record to a chained file as someone without the key would:
/// the right `seq` and `prev`, no signature.
fn append_record(path: &Path, kind: &str, fields: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let last = text.lines().last().unwrap();
    let seq = serde_json::from_str::<Value>(last).unwrap()["seq"].as_u64().unwrap() + 1;
    let prev = hex::encode(Sha256::digest(last.as_bytes()));
    let line = format!(
        "{{\"seq\":{seq},\"prev\":\"{prev}\",\"t\":{},\"kind\":\"{kind}\",{fields}}}\n",
        gatehouse::record::now_us()
    );
    std::fs::write(path, text + &line).unwrap();
}

fn rel(dir: &Path, f: &Path) -> String {
    f.strip_prefix(dir).unwrap().display().to_string()
}

/// The audit log itself under attack: gone, moved, a forged deletion in
/// its unsigned tail, a second log that vouches for a copied session, a
/// cut combined with seals stripped of their time.
#[test]
fn forging_the_audit_logs_account_is_caught() {
    let keys = tempfile::tempdir().unwrap();
    let (g, _private, public) = signed_recordings(keys.path());
    let rec = g.dir.path().join("rec");
    let work = tempfile::tempdir().unwrap();
    let variant = |name: &str| {
        let d = work.path().join(name);
        copy_dir(&rec, &d);
        d
    };
    let fails = |d: &Path, what: &str| {
        let (code, out) = verify(d, &[&public]);
        assert_eq!(code, 1, "{what}: {out}");
        out
    };

    // No audit log at all, and a session gone.
    let d = variant("no-audit");
    std::fs::remove_file(d.join("audit.ghrec")).unwrap();
    std::fs::remove_file(&session_files(&d)[0]).unwrap();
    let out = fails(&d, "no audit log");
    assert!(out.contains("audit.ghrec: FAILED") && out.contains("missing"), "{out}");

    // The audit log moved where it is not read as one.
    let d = variant("moved");
    let s0 = session_files(&d)[0].clone();
    std::fs::rename(d.join("audit.ghrec"), s0.parent().unwrap().join("audit.ghrec")).unwrap();
    std::fs::remove_file(&session_files(&d)[1]).unwrap();
    let out = fails(&d, "moved audit log");
    assert!(out.contains("has an audit log at its root"), "{out}");

    // A deletion "by retention" appended to the unsigned tail.
    let d = variant("forged-deletion");
    let victim = session_files(&d)[2].clone();
    append_record(
        &d.join("audit.ghrec"),
        "deleted",
        &format!("\"file\":\"{}\",\"why\":\"max_total_bytes\"", rel(&d, &victim)),
    );
    std::fs::remove_file(&victim).unwrap();
    let out = fails(&d, "forged deletion");
    assert!(out.contains("missing"), "{out}");

    // A second audit log (named as a set-aside one) that repeats the
    // signed start of the real one, then vouches for session 0's content
    // copied over session 2 and for session 1's deletion.
    let d = variant("second-log");
    let s = session_files(&d);
    let audit = std::fs::read_to_string(d.join("audit.ghrec")).unwrap();
    let second = d.join("audit-broken-1.ghrec");
    std::fs::write(&second, audit.lines().take(2).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let seal0 = std::fs::read_to_string(&s[0])
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let hash0 = hex::encode(Sha256::digest(seal0.as_bytes()));
    let id0 = records(&s[0])[0]["id"].as_str().unwrap().to_string();
    append_record(
        &second,
        "sealed",
        &format!(
            "\"id\":\"{id0}\",\"file\":\"{}\",\"records\":1,\"hash\":\"{hash0}\"",
            rel(&d, &s[2])
        ),
    );
    append_record(&second, "deleted", &format!("\"file\":\"{}\"", rel(&d, &s[1])));
    std::fs::copy(&s[0], &s[2]).unwrap();
    std::fs::remove_file(&s[1]).unwrap();
    let out = fails(&d, "second audit log");
    assert!(out.contains(&format!("{}: FAILED", s[2].display())), "{out}");
    assert!(out.contains(&format!("{}: FAILED", s[1].display())), "{out}");

    // Cut after the first session's signed record, the others named again
    // by unsigned `sealed` records (as a live gateway's unsigned tail
    // would look), a forged `start` that would excuse everything, and the
    // second session deleted.
    let d = variant("cut-and-refilled");
    let audit = d.join("audit.ghrec");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    let kept = records(&audit)[1]["file"].as_str().unwrap().to_string();
    append_record(&audit, "start", "\"seals\":true,\"unsigned_tail\":1000000000000");
    let mut victim = None;
    for f in session_files(&d) {
        let name = rel(&d, &f);
        if name == kept {
            continue;
        }
        if victim.is_none() {
            std::fs::remove_file(&f).unwrap();
            victim = Some(f);
            continue;
        }
        let seal = std::fs::read_to_string(&f).unwrap().lines().last().unwrap().to_string();
        let id = records(&f)[0]["id"].as_str().unwrap().to_string();
        append_record(
            &audit,
            "sealed",
            &format!(
                "\"id\":\"{id}\",\"file\":\"{name}\",\"records\":1,\"hash\":\"{}\"",
                hex::encode(Sha256::digest(seal.as_bytes()))
            ),
        );
    }
    // The cut shows through the session that is still there: unsigned
    // records name nothing. (The deleted one, sealed after the cut, left no
    // trace here: the service log's checkpoints are the copy to compare.)
    let out = fails(&d, "cut and refilled");
    assert_eq!(out.matches("not in the audit log").count(), 1, "{out}");
    assert!(victim.is_some());

    // Cut at the first checkpoint, and the seals' times removed so that
    // the sessions look older than the audit log's account.
    let d = variant("cut-untimed");
    let audit = d.join("audit.ghrec");
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n").unwrap();
    for f in session_files(&d) {
        rewrite(&f, |lines| {
            let last = lines.len() - 1;
            let v: Value = serde_json::from_str(&lines[last]).unwrap();
            lines[last] = lines[last].replace(&format!(",\"t\":{}", v["t"]), "");
        });
    }
    let out = fails(&d, "cut and untimed");
    assert_eq!(out.matches("seal: the signature does not verify").count(), 3, "{out}");
}

/// The next start of the gateway neither blesses a tampered audit log nor
/// stumbles on a hostile one; a torn last record (a crash mid-write) is
/// cut off and the log goes on verifying.
#[test]
fn a_restart_sets_a_tampered_audit_log_aside_and_mends_a_torn_one() {
    let keys = tempfile::tempdir().unwrap();
    let (g, private, public) = signed_recordings(keys.path());
    let rec = g.dir.path().join("rec");
    let work = tempfile::tempdir().unwrap();
    let restart = |d: &Path| {
        let mut g = Gatehouse::start(
            "",
            &format!(
                "[recording]\ndir = {:?}\nsigning_key = {:?}\n",
                d.display().to_string(),
                private.display().to_string()
            ),
        );
        stop(&mut g);
        g.log()
    };
    let audit_logs = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("audit"))
            .collect();
        v.sort();
        v
    };

    // A torn last record.
    let d = work.path().join("torn");
    copy_dir(&rec, &d);
    let mut text = std::fs::read_to_string(d.join("audit.ghrec")).unwrap();
    text.push_str("{\"seq\":99,\"prev\":\"ab");
    std::fs::write(d.join("audit.ghrec"), text).unwrap();
    let log = restart(&d);
    assert!(log.contains("a torn last record was cut off"), "{log}");
    assert_eq!(audit_logs(&d), vec!["audit.ghrec"]);
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 0, "{out}");
    let starts: Vec<Value> = records(&d.join("audit.ghrec"))
        .into_iter()
        .filter(|v| v["kind"] == "start")
        .collect();
    assert_eq!(starts.last().unwrap()["torn_bytes"], 20);

    // An early record edited and the log re-chained: the start finds its
    // checkpoints broken, keeps it aside and begins a new chain; verify
    // still fails on the old one.
    let d = work.path().join("edited");
    copy_dir(&rec, &d);
    rewrite(&d.join("audit.ghrec"), |lines| {
        lines[0] = lines[0].replace("\"seals\":true", "\"seals\":false");
    });
    let log = restart(&d);
    assert!(log.contains("set aside"), "{log}");
    let logs = audit_logs(&d);
    assert_eq!(logs.len(), 2, "{logs:?}");
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("audit-broken-") && out.contains("the signature does not verify"),
        "{out}"
    );

    // The audit log removed (a session with it), then a restart: the new
    // log accounts for nothing that came before.
    let d = work.path().join("removed");
    copy_dir(&rec, &d);
    std::fs::remove_file(d.join("audit.ghrec")).unwrap();
    std::fs::remove_file(&session_files(&d)[0]).unwrap();
    let log = restart(&d);
    assert!(log.contains("the audit log is missing while recordings exist"), "{log}");
    let (code, out) = verify(&d, &[&public]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.matches("not in the audit log").count(), 2, "{out}");
    assert_eq!(records(&d.join("audit.ghrec"))[0]["previous"], "missing");

    // A hostile record out of sequence: no panic, set aside.
    let d = work.path().join("hostile");
    copy_dir(&rec, &d);
    let mut text = std::fs::read_to_string(d.join("audit.ghrec")).unwrap();
    text.push_str("{\"seq\":0,\"kind\":\"x\"}\n");
    std::fs::write(d.join("audit.ghrec"), text).unwrap();
    let log = restart(&d);
    assert!(log.contains("set aside") && !log.contains("panicked"), "{log}");
    assert_eq!(audit_logs(&d).len(), 2);
}
