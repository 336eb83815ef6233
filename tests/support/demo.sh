#!/bin/sh
# ./charm demo: the charm end to end on this machine. Real etcd servers run
# on loopback inside simulated units; the built charm's dispatch runs the
# snapshot and restore actions exactly as the Juju unit agent would
# (fakejuju.py plays Juju), and the results are checked with the tools an
# operator would use.
set -eu

charm_dir=$1
deps=$2
here=$(cd "$(dirname "$0")" && pwd)
fake="$here/fakejuju.py"
bin="$deps/etcd-3.5.16/bin"

work=$(mktemp -d /tmp/etcd-charm-demo.XXXXXX)
units=""

cleanup() {
    for u in $units; do "$u/bin/systemctl" stop snap.etcd.etcd || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; }
etcdctl() { ETCDCTL_API=3 "$bin/etcdctl" --endpoints="$client" "$@"; }
cluster_id() {
    etcdctl endpoint status -w json |
        python3 -c 'import json,sys; print("%x" % json.load(sys.stdin)[0]["Status"]["header"]["cluster_id"])'
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# make_unit DIR UNIT MEMBER TOKEN: a simulated unit with its own etcd config.
make_unit() {
    dir=$1 unit_name=$2 member=$3 token=$4
    root="$dir/root"
    common="$root/var/snap/etcd/common"
    mkdir -p "$common"
    cport=$(free_port)
    pport=$(free_port)
    cat >"$common/etcd.conf.yml" <<EOF
name: $member
data-dir: $root/var/snap/etcd/current/$member.etcd
listen-client-urls: http://127.0.0.1:$cport
advertise-client-urls: http://127.0.0.1:$cport
listen-peer-urls: http://127.0.0.1:$pport
initial-advertise-peer-urls: http://127.0.0.1:$pport
initial-cluster: $member=http://127.0.0.1:$pport
initial-cluster-token: $token
initial-cluster-state: new
logger: zap
log-level: warn
EOF
    python3 "$fake" init-unit "$dir" --unit "$unit_name" --charm-dir "$charm_dir" \
        --etcd-bin "$bin" --conf "$common/etcd.conf.yml" --root "$root"
    echo "http://127.0.0.1:$cport" >"$dir/client-url"
    units="$units $dir"
}

start_unit() {
    "$1/bin/systemctl" start snap.etcd.etcd
    client=$(cat "$1/client-url")
    i=0
    until etcdctl endpoint health >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "etcd did not start"; cat "$1/svc/etcd.log"; exit 1; }
        sleep 0.2
    done
}

unit="$work/unit-etcd-0"
make_unit "$unit" etcd/0 etcd0 demo-cluster
start_unit "$unit"
step "etcd $("$bin/etcd" --version | sed -n 's/etcd Version: //p') runs as snap.etcd.etcd on $client (unit etcd/0)"
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

step "a new single-unit application gets the snapshot as its resource"
new="$work/unit-new-etcd-0"
make_unit "$new" new-etcd/0 new-etcd0 other-cluster
start_unit "$new"
etcdctl put /registry/pods/default/unrelated '{"kind":"pods"}' >/dev/null
show "juju deploy ./target/etcd.charm new-etcd --resource snapshot=./$(basename "$path")"
python3 "$fake" resource "$new" snapshot "$path"
show "etcdctl get --prefix --keys-only /registry        # on new-etcd/0, before"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
before=$(cluster_id)
echo "cluster ID: $before"

step "the operator restores it"
show "juju run new-etcd/0 restore target=$work/backups"
python3 "$fake" run-action "$new" restore "target=$work/backups"

step "new-etcd/0 serves the snapshot's keys as a new cluster"
show "etcdctl get --prefix --keys-only /registry        # on new-etcd/0, after"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
echo "cluster ID: $(cluster_id) (was $before)"
show "etcdctl member list -w table"
etcdctl member list -w table
show "ls -l $work/backups"
ls -l "$work/backups"

step "done: both units' etcd stopped and $work removed"
