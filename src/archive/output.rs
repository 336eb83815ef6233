//! Writing an archive file safely: `<name>.part` created 0600 with O_EXCL,
//! hashed as it is written, fsynced, then published under its final name
//! without ever replacing a file, and the directory fsynced. Dropped before
//! `publish`, it leaves nothing behind.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{ArchiveWriter, HashingWriter};
use crate::fsutil::{self, PartFile};

const WRITE_BUFFER: usize = 1 << 20;

/// Another place the archive's bytes go as they are written (an upload).
/// It keeps its own failure: a local file goes on without it.
pub trait SideSink: Write {
    /// Why it failed, once it has.
    fn failure(&self) -> Option<String>;
}

/// No side output: a local archive only.
pub enum NoSide {}

impl Write for NoSide {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }
    fn flush(&mut self) -> io::Result<()> {
        match *self {}
    }
}

impl SideSink for NoSide {
    fn failure(&self) -> Option<String> {
        match *self {}
    }
}

/// The local file (if any) and the side outputs, fed the same bytes.
pub struct Tee<S: SideSink> {
    file: Option<BufWriter<File>>,
    sides: Vec<S>,
}

impl<S: SideSink> Write for Tee<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            f.write_all(buf)?;
        }
        for s in &mut self.sides {
            s.write_all(buf)?;
        }
        if self.file.is_none() {
            let failures: Option<Vec<String>> = self.sides.iter().map(|s| s.failure()).collect();
            if let Some(all) = failures {
                return Err(io::Error::other(all.join("; ")));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

pub type Writer<S = NoSide> = ArchiveWriter<HashingWriter<Tee<S>>>;

pub struct ArchiveFile<S: SideSink = NoSide> {
    part: Option<PartFile>,
    final_path: PathBuf,
    writer: Writer<S>,
}

/// A published archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Why an archive could not be created or published.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{0} already exists and is never overwritten; run the action again a second later")]
    Exists(PathBuf),
    #[error("cannot write in {dir}: {source}")]
    Create { dir: PathBuf, source: io::Error },
    #[error("cannot finish writing {path}: {source}")]
    Finish { path: PathBuf, source: io::Error },
}

impl ArchiveFile<NoSide> {
    pub fn create(dir: &Path, name: &str, level: u32) -> Result<Self, OutputError> {
        ArchiveFile::create_with(Some(dir), name, level, Vec::new())
    }

    pub fn publish(self) -> Result<Published, OutputError> {
        self.publish_all().map(|(p, _)| p)
    }
}

impl<S: SideSink> ArchiveFile<S> {
    /// An archive written to `dir` (when given) and to every side output.
    pub fn create_with(
        dir: Option<&Path>,
        name: &str,
        level: u32,
        sides: Vec<S>,
    ) -> Result<Self, OutputError> {
        let Some(dir) = dir else {
            let tee = Tee { file: None, sides };
            return Ok(ArchiveFile {
                part: None,
                final_path: PathBuf::from(name),
                writer: ArchiveWriter::new(HashingWriter::new(tee), level),
            });
        };
        let final_path = dir.join(name);
        if final_path.symlink_metadata().is_ok() {
            return Err(OutputError::Exists(final_path));
        }
        let part_path = dir.join(format!("{name}.part"));
        let file = fsutil::create_private_file(&part_path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                OutputError::Exists(part_path.clone())
            } else {
                OutputError::Create {
                    dir: dir.to_path_buf(),
                    source,
                }
            }
        })?;
        // Handed to the operator before a byte is written (still 0600).
        if let Some((uid, gid)) = fsutil::operator_owner(dir) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|source| {
                let _ = std::fs::remove_file(&part_path);
                OutputError::Create {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
        }
        let tee = Tee {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            sides,
        };
        let out = HashingWriter::new(tee);
        Ok(ArchiveFile {
            part: Some(PartFile::new(part_path)),
            final_path,
            writer: ArchiveWriter::new(out, level),
        })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn writer(&mut self) -> &mut Writer<S> {
        &mut self.writer
    }

    /// Ends the archive; the local file (if any) is published, and the
    /// side outputs are handed back to be finished with its checksum.
    pub fn publish_all(self) -> Result<(Published, Vec<S>), OutputError> {
        let ArchiveFile {
            part,
            final_path,
            writer,
        } = self;
        let at = part
            .as_ref()
            .map_or(final_path.clone(), |p| p.path().to_path_buf());
        let finish = |source| OutputError::Finish {
            path: at.clone(),
            source,
        };
        let (tee, sha256, bytes) = writer.finish().map_err(finish)?.into_parts();
        let Tee { file, sides } = tee;
        let published = Published {
            path: final_path.clone(),
            sha256,
            bytes,
        };
        let (Some(buffered), Some(part)) = (file, part) else {
            return Ok((published, sides));
        };
        let file = buffered.into_inner().map_err(|e| finish(e.into_error()))?;
        file.sync_all().map_err(finish)?;
        drop(file);
        fsutil::publish_no_replace(part.path(), &final_path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                OutputError::Exists(final_path.clone())
            } else {
                finish(source)
            }
        })?;
        part.keep();
        let dir = final_path.parent().unwrap_or(Path::new("/"));
        fsutil::sync_dir(dir).map_err(|source| OutputError::Finish {
            path: final_path.clone(),
            source,
        })?;
        Ok((published, sides))
    }
}
