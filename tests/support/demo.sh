#!/bin/sh
# ./charm demo: the charm end to end on this machine. A real etcd runs on
# loopback inside a simulated unit; the packed charm's dispatch runs the
# snapshot action exactly as the Juju unit agent would (fakejuju.py plays
# Juju), and the archive is checked with the tools an operator would use.
set -eu

charm_dir=$1
deps=$2
here=$(cd "$(dirname "$0")" && pwd)
fake="$here/fakejuju.py"
bin="$deps/etcd-3.5.16/bin"

work=$(mktemp -d /tmp/etcd-charm-demo.XXXXXX)
unit="$work/unit-etcd-0"
root="$unit/root"
common="$root/var/snap/etcd/common"
conf="$common/etcd.conf.yml"
mkdir -p "$common"

cleanup() {
    [ -x "$unit/bin/systemctl" ] && "$unit/bin/systemctl" stop snap.etcd.etcd || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cport=$(free_port)
pport=$(free_port)
client="http://127.0.0.1:$cport"

cat >"$conf" <<EOF
name: etcd0
data-dir: $root/var/snap/etcd/current/etcd0.etcd
listen-client-urls: $client
advertise-client-urls: $client
listen-peer-urls: http://127.0.0.1:$pport
initial-advertise-peer-urls: http://127.0.0.1:$pport
initial-cluster: etcd0=http://127.0.0.1:$pport
initial-cluster-token: demo-cluster
initial-cluster-state: new
logger: zap
log-level: warn
EOF

python3 "$fake" init-unit "$unit" --unit etcd/0 --charm-dir "$charm_dir" \
    --etcd-bin "$bin" --conf "$conf" --root "$root"

step() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
etcdctl() { ETCDCTL_API=3 "$bin/etcdctl" --endpoints="$client" "$@"; }

step "etcd $("$bin/etcd" --version | sed -n 's/etcd Version: //p') starts as snap.etcd.etcd on $client"
"$unit/bin/systemctl" start snap.etcd.etcd
i=0
until etcdctl endpoint health >/dev/null 2>&1; do
    i=$((i + 1))
    [ $i -lt 100 ] || { echo "etcd did not start"; cat "$unit/svc/etcd.log"; exit 1; }
    sleep 0.2
done
etcdctl endpoint status -w table

step "a workload writes keys"
for k in pods/default/web-0 pods/default/web-1 services/default/web configmaps/kube-system/coredns; do
    etcdctl put "/registry/$k" "{\"kind\":\"${k%%/*}\",\"name\":\"${k##*/}\"}" >/dev/null
    show "etcdctl put /registry/$k ..."
done

step "the operator takes a snapshot"
show "juju run etcd/0 snapshot target=$work/snapshots"
python3 "$fake" run-action "$unit" snapshot "target=$work/snapshots"

outcome="$unit/juju/action/outcome.json"
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][sys.argv[2]])' "$outcome" "$1"; }
path=$(field snapshot.path)
sum=$(field snapshot.sha256)

step "the operator checks the archive"
show "ls -l $(dirname "$path")"
ls -l "$(dirname "$path")"
show "sha256sum $(basename "$path")"
got=$(sha256sum "$path" | cut -d' ' -f1)
echo "$got  $(basename "$path")"
if [ "$got" = "$sum" ]; then
    echo "matches snapshot.sha256"
else
    echo "MISMATCH: snapshot.sha256 is $sum"
    exit 1
fi
show "tar tzvf $(basename "$path")"
tar tzvf "$path"
show "tar xzf $(basename "$path") -O snapshot.json"
tar xzf "$path" -O snapshot.json
mkdir -p "$work/x"
tar xzf "$path" -C "$work/x"
show "etcdutl snapshot status db -w table"
"$bin/etcdutl" snapshot status "$work/x/db" -w table

step "done: the unit's etcd is stopped and $work removed"
