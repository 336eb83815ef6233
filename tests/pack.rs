//! The packed charm: what `juju deploy ./target/etcd.charm` receives.
//! `./charm test` packs before it runs the tests.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Etcd, Spec, TestDir, Unit};

fn packed() -> PathBuf {
    let p = support::repo().join("target/etcd.charm");
    assert!(
        p.is_file(),
        "{} is missing: run ./charm pack (./charm test does)",
        p.display()
    );
    p
}

/// (name, unix mode) of every zip entry.
fn zip_listing(zip: &Path) -> Vec<(String, u32)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, i.external_attr >> 16)",
        ])
        .arg(zip)
        .output()
        .expect("python3 zipfile");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, mode) = l.rsplit_once(' ')?;
            Some((name.to_string(), mode.parse::<u32>().ok()? & 0o7777))
        })
        .collect()
}

/// Unzips keeping modes, as Juju does when it unpacks a charm.
fn unzip(zip: &Path, to: &Path) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys, zipfile\nz = zipfile.ZipFile(sys.argv[1])\nfor i in z.infolist():\n    p = z.extract(i, sys.argv[2])\n    m = (i.external_attr >> 16) & 0o7777\n    if m: os.chmod(p, m)",
        ])
        .arg(zip)
        .arg(to)
        .output()
        .expect("python3 zipfile");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn packed_charm_has_the_layout_juju_expects() {
    let listing = zip_listing(&packed());
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    for f in [
        "metadata.yaml",
        "actions.yaml",
        "config.yaml",
        "manifest.yaml",
        "dispatch",
    ] {
        assert!(names.contains(&f), "{f} missing from {names:?}");
    }
    for hook in [
        "hooks/install",
        "hooks/config-changed",
        "hooks/start",
        "hooks/update-status",
    ] {
        assert!(names.contains(&hook), "{hook} missing");
    }
    assert!(names.contains(&"actions/snapshot"));
    for (name, mode) in &listing {
        let entry_point =
            name == "dispatch" || name.starts_with("hooks/") || name.starts_with("actions/");
        if entry_point && !name.ends_with('/') {
            assert_eq!(mode & 0o111, 0o111, "{name} must be executable ({mode:o})");
        }
        assert!(!name.starts_with('/') && !name.contains(".."), "{name}");
    }
}

#[test]
fn packed_dispatch_runs_hooks_and_actions() {
    let t = TestDir::new("packed");
    let charm = t.path().join("unpacked");
    unzip(&packed(), &charm);
    let unit = Unit::new(t.path(), &Etcd::get("3.5.16"), Spec::single(0, false));
    unit.use_charm_dir(&charm);
    unit.start();
    unit.put("/k", "v");

    let o = unit.run_action(
        "snapshot",
        &[&format!("target={}", t.path().join("s").display())],
    );
    o.assert_completed();
    assert!(Path::new(o.result("snapshot.path")).is_file());

    // Juju < 2.8 runs actions/<name> and hooks/<name> without dispatch path.
    let o = unit.run_action(
        "snapshot",
        &[
            &format!("target={}", t.path().join("s2").display()),
            "--legacy",
        ],
    );
    o.assert_completed();
    let hook = unit.run_hook_with("update-status", &["--legacy"]);
    assert_eq!(hook["exit_code"], 0, "{hook}");
    assert_eq!(hook["status"]["status"], "active", "{hook}");
    assert!(
        hook["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Healthy with 1 known peer"),
        "{hook}"
    );
}
