#!/bin/sh
# ./charm demo: the charm end to end on this machine, the operator's flow
# from DESIGN.md. fakejuju.py plays Juju (hooks in Juju's order, relation
# data and leader settings, a fake snap store and systemd that run real
# etcd 3.5.16 on 127.0.0.2-6); the built charm's dispatch does the rest,
# and the results are checked with the tools an operator would use.
set -eu

charm_dir=$1
deps=$2
here=$(cd "$(dirname "$0")" && pwd)
fake="$here/fakejuju.py"
bin="$deps/etcd-3.5.16/bin"

work=$(mktemp -d /tmp/etcd-charm-demo.XXXXXX)
units=""

cleanup() {
    for u in $units; do "$u/bin/systemctl" stop snap.etcd.etcd >/dev/null 2>&1 || true; done
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
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2",0)); print(s.getsockname()[1])'
}

# new_app NAME: a fake model for one application, deployed with its own
# ports and bind_to_all_interfaces=false (several "machines" share loopback).
new_app() {
    m="$work/model-$1"
    mkdir -p "$m"
    printf '{"leader": null, "units": {}, "config": {"port": %s, "management_port": %s, "bind_to_all_interfaces": false}}\n' \
        "$(free_port)" "$(free_port)" >"$m/model.json"
}

# unit_dir APP N IP: lay out a unit (a machine) for `juju add-unit`; sets
# $d (not printed: a subshell would lose the units list cleanup needs).
unit_dir() {
    d="$work/$1-$2"
    python3 "$fake" init-unit "$d" --unit "$1/$2" --charm-dir "$charm_dir" --etcd-bin "$bin" \
        --conf "$d/root/var/snap/etcd/common/etcd.conf.yml" --root "$d/root" \
        --model "$work/model-$1" --address "$3"
    units="$units $d"
}

add_unit() {
    python3 "$fake" add-unit "$work/model-$1" "$2" >"$work/last-hooks.json"
    python3 - "$work/last-hooks.json" <<'EOF'
import json, sys
for h in json.load(open(sys.argv[1])):
    rel = f" ({h['remote']})" if h.get("remote") else ""
    print(f"  {h['unit']:<12} {h['hook'] + rel:<48} exit {h['exit_code']}")
    if h["exit_code"] != 0:
        print(h["stderr"]); sys.exit(1)
EOF
}

status() {
    show "juju status $1"
    for ud in $units; do
        case $ud in */"$1"-[0-9]*) ;; *) continue ;; esac
        [ -f "$ud/juju/status.json" ] || continue
        python3 - "$ud" <<'EOF'
import json, sys, os
d = sys.argv[1]
u = json.load(open(os.path.join(d, "juju/unit.json")))
s = json.load(open(os.path.join(d, "juju/status.json")))
print(f"  {u['unit']:<12} {s['status']:<8} {u['address']:<10} {s['message']}")
EOF
    done
}

client_of() { sed -n 's/^advertise-client-urls: "*\([^"]*\)"*$/\1/p' "$1/root/var/snap/etcd/common/etcd.conf.yml"; }

step "juju deploy ./target/etcd.charm etcd -n 3   (etcd from the snap, 3.5/stable)"
new_app etcd
for n in 0 1 2; do
    unit_dir etcd $n "127.0.0.$((n + 2))"
    add_unit etcd "$d"
done
python3 "$fake" run-all "$work/model-etcd" update-status >/dev/null
status etcd

step "a workload writes through etcd/0 and reads through etcd/2"
client=$(client_of "$work/etcd-0")
for k in pods/default/web-0 pods/default/web-1 services/default/web configmaps/kube-system/coredns; do
    etcdctl put "/registry/$k" "{\"kind\":\"${k%%/*}\",\"name\":\"${k##*/}\"}" >/dev/null
    show "etcdctl put /registry/$k ..."
done
client=$(client_of "$work/etcd-2")
show "etcdctl --endpoints=$client get --prefix --keys-only /registry"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
show "etcdctl member list -w table"
etcdctl member list -w table

