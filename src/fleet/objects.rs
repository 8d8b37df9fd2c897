//! Recordings in object storage: each instance uploads its sealed
//! recordings (and copies of its audit log) to an S3-compatible bucket,
//! content-addressed (`recordings/<sha256>.ghrec`), and indexes them in the
//! control database; any instance lists, downloads and replays them.
//!
//! A local copy is removed only once the object has been read back whole
//! and its SHA-256 matches, the index row is written and the audit log
//! says where the file went (an `uploaded` record, which `verify` counts
//! like a deletion it was told of). An instance killed on the way uploads
//! on its next start: every sealed file still on disk is a candidate, and
//! an object already there under its hash is only read back.

use super::Fleet;
use crate::control::recorder::{Entry, Recorder};
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres::types::ToSql;

/// Files up to this size go up in one PUT; larger ones in parts of it.
const PART: usize = 8 << 20;
/// Recordings up to this size are read into memory once, checked, hashed
/// and sent from there; larger ones are streamed from the file.
const IN_MEMORY: u64 = 64 << 20;
/// Recordings fetched from the bucket kept on disk for the API, at most.
const CACHE_FILES: usize = 64;
/// The cache's directory under the recordings directory (a dot-directory:
/// the recorder's index and `verify` skip it).
pub const CACHE_DIR: &str = ".fleet-cache";

/// The bucket and what its uploader last saw.
pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    ok: AtomicBool,
    trouble: Mutex<Option<String>>,
    every: Duration,
}

/// What was last sent of the audit log: its length and hash.
pub struct Sent {
    len: u64,
    sha: String,
}

/// A recording in the fleet's index.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub instance: String,
    pub entry: Entry,
    pub bytes: u64,
    pub sha256: String,
    pub key: String,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 and size of a file, read in chunks.
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

impl Objects {
    pub fn new(cfg: &crate::config::Bucket) -> Result<Objects, String> {
        let (id, secret) = cfg.credentials()?;
        // The S3 client's TLS takes the process's default provider: ring,
        // as everywhere else in gatehouse (a second install is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::new()
            .with_endpoint(cfg.endpoint.trim_end_matches('/'))
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            // Options replace the builder's: `allow_http` goes in them.
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
                ..Default::default()
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(cfg.endpoint.starts_with("http://"))
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            )
            .build()
            .map_err(|e| format!("bucket: {e}"))?;
        let mut prefix = cfg.prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Objects {
            store: Arc::new(store),
            prefix,
            ok: AtomicBool::new(false),
            trouble: Mutex::new(Some("not reached yet".into())),
            every: Duration::from_secs(cfg.upload_every_secs),
        })
    }

    fn recording_key(&self, sha: &str) -> String {
        format!("{}recordings/{}/{sha}.{}", self.prefix, &sha[..2], crate::record::EXT)
    }

    fn audit_key(&self, instance: &str) -> String {
        format!(
            "{}audit/{instance}/{}",
            self.prefix,
            crate::control::recorder::AUDIT_FILE_NAME
        )
    }

    /// Whether the bucket answered the last call.
    pub fn reachable(&self) -> bool {
        self.ok.load(Ordering::Acquire)
    }

    pub fn trouble(&self) -> Option<String> {
        self.trouble.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, r: &Result<(), String>) {
        self.ok.store(r.is_ok(), Ordering::Release);
        *self.trouble.lock().unwrap_or_else(|p| p.into_inner()) = r.as_ref().err().cloned();
    }

    /// The object's size, or `None` when it is not there.
    async fn size(&self, key: &str) -> Result<Option<u64>, String> {
        match self.store.head(&ObjectPath::from(key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(format!("HEAD {key}: {e}")),
        }
    }

    /// Uploads a file (in parts when large).
    async fn put_file(&self, key: &str, path: &Path, size: u64) -> Result<(), String> {
        let location = ObjectPath::from(key);
        if size as usize <= PART {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            self.store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| format!("PUT {key}: {e}"))?;
            return Ok(());
        }
        use tokio::io::AsyncReadExt;
        let upload = self
            .store
            .put_multipart(&location)
            .await
            .map_err(|e| format!("multipart {key}: {e}"))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut f = tokio::fs::File::open(path).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(2)
                .await
                .map_err(|e| format!("multipart {key}: {e}"))?;
            w.write(&buf[..n]);
        }
        w.finish().await.map_err(|e| format!("multipart {key}: {e}"))?;
        Ok(())
    }

    /// Reads an object whole (at most `limit` bytes), hashing it; with
    /// `to`, also writes it there.
    async fn read_back(&self, key: &str, to: Option<&Path>, limit: u64) -> Result<(String, u64), String> {
        use tokio::io::AsyncWriteExt;
        let got = self
            .store
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| format!("GET {key}: {e}"))?;
        let mut stream = got.into_stream();
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut out = match to {
            Some(p) => Some(tokio::fs::File::create(p).await.map_err(|e| e.to_string())?),
            None => None,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("GET {key}: {e}"))?;
            h.update(&chunk);
            n += chunk.len() as u64;
            if n > limit {
                return Err(format!("{key}: larger than the {limit} bytes expected"));
            }
            if let Some(o) = out.as_mut() {
                o.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
        }
        if let Some(mut o) = out {
            o.flush().await.map_err(|e| e.to_string())?;
        }
        Ok((hex(&h.finalize()), n))
    }
}

