//! A bounded fuzz run over the archive reader and verifier, seeded with
//! real archives (this charm's, the old charm's `./db`, a bare `etcdctl
//! snapshot save` file). For arbitrary bytes it must never panic, never
//! write anything but `staging/db`, and never stage more than the archive
//! could hold. Runs for `ETCD_CHARM_FUZZ_SECS` (default 45) or
//! `ETCD_CHARM_FUZZ_MAX` inputs, whichever ends first, and reports the count.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_charm::archive::reader::verify_and_stage;
use support::{list, Etcd, Spec, TestDir, Unit};

/// xorshift64*: deterministic per seed, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("seed is gzip");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// Rewrites the checksum of every 512-byte block that looks like a tar
/// header, so mutations reach the parser behind the checksum check.
fn fix_checksums(tar: &mut [u8]) {
    for block in tar.chunks_mut(512) {
        if block.len() < 512 || block[257..262] != *b"ustar" {
            continue;
        }
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
    }
}

const INTERESTING: [u8; 10] = [0, 0xff, 0x7f, 0x80, b'0', b'7', b'9', b' ', b'/', b'.'];

fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        if data.is_empty() {
            data.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(data.len());
        match rng.below(7) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => data[at] = rng.next() as u8,
            3 => data.truncate(at),
            4 => {
                let len = rng.below(64).min(data.len() - at);
                let chunk = data[at..at + len].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
            5 => {
                let len = 1 + rng.below(16);
                let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                data.splice(at..at, junk);
            }
            _ => {
                // A header's size field: octal digits or base-256.
                let block = at / 512 * 512;
                if block + 136 <= data.len() {
                    let digits = format!("{:011o}", rng.next() % (1 << 33));
                    data[block + 124..block + 135].copy_from_slice(digits.as_bytes());
                }
            }
        }
    }
}

/// A structurally plausible archive: random entries of every kind.
fn random_archive(rng: &mut Rng, db: &[u8]) -> Vec<u8> {
    const NAMES: [&str; 9] = [
        "db",
        "./db",
        "snapshot.json",
        "../db",
        "/etc/db",
        "member/wal/0.wal",
        "x/../../db",
        "dir/",
        "other",
    ];
    let mut b = tar::Builder::new(Vec::new());
    for _ in 0..1 + rng.below(4) {
        let name = NAMES[rng.below(NAMES.len())];
        let mut h = tar::Header::new_gnu();
        let kind = match rng.below(8) {
            0 => tar::EntryType::Symlink,
            1 => tar::EntryType::Link,
            2 => tar::EntryType::Directory,
            3 => tar::EntryType::Char,
            4 => tar::EntryType::Fifo,
            _ => tar::EntryType::Regular,
        };
        h.set_entry_type(kind);
        let body: Vec<u8> = if name.ends_with("db") && rng.chance(70) {
            let cut = rng.below(db.len() + 1);
            db[..if rng.chance(50) { db.len() } else { cut }].to_vec()
        } else {
            (0..rng.below(2048)).map(|_| rng.next() as u8).collect()
        };
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        // The raw name field, so unsafe names go in unmodified.
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, body.as_slice()).expect("append");
    }
    b.into_inner().expect("tar")
}

struct Seeds {
    gz_tars: Vec<Vec<u8>>,
    bare: Vec<Vec<u8>>,
    db: Vec<u8>,
}

fn seeds(t: &Path) -> Seeds {
    let unit = Unit::new(t, &Etcd::get("3.5.16"), Spec::single(0, false));
    unit.start();
    for i in 0..50 {
        unit.put(&format!("/fuzz/{i}"), &format!("seed-{i}"));
    }
    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.join("snaps").display())],
    );
    o.assert_completed();
    let charm_archive = fs::read(o.result("snapshot.path")).expect("archive");
    let bare_path = t.join("bare.db");
    let out = unit.etcdctl(&["snapshot", "save", bare_path.to_str().expect("utf8")]);
    assert!(out.status.success(), "{out:?}");
    let bare = fs::read(&bare_path).expect("bare");
    // The old charm's layout: ./db, a raw db without the trailer.
    let raw = bare[..bare.len() - 32].to_vec();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(raw.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "./db", raw.as_slice()).expect("tar");
    let old_charm = gzip(&b.into_inner().expect("tar"));
    Seeds {
        gz_tars: vec![charm_archive, old_charm],
        bare: vec![bare, raw.clone()],
        db: raw,
    }
}

