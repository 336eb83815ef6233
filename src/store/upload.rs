//! Streaming an archive into a store while it is written: the archive
//! writer hands whole parts to an uploader thread (its own runtime, so a
//! slow store never runs on the action's), which keeps at most two parts
//! in flight. Memory stays at a few parts whatever the archive's size.
//!
//! The multipart upload's ID is recorded in the state dir before the first
//! part, and forgotten only once the upload is completed or aborted: an
//! upload cut short by a crash or a dead store is aborted by the next run.
//! An object appears only when the upload completes, and counts as a
//! backup only once its record is beside it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStoreExt, PutMultipartOptions, PutPayload,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use super::{Kind, Record, Store, StoreError, Stores, RECORD_SUFFIX};
use crate::fsutil;

/// Part size: S3 takes at most 10,000 parts, so archives up to 80 GB.
pub const PART: usize = 8 << 20;
/// The slowest a part may go before the upload counts as stalled, on top
/// of the stall timeout itself: 256 KiB/s.
const PART_SECS_FLOOR: u64 = (PART as u64) / (256 << 10);
/// Parts uploading at once; with one being filled and one queued, the
/// memory an upload holds is about four parts.
const IN_FLIGHT: usize = 2;
/// The uploads not yet completed or aborted.
const PENDING_FILE: &str = "store-uploads.json";

enum Msg {
    Part(Vec<u8>),
    Finish(Box<Record>),
}

/// What an upload left in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub url: String,
    pub key: String,
    pub bytes: u64,
}

/// The writer side of one upload.
pub struct Upload {
    url: String,
    tx: Option<SyncSender<Msg>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<Result<Uploaded, StoreError>>>,
    error: Option<StoreError>,
}

impl Upload {
    /// Starts the upload of `key`; nothing is visible in the store until
    /// `finish` succeeds.
    /// With `recipients`, the object is the archive encrypted to them
    /// with age, in the stream.
    pub fn start(
        store: &Store,
        key: &str,
        metadata: Vec<(&'static str, String)>,
        recipients: Option<Vec<String>>,
        state_dir: &Path,
    ) -> Upload {
        let (tx, rx) = sync_channel(1);
        let worker = Worker {
            store: store.clone(),
            key: key.to_string(),
            metadata,
            recipients,
            state_dir: state_dir.to_path_buf(),
        };
        let thread = std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || worker.run(rx));
        let (thread, error) = match thread {
            Ok(t) => (Some(t), None),
            Err(e) => (
                None,
                Some(StoreError::Client {
                    store: store.url(),
                    reason: format!("cannot start the upload: {e}"),
                }),
            ),
        };
        Upload {
            url: store.url(),
            tx: thread.as_ref().map(|_| tx),
            buf: Vec::new(),
            thread,
            error,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The upload failed; what it was given since is dropped.
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Why it failed, when it did.
    pub fn error(&self) -> Option<&StoreError> {
        self.error.as_ref()
    }

    fn send(&mut self, msg: Msg) {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if !sent {
            self.fail();
        }
    }

    /// The worker stopped: collect its reason.
    fn fail(&mut self) {
        self.tx = None;
        self.buf = Vec::new();
        if self.error.is_some() {
            return;
        }
        let reason = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => StoreError::Client {
                store: self.url.clone(),
                reason: "the upload stopped unexpectedly".into(),
            },
        };
        self.error = Some(reason);
    }

    /// Sends what is left, completes the upload and writes the record.
    pub fn finish(mut self, record: Record) -> Result<Uploaded, StoreError> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.send(Msg::Part(last));
        }
        if self.error.is_none() {
            self.send(Msg::Finish(Box::new(record)));
        }
        self.tx = None;
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(StoreError::Client {
                store: self.url.clone(),
                reason: "the upload stopped unexpectedly".into(),
            }),
        }
    }
}

