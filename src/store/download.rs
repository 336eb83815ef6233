//! Reading an object as a stream: a thread with its own runtime pulls the
//! body and hands it over in chunks through a small channel, so restore's
//! verifier reads it like a file, with no local copy and bounded memory.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use super::{Record, Store, StoreError, MAX_RECORD, RECORD_SUFFIX};

enum Chunk {
    Data(bytes::Bytes),
    Failed(String),
}

pub struct ObjectReader {
    rx: Receiver<Chunk>,
    current: bytes::Bytes,
    stall: std::time::Duration,
    done: bool,
    _thread: JoinHandle<()>,
}

impl ObjectReader {
    /// Opens `key`; its size comes back with the reader. A missing object
    /// or a refused request fails here, before anything is read.
    pub fn open(store: &Store, key: &str) -> Result<(ObjectReader, u64), StoreError> {
        let (tx, rx) = sync_channel::<Chunk>(4);
        let (meta_tx, meta_rx) = sync_channel::<Result<u64, StoreError>>(1);
        let (store2, key2) = (store.clone(), key.to_string());
        let thread = std::thread::Builder::new()
            .name("download".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    let _ = meta_tx.send(Err(StoreError::Client {
                        store: store2.url(),
                        reason: "cannot start the download's runtime".into(),
                    }));
                    return;
                };
                rt.block_on(pull(&store2, &key2, meta_tx, tx));
            })
            .map_err(|e| StoreError::Client {
                store: store.url(),
                reason: format!("cannot start the download: {e}"),
            })?;
        let stall = store.timeouts.stall;
        let size = match meta_rx.recv_timeout(stall) {
            Ok(r) => r?,
            Err(_) => {
                return Err(StoreError::Stalled {
                    store: store.url(),
                    secs: stall.as_secs(),
                })
            }
        };
        Ok((
            ObjectReader {
                rx,
                current: bytes::Bytes::new(),
                stall,
                done: false,
                _thread: thread,
            },
            size,
        ))
    }
}

async fn pull(
    store: &Store,
    key: &str,
    meta: std::sync::mpsc::SyncSender<Result<u64, StoreError>>,
    tx: std::sync::mpsc::SyncSender<Chunk>,
) {
    let path = ObjectPath::from(key);
    let got = match store.bounded(store.objects().get(&path)).await {
        Ok(g) => g,
        Err(e) => {
            let _ = meta.send(Err(e));
            return;
        }
    };
    let _ = meta.send(Ok(got.meta.size));
    let mut body = got.into_stream();
    while let Some(item) = body.next().await {
        let chunk = match item {
            Ok(b) => Chunk::Data(b),
            Err(e) => Chunk::Failed(super::describe(&e)),
        };
        let failed = matches!(chunk, Chunk::Failed(_));
        // The reader went away (refused the archive): stop pulling.
        if tx.send(chunk).is_err() || failed {
            return;
        }
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv_timeout(self.stall) {
                Ok(Chunk::Data(b)) => self.current = b,
                Ok(Chunk::Failed(reason)) => {
                    return Err(io::Error::other(format!("the download failed: {reason}")))
                }
                Err(RecvTimeoutError::Disconnected) => self.done = true,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the download stalled: nothing came for {} s (stall-timeout)",
                            self.stall.as_secs()
                        ),
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The record beside `archive_key`; None when there is none.
pub async fn record(store: &Store, archive_key: &str) -> Result<Option<Record>, StoreError> {
    let path = ObjectPath::from(format!("{archive_key}{RECORD_SUFFIX}"));
    let got = match store.within(store.objects().get(&path)).await? {
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(store.error(&e)),
        Ok(g) => g,
    };
    if got.meta.size > MAX_RECORD {
        return Ok(None);
    }
    let body = store.bounded(got.bytes()).await?;
    // A record that does not parse is treated as missing: the archive is
    // listed as unverified, never trusted on it.
    Ok(Record::parse(&body))
}

/// The size of `key`; None when there is no such object.
pub async fn size(store: &Store, key: &str) -> Result<Option<u64>, StoreError> {
    let path = ObjectPath::from(key);
    match store.within(store.objects().head(&path)).await? {
        Ok(meta) => Ok(Some(meta.size)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store.error(&e)),
    }
}
