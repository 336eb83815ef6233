//! gzip on every core: the stream is cut into blocks, each compressed on a
//! worker thread as an independent gzip member (libdeflate: whole-buffer
//! compression, faster than zlib at the same ratio), and the members written
//! in order. `gzip -d`, `tar xzf` and flate2's multi-member decoder read the
//! result as one stream. Memory is bounded by the blocks in flight.

use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor};

/// Uncompressed bytes per gzip member. Large enough that restarting the
/// dictionary costs next to nothing, small enough to keep memory low.
pub const BLOCK: usize = 1 << 20;

struct Worker {
    tx: Option<SyncSender<Vec<u8>>>,
    rx: Receiver<io::Result<Vec<u8>>>,
    handle: Option<JoinHandle<()>>,
}

pub struct ParallelGz<W: Write> {
    /// Taken by `finish`.
    out: Option<W>,
    level: CompressionLvl,
    buf: Vec<u8>,
    workers: Vec<Worker>,
    submitted: usize,
    collected: usize,
}

fn compress(c: &mut Compressor, block: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; c.gzip_compress_bound(block.len())];
    let n = c
        .gzip_compress(block, &mut out)
        .map_err(|e| io::Error::other(format!("compression failed: {e:?}")))?;
    out.truncate(n);
    Ok(out)
}

/// libdeflate levels run 1..=12; the action offers gzip's 1..=9.
fn level_of(level: u32) -> CompressionLvl {
    CompressionLvl::new(level.clamp(1, 12) as i32).unwrap_or_default()
}

/// Worker threads to use: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl<W: Write> ParallelGz<W> {
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let level = level_of(level);
        let workers = (0..threads.max(1))
            .map(|_| {
                let (tx, in_rx) = sync_channel::<Vec<u8>>(2);
                let (out_tx, rx) = sync_channel::<io::Result<Vec<u8>>>(2);
                let handle = std::thread::spawn(move || {
                    let mut c = Compressor::new(level);
                    for block in in_rx {
                        if out_tx.send(compress(&mut c, &block)).is_err() {
                            break;
                        }
                    }
                });
                Worker {
                    tx: Some(tx),
                    rx,
                    handle: Some(handle),
                }
            })
            .collect();
        ParallelGz {
            out: Some(out),
            level,
            buf: Vec::with_capacity(BLOCK),
            workers,
            submitted: 0,
            collected: 0,
        }
    }

    fn output(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the compressor is finished"))
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let n = self.workers.len();
        let member = self.workers[self.collected % n]
            .rx
            .recv()
            .map_err(|_| io::Error::other("a compression worker stopped"))??;
        self.output()?.write_all(&member)?;
        self.collected += 1;
        Ok(())
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let n = self.workers.len();
        // Two blocks per worker in flight: workers stay busy while the
        // caller writes, and memory stays bounded.
        while self.submitted - self.collected >= 2 * n {
            self.collect_one()?;
        }
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let tx = self.workers[self.submitted % n]
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("the compressor is finished"))?;
        tx.send(block)
            .map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.submitted += 1;
        Ok(())
    }

    /// Compresses what is left, writes every member in order, returns the
    /// output.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit()?;
        if self.submitted == 0 {
            // An empty input is still a valid gzip file.
            let empty = compress(&mut Compressor::new(self.level), &[])?;
            self.output()?.write_all(&empty)?;
        }
        while self.collected < self.submitted {
            self.collect_one()?;
        }
        self.output()?.flush()?;
        for w in &mut self.workers {
            w.tx = None;
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
        self.out
            .take()
            .ok_or_else(|| io::Error::other("the compressor is finished"))
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        // Closing the inputs ends the workers; they are not waited for.
        for w in &mut self.workers {
            w.tx = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn roundtrip(data: &[u8], threads: usize) -> Vec<u8> {
        let mut z = ParallelGz::new(Vec::new(), 6, threads);
        for c in data.chunks(77_777) {
            z.write_all(c).unwrap();
        }
        let gz = z.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    #[test]
    fn members_decode_in_order_to_the_input() {
        let data: Vec<u8> = (0..(3 * BLOCK + 12_345) as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 % 17)
            .collect();
        for threads in [1, 2, 3] {
            assert_eq!(roundtrip(&data, threads), data);
        }
        assert_eq!(roundtrip(&[], 2), Vec::<u8>::new());
        assert_eq!(roundtrip(b"tiny", 2), b"tiny");
    }
}