impl Drop for Upload {
    /// Dropped unfinished: the worker sees the channel close and aborts.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Write for Upload {
    /// Never fails the archive: a failed upload keeps its reason and the
    /// local file (if any) goes on.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(data.len());
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= PART && self.error.is_none() {
            let rest = self.buf.split_off(PART);
            let part = std::mem::replace(&mut self.buf, rest);
            self.send(Msg::Part(part));
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl crate::archive::output::SideSink for Upload {
    fn failure(&self) -> Option<String> {
        self.error.as_ref().map(ToString::to_string)
    }
}

struct Worker {
    store: Store,
    key: String,
    metadata: Vec<(&'static str, String)>,
    recipients: Option<Vec<String>>,
    state_dir: PathBuf,
}

impl Worker {
    fn run(self, rx: Receiver<Msg>) -> Result<Uploaded, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.err(format!("cannot start the upload's runtime: {e}")))?;
        rt.block_on(self.upload(rx))
    }

    fn err(&self, reason: String) -> StoreError {
        StoreError::Client {
            store: self.store.url(),
            reason,
        }
    }

    async fn upload(self, rx: Receiver<Msg>) -> Result<Uploaded, StoreError> {
        let path = ObjectPath::from(self.key.as_str());
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(if self.recipients.is_some() {
                "application/octet-stream"
            } else {
                "application/gzip"
            }),
        );
        if !self.store.settings.storage_class.is_empty() && self.store.settings.kind == Kind::S3 {
            attributes.insert(
                Attribute::StorageClass,
                AttributeValue::from(self.store.settings.storage_class.clone()),
            );
        }
        for (k, v) in &self.metadata {
            attributes.insert(
                Attribute::Metadata((*k).into()),
                AttributeValue::from(v.clone()),
            );
        }
        if self.store.settings.kind == Kind::Azure {
            // Azure's block upload takes no attributes.
            attributes = Attributes::new();
        }
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        // Never over another unit's archive of the same second.
        match self.store.within(self.store.objects().head(&path)).await? {
            Ok(_) => {
                return Err(self.err(format!(
                "{} already exists and is never overwritten; run the snapshot again a second later",
                self.key
            )))
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.store.error(&e)),
        }
        let mp = self.store.multipart();
        let id = self
            .store
            .bounded(mp.create_multipart_opts(&path, opts))
            .await?;
        let pending = Pending {
            kind: self.store.settings.kind,
            key: self.key.clone(),
            id: id.clone(),
            store: self.store.url(),
            endpoint: self.store.settings.endpoint.clone(),
        };
        if let Err(e) = pending.remember(&self.state_dir) {
            let _ = self.store.bounded(mp.abort_multipart(&path, &id)).await;
            return Err(self.err(format!("cannot record the upload in the state dir: {e}")));
        }
        let outcome = self.parts(rx, &path, &id).await;
        match outcome {
            Ok(done) => {
                let _ = pending.forget(&self.state_dir);
                Ok(done)
            }
            Err(e) => {
                // Forgotten only once the store has let go of the parts;
                // otherwise the next run aborts it.
                if self
                    .store
                    .bounded(mp.abort_multipart(&path, &id))
                    .await
                    .is_ok()
                {
                    let _ = pending.forget(&self.state_dir);
                }
                Err(e)
            }
        }
    }

    async fn parts(
        &self,
        rx: Receiver<Msg>,
        path: &ObjectPath,
        id: &str,
    ) -> Result<Uploaded, StoreError> {
        let mut out = PartQueue {
            worker: self,
            path,
            id,
            tasks: JoinSet::new(),
            done: Vec::new(),
            stored: Sha256::new(),
            stored_bytes: 0,
        };
        let mut age = match &self.recipients {
            Some(r) => Some(AgeStream::new(r).map_err(|e| self.err(e))?),
            None => None,
        };
        let mut plain = 0u64;
        let mut rx = Some(rx);
        let mut record = loop {
            let (back, msg) = next(rx.take()).await;
            rx = back;
            match msg {
                Some(Msg::Part(data)) => {
                    plain += data.len() as u64;
                    let ready = match &mut age {
                        None => vec![data],
                        Some(a) => a.push(&data).map_err(|e| self.err(e))?,
                    };
                    for part in ready {
                        out.send(part).await?;
                    }
                }
                Some(Msg::Finish(record)) => break *record,
                // The archive failed: the caller dropped its side.
                None => return Err(self.err("the archive was not completed".into())),
            }
        };
        if let Some(a) = age.take() {
            for part in a.finish().map_err(|e| self.err(e))? {
                out.send(part).await?;
            }
        }
        if plain != record.bytes {
            return Err(self.err(format!(
                "{plain} bytes were uploaded of the archive's {}",
                record.bytes
            )));
        }
        let (stored_sha, stored_bytes) = out.complete().await?;
        record.archive = self.key.rsplit('/').next().unwrap_or_default().to_string();
        if let Some(recipients) = &self.recipients {
            record.encrypted = Some(crate::archive::record::Encrypted {
                sha256: stored_sha,
                bytes: stored_bytes,
                recipients: recipients.clone(),
            });
        }
        let record_key = ObjectPath::from(format!("{}{RECORD_SUFFIX}", self.key));
        let text = record.to_json();
        if let Err(e) = self
            .store
            .bounded(
                self.store
                    .objects()
                    .put(&record_key, PutPayload::from(text)),
            )
            .await
        {
            // An archive without its record is no backup: take it back.
            let _ = self.store.bounded(self.store.objects().delete(path)).await;
            return Err(e);
        }
        Ok(Uploaded {
            url: self.store.url(),
            key: self.key.clone(),
            bytes: stored_bytes,
        })
    }

