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
    // Juju < 2.8 runs only the hooks that exist as files.
    for hook in [
        "install",
        "config-changed",
        "start",
        "stop",
        "remove",
        "upgrade-charm",
        "update-status",
        "leader-elected",
        "leader-settings-changed",
        "cluster-relation-joined",
        "cluster-relation-changed",
        "cluster-relation-departed",
        "cluster-relation-broken",
        "db-relation-joined",
        "db-relation-changed",
        "db-relation-departed",
        "db-relation-broken",
    ] {
        let hook = format!("hooks/{hook}");
        let hook = hook.as_str();
        assert!(names.contains(&hook), "{hook} missing");
    }
    for action in ["snapshot", "restore", "package-client-credentials"] {
        assert!(
            names.contains(&format!("actions/{action}").as_str()),
            "{action}"
        );
    }
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

/// `(major, minor)` of every GLIBC_x.y version the ELF file needs.
fn glibc_needs(elf: &Path) -> Vec<(u32, u32)> {
    let out = Command::new("readelf")
        .args(["--version-info", "--wide"])
        .arg(elf)
        .output()
        .expect("readelf (binutils)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut needs: Vec<(u32, u32)> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut p = v.split('.');
            Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
        })
        .collect();
    needs.sort_unstable();
    needs.dedup();
    needs
}

/// Ubuntu 20.04, the oldest base, has glibc 2.31: the packed `dispatch`
/// must need nothing newer.
#[test]
fn packed_dispatch_needs_no_glibc_newer_than_2_31() {
    let t = TestDir::new("packed-glibc");
    unzip(&packed(), t.path());
    let needs = glibc_needs(&t.path().join("dispatch"));
    let newest = needs.last().copied().expect("dispatch links glibc");
    assert!(
        newest <= (2, 31),
        "dispatch needs GLIBC_{}.{}",
        newest.0,
        newest.1
    );
    // The check can fail: this test binary, built natively, needs more.
    let native = glibc_needs(&std::env::current_exe().expect("exe"));
    assert!(native.last().copied() > Some((2, 31)), "{native:?}");
}

fn yaml(dir: &Path, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join(name)).expect(name);
    let v: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::to_value(v).expect("as json")
}

