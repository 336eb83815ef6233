#!/usr/bin/env python3
"""./charm bench: the charm's snapshot and restore against what operators
run today, measured side by side in one run on this machine.

A real etcd 3.5 on loopback is filled with Kubernetes-like objects; then,
alternating the contenders each round:

  snapshot  charm action | etcdctl snapshot save + tar czf + sha256sum
            (baseline) | etcdctl snapshot save alone (floor)
  restore   charm action skip-backup=true | tar xzf + etcdutl snapshot restore
            charm action with backup | the same + tar czf of the old data dir

Then, against moto's S3 server on loopback (unless --no-store):

  snapshot  charm action to the store, both (local + store) and local
            only | etcdctl snapshot save + upload of the db with the same
            client library (examples/s3put, as aws s3 cp would)
  restore   charm action from the store (backup-id) | from the local file
  downtime  how long etcd answers no client while a restore from the store
            swaps the data (a prober asks /health every 5 ms), beside its
            floor: etcd stopped and started on the same restored data

It prints medians, ratios to the baseline (and the floor), the charm's peak
memory and the archive size against gzip -6 of the same db. Nothing is
asserted: the figures are for people.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "..", "tests", "support", "fakejuju.py")


def size_arg(text):
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1] in mult:
        return int(float(text[:-1]) * mult[text[-1]])
    return int(text)


def human(n):
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def size_of(text):
    """Bytes in a du-style figure such as 7.2M (for comparing peaks)."""
    if not text or text == "unknown":
        return 0
    return size_arg(text) if text[-1].upper() in "KMG" else int(text)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sh(cmd, **kw):
    subprocess.run(cmd, shell=True, check=True, **kw)


def timed(fn):
    start = time.monotonic()
    fn()
    return time.monotonic() - start


class Unit:
    def __init__(self, work, charm_dir, bin_dir):
        self.dir = os.path.join(work, "unit")
        self.root = os.path.join(self.dir, "root")
        common = os.path.join(self.root, "var/snap/etcd/common")
        os.makedirs(common)
        self.conf = os.path.join(common, "etcd.conf.yml")
        self.data = os.path.join(self.root, "var/snap/etcd/current/bench0.etcd")
        self.bin = bin_dir
        cport, pport = free_port(), free_port()
        self.client = f"http://127.0.0.1:{cport}"
        peer = f"http://127.0.0.1:{pport}"
        with open(self.conf, "w") as f:
            f.write(
                f"name: bench0\ndata-dir: {self.data}\n"
                f"listen-client-urls: {self.client}\nadvertise-client-urls: {self.client}\n"
                f"listen-peer-urls: {peer}\ninitial-advertise-peer-urls: {peer}\n"
                f"initial-cluster: bench0={peer}\ninitial-cluster-token: bench\n"
                "initial-cluster-state: new\nquota-backend-bytes: 8589934592\n"
                "logger: zap\nlog-level: warn\n"
            )
        sh(
            f"python3 {FAKE} init-unit {self.dir} --unit bench/0 --charm-dir {charm_dir} "
            f"--etcd-bin {bin_dir} --conf {self.conf} --root {self.root}"
        )
        self.systemctl("start")
        self.wait_healthy()

    def systemctl(self, verb):
        sh(f"{self.dir}/bin/systemctl {verb} snap.etcd.etcd")

    def etcdctl(self, args):
        return f"ETCDCTL_API=3 {self.bin}/etcdctl --endpoints={self.client} {args}"

    def wait_healthy(self):
        for _ in range(300):
            r = subprocess.run(self.etcdctl("endpoint health"), shell=True, capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise SystemExit("etcd did not become healthy")

    def action(self, name, *params):
        out = subprocess.run(
            ["python3", FAKE, "run-action", self.dir, name, *params, "--json"],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        o = json.loads(out)
        if o["status"] != "completed":
            raise SystemExit(f"{name} failed: {o.get('message')} {o.get('stderr')}")
        peak = None
        for line in o["logs"]:
            if "peak memory" in line:
                peak = line.rsplit("peak memory ", 1)[1]
        return o["seconds"], peak, o["results"]


def bench_size(size, args, charm_dir, bin_dir, fill):
    work = tempfile.mkdtemp(prefix="etcd-charm-bench-", dir=args.work)
    unit = None
    try:
        unit = Unit(work, charm_dir, bin_dir)
        print(f"\n## {human(size)} of Kubernetes-like objects", flush=True)
        secs = timed(lambda: sh(f"{fill} {unit.client} {size}"))
        print(f"filled in {secs:.0f} s", flush=True)

        snap = {"charm": [], "baseline": [], "floor": []}
        peaks = []
        archive = None
        b = os.path.join(work, "b")

        def charm():
            nonlocal archive
            out = os.path.join(work, "charm")
            shutil.rmtree(out, ignore_errors=True)
            params = [f"target={out}"]
            if args.level:
                params.append(f"compression-level={args.level}")
            secs, peak, results = unit.action("snapshot", *params)
            peaks.append(peak)
            archive = results["snapshot.path"]
            snap["charm"].append(secs)

        def baseline():
            shutil.rmtree(b, ignore_errors=True)
            os.makedirs(b)
            snap["baseline"].append(
                timed(
                    lambda: sh(
                        unit.etcdctl(f"snapshot save {b}/db") + " >/dev/null 2>&1"
                        f" && tar czf {b}/s.tar.gz -C {b} db && sha256sum {b}/s.tar.gz >/dev/null"
                    )
                )
            )

        def floor():
            f = os.path.join(work, "f")
            shutil.rmtree(f, ignore_errors=True)
            os.makedirs(f)
            snap["floor"].append(timed(lambda: sh(unit.etcdctl(f"snapshot save {f}/db") + " >/dev/null 2>&1")))

        order = [charm, baseline, floor]
        for r in range(args.runs):
            for fn in order[r % 3 :] + order[: r % 3]:
                fn()
        db_size = os.path.getsize(os.path.join(work, "f", "db"))
        gzip6 = int(
            subprocess.run(f"gzip -6 -c {work}/f/db | wc -c", shell=True, capture_output=True, text=True).stdout
        )
        charm_size = os.path.getsize(archive)
        keep = os.path.join(work, "snapshot.tar.gz")
        shutil.move(archive, keep)
        for d in ("b", "f", "charm"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)

        rest = {"charm": [], "baseline": [], "charm+backup": [], "baseline+backup": []}
        rpeaks = []
        r = os.path.join(work, "r")

        def charm_restore(backup):
            def run():
                params = [f"source={keep}"]
                if backup:
                    params.append(f"target={work}/backups")
                else:
                    params.append("skip-backup=true")
                secs, peak, _ = unit.action("restore", *params)
                rpeaks.append(peak)
                rest["charm+backup" if backup else "charm"].append(secs)
                shutil.rmtree(f"{work}/backups", ignore_errors=True)

            return run

        def baseline_restore(backup):
            def run():
                shutil.rmtree(r, ignore_errors=True)
                os.makedirs(r)
                cmd = ""
                if backup:
                    # The member is live, as it is when an operator runs this;
                    # tar's exit 1 means "a file changed while read", not a failure.
                    cmd = f"{{ tar czf {r}/old.tar.gz -C {unit.data} . ; [ $? -le 1 ]; }} && "
                cmd += (
                    f"tar xzf {keep} -C {r} && {bin_dir}/etcdutl snapshot restore {r}/db "
                    f"--name bench0 --initial-cluster bench0=http://127.0.0.1:1 "
                    f"--initial-advertise-peer-urls http://127.0.0.1:1 --data-dir {r}/data >/dev/null 2>&1"
                )
                rest["baseline+backup" if backup else "baseline"].append(timed(lambda: sh(cmd)))
                shutil.rmtree(r, ignore_errors=True)

            return run

        order = [charm_restore(False), baseline_restore(False), charm_restore(True), baseline_restore(True)]
        for i in range(args.runs):
            for fn in order[i % 4 :] + order[: i % 4]:
                fn()

        med = {k: statistics.median(v) for k, v in {**snap, **{"r-" + k: v for k, v in rest.items()}}.items()}
        print(f"\ndb {human(db_size)}; {args.runs} runs each, median wall time\n")
        print("| operation | contender | median s | vs baseline | vs floor | peak RSS |")
        print("|---|---|---|---|---|---|")
        for k, label in (("charm", "charm action"), ("baseline", "etcdctl save + tar czf + sha256sum"), ("floor", "etcdctl snapshot save")):
            print(
                f"| snapshot | {label} | {med[k]:.1f} | {med[k] / med['baseline']:.2f}x | "
                f"{med[k] / med['floor']:.2f}x | {max(peaks, key=size_of) if k == 'charm' else ''} |"
            )
        for k, label, base in (
            ("r-charm", "charm action, skip-backup", "r-baseline"),
            ("r-baseline", "tar xzf + etcdutl restore", "r-baseline"),
            ("r-charm+backup", "charm action, with backup", "r-baseline+backup"),
            ("r-baseline+backup", "tar czf old + tar xzf + etcdutl restore", "r-baseline+backup"),
        ):
            print(
                f"| restore | {label} | {med[k]:.1f} | {med[k] / med[base]:.2f}x | | "
                f"{max(rpeaks, key=size_of) if k.startswith('r-charm') and rpeaks else ''} |"
            )
        print(
            f"\narchive {human(charm_size)} vs gzip -6 of the db {human(gzip6)}: "
            f"{charm_size / gzip6:.3f}x; raw db {human(db_size)}"
        )
        raw = {**{"snapshot " + k: v for k, v in snap.items()}, **{"restore " + k: v for k, v in rest.items()}}
        print("raw seconds:", json.dumps({k: [round(x, 2) for x in v] for k, v in raw.items()}))
        if args.store:
            bench_store(unit, work, args, bin_dir, keep)
        return {"size": size, "median": med, "archive_ratio": charm_size / gzip6}
    finally:
        if unit:
            subprocess.run(f"{unit.dir}/bin/systemctl stop snap.etcd.etcd", shell=True)
        shutil.rmtree(work, ignore_errors=True)


class Prober:
    """Asks etcd's /health every 5 ms on its own thread; the longest time
    no answer came is the downtime."""

    def __init__(self, client):
        import threading
        import urllib.request

        self.url = client + "/health"
        self.stop = threading.Event()
        self.longest = 0.0
        self.open = urllib.request.urlopen

        def run():
            down_since = None
            deadline = time.monotonic() + 3600
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    ok = self.open(self.url, timeout=0.2).status == 200
                except Exception:
                    ok = False
                now = time.monotonic()
                if ok and down_since is not None:
                    self.longest = max(self.longest, now - down_since)
                    down_since = None
                elif not ok and down_since is None:
                    down_since = now
                time.sleep(0.005)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done(self):
        self.stop.set()
        self.thread.join()
        return self.longest


def start_moto(deps, work):
    port = free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    proc = subprocess.Popen(
        [os.path.join(deps, "moto/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    admin = [os.path.join(deps, "moto/bin/python"), os.path.join(HERE, "..", "tests/support/s3admin.py"), endpoint]
    keys = json.loads(subprocess.run(admin + ["setup"], capture_output=True, check=True, text=True).stdout)
    env = dict(os.environ, AK=keys["access"], SK=keys["secret"])
    subprocess.run(admin + ["create-bucket", "etcd-backups"], env=env, capture_output=True, check=True)
    return proc, endpoint, keys


def bench_store(unit, work, args, bin_dir, local_archive):
    moto, endpoint, keys = start_moto(args.deps, work)
    try:
        state = os.path.join(unit.root, "var/lib/etcd-charm")
        os.makedirs(state, exist_ok=True)
        stores = os.path.join(state, "stores.json")
        # What the hooks write once s3-integrator answers.
        settings = {
            "kind": "s3", "bucket": "etcd-backups", "account": keys["access"], "secret": keys["secret"],
            "endpoint": endpoint, "region": "us-east-1", "path": "bench", "virtual_hosted": False,
        }
        with open(os.open(stores, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"stores": {"s3": settings}}, f)
        times = {"local": [], "both": [], "store": [], "baseline": []}
        peaks = []
        ids = []
        out = os.path.join(work, "charm-store")

        def charm(dest):
            def run():
                shutil.rmtree(out, ignore_errors=True)
                time.sleep(1.05)  # one archive name per second
                secs, peak, results = unit.action("snapshot", f"target={out}", f"destination={dest}")
                times[dest].append(secs)
                if dest != "local":
                    peaks.append(peak)
                    ids.append(results["snapshot.name"])

            return run

        def baseline():
            b = os.path.join(work, "sb")
            shutil.rmtree(b, ignore_errors=True)
            os.makedirs(b)
            key = f"bench/baseline/db-{len(times['baseline'])}"
            times["baseline"].append(
                timed(
                    lambda: sh(
                        unit.etcdctl(f"snapshot save {b}/db") + " >/dev/null 2>&1"
                        f" && {args.s3put} {stores} {b}/db {key}"
                    )
                )
            )
            shutil.rmtree(b, ignore_errors=True)

        order = [charm("local"), charm("both"), charm("store"), baseline]
        for r in range(args.runs):
            for fn in order[r % 4 :] + order[: r % 4]:
                fn()
        shutil.rmtree(out, ignore_errors=True)

        rest = {"local": [], "store": []}
        downs, floors = [], []

        def restore_local():
            secs, _, _ = unit.action("restore", f"source={local_archive}", "skip-backup=true")
            rest["local"].append(secs)

        def restore_store():
            probe = Prober(unit.client)
            secs, peak, _ = unit.action("restore", f"backup-id={ids[-1]}", "skip-backup=true")
            downs.append(probe.done())
            rest["store"].append(secs)
            peaks.append(peak)
            # The floor: the same restored data, etcd stopped and started.
            probe = Prober(unit.client)
            unit.systemctl("stop")
            unit.systemctl("start")
            unit.wait_healthy()
            time.sleep(0.05)
            floors.append(probe.done())

        order = [restore_local, restore_store]
        for r in range(args.runs):
            for fn in order[r % 2 :] + order[: r % 2]:
                fn()
        med = {k: statistics.median(v) for k, v in times.items()}
        rmed = {k: statistics.median(v) for k, v in rest.items()}
        print(f"\nobject store (moto S3 on loopback), {args.runs} runs each, median wall time\n")
        print("| operation | contender | median s | vs local-only | vs baseline | peak RSS |")
        print("|---|---|---|---|---|---|")
        for k, label in (
            ("store", "charm action, destination=store"),
            ("both", "charm action, destination=both"),
            ("local", "charm action, destination=local"),
            ("baseline", "etcdctl snapshot save + upload (s3put)"),
        ):
            print(
                f"| snapshot | {label} | {med[k]:.1f} | {med[k] / med['local']:.2f}x | "
                f"{med[k] / med['baseline']:.2f}x | {max(peaks, key=size_of) if k in ('store', 'both') else ''} |"
            )
        print(f"| restore | charm action, backup-id (store) | {rmed['store']:.1f} | {rmed['store'] / rmed['local']:.2f}x | | |")
        print(f"| restore | charm action, source= (local file) | {rmed['local']:.1f} | 1.00x | | |")
        d, fl = statistics.median(downs), statistics.median(floors)
        print(f"\nrestore downtime from the store: {d:.2f} s against a floor of {fl:.2f} s (etcd stopped and started on the same data): {d / fl:.2f}x")
        r2 = lambda v: [round(x, 2) for x in v]
        print("raw:", json.dumps({"snapshot": {k: r2(v) for k, v in times.items()}, "restore": {k: r2(v) for k, v in rest.items()}, "downtime": r2(downs), "floor": r2(floors)}))
    finally:
        moto.kill()
        moto.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--charm-dir", required=True)
    p.add_argument("--deps", required=True)
    p.add_argument("--fill", required=True)
    p.add_argument("--sizes", default="1G", help="comma-separated db sizes, e.g. 256M,1G,2G")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", default="/var/tmp")
    p.add_argument("--level", type=int, help="the charm's compression-level (default: the action's)")
    p.add_argument("--s3put", help="the upload contender (examples/s3put); without it, no store runs")
    p.add_argument("--no-store", dest="store", action="store_false", help="skip the object store runs")
    args = p.parse_args()
    args.store = args.store and bool(args.s3put)
    bin_dir = os.path.join(args.deps, "etcd-3.5.16", "bin")
    print(f"machine: {os.cpu_count()} cores; etcd 3.5.16; charm {args.charm_dir}")
    rows = [bench_size(size_arg(s), args, args.charm_dir, bin_dir, args.fill) for s in args.sizes.split(",")]
    if len(rows) > 1:
        print("\n## growth with db size (charm snapshot / restore seconds per GiB)")
        for row in rows:
            gib = row["size"] / (1 << 30)
            print(
                f"{human(row['size'])}: snapshot {row['median']['charm'] / gib:.1f} s/GiB, "
                f"restore {row['median']['r-charm'] / gib:.1f} s/GiB"
            )


if __name__ == "__main__":
    sys.exit(main())