    /// Waits for one part. The client's read timeout catches a store that
    /// stops answering; this bounds a part that crawls.
    async fn join_one(
        &self,
        tasks: &mut JoinSet<(usize, object_store::Result<PartId>)>,
        done: &mut [Option<PartId>],
    ) -> Result<(), StoreError> {
        let limit = self.store.timeouts.stall + Duration::from_secs(PART_SECS_FLOOR);
        match tokio::time::timeout(limit, tasks.join_next()).await {
            Err(_) => {
                tasks.abort_all();
                Err(self.err(format!(
                    "one {} MiB part took over {} s (the upload needs at least 256 KiB/s, or a longer stall-timeout)",
                    PART >> 20,
                    limit.as_secs()
                )))
            }
            Ok(None) => Ok(()),
            Ok(Some(Err(e))) => Err(self.err(format!("a part upload failed: {e}"))),
            Ok(Some(Ok((_, Err(e))))) => {
                tasks.abort_all();
                Err(self.store.error(&e))
            }
            Ok(Some(Ok((idx, Ok(part))))) => {
                if let Some(slot) = done.get_mut(idx) {
                    *slot = Some(part);
                }
                Ok(())
            }
        }
    }
}

/// The parts of one upload, in order, at most `IN_FLIGHT` at a time,
/// hashed as stored.
struct PartQueue<'a> {
    worker: &'a Worker,
    path: &'a ObjectPath,
    id: &'a str,
    tasks: JoinSet<(usize, object_store::Result<PartId>)>,
    done: Vec<Option<PartId>>,
    stored: Sha256,
    stored_bytes: u64,
}

impl PartQueue<'_> {
    async fn send(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        while self.tasks.len() >= IN_FLIGHT {
            self.worker
                .join_one(&mut self.tasks, &mut self.done)
                .await?;
        }
        self.stored.update(&data);
        self.stored_bytes += data.len() as u64;
        let idx = self.done.len();
        self.done.push(None);
        let (mp, path, id) = (
            self.worker.store.multipart(),
            self.path.clone(),
            self.id.to_string(),
        );
        self.tasks.spawn(async move {
            let r = mp.put_part(&path, &id, idx, PutPayload::from(data)).await;
            (idx, r)
        });
        Ok(())
    }

    /// Waits for every part and completes the upload; the SHA-256 and
    /// size of the object as stored.
    async fn complete(mut self) -> Result<(String, u64), StoreError> {
        while !self.tasks.is_empty() {
            self.worker
                .join_one(&mut self.tasks, &mut self.done)
                .await?;
        }
        // Every part answered, in order: a gap would shift part numbers.
        let Some(parts) = std::mem::take(&mut self.done)
            .into_iter()
            .collect::<Option<Vec<PartId>>>()
        else {
            return Err(self
                .worker
                .err("a part of the upload was never confirmed".into()));
        };
        let mp = self.worker.store.multipart();
        self.worker
            .store
            .bounded(mp.complete_multipart(self.path, &self.id.to_string(), parts))
            .await?;
        let sha = crate::etcd::snapshot::hex(&self.stored.clone().finalize());
        Ok((sha, self.stored_bytes))
    }
}

/// age encryption in the stream: plaintext in, whole parts of ciphertext
/// out (the last one short).
struct AgeStream {
    writer: age::stream::StreamWriter<SharedBuf>,
    buf: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
}

#[derive(Clone)]
struct SharedBuf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AgeStream {
    fn new(recipients: &[String]) -> Result<AgeStream, String> {
        let parsed = super::crypt::recipients(recipients)?;
        let buf = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let enc = age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| format!("cannot encrypt to the recipients: {e}"))?;
        let writer = enc
            .wrap_output(SharedBuf(buf.clone()))
            .map_err(|e| format!("cannot start the encryption: {e}"))?;
        Ok(AgeStream { writer, buf })
    }

    fn push(&mut self, data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        self.writer
            .write_all(data)
            .map_err(|e| format!("the encryption failed: {e}"))?;
        Ok(take_parts(&self.buf, false))
    }

    fn finish(self) -> Result<Vec<Vec<u8>>, String> {
        let AgeStream { writer, buf } = self;
        writer
            .finish()
            .map_err(|e| format!("the encryption failed: {e}"))?;
        Ok(take_parts(&buf, true))
    }
}

