//! A streaming tar.gz writer: entries whose size is known up front are
//! written in pieces as they arrive, so nothing is staged on disk and memory
//! stays bounded whatever the entry size.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::pgzip::{default_threads, ParallelGz};
use sha2::{Digest, Sha256};

const BLOCK: u64 = 512;

/// Passes writes through and hashes and counts them: the archive's own
/// SHA-256 without reading the file back.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn into_parts(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub struct ArchiveWriter<W: Write> {
    gz: ParallelGz<W>,
    /// Bytes still owed to the open entry.
    open: Option<(String, u64, u64)>,
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, level: u32) -> Self {
        ArchiveWriter {
            gz: ParallelGz::new(out, level, default_threads()),
            open: None,
        }
    }

    /// Starts a regular-file entry of exactly `size` bytes, mode 0600.
    pub fn begin_entry(&mut self, name: &str, size: u64, mtime: u64) -> io::Result<()> {
        if let Some((open, _, _)) = &self.open {
            return Err(io::Error::other(format!("tar entry {open} is still open")));
        }
        let mut header = tar::Header::new_ustar();
        header.set_path(name)?;
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        self.gz.write_all(header.as_bytes())?;
        self.open = Some((name.to_string(), size, 0));
        Ok(())
    }

    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        let Some((name, size, written)) = &mut self.open else {
            return Err(io::Error::other("no tar entry is open"));
        };
        if *written + data.len() as u64 > *size {
            return Err(io::Error::other(format!(
                "tar entry {name} got more than its {size} bytes"
            )));
        }
        self.gz.write_all(data)?;
        *written += data.len() as u64;
        Ok(())
    }

    pub fn end_entry(&mut self) -> io::Result<()> {
        let Some((name, size, written)) = self.open.take() else {
            return Err(io::Error::other("no tar entry is open"));
        };
        if written != size {
            return Err(io::Error::other(format!(
                "tar entry {name} got {written} of its {size} bytes"
            )));
        }
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        self.gz.write_all(&[0u8; BLOCK as usize][..pad as usize])
    }

    /// A directory entry (mode 0700), so empty directories survive.
    pub fn add_dir(&mut self, name: &str, mtime: u64) -> io::Result<()> {
        if let Some((open, _, _)) = &self.open {
            return Err(io::Error::other(format!("tar entry {open} is still open")));
        }
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("{}/", name.trim_end_matches('/')))?;
        header.set_size(0);
        header.set_mode(0o700);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Directory);
        header.set_cksum();
        self.gz.write_all(header.as_bytes())
    }

    /// Appends the tree under `dir` (regular files and directories only),
    /// names relative to `dir`, in a stable order.
    pub fn append_tree(&mut self, dir: &Path, prefix: &str) -> io::Result<u64> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut files = 0;
        for e in entries {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let meta = e.metadata()?;
            let mtime = meta.mtime().max(0) as u64;
            let t = e.file_type()?;
            if t.is_dir() {
                self.add_dir(&name, mtime)?;
                files += self.append_tree(&e.path(), &format!("{name}/"))?;
            } else if t.is_file() {
                let mut f = std::fs::File::open(e.path())?;
                self.begin_entry(&name, meta.len(), mtime)?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    self.write_data(&buf[..n])?;
                }
                self.end_entry()?;
                files += 1;
            } else {
                return Err(io::Error::other(format!(
                    "{} is neither a file nor a directory",
                    e.path().display()
                )));
            }
        }
        Ok(files)
    }

    pub fn add_file(&mut self, name: &str, data: &[u8], mtime: u64) -> io::Result<()> {
        self.begin_entry(name, data.len() as u64, mtime)?;
        self.write_data(data)?;
        self.end_entry()
    }

    /// Writes the end-of-archive blocks and the gzip trailer.
    pub fn finish(mut self) -> io::Result<W> {
        if self.open.is_some() {
            return Err(io::Error::other("a tar entry is still open"));
        }
        self.gz.write_all(&[0u8; 2 * BLOCK as usize])?;
        self.gz.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_tar_gz_that_gzip_and_tar_read() {
        let mut w = ArchiveWriter::new(Vec::new(), 6);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        w.begin_entry("db", big.len() as u64, 1_700_000_000)
            .unwrap();
        for c in big.chunks(32 * 1024) {
            w.write_data(c).unwrap();
        }
        w.end_entry().unwrap();
        w.add_file("snapshot.json", b"{}\n", 1_700_000_000).unwrap();
        let bytes = w.finish().unwrap();

        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            assert_eq!(e.header().mode().unwrap(), 0o600);
            seen.push((e.path().unwrap().display().to_string(), data));
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], ("db".to_string(), big));
        assert_eq!(seen[1], ("snapshot.json".to_string(), b"{}\n".to_vec()));
    }

    #[test]
    fn refuses_wrong_entry_sizes() {
        let mut w = ArchiveWriter::new(Vec::new(), 1);
        w.begin_entry("db", 4, 0).unwrap();
        assert!(w.write_data(b"12345").is_err());
        w.write_data(b"123").unwrap();
        assert!(w.end_entry().is_err());
    }
}