fn one_input(rng: &mut Rng, s: &Seeds) -> Vec<u8> {
    match rng.below(10) {
        // Mutate inside the gzip, so the tar parser sees the damage.
        0..=4 => {
            let seed = &s.gz_tars[rng.below(s.gz_tars.len())];
            let mut tar = gunzip(seed);
            mutate_bytes(rng, &mut tar);
            if rng.chance(80) {
                fix_checksums(&mut tar);
            }
            gzip(&tar)
        }
        5..=6 => {
            let mut tar = random_archive(rng, &s.db);
            if rng.chance(30) {
                mutate_bytes(rng, &mut tar);
                fix_checksums(&mut tar);
            }
            gzip(&tar)
        }
        7 => {
            let mut gz = s.gz_tars[rng.below(s.gz_tars.len())].clone();
            mutate_bytes(rng, &mut gz);
            gz
        }
        _ => {
            let mut db = s.bare[rng.below(s.bare.len())].clone();
            mutate_bytes(rng, &mut db);
            db
        }
    }
}

#[test]
fn arbitrary_archives_never_panic_escape_or_balloon() {
    let t = TestDir::new("fuzz-reader");
    let seeds = seeds(t.path());
    let secs: u64 = std::env::var("ETCD_CHARM_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let max: u64 = std::env::var("ETCD_CHARM_FUZZ_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = std::env::var("ETCD_CHARM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_e7cd);
    let mut rng = Rng(seed | 1);

    let sandbox = t.path().join("sandbox");
    fs::create_dir(&sandbox).expect("sandbox");
    let input: PathBuf = sandbox.join("input");
    let staging = sandbox.join("staging");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (mut runs, mut accepted) = (0u64, 0u64);
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    // The unmodified seeds must pass, or the run proves nothing.
    for s in seeds.gz_tars.iter().chain(&seeds.bare) {
        fs::write(&input, s).expect("input");
        fs::create_dir(&staging).expect("staging");
        assert!(verify_and_stage(&input, &staging).is_ok());
        fs::remove_dir_all(&staging).expect("clean");
    }
    while runs < max && Instant::now() < deadline {
        let bytes = one_input(&mut rng, &seeds);
        fs::write(&input, &bytes).expect("input");
        fs::create_dir(&staging).expect("staging");
        let result = std::panic::catch_unwind(|| verify_and_stage(&input, &staging));
        let result = result.unwrap_or_else(|_| {
            let kept = t.path().join("panic-input");
            let _ = fs::write(&kept, &bytes);
            panic!(
                "the reader panicked on input {runs} (kept in {})",
                kept.display()
            )
        });
        match &result {
            Ok(_) => accepted += 1,
            Err(e) => {
                let text = e.to_string();
                // Bucket by the sentence's opening words, without names.
                let kind: String = text
                    .split(['"', '(', ':'])
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter(|w| !w.starts_with('/') && !w.chars().any(|c| c.is_ascii_digit()))
                    .take(6)
                    .collect::<Vec<_>>()
                    .join(" ");
                *kinds.entry(kind).or_default() += 1;
                assert!(!text.contains("panicked") && !text.contains('\n'), "{text}");
            }
        }
        // Nothing but staging/db, and never more than the archive could hold.
        assert_eq!(list(&sandbox), ["input", "staging"], "input {runs}");
        let staged = list(&staging);
        assert!(staged.is_empty() || staged == ["db"], "{staged:?}");
        if let Ok(m) = fs::metadata(staging.join("db")) {
            assert!(m.len() <= (bytes.len() as u64) * 1100 + (1 << 20));
        }
        fs::remove_dir_all(&staging).expect("clean");
        runs += 1;
    }
    let rss = etcd_charm::fsutil::peak_rss().unwrap_or(0);
    let report = format!(
        "fuzz: {runs} inputs in {secs} s budget (seed {seed:#x}): {accepted} accepted, \
         refusals by kind {kinds:?}, peak RSS {} MiB\n",
        rss >> 20
    );
    eprint!("{report}");
    let _ = fs::write(support::repo().join("target/fuzz-report.txt"), &report);
    assert!(runs >= 1000, "too few inputs to mean anything: {report}");
    assert!(rss < 512 << 20, "{report}");
    // Mutations must reach past the first checks, or the run is shallow.
    assert!(kinds.len() >= 6, "{report}");
}