/// Whole parts from the front of `buf`; with `all`, the short rest too.
fn take_parts(buf: &std::cell::RefCell<Vec<u8>>, all: bool) -> Vec<Vec<u8>> {
    let mut buf = buf.borrow_mut();
    let mut parts = Vec::new();
    while buf.len() >= PART || (all && !buf.is_empty()) {
        let rest = if buf.len() > PART {
            buf.split_off(PART)
        } else {
            Vec::new()
        };
        parts.push(std::mem::replace(&mut *buf, rest));
    }
    parts
}

/// The next message, received off the runtime (the channel is std's: the
/// archive writer runs inside another runtime and must not await).
async fn next(rx: Option<Receiver<Msg>>) -> (Option<Receiver<Msg>>, Option<Msg>) {
    let Some(rx) = rx else {
        return (None, None);
    };
    match tokio::task::spawn_blocking(move || {
        let m = rx.recv().ok();
        (rx, m)
    })
    .await
    {
        Ok((rx, m)) => (Some(rx), m),
        Err(_) => (None, None),
    }
}

/// A multipart upload the store may still hold parts of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub kind: Kind,
    pub key: String,
    pub id: String,
    /// The store it went to (its URL and endpoint): if the relation now
    /// names another, this one cannot be reached from here.
    #[serde(default)]
    pub store: String,
    #[serde(default)]
    pub endpoint: String,
}

/// The pending file is read, changed and replaced by one thread at a time
/// (two stores upload at once).
static PENDING_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Pending {
    fn load(state_dir: &Path) -> Vec<Pending> {
        std::fs::read(state_dir.join(PENDING_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(state_dir: &Path, all: &[Pending]) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(all).map_err(io::Error::other)?;
        fsutil::replace_file(&state_dir.join(PENDING_FILE), &text)
    }

    fn remember(&self, state_dir: &Path) -> io::Result<()> {
        let _one = PENDING_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Pending::load(state_dir);
        all.push(self.clone());
        Pending::save(state_dir, &all)
    }

    fn forget(&self, state_dir: &Path) -> io::Result<()> {
        let _one = PENDING_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = Pending::load(state_dir);
        all.retain(|p| p != self);
        Pending::save(state_dir, &all)
    }
}

/// Aborts the uploads an earlier run left unfinished (killed, or its store
/// was unreachable); returns one line per upload, for the operator.
pub fn abort_leftovers(stores: &Stores, state_dir: &Path, stall: Duration) -> Vec<String> {
    let left = Pending::load(state_dir);
    if left.is_empty() {
        return Vec::new();
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    for p in left {
        let same = |s: &&super::StoreSettings| {
            p.store.is_empty() || (s.url() == p.store && s.endpoint == p.endpoint)
        };
        let Some(settings) = stores.stores.get(&p.kind).filter(same) else {
            // That store is no longer related: nothing here can reach it.
            let _ = p.forget(state_dir);
            notes.push(format!(
                "the unfinished upload of {} in {} cannot be aborted: that store is no longer related; its parts stay until the bucket's lifecycle rules remove them",
                p.key, p.store
            ));
            continue;
        };
        let Ok(store) = Store::open(settings, super::Timeouts { stall }) else {
            continue;
        };
        let path = ObjectPath::from(p.key.as_str());
        let mp = store.multipart();
        // The timer must be made inside the runtime.
        let aborted = rt.block_on(store.within(mp.abort_multipart(&path, &p.id)));
        match aborted {
            // Gone already (completed, aborted or expired) counts as done.
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => {
                let _ = p.forget(state_dir);
                notes.push(format!(
                    "aborted the unfinished upload of {} in {}",
                    p.key,
                    store.url()
                ));
            }
            Ok(Err(e)) => notes.push(format!(
                "the unfinished upload of {} in {} is not aborted yet: {}",
                p.key,
                store.url(),
                super::describe(&e)
            )),
            Err(_) => notes.push(format!(
                "the unfinished upload of {} in {} is not aborted yet: the store did not answer",
                p.key,
                store.url()
            )),
        }
    }
    notes
}
