//! A strict, bounded tar reader for archives from outside. It knows only
//! what snapshot archives need (ustar/GNU headers, regular files,
//! directories, and the kinds it must refuse by name) and never buffers an
//! entry: GNU long names, pax headers and sparse files are reported as
//! entry kinds to refuse, not followed, so no header can make it allocate.

use std::io::{self, Read};

const BLOCK: usize = 512;

/// One entry's header, as the archive states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub kind: u8,
    pub size: u64,
}

impl Header {
    pub fn is_file(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }

    pub fn is_dir(&self) -> bool {
        self.kind == b'5'
    }

    pub fn kind_name(&self) -> String {
        match self.kind {
            b'1' => "hard link".into(),
            b'2' => "symbolic link".into(),
            b'3' => "character device".into(),
            b'4' => "block device".into(),
            b'5' => "directory".into(),
            b'6' => "fifo".into(),
            b'L' | b'K' => "GNU long-name record".into(),
            b'x' | b'g' => "pax extended header".into(),
            b'S' => "sparse file".into(),
            other => format!("tar entry of type {:?}", other as char),
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn field_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Octal (NUL/space padded) or GNU base-256 numbers.
fn number(bytes: &[u8]) -> io::Result<u64> {
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        if bytes[0] & 0x40 != 0 {
            return Err(bad("negative number in tar header"));
        }
        let mut v: u64 = u64::from(bytes[0] & 0x3f);
        for b in &bytes[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*b)))
                .ok_or_else(|| bad("number too large in tar header"))?;
        }
        return Ok(v);
    }
    let text = field_str(bytes);
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| bad(format!("bad number {text:?} in tar header")))
}

pub struct TarReader<R: Read> {
    inner: R,
    /// Data bytes of the current entry not yet read, then its padding.
    left: u64,
    pad: u64,
    done: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            left: 0,
            pad: 0,
            done: false,
        }
    }

    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = buf.len().min(n as usize);
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Err(bad("the tar stream ends inside an entry"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// The next entry's header, after skipping what is left of the last.
    pub fn next_entry(&mut self) -> io::Result<Option<Header>> {
        if self.done {
            return Ok(None);
        }
        self.skip(self.left + self.pad)?;
        self.left = 0;
        self.pad = 0;
        let mut h = [0u8; BLOCK];
        self.inner
            .read_exact(&mut h)
            .map_err(|_| bad("the tar stream ends without its end-of-archive blocks"))?;
        if h.iter().all(|b| *b == 0) {
            self.done = true;
            return Ok(None);
        }
        let stated = number(&h[148..156])?;
        let unsigned: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        let signed: i64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(*b as i8)
                }
            })
            .sum();
        if stated != unsigned && stated as i64 != signed {
            return Err(bad("a tar header fails its checksum"));
        }
        let mut name = field_str(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = field_str(&h[345..500]);
            if !prefix.is_empty() && &h[257..263] == b"ustar\0" {
                name = format!("{prefix}/{name}");
            }
        }
        let kind = h[156];
        let size = number(&h[124..136])?;
        let header = Header { name, kind, size };
        // Only regular files carry data the caller reads; anything else is
        // refused by the caller before its data matters.
        self.left = size;
        self.pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        Ok(Some(header))
    }

    /// Reads the current entry's data.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("the tar stream ends inside an entry"));
        }
        self.left -= n as u64;
        Ok(n)
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// The current entry's data as a `Read`.
pub struct EntryData<'a, R: Read>(pub &'a mut TarReader<R>);

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_entries_and_data() {
        let bytes = archive(&[("db", &[7u8; 1000]), ("snapshot.json", b"{}")]);
        let mut r = TarReader::new(&bytes[..]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.size, h.is_file()), ("db", 1000, true));
        let mut data = Vec::new();
        EntryData(&mut r).read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![7u8; 1000]);
        let h = r.next_entry().unwrap().unwrap();
        assert_eq!(h.name, "snapshot.json");
        // Unread data is skipped.
        assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn refuses_bad_checksums_and_truncation() {
        let mut bytes = archive(&[("db", b"abc")]);
        bytes[0] = b'x';
        assert!(TarReader::new(&bytes[..]).next_entry().is_err());
        let bytes = archive(&[("db", &[1u8; 4096])]);
        let mut r = TarReader::new(&bytes[..1024]);
        r.next_entry().unwrap();
        let mut sink = Vec::new();
        assert!(EntryData(&mut r).read_to_end(&mut sink).is_err());
        assert!(TarReader::new(&bytes[..100]).next_entry().is_err());
    }

    #[test]
    fn numbers_in_octal_and_base_256() {
        assert_eq!(number(b"00000001750\0").unwrap(), 1000);
        assert_eq!(number(b"     1750 \0\0").unwrap(), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[7] = 0x02; // 2 << 32
        assert_eq!(number(&big).unwrap(), 2 << 32);
        assert!(number(b"0000000009\0\0").is_err());
    }
}