impl Fleet {
    /// Uploads sealed recordings every `upload_every_secs` while the
    /// control database is reachable (the index lives there).
    pub(super) async fn uploader(self: Arc<Self>, rec: Arc<Recorder>, objects: Arc<Objects>) {
        let mut audit_sent: Option<Sent> = None;
        // Files found not to match their seal: left alone.
        let mut refused: std::collections::HashSet<PathBuf> = Default::default();
        let mut first = true;
        loop {
            if !first {
                tokio::time::sleep(objects.every).await;
            }
            first = false;
            if !self.connected() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                first = true;
                continue;
            }
            // The index reads its file of finished sessions: off the
            // runtime's threads. What cannot be read now is uploaded at a
            // later pass.
            let index_of = rec.clone();
            let sealed: Vec<Entry> = tokio::task::spawn_blocking(move || {
                let g = index_of.index.lock().unwrap_or_else(|p| p.into_inner());
                let mut sealed = Vec::new();
                if let Err(e) = g.each(|e| {
                    if !e.live {
                        sealed.push(e.to_entry());
                    }
                }) {
                    tracing::warn!(target: "gatehouse::fleet", error = %e, "the index of recordings cannot be read whole");
                }
                sealed
            })
            .await
            .unwrap_or_default();
            let mut result = Ok(());
            // Seals recorded in the audit log, for files indexed at start.
            let recorded = if sealed
                .iter()
                .any(|e| e.seal_hash.is_none() && !refused.contains(&e.path))
            {
                let audit = rec.audit_path();
                tokio::task::spawn_blocking(move || sealed_in_audit_log(&audit))
                    .await
                    .unwrap_or_default()
            } else {
                Default::default()
            };
            for e in sealed {
                if refused.contains(&e.path) {
                    continue;
                }
                let file = e
                    .path
                    .strip_prefix(&rec.cfg.dir)
                    .unwrap_or(&e.path)
                    .display()
                    .to_string();
                let expected = e.seal_hash.clone().or_else(|| recorded.get(&file).cloned());
                let seal = expected.clone().unwrap_or_default();
                // A recording of ordinary size is read once: the bytes
                // checked against the seal are the bytes hashed and sent.
                let bytes = match read_whole(&e.path).await {
                    Ok(b) => b,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        rec.forget(&e.path);
                        continue;
                    }
                    Err(err) => {
                        result = Err(format!("reading {}: {err}", e.path.display()));
                        break;
                    }
                };
                match check_sealed(&rec, &e, expected, bytes.clone()).await {
                    Ok(()) => {}
                    Err(why) => {
                        // Evidence that does not match its seal stays where
                        // it is, for whoever investigates; it is not
                        // uploaded (and vouched for) as if it were sound.
                        tracing::error!(target: "gatehouse::fleet", recording = %e.id, file = %file, why = %why, "recording not uploaded: it does not match its seal");
                        refused.insert(e.path.clone());
                        continue;
                    }
                }
                if let Err(err) = self.upload_one(&rec, &objects, &e, &seal, bytes).await {
                    tracing::warn!(target: "gatehouse::fleet", recording = %e.id, error = %err, "recording not uploaded yet");
                    result = Err(err);
                    break;
                }
            }
            if result.is_ok() {
                result = self.upload_audit(&rec, &objects, &mut audit_sent).await;
            }
            if result.is_ok() {
                // Reachable even with nothing to send.
                result = objects
                    .size(&format!("{}.gatehouse-probe", objects.prefix))
                    .await
                    .map(|_| ());
            }
            objects.set(&result);
        }
    }

    async fn upload_one(
        &self,
        rec: &Recorder,
        objects: &Objects,
        e: &Entry,
        seal: &str,
        bytes: Option<Arc<Vec<u8>>>,
    ) -> Result<(), String> {
        let (sha, size) = match &bytes {
            Some(b) => {
                let b = b.clone();
                tokio::task::spawn_blocking(move || (hex(&Sha256::digest(&b[..])), b.len() as u64))
                    .await
                    .map_err(|e| e.to_string())?
            }
            None => {
                let path = e.path.clone();
                tokio::task::spawn_blocking(move || hash_file(&path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|err| format!("reading {}: {err}", e.path.display()))?
            }
        };
        let key = objects.recording_key(&sha);
        if objects.size(&key).await? != Some(size) {
            match &bytes {
                Some(b) => {
                    objects
                        .store
                        .put(&ObjectPath::from(key.as_str()), PutPayload::from(b.to_vec()))
                        .await
                        .map_err(|err| format!("PUT {key}: {err}"))?;
                }
                None => objects.put_file(&key, &e.path, size).await?,
            }
        }
        let back = objects.read_back(&key, None, size).await;
        if !matches!(&back, Ok((h, n)) if *h == sha && *n == size) {
            // Not what its name says (the file changed under a large
            // upload): the object goes, the file stays.
            let _ = objects.store.delete(&ObjectPath::from(key.as_str())).await;
            return Err(format!(
                "{key}: the object read back is not the file hashed: kept locally"
            ));
        }
        self.index_recording(e, &key, &sha, size).await?;
        rec.record_upload(e, &key, &sha, size, seal)
            .map_err(|err| format!("audit log: {err}"))?;
        match std::fs::remove_file(&e.path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(format!("removing {}: {err}", e.path.display())),
        }
        rec.forget(&e.path);
        tracing::info!(target: "gatehouse::fleet", recording = %e.id, key = %key, bytes = size, "recording uploaded and verified; local copy removed");
        Ok(())
    }

    /// A copy of the audit log as it is now, when it grew. The log only
    /// grows: a local log that no longer starts with what was sent (cut or
    /// rewritten) is sent under a key of its own and the copy already in
    /// the bucket is left as it was.
    async fn upload_audit(&self, rec: &Recorder, objects: &Objects, sent: &mut Option<Sent>) -> Result<(), String> {
        let path = rec.audit_path();
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(());
        };
        if sent.as_ref().is_some_and(|s| s.len == meta.len()) {
            return Ok(());
        }
        // A snapshot: the log keeps growing while it is read.
        let bytes = tokio::fs::read(&path).await.map_err(|e| e.to_string())?;
        let extends = match sent.as_ref() {
            None => true,
            Some(s) => bytes.len() as u64 >= s.len && hex(&Sha256::digest(&bytes[..s.len as usize])) == s.sha,
        };
        let key = if extends {
            objects.audit_key(&self.instance)
        } else {
            let k = format!(
                "{}audit/{}/diverged-{}.{}",
                objects.prefix,
                self.instance,
                crate::record::now_us(),
                crate::record::EXT
            );
            tracing::error!(target: "gatehouse::fleet", key = %k, "the audit log no longer starts with what was sent to the bucket: sent under a key of its own, the earlier copy kept");
            k
        };
        let sha = hex(&Sha256::digest(&bytes));
        let len = bytes.len() as u64;
        objects
            .store
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
            .await
            .map_err(|e| format!("PUT {key}: {e}"))?;
        if extends {
            *sent = Some(Sent { len, sha });
        }
        Ok(())
    }

    async fn index_recording(&self, e: &Entry, key: &str, sha: &str, size: u64) -> Result<(), String> {
        let (instance, e, key, sha) = (self.instance.clone(), e.clone(), key.to_string(), sha.to_string());
        self.with_client("indexing a recording", move |c| {
            Box::pin(async move {
                let session = e.session as i64;
                let started = e.started_us as i64;
                let ended = e.ended_us.map(|v| v as i64);
                let statements = e.statements as i64;
                let bytes = size as i64;
                let (identity, target, end): (&str, &str, Option<&str>) = (&e.identity, &e.target, e.end.as_deref());
                let roles: Vec<&str> = e.roles.iter().map(|r| &**r).collect();
                let decisions: Vec<&str> = e.decisions.iter().map(|d| &**d).collect();
                c.execute(
                    "INSERT INTO gatehouse.recordings (instance, id, session, identity, roles, target, client, started_us, \
                     ended_us, end_reason, statements, decisions, bytes, sha256, key) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                     ON CONFLICT (instance, id) DO UPDATE SET bytes = EXCLUDED.bytes, sha256 = EXCLUDED.sha256, key = EXCLUDED.key",
                    &[
                        &instance as &(dyn ToSql + Sync),
                        &e.id,
                        &session,
                        &identity,
                        &roles,
                        &target,
                        &e.client,
                        &started,
                        &ended,
                        &end,
                        &statements,
                        &decisions,
                        &bytes,
                        &sha,
                        &key,
                    ],
                )
                .await
            })
        })
        .await
        .map(|_| ())
    }

    /// The fleet's index of uploaded recordings, newest first (at most
    /// `limit`), or those with `id`.
    pub async fn indexed_recordings(&self, id: Option<&str>, limit: i64) -> Result<Vec<Indexed>, String> {
        let id = id.map(str::to_string);
        let rows = self
            .with_client("listing recordings", move |c| {
                Box::pin(async move {
                    let cols =
                        "instance, id, session, identity, roles, target, client, started_us, ended_us, end_reason, \
                                statements, decisions, bytes, sha256, key";
                    match id {
                        Some(id) => {
                            c.query(
                                &format!("SELECT {cols} FROM gatehouse.recordings WHERE id = $1 ORDER BY instance"),
                                &[&id],
                            )
                            .await
                        }
                        None => {
                            c.query(
                                &format!("SELECT {cols} FROM gatehouse.recordings ORDER BY started_us DESC LIMIT $1"),
                                &[&limit],
                            )
                            .await
                        }
                    }
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| Indexed {
                instance: r.get(0),
                entry: Entry {
                    id: r.get(1),
                    session: r.get::<_, i64>(2) as u32,
                    identity: r.get::<_, String>(3).into(),
                    roles: r.get::<_, Vec<String>>(4).into_iter().map(Arc::from).collect(),
                    target: r.get::<_, String>(5).into(),
                    client: r.get(6),
                    started_us: r.get::<_, i64>(7).max(0) as u64,
                    ended_us: r.get::<_, Option<i64>>(8).map(|v| v.max(0) as u64),
                    end: r.get::<_, Option<String>>(9).map(Arc::from),
                    statements: r.get::<_, i64>(10).max(0) as u64,
                    decisions: r.get::<_, Vec<String>>(11).into_iter().map(Arc::from).collect(),
                    live: false,
                    path: PathBuf::new(),
                    seal_hash: None,
                },
                bytes: r.get::<_, i64>(12).max(0) as u64,
                sha256: r.get(13),
                key: r.get(14),
            })
            .collect())
    }

    /// A local file holding an indexed recording: fetched from the bucket
    /// into the cache (checked against its hash) unless already there.
    pub async fn fetch_recording(&self, rec: &Recorder, r: &Indexed) -> Result<PathBuf, String> {
        let objects = self.objects.as_ref().ok_or("no bucket is configured")?;
        if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the index holds a malformed hash".into());
        }
        let dir = rec.cfg.dir.join(CACHE_DIR);
        crate::control::recorder::create_private_dir(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(format!("{}.{}", r.sha256, crate::record::EXT));
        if path.exists() {
            // Checked at every use: the cache is a directory on disk.
            let p = path.clone();
            let cached = tokio::task::spawn_blocking(move || hash_file(&p))
                .await
                .map_err(|e| e.to_string())?;
            if matches!(&cached, Ok((sha, _)) if *sha == r.sha256) {
                return Ok(path);
            }
            let _ = std::fs::remove_file(&path);
        }
        // The key follows from the hash (an index row cannot point
        // elsewhere in the bucket).
        let key = objects.recording_key(&r.sha256);
        let part = dir.join(format!("{}.part-{:08x}", r.sha256, rand::random::<u32>()));
        let got = objects.read_back(&key, Some(&part), r.bytes).await;
        match got {
            Ok((sha, _)) if sha == r.sha256 => {}
            Ok(_) => {
                let _ = std::fs::remove_file(&part);
                return Err(format!("{key}: the object does not match its hash in the index"));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        }
        std::fs::rename(&part, &path).map_err(|e| e.to_string())?;
        trim_cache(&dir);
        Ok(path)
    }
}

/// Keeps the newest `CACHE_FILES` files of the cache.
fn trim_cache(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= CACHE_FILES {
        return;
    }
    files.sort();
    let extra = files.len() - CACHE_FILES;
    for (_, p) in files.into_iter().take(extra) {
        let _ = std::fs::remove_file(p);
    }
}

/// The `sealed` records of an audit log: file → hash of its seal line.
fn sealed_in_audit_log(path: &Path) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let Ok(f) = std::fs::File::open(path) else { return out };
    for v in crate::record::records(f) {
        if v["kind"] == "sealed" {
            if let (Some(file), Some(hash)) = (v["file"].as_str(), v["hash"].as_str()) {
                out.insert(file.to_string(), hash.to_string());
            }
        }
    }
    out
}

/// A sealed recording is uploaded only when its chain is whole, its seal
/// (signature included, with a key) verifies, and its seal line is the one
/// the audit log recorded for it.
async fn check_sealed(
    rec: &Recorder,
    e: &Entry,
    expected: Option<String>,
    bytes: Option<Arc<Vec<u8>>>,
) -> Result<(), String> {
    let Some(expected) = expected else {
        return Err("no seal of it is on record".into());
    };
    let keys = rec
        .signer
        .as_ref()
        .map(|s| crate::record::signing::Keyring(vec![s.public()]));
    let path = e.path.clone();
    let report = tokio::task::spawn_blocking(move || match bytes {
        Some(b) => Ok(crate::record::verify_signed(&path, &b[..], false, keys.as_ref())),
        None => {
            let f = std::fs::File::open(&path)?;
            Ok::<_, std::io::Error>(crate::record::verify_signed(&path, f, false, keys.as_ref()))
        }
    })
    .await
    .map_err(|err| err.to_string())?
    .map_err(|err| err.to_string())?;
    if let Some((n, why)) = &report.broken {
        return Err(format!("record {n}: {why}"));
    }
    if !report.sealed {
        return Err("it has no seal".into());
    }
    if report.seal_hash.as_deref() != Some(expected.as_str()) || report.id.as_deref() != Some(e.id.as_str()) {
        return Err("its seal is not the one the audit log recorded".into());
    }
    Ok(())
}

/// The file's bytes when it is at most `IN_MEMORY` long (`None`: larger).
async fn read_whole(path: &Path) -> std::io::Result<Option<Arc<Vec<u8>>>> {
    let len = tokio::fs::metadata(path).await?.len();
    if len > IN_MEMORY {
        return Ok(None);
    }
    Ok(Some(Arc::new(tokio::fs::read(path).await?)))
}
