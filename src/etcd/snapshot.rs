//! The `Maintenance.Snapshot` stream: the db bytes in chunks, then one more
//! message carrying the SHA-256 of those bytes. Read until the stream ends,
//! check the size the server announced and the trailer, and hand every byte
//! (db and trailer, exactly what `etcdctl snapshot save` writes) to a sink.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// Length of the SHA-256 trailer etcd appends to the stream.
pub const TRAILER_LEN: u64 = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("etcd sent an empty snapshot stream")]
    Empty,
    #[error("the snapshot stream ended after {received} of {expected} bytes")]
    Short { received: u64, expected: u64 },
    #[error("the snapshot stream carried more bytes than the {expected} etcd announced")]
    Long { expected: u64 },
    #[error("the snapshot's SHA-256 trailer does not match its data (expected {expected}, computed {computed})")]
    HashMismatch { expected: String, computed: String },
    #[error("the snapshot stream broke: {0}")]
    Broken(String),
    #[error("the snapshot stream stalled: no data for {0} seconds")]
    Stalled(u64),
    #[error("cannot write the snapshot: {0}")]
    Sink(String),
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Splits the stream into db bytes (hashed) and trailer bytes (collected),
/// using the db size announced with the first message.
#[derive(Debug)]
pub struct TrailerCheck {
    db_size: u64,
    received: u64,
    hasher: Sha256,
    trailer: Vec<u8>,
}

/// What a verified stream was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub db_size: u64,
    pub db_sha256: [u8; 32],
}

impl TrailerCheck {
    pub fn new(db_size: u64) -> Self {
        TrailerCheck {
            db_size,
            received: 0,
            hasher: Sha256::new(),
            trailer: Vec::with_capacity(TRAILER_LEN as usize),
        }
    }

    pub fn expected_total(&self) -> u64 {
        self.db_size + TRAILER_LEN
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), StreamError> {
        let len = chunk.len() as u64;
        if self.received + len > self.expected_total() {
            return Err(StreamError::Long {
                expected: self.expected_total(),
            });
        }
        let db_left = self.db_size.saturating_sub(self.received);
        let split = db_left.min(len) as usize;
        self.hasher.update(&chunk[..split]);
        self.trailer.extend_from_slice(&chunk[split..]);
        self.received += len;
        Ok(())
    }

    pub fn finish(self) -> Result<Verified, StreamError> {
        if self.received < self.expected_total() {
            return Err(StreamError::Short {
                received: self.received,
                expected: self.expected_total(),
            });
        }
        let computed: [u8; 32] = self.hasher.finalize().into();
        if self.trailer.as_slice() != computed.as_slice() {
            return Err(StreamError::HashMismatch {
                expected: hex(&self.trailer),
                computed: hex(&computed),
            });
        }
        Ok(Verified {
            db_size: self.db_size,
            db_sha256: computed,
        })
    }
}

/// Where the stream's bytes go.
pub trait SnapshotSink {
    /// Called once, before any data, with the total byte count to come
    /// (db plus trailer).
    fn begin(&mut self, total: u64) -> std::io::Result<()>;
    fn data(&mut self, chunk: &[u8]) -> std::io::Result<()>;
}

async fn next(
    stream: &mut etcd_client::SnapshotStreaming,
    stall: Duration,
) -> Result<Option<etcd_client::SnapshotResponse>, StreamError> {
    match tokio::time::timeout(stall, stream.message()).await {
        Err(_) => Err(StreamError::Stalled(stall.as_secs())),
        Ok(Err(e)) => Err(StreamError::Broken(super::client::describe(&e))),
        Ok(Ok(m)) => Ok(m),
    }
}

/// Drives the stream into `sink`, calling `progress(received, total)` after
/// each message. Every byte is checked; nothing is trusted until `Ok`.
pub async fn receive(
    mut stream: etcd_client::SnapshotStreaming,
    sink: &mut dyn SnapshotSink,
    stall: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verified, StreamError> {
    let sink_err = |e: std::io::Error| StreamError::Sink(e.to_string());

    let first = next(&mut stream, stall).await?.ok_or(StreamError::Empty)?;
    let db_size = first.remaining_bytes() + first.blob().len() as u64;
    let mut check = TrailerCheck::new(db_size);
    sink.begin(check.expected_total()).map_err(sink_err)?;
    check.feed(first.blob())?;
    sink.data(first.blob()).map_err(sink_err)?;
    progress(check.received(), check.expected_total());
    while let Some(msg) = next(&mut stream, stall).await? {
        check.feed(msg.blob())?;
        sink.data(msg.blob()).map_err(sink_err)?;
        progress(check.received(), check.expected_total());
    }
    check.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(db: &[u8], trailer: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let mut all = db.to_vec();
        all.extend_from_slice(trailer);
        all.chunks(chunk).map(<[u8]>::to_vec).collect()
    }

    fn run(db_size: u64, chunks: &[Vec<u8>]) -> Result<Verified, StreamError> {
        let mut c = TrailerCheck::new(db_size);
        for ch in chunks {
            c.feed(ch)?;
        }
        c.finish()
    }

    #[test]
    fn accepts_a_correct_stream_whatever_the_chunking() {
        let db: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let sha: [u8; 32] = Sha256::digest(&db).into();
        for chunk in [1, 31, 32, 33, 4096, 10_032] {
            let v = run(db.len() as u64, &stream_of(&db, &sha, chunk)).unwrap();
            assert_eq!(v.db_sha256, sha);
        }
    }

    #[test]
    fn refuses_flipped_bytes_short_and_long_streams() {
        let db = vec![5u8; 1000];
        let sha: [u8; 32] = Sha256::digest(&db).into();
        let mut bad = db.clone();
        bad[500] ^= 1;
        assert!(matches!(
            run(1000, &stream_of(&bad, &sha, 64)),
            Err(StreamError::HashMismatch { .. })
        ));
        assert!(matches!(
            run(1000, &stream_of(&db, &sha[..31], 64)),
            Err(StreamError::Short { .. })
        ));
        let mut long = sha.to_vec();
        long.push(0);
        assert!(matches!(
            run(1000, &stream_of(&db, &long, 64)),
            Err(StreamError::Long { .. })
        ));
    }
}