step "two members' etcd goes down: etcd/0 answers for itself, but says the cluster lost quorum"
for n in 1 2; do "$work/etcd-$n/bin/systemctl" stop snap.etcd.etcd; done
show "juju status etcd/0   (after its update-status hook)"
python3 "$fake" run-hook "$work/etcd-0" update-status --json |
    python3 -c 'import json,sys; s=json.load(sys.stdin)["status"]; print("  etcd/0       %-8s %s" % (s["status"], s["message"]))'
step "their next hooks start them again"
python3 "$fake" run-all "$work/model-etcd" update-status >/dev/null
python3 "$fake" run-all "$work/model-etcd" update-status >/dev/null
status etcd

step "layer-etcd's runbook: health, then compact and defrag"
show "juju run etcd/0 health"
python3 "$fake" run-action "$work/etcd-0" health
show "juju run etcd/0 compact physical=true"
python3 "$fake" run-action "$work/etcd-0" compact physical=true
show "juju run etcd/0 defrag"
python3 "$fake" run-action "$work/etcd-0" defrag

step "the operator takes a snapshot"
show "juju run etcd/0 snapshot target=$work/snapshots"
python3 "$fake" run-action "$work/etcd-0" snapshot "target=$work/snapshots"
outcome="$work/etcd-0/juju/action/outcome.json"
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][sys.argv[2]])' "$outcome" "$1"; }
path=$(field snapshot.path)
sum=$(field snapshot.sha256)

step "the operator checks the archive"
show "sha256sum $(basename "$path")"
got=$(sha256sum "$path" | cut -d' ' -f1)
echo "$got  $(basename "$path")"
[ "$got" = "$sum" ] && echo "matches snapshot.sha256" || { echo "MISMATCH: snapshot.sha256 is $sum"; exit 1; }
show "tar tzvf $(basename "$path")"
tar tzvf "$path"
show "tar xzf $(basename "$path") -O snapshot.json"
tar xzf "$path" -O snapshot.json
mkdir -p "$work/x"
tar xzf "$path" -C "$work/x"
show "etcdutl snapshot status db -w table"
"$bin/etcdutl" snapshot status "$work/x/db" -w table

step "restore refuses the three-member cluster"
show "juju run etcd/0 restore source=$path"
python3 "$fake" run-action "$work/etcd-0" restore "source=$path" || true

step "juju deploy ./target/etcd.charm new-etcd --resource snapshot=./$(basename "$path")"
new_app new-etcd
unit_dir new-etcd 0 127.0.0.5
python3 "$fake" resource "$d" snapshot "$path"
add_unit new-etcd "$d"
client=$(client_of "$d")
etcdctl put /registry/pods/default/unrelated '{"kind":"pods"}' >/dev/null
show "etcdctl get --prefix --keys-only /registry        # on new-etcd/0, before"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
before=$(cluster_id)
echo "cluster ID: $before"

step "the operator restores it"
show "juju run new-etcd/0 restore target=$work/backups"
python3 "$fake" run-action "$d" restore "target=$work/backups"

step "new-etcd/0 serves the snapshot's keys as a new cluster"
show "etcdctl get --prefix --keys-only /registry        # on new-etcd/0, after"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
echo "cluster ID: $(cluster_id) (was $before)"
show "ls -l $work/backups"
ls -l "$work/backups"

step "juju add-unit new-etcd   (joins the restored cluster as a learner, then is promoted)"
unit_dir new-etcd 1 127.0.0.6
d1=$d
add_unit new-etcd "$d1"
python3 "$fake" run-all "$work/model-new-etcd" update-status >/dev/null
status new-etcd
client=$(client_of "$d1")
show "etcdctl --endpoints=$client get --prefix --keys-only /registry   # on new-etcd/1"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
echo "cluster ID: $(cluster_id)"