/// The charm's metadata as Juju 2.9 and 3.x read it: bases only from
/// manifest.yaml (no `series`), the peer and `db` relations, file
/// resources; every action's params a valid draft-4 JSON schema as Juju
/// builds it (`additionalProperties: false`), accepting its own defaults
/// and refusing unknown keys; config options typed with matching defaults.
#[test]
fn packed_metadata_parses_and_actions_are_valid_schemas() {
    let t = TestDir::new("packed-meta");
    unzip(&packed(), t.path());
    let meta = yaml(t.path(), "metadata.yaml");
    assert_eq!(meta["name"], "etcd");
    assert!(
        meta.get("series").is_none(),
        "series belongs in manifest.yaml bases"
    );
    assert_eq!(meta["peers"]["cluster"]["interface"], "etcd");
    assert_eq!(meta["provides"]["db"]["interface"], "etcd");
    for (name, r) in meta["resources"].as_object().expect("resources") {
        assert_eq!(r["type"], "file", "{name}");
        let file = r["filename"].as_str().expect("filename");
        assert!(!file.contains('/') && !file.is_empty(), "{name}");
    }
    let manifest = yaml(t.path(), "manifest.yaml");
    let channels: Vec<&str> = manifest["bases"]
        .as_array()
        .expect("bases")
        .iter()
        .map(|b| {
            assert_eq!(b["name"], "ubuntu");
            assert_eq!(b["architectures"], serde_json::json!(["amd64"]));
            b["channel"].as_str().expect("channel")
        })
        .collect();
    assert_eq!(channels, ["20.04", "22.04", "24.04"]);

    let key = |k: &str| {
        !k.is_empty()
            && k.split('-').all(|p| !p.is_empty())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
    };
    let actions = yaml(t.path(), "actions.yaml");
    let actions = actions.as_object().expect("actions");
    for want in ["snapshot", "restore", "package-client-credentials"] {
        assert!(actions.contains_key(want), "{want}");
    }
    for (name, spec) in actions {
        assert!(
            key(name) && name != "juju" && !name.starts_with("juju-"),
            "{name}"
        );
        let text = spec.to_string();
        assert!(
            !text.contains("$ref") && !text.contains("$schema"),
            "{name}"
        );
        // No params: Juju's schema has empty properties.
        let params = match spec.get("params") {
            Some(p) if p.is_object() => p.clone(),
            _ => serde_json::json!({}),
        };
        let schema = serde_json::json!({
            "type": "object",
            "title": name,
            "description": spec["description"],
            "properties": params,
            "additionalProperties": spec.get("additionalProperties").cloned().unwrap_or(false.into()),
        });
        // Juju adds `required` only when actions.yaml lists some.
        let mut schema = schema;
        if let Some(required) = spec.get("required") {
            schema["required"] = required.clone();
        }
        if let Err(e) = jsonschema::draft4::meta::validate(&schema) {
            panic!("{name}: not a draft-4 schema: {e}");
        }
        let validator = jsonschema::draft4::new(&schema).expect("compiles");
        let defaults: serde_json::Map<String, serde_json::Value> = params
            .as_object()
            .map(|p| {
                p.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.get("default")?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            validator.is_valid(&defaults.clone().into()),
            "{name}: defaults"
        );
        let mut extra = defaults;
        extra.insert("no-such-param".into(), "x".into());
        assert!(
            !validator.is_valid(&extra.into()),
            "{name}: extra keys refused"
        );
    }

    let config = yaml(t.path(), "config.yaml");
    for (name, o) in config["options"].as_object().expect("options") {
        let ty = o["type"].as_str().expect("type");
        let ok = match ty {
            "string" => o["default"].is_string(),
            "int" => o["default"].is_i64(),
            "float" => o["default"].is_number(),
            "boolean" => o["default"].is_boolean(),
            other => panic!("{name}: type {other}"),
        };
        assert!(ok, "{name}: default {} is not a {ty}", o["default"]);
        assert!(o["description"].is_string(), "{name}");
    }
}

/// The virtualenv ./charm test installs charm-tools and charmcraft into.
fn linters() -> PathBuf {
    std::env::var_os("ETCD_CHARM_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::repo().join("target/deps"))
        .join("lint/bin")
}

/// layer-etcd's surface (charmed-kubernetes/layer-etcd @233f62a: its
/// metadata.yaml, config.yaml and actions.yaml, with the endpoints,
/// options and actions its layers add), written down here and in
/// `support::layer_etcd` (which the refresh test's stand-in is built
/// from): every item
/// must be in the packed charm under the same name with the same type,
/// or `juju refresh --switch` from it would drop an operator's relation,
/// storage or setting.
#[test]
fn packed_charm_carries_layer_etcds_whole_surface() {
    let t = TestDir::new("packed-surface");
    unzip(&packed(), t.path());
    let meta = yaml(t.path(), "metadata.yaml");
    for (role, name, interface) in support::layer_etcd::ENDPOINTS {
        let ep = &meta[role][name];
        assert_eq!(ep["interface"], interface, "{role} {name}: {ep}");
        // Juju refuses a refresh that adds a limit an established relation
        // count exceeds; layer-etcd sets none.
        assert!(ep.get("limit").is_none(), "{name} has a limit");
    }
    assert_eq!(
        meta["provides"]["nrpe-external-master"]["scope"],
        "container"
    );
    for (name, file) in [
        ("snapshot", "snapshot.tar.gz"),
        ("core", "core.snap"),
        ("etcd", "etcd.snap"),
    ] {
        assert_eq!(meta["resources"][name]["type"], "file", "{name}");
        assert_eq!(meta["resources"][name]["filename"], file, "{name}");
    }
    let data = &meta["storage"]["data"];
    assert_eq!(data["type"], "block");
    assert_eq!(data["multiple"]["range"], "0-1");
    assert_eq!(data["minimum-size"], "1G");
    assert!(data.get("location").is_none(), "{data}");

    let config = yaml(t.path(), "config.yaml");
    let options = &config["options"];
    for (name, kind, default) in support::layer_etcd::OPTIONS {
        let default: serde_json::Value = serde_json::from_str(default).expect("default");
        assert_eq!(options[name]["type"], kind, "option {name}");
        assert_eq!(options[name]["default"], default, "option {name}");
    }
    // One naming style, layer-etcd's.
    for name in options.as_object().expect("options").keys() {
        assert!(!name.contains('-'), "option {name} is not snake_case");
    }

    let actions = yaml(t.path(), "actions.yaml");
    // (action, param, type, default); restore's defaults differ on purpose
    // (README: a backup of the old data is never skipped by default).
    for action in [
        "alarm-disarm",
        "alarm-list",
        "defrag",
        "health",
        "package-client-credentials",
    ] {
        assert!(actions.get(action).is_some(), "action {action}");
    }
    for (action, param, kind, default) in [
        ("compact", "revision", "string", Some(serde_json::json!(""))),
        (
            "compact",
            "physical",
            "boolean",
            Some(serde_json::json!(false)),
        ),
        (
            "snap-upgrade",
            "use-resource",
            "boolean",
            Some(serde_json::json!(false)),
        ),
        (
            "snapshot",
            "target",
            "string",
            Some(serde_json::json!("/home/ubuntu/etcd-snapshots")),
        ),
        (
            "snapshot",
            "keys-version",
            "string",
            Some(serde_json::json!("v3")),
        ),
        ("restore", "target", "string", None),
        ("restore", "skip-backup", "boolean", None),
    ] {
        let p = &actions[action]["params"][param];
        assert_eq!(p["type"], kind, "{action} {param}: {p}");
        if let Some(d) = default {
            assert_eq!(p["default"], d, "{action} {param}");
        }
    }
    // Every action in actions.yaml has its shim for Juju < 2.8.
    let listing = zip_listing(&packed());
    for name in actions.as_object().expect("actions").keys() {
        let shim = format!("actions/{name}");
        assert!(listing.iter().any(|(n, _)| *n == shim), "{shim}");
    }
}

/// The two linters Charmhub's tooling runs, installed from PyPI by
/// ./charm test: charm-proof with no error or warning, and charmcraft
/// analyse with no error or warning but two that cannot apply here:
/// `language`/`framework` "unknown" and the Python checks "nonapplicable"
/// (the charm is a Rust binary), and `naming-conventions`, which warns on
/// any snake_case option name: layer-etcd's option names are snake_case
/// and must stay so (README, "Options").
#[test]
fn packed_charm_passes_charm_proof_and_charmcraft_analyse() {
    let lint = linters();
    assert!(
        lint.join("charm-proof").is_file() && lint.join("charmcraft").is_file(),
        "the linters are missing from {}: run ./charm test, which installs them",
        lint.display()
    );
    let t = TestDir::new("packed-lint");
    let dir = t.path().join("etcd");
    unzip(&packed(), &dir);
    let proof = Command::new(lint.join("charm-proof"))
        .arg(&dir)
        .output()
        .expect("charm-proof");
    let text = String::from_utf8_lossy(&proof.stdout).to_string()
        + &String::from_utf8_lossy(&proof.stderr);
    println!("charm-proof (exit {:?}):\n{text}", proof.status.code());
    assert_eq!(proof.status.code(), Some(0), "charm-proof: {text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "{text}"
    );

    let runtime = t.path().join("xdg");
    std::fs::create_dir_all(&runtime).expect("xdg dir");
    let mut perms = std::fs::metadata(&runtime).expect("xdg").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o700);
    std::fs::set_permissions(&runtime, perms).expect("xdg mode");
    let analyse = Command::new(lint.join("charmcraft"))
        .args(["analyse", "--format=json"])
        .arg(packed())
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("HOME", t.path())
        .output()
        .expect("charmcraft analyse");
    let out = String::from_utf8_lossy(&analyse.stdout).to_string();
    println!(
        "charmcraft analyse (exit {:?}):\n{out}\n{}",
        analyse.status.code(),
        String::from_utf8_lossy(&analyse.stderr)
    );
    let results: serde_json::Value = serde_json::from_str(&out).expect("analyse json");
    let mut seen = 0;
    for r in results.as_array().expect("results") {
        let (name, result) = (
            r["name"].as_str().unwrap_or_default(),
            r["result"].as_str().unwrap_or_default(),
        );
        let text = r["text"].as_str().unwrap_or_default();
        seen += 1;
        let allowed = match (name, result) {
            (_, "ok" | "nonapplicable") => true,
            ("language" | "framework", "unknown") => true,
            // Every option snake_case, none hyphenated: layer-etcd's names.
            ("naming-conventions", "warning") => {
                text.contains("snake case") && !text.contains("hyphen")
            }
            _ => false,
        };
        assert!(allowed, "charmcraft analyse: {name}: {result}: {text}");
    }
    assert!(
        seen >= 8,
        "charmcraft analyse ran only {seen} checks: {out}"
    );
}

/// charmcraft.yaml, loaded by charmcraft's own project code (what
/// `charmcraft pack` does before it starts LXD, which is not here): one
/// charm per Ubuntu base, each built on that base.
#[test]
fn charmcraft_yaml_loads_with_one_platform_per_base() {
    let python = linters().join("python");
    assert!(
        python.is_file(),
        "{} missing: run ./charm test",
        python.display()
    );
    let t = TestDir::new("charmcraft-yaml");
    let runtime = t.path().join("xdg");
    std::fs::create_dir_all(&runtime).expect("xdg dir");
    let out = Command::new(python)
        .arg(support::repo().join("tests/support/charmcraft_check.py"))
        .arg(support::repo())
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("HOME", t.path())
        .output()
        .expect("charmcraft check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "charmcraft refused charmcraft.yaml: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for base in ["20.04", "22.04", "24.04"] {
        let line =
            format!("platform ubuntu-{base}-amd64 on ubuntu@{base}:amd64 for ubuntu@{base}:amd64");
        assert!(text.contains(&line), "{line} missing from {text}");
    }
    assert!(text.contains("parts charm-files,dispatch,protoc"), "{text}");
}