step "backups that outlive the unit: an S3 store (moto's S3 server on loopback plays it)"
s3port=$(free_port)
(cd "$work" && INITIAL_NO_AUTH_ACTION_COUNT=3 exec "$deps/moto/bin/moto_server" -H 127.0.0.1 -p "$s3port" >"$work/moto.log" 2>&1) &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null; cleanup' EXIT INT TERM
for _ in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $s3port))" 2>/dev/null && break; sleep 0.1; done
s3admin() { AK=${AK:-testing} SK=${SK:-testing} "$deps/moto/bin/python" "$here/s3admin.py" "http://127.0.0.1:$s3port" "$@"; }
keys=$(s3admin setup)
AK=$(echo "$keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"])')
SK=$(echo "$keys" | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
export AK SK
s3admin create-bucket etcd-backups >/dev/null
# What s3-integrator's leader writes once configured (juju config s3-integrator ...).
printf '{"access-key": "%s", "secret-key": "%s", "bucket": "etcd-backups", "endpoint": "http://127.0.0.1:%s", "path": "prod", "region": "us-east-1", "s3-uri-style": "path"}\n' \
    "$AK" "$SK" "$s3port" >"$work/s3.json"
# relate MODEL: juju integrate APP:s3-credentials s3-integrator, and the integrator answers.
relate_s3() {
    rid=$(python3 "$fake" relate "$work/model-$1" s3-credentials s3-integrator/0 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["relation"])')
    python3 "$fake" remote-set "$work/model-$1" "$rid" s3-integrator/0 "$work/s3.json" --app >/dev/null
}
show "juju integrate etcd:s3-credentials s3-integrator"
relate_s3 etcd
show "juju run etcd/0 snapshot     # destination defaults to both: $work/snapshots and the store, one pass"
python3 "$fake" run-action "$work/etcd-0" snapshot "target=$work/snapshots"
outcome="$work/etcd-0/juju/action/outcome.json"
id=$(field snapshot.name)
show "aws s3 ls s3://etcd-backups/prod/etcd/   (boto3)"
s3admin list etcd-backups prod/ | python3 -c 'import json,sys; [print("  %10d  %s" % (o["size"], o["key"])) for o in json.load(sys.stdin)]'
show "juju run etcd/0 list-backups target=$work/snapshots"
python3 "$fake" run-action "$work/etcd-0" list-backups "target=$work/snapshots" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["output"])'

step "a schedule: hourly, keep 3; the leader's timer runs it (run here once, as systemd would)"
show "juju config etcd backup_schedule=hourly backup_retention_count=3"
python3 "$fake" config "$work/model-etcd" backup_schedule=hourly backup_retention_count=3 >/dev/null
leader_dir=$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["units"][m["leader"]])' "$work/model-etcd/model.json")
svc="$leader_dir/root/etc/systemd/system/etcd-charm-backup.service"
show "cat $(basename "$svc")"
cat "$svc"
sleep 1.1
env -i PATH=/usr/bin:/bin $(sed -n 's/^Environment="\(.*\)"$/\1/p' "$svc") \
    "$(sed -n 's/^ExecStart="\(.*\)" scheduled-backup$/\1/p' "$svc")" scheduled-backup 2>&1 | sed 's/^/  /'
python3 "$fake" run-hook "$leader_dir" update-status >/dev/null
status etcd

step "disaster recovery: a new single-unit app restores the stored backup by its ID"
new_app dr-etcd
unit_dir dr-etcd 0 127.0.0.7
add_unit dr-etcd "$d"
relate_s3 dr-etcd
client=$(client_of "$d")
before=$(cluster_id)
show "juju run dr-etcd/0 list-backups application=etcd"
python3 "$fake" run-action "$d" list-backups application=etcd --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["results"]["output"])'
show "juju run dr-etcd/0 restore backup-id=etcd/$id target=$work/dr-backups"
python3 "$fake" run-action "$d" restore "backup-id=etcd/$id" "target=$work/dr-backups"
show "etcdctl get --prefix --keys-only /registry        # on dr-etcd/0"
etcdctl get --prefix --keys-only /registry | sed '/^$/d'
echo "cluster ID: $(cluster_id) (was $before)"
kill $moto_pid 2>/dev/null || true

step "done: every unit's etcd stopped and $work removed"
