#!/usr/bin/env python3
"""A strict stand-in for the parts of Juju the charm talks to.

Tests and the demo cannot run a Juju controller, so this plays it: it lays
out a unit, runs the charm's `dispatch` the way the unit agent does (clean
environment, charm dir as working dir, hook tools first on PATH), and acts as
each hook tool with Juju's own rules (key validation, reserved keys, exit
codes, what resource-get prints). It also plays `systemctl` for the
snap.etcd.etcd service, running a real etcd with --config-file.

Every tool call is recorded in <unit>/juju/calls.jsonl so a test can assert
exactly what an operator would see.

Several units can share a model dir (leader, leader settings, application
config, relation data). Hooks that change relation data or leader settings
queue the hooks Juju would fire on the other units (relation-changed,
leader-settings-changed); `settle` runs the queue in order.

Commands (for the test harness and ./charm demo):
  init-unit UNIT_DIR --unit NAME --charm-dir DIR --etcd-bin DIR --conf PATH --root DIR
            [--model DIR] [--address IP]
  run-action UNIT_DIR ACTION [key=value ...] [--json] [--timeout SECS]
  run-hook UNIT_DIR HOOK [--json] [--relation RID --remote UNIT [--departing UNIT]] [--storage ID]
                                  (a hook that succeeds takes the unit out of error, as `juju resolved` does)
  resource UNIT_DIR NAME [FILE]   attach a resource (no FILE: detach)
  add-unit MODEL UNIT_DIR [--lead] [--refreshed]
                                  install, leader-elected (first unit, or --lead) or leader-settings-changed,
                                  config-changed, start, join the peer relation; settle. --refreshed: a
                                  unit another charm ran until `juju refresh`: upgrade-charm, config-changed
  remove-unit MODEL UNIT          departed on both sides, stop, remove (a peer relation
                                  has no broken hook on the leaving unit); settle
  config MODEL key=value ...      juju config: validate, config-changed everywhere; settle
  run-all MODEL HOOK              one hook on every unit (update-status); settle
  relate MODEL ENDPOINT REMOTE    a relation to another application (its unit played by the test)
  unrelate MODEL RID               juju remove-relation: departed, broken on every unit; settle
  remote-set MODEL RID WHO FILE [--app]
                                  that application sets its unit's (or app's) data from a JSON file; settle
  settle MODEL                    run queued hooks until none are left
  existing-unit MODEL UNIT_DIR    a unit another charm has run all along: in the model and the peer
                                  relation, no hooks (what it left is the test's to lay out)
  relate MODEL ENDPOINT REMOTE --existing
                                  a relation that was there all along: no hooks
  elect MODEL UNIT                 leadership moves to UNIT
  seed MODEL FILE                 what the charm before left: {"leader": {...}, "reldata": {rid: {who: {...}}}}
  refresh MODEL CHARM_DIR [--order UNIT,...]
                                  juju refresh --switch: Juju's checks (relations in use, storage, config
                                  values the new options refuse are dropped), the new charm on every unit,
                                  then upgrade-charm and config-changed unit by unit; settle
  reboot UNIT_DIR                 kill etcd at once, then start it if enabled (boot)
  attach-storage UNIT_DIR ID LOCATION
                                  juju attach-storage / add-storage: ID (data/0) at LOCATION (a block
                                  device); storage-attached; settle
  detach-storage UNIT_DIR ID      juju detach-storage: storage-detaching, then it is gone; settle
"""

import json
import os
import re
import sys
import time

# subprocess and signal are imported where used: hook tools run dozens of
# times per hook, and most never need them.

KEY_PART = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
RESERVED_KEYS = {"stdout", "stdout-encoding", "stderr", "stderr-encoding"}
STATUSES = {"maintenance", "blocked", "waiting", "active"}
LOG_LEVELS = {"TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
SERVICE = "snap.etcd.etcd"
ACTION_TOOLS = {"action-get", "action-set", "action-fail", "action-log"}
TOOLS = sorted(
    ACTION_TOOLS
    | {
        "status-set",
        "juju-log",
        "resource-get",
        "relation-ids",
        "relation-list",
        "relation-get",
        "relation-set",
        "config-get",
        "is-leader",
        "leader-get",
        "leader-set",
        "network-get",
        "application-version-set",
        "open-port",
        "close-port",
        "opened-ports",
        "systemctl",
        "journalctl",
        "snap",
        "storage-get",
        "systemd-analyze",
    }
)
PEER = "cluster"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ToolError(Exception):
    """A hook tool refusing a call: message for stderr, and exit code."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def jpath(unit, *parts):
    return os.path.join(unit, "juju", *parts)


def read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def append_jsonl(path, value):
    with open(path, "a") as f:
        f.write(json.dumps(value, sort_keys=True) + "\n")


def unit_info(unit):
    return read_json(jpath(unit, "unit.json"), None)


def action_dir(unit):
    return jpath(unit, "action")


# ---------------------------------------------------------------- hook tools


def in_action():
    if not os.environ.get("JUJU_ACTION_NAME"):
        raise ToolError("ERROR not running an action")


def tool_action_get(unit, args):
    in_action()
    fmt, keys = fmt_list(args)
    for a in keys:
        if a.startswith("-"):
            raise ToolError(f"ERROR option provided but not defined: {a}", 2)
    if fmt not in ("smart", "json", "yaml"):
        raise ToolError(f'ERROR invalid value "{fmt}" for option --format', 2)
    if len(keys) > 1:
        raise ToolError(f'ERROR unrecognized args: ["{keys[1]}"]', 2)
    value = read_json(os.path.join(action_dir(unit), "params.json"), {})
    if keys:
        for part in keys[0].split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if fmt == "json":
        print(json.dumps(value))
    elif isinstance(value, str) and fmt == "smart":
        print(value)
    elif isinstance(value, bool) and fmt == "smart":
        print("True" if value else "False")
    else:
        import yaml

        sys.stdout.write(yaml.safe_dump(value, default_flow_style=False))


def tool_action_set(unit, args):
    in_action()
    if not args:
        raise ToolError("ERROR no key=value pairs specified", 2)
    pairs = []
    for a in args:
        if "=" not in a:
            raise ToolError(f'ERROR argument "{a}" must be of the form key...=value', 2)
        key, value = a.split("=", 1)
        for part in key.split("."):
            if not KEY_PART.match(part):
                raise ToolError(
                    f'ERROR key "{key}" must start and end with lowercase alphanumeric, '
                    "and contain only lowercase alphanumeric, hyphens and periods",
                    2,
                )
        if key in RESERVED_KEYS:
            raise ToolError(f'ERROR cannot set reserved action key "{key}"', 2)
        pairs.append((key, value))
    path = os.path.join(action_dir(unit), "results.json")
    results = read_json(path, {})
    for key, value in pairs:
        results[key] = value
    write_json(path, results)


def tool_action_fail(unit, args):
    in_action()
    if len(args) > 1:
        raise ToolError(f'ERROR unrecognized args: ["{args[1]}"]', 2)
    message = args[0] if args else "action failed without reason given, check action for errors"
    write_json(os.path.join(action_dir(unit), "failed.json"), {"message": message})


def tool_action_log(unit, args):
    in_action()
    if not args:
        raise ToolError("ERROR no message specified", 2)
    append_jsonl(
        os.path.join(action_dir(unit), "logs.jsonl"),
        {"time": time.time(), "message": " ".join(args)},
    )


def tool_status_set(unit, args):
    args = [a for a in args if a != "--application"]
    if not args or args[0] not in STATUSES:
        given = args[0] if args else ""
        raise ToolError(f'ERROR invalid status "{given}", expected one of {sorted(STATUSES)}', 2)
    status = {"status": args[0], "message": " ".join(args[1:])}
    write_json(jpath(unit, "status.json"), status)
    append_jsonl(jpath(unit, "status-history.jsonl"), status)


def tool_juju_log(unit, args):
    level, rest, it = "INFO", [], iter(args)
    for a in it:
        if a in ("-l", "--log-level"):
            level = next(it, "")
        elif a == "--debug":
            level = "DEBUG"
        else:
            rest.append(a)
    if level.upper() not in LOG_LEVELS:
        raise ToolError(f'ERROR invalid log level "{level}"', 2)
    if not rest:
        raise ToolError("ERROR no message specified", 2)
    append_jsonl(jpath(unit, "log.jsonl"), {"level": level.upper(), "message": " ".join(rest)})


def tool_resource_get(unit, args):
    if len(args) != 1:
        raise ToolError("ERROR usage: resource-get <resource name>", 2)
    info = unit_info(unit)
    import yaml

    with open(os.path.join(info["charm_dir"], "metadata.yaml")) as f:
        declared = (yaml.safe_load(f) or {}).get("resources") or {}
    name = args[0]
    if name not in declared:
        raise ToolError(f'ERROR could not download resource: resource "{name}" not found')
    path = jpath(unit, "resources", name, declared[name].get("filename", name))
    if not os.path.isfile(path):
        raise ToolError(
            "ERROR could not download resource: HTTP request failed: "
            f"Get https://controller/units/{info['unit'].replace('/', '-')}/resources/{name}: "
            "resource#{}/{} not found".format(info["unit"].split("/")[0], name)
        )
    sys.stdout.write(path)


def relations(unit):
    """<unit>/juju/relations.json, this unit's view:
    {"cluster": {"cluster:0": ["etcd/1", ...]}} (remote units it has seen join)."""
    return read_json(jpath(unit, "relations.json"), {})


def model_dir(unit):
    return unit_info(unit).get("model") or jpath(unit, "model")


def mpath(model, name):
    return os.path.join(model, name)


def model_state(model):
    return read_json(mpath(model, "model.json"), {"leader": None, "units": {}, "config": {}})


def save_model(model, state):
    write_json(mpath(model, "model.json"), state)


def reldata(model):
    """{relation id: {unit or app name: {key: value}}}"""
    return read_json(mpath(model, "reldata.json"), {})


def leader_settings(model):
    return read_json(mpath(model, "leader.json"), {})


def merge_settings(settings, pairs):
    """Juju's rule for relation-set and leader-set: an empty value deletes."""
    for k, v in pairs.items():
        if v == "":
            settings.pop(k, None)
        else:
            settings[k] = v


def settings_pairs(args, what):
    pairs = {}
    for a in args:
        if "=" not in a:
            raise ToolError(f'ERROR expected "key=value", got "{a}"', 2)
        k, v = a.split("=", 1)
        if not k:
            raise ToolError(f'ERROR expected "key=value", got "{a}"', 2)
        pairs[k] = v
    if not pairs:
        raise ToolError(f"ERROR no {what} specified", 2)
    return pairs


def current_relation(unit, args):
    """(-r value or JUJU_RELATION_ID, remaining args)."""
    rid, rest, it = os.environ.get("JUJU_RELATION_ID", ""), [], iter(args)
    for a in it:
        if a in ("-r", "--relation"):
            rid = next(it, "")
        elif a.startswith("-r="):
            rid = a[3:]
        else:
            rest.append(a)
    if not rid:
        raise ToolError("ERROR no relation id specified", 2)
    for rels in relations(unit).values():
        if rid in rels:
            return rid, rest
    raise ToolError(f'ERROR invalid value "{rid}" for option -r: relation not found', 2)


def tool_relation_get(unit, args):
    fmt, args = fmt_list(args)
    app = "--app" in args
    args = [a for a in args if a != "--app"]
    rid, rest = current_relation(unit, args)
    key = rest[0] if rest else "-"
    who = rest[1] if len(rest) > 1 else os.environ.get("JUJU_REMOTE_UNIT", "")
    me = unit_info(unit)["unit"]
    if not who:
        raise ToolError("ERROR no unit or application specified", 2)
    seen = [u for rels in relations(unit).values() for u in rels.get(rid, [])]
    if app:
        who = who.split("/")[0]
    elif who != me and who not in seen:
        raise ToolError(f'ERROR cannot read settings for unit "{who}" in relation "{rid}": permission denied', 1)
    data = reldata(model_dir(unit)).get(rid, {}).get(who, {})
    value = data if key == "-" else data.get(key)
    if fmt == "json":
        print(json.dumps(value))
    elif key == "-":
        import yaml

        if data:
            sys.stdout.write(yaml.safe_dump(data, default_flow_style=False))
    elif value is not None:
        print(value)


def tool_relation_set(unit, args):
    app = "--app" in args
    args = [a for a in args if a != "--app"]
    rid, rest = current_relation(unit, args)
    from_file = {}
    if "--file" in rest:
        i = rest.index("--file")
        if i + 1 >= len(rest):
            raise ToolError("ERROR flag needs an argument: --file", 2)
        src = rest[i + 1]
        rest = rest[:i] + rest[i + 2:]
        import yaml

        text = sys.stdin.read() if src == "-" else open(src).read()
        # Juju unmarshals the file into map[string]string with Go's yaml.v2,
        # which keeps each scalar's text: `on` stays "on", `true` "true"
        # (PyYAML's safe loader would make them True). BaseLoader does the
        # same: every scalar a string.
        loaded = yaml.load(text, Loader=yaml.BaseLoader) or {}
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ToolError("ERROR expected YAML map of settings", 1)
        from_file = {str(k): v for k, v in loaded.items()}
    pairs = dict(from_file)
    if rest or not pairs:
        pairs.update(settings_pairs(rest, "settings"))
    info = unit_info(unit)
    model = model_dir(unit)
    who = info["unit"]
    if app:
        if model_state(model).get("leader") != who:
            raise ToolError("ERROR cannot write relation settings: not the leader", 1)
        who = who.split("/")[0]
    data = reldata(model)
    merge_settings(data.setdefault(rid, {}).setdefault(who, {}), pairs)
    write_json(mpath(model, "reldata.json"), data)


def tool_config_get(unit, args):
    fmt, rest = fmt_list(args)
    rest = [a for a in rest if a not in ("-a", "--all")]
    import yaml

    with open(os.path.join(unit_info(unit)["charm_dir"], "config.yaml")) as f:
        options = (yaml.safe_load(f) or {}).get("options") or {}
    config = {k: o["default"] for k, o in options.items() if "default" in o}
    config.update(model_state(model_dir(unit)).get("config", {}))
    value = config if not rest else config.get(rest[0])
    if fmt == "json":
        print(json.dumps(value))
    elif value is not None:
        sys.stdout.write(yaml.safe_dump(value, default_flow_style=False))


def tool_is_leader(unit, args):
    fmt, _ = fmt_list(args)
    me = unit_info(unit)["unit"]
    leader = model_state(model_dir(unit)).get("leader") == me
    print(json.dumps(leader) if fmt == "json" else ("True" if leader else "False"))


def tool_leader_get(unit, args):
    fmt, rest = fmt_list(args)
    settings = leader_settings(model_dir(unit))
    value = settings if not rest or rest[0] == "-" else settings.get(rest[0])
    if fmt == "json":
        print(json.dumps(value))
    elif isinstance(value, dict):
        import yaml

        if value:
            sys.stdout.write(yaml.safe_dump(value, default_flow_style=False))
    elif value is not None:
        print(value)


def tool_leader_set(unit, args):
    model = model_dir(unit)
    if model_state(model).get("leader") != unit_info(unit)["unit"]:
        raise ToolError("ERROR cannot write leadership settings: cannot write settings: not the leader", 1)
    pairs = settings_pairs(args, "settings")
    settings = leader_settings(model)
    merge_settings(settings, pairs)
    write_json(mpath(model, "leader.json"), settings)


def tool_network_get(unit, args):
    fmt, rest = fmt_list(args)
    flags = [a for a in rest if a.startswith("-")]
    names = [a for a in rest if not a.startswith("-")]
    if len(names) != 1:
        raise ToolError("ERROR no arguments specified" if not names else f'ERROR unrecognized args: ["{names[1]}"]', 2)
    import yaml

    with open(os.path.join(unit_info(unit)["charm_dir"], "metadata.yaml")) as f:
        meta = yaml.safe_load(f) or {}
    bindings = set(meta.get("extra-bindings") or {})
    for kind in ("peers", "provides", "requires"):
        bindings |= set(meta.get(kind) or {})
    if names[0] not in bindings and not names[0].startswith(PEER + ":"):
        raise ToolError(f'ERROR no network config found for binding "{names[0]}"', 1)
    addr = unit_info(unit).get("address", "127.0.0.1")
    if "--ingress-address" in flags:
        print(addr)
    elif "--bind-address" in flags:
        print(addr)
    elif "--egress-subnets" in flags:
        print(f"{addr}/32")
    else:
        value = {
            "bind-addresses": [
                {"mac-address": "", "interface-name": "lo", "addresses": [{"hostname": "", "value": addr, "cidr": f"{addr}/32"}]}
            ],
            "egress-subnets": [f"{addr}/32"],
            "ingress-addresses": [addr],
        }
        print(json.dumps(value) if fmt == "json" else yaml.safe_dump(value), end="" if fmt != "json" else "\n")


def storage(unit):
    """<unit>/juju/storage.json: {"data/0": {"kind": "block", "location": DEV}}."""
    return read_json(jpath(unit, "storage.json"), {})


def tool_storage_get(unit, args):
    fmt, rest = fmt_list(args)
    sid = os.environ.get("JUJU_STORAGE_ID", "")
    if "-s" in rest:
        i = rest.index("-s")
        sid = rest[i + 1] if i + 1 < len(rest) else ""
        rest = rest[:i] + rest[i + 2:]
    if not sid:
        raise ToolError("ERROR no storage instance specified", 2)
    inst = storage(unit).get(sid)
    if inst is None:
        raise ToolError(f'ERROR storage instance "{sid}" not found', 1)
    value = inst if not rest else inst.get(rest[0])
    if value is None:
        raise ToolError(f'ERROR invalid storage attribute "{rest[0]}"', 1)
    if fmt == "json":
        print(json.dumps(value))
    elif isinstance(value, dict):
        import yaml

        sys.stdout.write(yaml.safe_dump(value, default_flow_style=False))
    else:
        print(value)


def tool_application_version_set(unit, args):
    if len(args) != 1:
        raise ToolError("ERROR no version specified" if not args else f'ERROR unrecognized args: ["{args[1]}"]', 2)
    write_json(jpath(unit, "workload-version.json"), {"version": args[0]})


def port_arg(args):
    if len(args) != 1:
        raise ToolError("ERROR invalid arguments, expected <port>[/<protocol>] or <from>-<to>[/<protocol>] or icmp", 2)
    m = re.match(r"^(\d+)(?:/(tcp|udp))?$", args[0])
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise ToolError(f'ERROR invalid port "{args[0]}"', 2)
    return f"{m.group(1)}/{m.group(2) or 'tcp'}"


def tool_open_port(unit, args):
    port = port_arg(args)
    ports = read_json(jpath(unit, "ports.json"), [])
    if port not in ports:
        ports.append(port)
    write_json(jpath(unit, "ports.json"), sorted(ports))


def tool_close_port(unit, args):
    port = port_arg(args)
    ports = [p for p in read_json(jpath(unit, "ports.json"), []) if p != port]
    write_json(jpath(unit, "ports.json"), ports)


def tool_opened_ports(unit, args):
    for p in read_json(jpath(unit, "ports.json"), []):
        print(p)


def fmt_list(args):
    fmt = "smart"
    rest = []
    it = iter(args)
    for a in it:
        if a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a == "--format":
            fmt = next(it, "")
        else:
            rest.append(a)
    return fmt, rest


def print_list(items, fmt):
    if fmt == "json":
        print(json.dumps(items))
    else:
        for i in items:
            print(i)


def tool_relation_ids(unit, args):
    fmt, rest = fmt_list(args)
    if len(rest) != 1:
        raise ToolError("ERROR no endpoint name specified", 2)
    import yaml

    with open(os.path.join(unit_info(unit)["charm_dir"], "metadata.yaml")) as f:
        meta = yaml.safe_load(f) or {}
    endpoints = {}
    for kind in ("peers", "provides", "requires"):
        endpoints.update(meta.get(kind) or {})
    if rest[0] not in endpoints:
        raise ToolError(f'ERROR invalid value "{rest[0]}" for option -r: unknown endpoint', 2)
    print_list(sorted(relations(unit).get(rest[0], {})), fmt)


def tool_relation_list(unit, args):
    fmt, rest = fmt_list(args)
    rid = os.environ.get("JUJU_RELATION_ID", "")
    if "-r" in rest:
        i = rest.index("-r")
        rid = rest[i + 1] if i + 1 < len(rest) else ""
    for rels in relations(unit).values():
        if rid in rels:
            print_list(sorted(rels[rid]), fmt)
            return
    raise ToolError(f'ERROR invalid value "{rid}" for option -r: relation not found', 2)


# --------------------------------------------------------------- systemctl


def svc(unit, *parts):
    return os.path.join(unit, "svc", *parts)


def etcd_pid(unit):
    try:
        with open(svc(unit, "etcd.pid")) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return pid if state not in ("Z", "X") else None
    except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
        return None


def take_fault(unit, name):
    """Fault injection: svc/<name> holds how many more starts it affects."""
    path = svc(unit, name)
    try:
        with open(path) as f:
            left = int(f.read().strip() or "0")
    except FileNotFoundError:
        return False
    if left <= 0:
        return False
    with open(path, "w") as f:
        f.write(str(left - 1))
    return True


def unit_file(unit):
    return os.path.join(unit_info(unit)["root"], "etc/systemd/system", SERVICE + ".service")


def exec_start(unit):
    """ExecStart of the service's unit file (written by the charm or by
    the fake snap), or None when there is none yet."""
    import shlex

    try:
        with open(unit_file(unit)) as f:
            for line in f:
                if line.strip().startswith("ExecStart="):
                    return shlex.split(line.strip()[len("ExecStart="):])
    except FileNotFoundError:
        return None
    raise ToolError(f"Failed to start {SERVICE}.service: Unit {SERVICE}.service has a bad unit file setting.", 1)


def tool_snap(unit, args):
    """The part of snapd the charm uses: install, refresh, remove, list."""
    if not args:
        raise ToolError("error: Please provide a command", 1)
    verb, rest = args[0], args[1:]
    info = unit_info(unit)
    state_path = svc(unit, "snap.json")
    state = read_json(state_path, None)
    if verb in ("set", "get"):
        return snap_config(unit, verb, rest)
    if verb == "connect":
        if rest != ["etcd:removable-media"]:
            raise ToolError(f'error: snap "etcd" has no plug named {rest!r}', 1)
        if not state:
            raise ToolError('error: snap "etcd" is not installed', 1)
        state.setdefault("connections", []).append(rest[0])
        write_json(state_path, state)
        return
    channel = None
    hold = False
    dangerous = False
    names = []
    for a in rest:
        if a.startswith("--channel="):
            channel = a.split("=", 1)[1]
        elif a == "--hold" and verb == "refresh":
            hold = True
        elif a == "--dangerous" and verb == "install":
            dangerous = True
        elif a in ("--classic", "--devmode"):
            pass
        elif a.startswith("-"):
            raise ToolError(f"error: unknown flag `{a.lstrip('-')}'", 1)
        else:
            names.append(a)
    if dangerous:
        return snap_install_file(unit, names, state, state_path)
    if verb in ("install", "refresh", "remove") and names != ["etcd"]:
        raise ToolError(f'error: snap "{" ".join(names)}" not found', 1)
    if hold:
        # snapd 2.58+: hold the named snaps' refreshes, forever by default.
        if channel:
            raise ToolError("error: cannot use --hold with other flags", 1)
        if not state:
            raise ToolError('error: snap "etcd" is not installed', 1)
        state["held"] = True
        write_json(state_path, state)
        print('General refreshes of "etcd" held indefinitely')
        return
    channel_given = channel
    channel = channel or "latest/stable"
    if not re.match(r"^([0-9a-z.]+/)?(stable|candidate|beta|edge)(/[a-z0-9-]+)?$", channel):
        raise ToolError(f'error: invalid channel: "{channel}"', 1)
    current = os.path.join(info["root"], "snap/etcd/current/bin")
    if verb == "install":
        if state:
            print('snap "etcd" is already installed, see \'snap help refresh\'')
            return
        os.makedirs(current, exist_ok=True)
        os.makedirs(os.path.join(info["root"], "snap/bin"), exist_ok=True)
        for tool in ("etcd", "etcdctl", "etcdutl"):
            src = os.path.join(info["etcd_bin"], tool)
            if os.path.exists(src):
                os.symlink(src, os.path.join(current, tool))
                if tool != "etcd":
                    os.symlink(src, os.path.join(info["root"], "snap/bin", f"etcd.{tool}"))
        os.makedirs(os.path.dirname(unit_file(unit)), exist_ok=True)
        with open(unit_file(unit), "w") as f:
            f.write(
                "[Unit]\nDescription=Service for snap application etcd.etcd\n"
                f"[Service]\nExecStart={os.path.join(current, 'etcd')} --config-file {info['conf']}\n"
            )
        write_json(state_path, {"channel": channel})
        print(f"etcd ({channel}) installed")
    elif verb == "refresh":
        if not state:
            raise ToolError('error: snap "etcd" is not installed', 1)
        if state.get("local"):
            raise ToolError('error: local snap "etcd" is unknown to the store, use --amend to proceed anyway', 1)
        state["channel"] = channel_given or state.get("channel", "latest/stable")
        write_json(state_path, state)
        print(f"etcd ({state['channel']}) refreshed")
    elif verb == "remove":
        if state:
            os.remove(state_path)
        print("etcd removed")
    elif verb == "list":
        if not state:
            raise ToolError("error: no matching snaps installed", 1)
        rev = f"x{state['local']}" if state.get("local") else "1"
        print(f"Name  Version  Rev  Tracking  Publisher  Notes\netcd  fake  {rev}  {state.get('channel') or '-'}  canonical  -")
    else:
        raise ToolError(f'error: unknown command "{verb}", see \'snap help\'.', 1)


def snap_install_file(unit, names, state, state_path):
    """`snap install --dangerous FILE`: a squashfs file (snapd reads its
    name from meta/snap.yaml; here, from the file name Juju gives the
    resource: etcd.snap, core.snap). Installing etcd over a running etcd
    restarts its service, as snapd does."""
    if len(names) != 1:
        raise ToolError("error: the required argument `<snap> (at least 1 argument)` was not provided", 1)
    path = names[0]
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ToolError(f'error: cannot open "{path}": {e.strerror}', 1)
    if magic != b"hsqs":
        raise ToolError(f'error: cannot read snap file "{path}": not a squashfs', 1)
    name = os.path.basename(path).split(".")[0]
    if name == "core":
        write_json(svc(unit, "core-snap.json"), {"installed": True})
        print("core (x1) installed")
        return
    if name != "etcd":
        raise ToolError(f'error: unexpected snap "{name}"', 1)
    if not state:
        tool_snap(unit, ["install", "etcd"])
        state = read_json(state_path, {})
        # Installed from a file only: snapd tracks no channel.
        state["channel"] = None
    # Over a store revision, snapd keeps tracking its channel; the
    # revision is a local one (x1, x2, ...).
    state["local"] = int(state.get("local") or 0) + 1
    write_json(state_path, state)
    if etcd_pid(unit):
        stop_etcd(unit)
        start_etcd(unit)
    print(f"etcd (x{state['local']}) installed")


SNAPD_DAY = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[1-5]?(-(mon|tue|wed|thu|fri|sat|sun)[1-5]?)?$")
SNAPD_TIME = re.compile(r"^\d{1,2}:\d{2}([-~]\d{1,2}:\d{2})?(/\d+)?$")


def snapd_timer_ok(value):
    """snapd's timer grammar, loosely: comma-separated weekday spans
    (mon, mon1, mon-fri) and times (10:00, 9:00-11:00, 00:00~24:00/4),
    a weekday and times separated by spaces or commas; empty items allowed."""
    for item in value.replace(",,", ",").split(","):
        for word in item.split():
            if not (SNAPD_DAY.match(word) or SNAPD_TIME.match(word)):
                return False
    return True


def snap_config(unit, verb, rest):
    """`snap set|get core|system refresh.timer`, the only setting the charm
    touches; snapd checks a timer's syntax when it is set."""
    if not rest or rest[0] not in ("core", "system"):
        raise ToolError(f'error: snap "{rest[0] if rest else ""}" has no configuration', 1)
    path = svc(unit, "snapd-config.json")
    conf = read_json(path, {})
    if verb == "get":
        keys = rest[1:]
        if keys != ["refresh.timer"]:
            raise ToolError(f"error: unexpected get {keys}", 1)
        if "refresh.timer" not in conf:
            raise ToolError('error: snap "core" has no "refresh.timer" configuration option', 1)
        print(conf["refresh.timer"])
        return
    for pair in rest[1:]:
        key, sep, value = pair.partition("=")
        if not sep or key != "refresh.timer":
            raise ToolError(f"error: unexpected set {pair!r}", 1)
        if value and not snapd_timer_ok(value):
            raise ToolError(f'error: cannot perform the following tasks:\n- Run configure hook of "core" snap (cannot parse "{value}")', 1)
        conf[key] = value
        conf.setdefault("history", []).append(value)
    write_json(path, conf)


def start_etcd(unit):
    import subprocess

    if etcd_pid(unit):
        return
    if take_fault(unit, "refuse-start"):
        raise ToolError(
            f"Job for {SERVICE}.service failed because the control process exited with error code."
        )
    info = unit_info(unit)
    log = open(svc(unit, "etcd.log"), "ab")
    # The unit file when there is one (what systemd would run); tests that
    # lay out a unit by hand run the etcd build under test directly.
    cmd = exec_start(unit) or [os.path.join(info["etcd_bin"], "etcd"), "--config-file", info["conf"]]
    if take_fault(unit, "start-unhealthy"):
        # A process that runs but never serves, as a wedged etcd would.
        cmd = ["sleep", "3600"]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
        cwd=svc(unit),
    )
    with open(svc(unit, "etcd.pid"), "w") as f:
        f.write(str(proc.pid))
    append_jsonl(svc(unit, "events.jsonl"), {"event": "start", "pid": proc.pid, "time": time.time()})


def leads_raft(unit):
    """Whether this unit's etcd leads its raft right now (its
    etcd_server_is_leader metric), asked as any client would; None when
    it does not answer."""
    import ssl
    import urllib.request

    import yaml

    try:
        with open(unit_info(unit)["conf"]) as f:
            conf = yaml.safe_load(f) or {}
        url = str(conf.get("advertise-client-urls") or "").split(",")[0].strip()
        ctx = None
        if url.startswith("https://"):
            sec = conf.get("client-transport-security") or {}
            ctx = ssl.create_default_context(cafile=sec.get("trusted-ca-file"))
            ctx.check_hostname = False
            common = os.path.dirname(unit_info(unit)["conf"])
            ctx.load_cert_chain(os.path.join(common, "client.crt"), os.path.join(common, "client.key"))
        with urllib.request.urlopen(url + "/metrics", timeout=2, context=ctx) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("etcd_server_is_leader "):
                    return line.split()[1] == "1"
    except Exception:
        return None
    return None


def stop_etcd(unit):
    import signal

    pid = etcd_pid(unit)
    if not pid:
        return
    leading = leads_raft(unit)
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while etcd_pid(unit) and time.time() < deadline:
        time.sleep(0.05)
    if etcd_pid(unit):
        os.kill(pid, signal.SIGKILL)
        while etcd_pid(unit) and time.time() < deadline + 5:
            time.sleep(0.05)
    # A stopped service has no main pid; a pid file left behind names a
    # process that died on its own, which systemd reports as failed.
    try:
        os.remove(svc(unit, "etcd.pid"))
    except FileNotFoundError:
        pass
    append_jsonl(svc(unit, "events.jsonl"), {"event": "stop", "pid": pid, "time": time.time(), "leader": leading})


def is_enabled(unit):
    """Enabled unless disabled: the snap (and the charm's unit file) enable
    the service when they install it."""
    return not os.path.exists(svc(unit, "disabled"))


def service_state(unit):
    if etcd_pid(unit) is not None:
        return "active"
    return "failed" if os.path.exists(svc(unit, "etcd.pid")) else "inactive"


def other_unit(unit, verb, name, now):
    """The charm's own other systemd units (the backup timer and its
    service): systemd refuses a unit whose file is not in
    /etc/systemd/system; enable/disable --now also start/stop it."""
    path = os.path.join(unit_info(unit)["root"], "etc/systemd/system", name)
    if not os.path.exists(path):
        raise ToolError(f"Failed to {verb} unit: Unit file {name} does not exist.", 1)
    states = read_json(svc(unit, "units.json"), {})
    st = states.setdefault(name, {"enabled": False, "active": False})
    if verb in ("enable", "disable"):
        st["enabled"] = verb == "enable"
        if now:
            st["active"] = verb == "enable"
    elif verb in ("start", "restart"):
        st["active"] = True
    elif verb == "stop":
        st["active"] = False
    elif verb == "is-enabled":
        if not st["enabled"]:
            raise ToolError("", 1)
    elif verb == "is-active":
        if not st["active"]:
            raise ToolError("", 3)
    else:
        raise ToolError(f"Unknown command verb {verb}.", 1)
    write_json(svc(unit, "units.json"), states)
    append_jsonl(svc(unit, "events.jsonl"), {"event": verb, "unit": name, "time": time.time()})


CALENDAR_WORDS = {"minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually", "quarterly", "semiannually"}
CALENDAR_DAY = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
CALENDAR_PARTS = [
    re.compile(rf"^{CALENDAR_DAY}([.,]+{CALENDAR_DAY})*$"),
    re.compile(r"^[0-9*/,.]+-[0-9*/,.]+-[0-9*/,.~]+$"),
    re.compile(r"^[0-9*/,.]+:[0-9*/,.]+(:[0-9*/,.]+)?$"),
]


def tool_systemd_analyze(unit, args):
    """systemd-analyze calendar SPEC: the forms systemd.time(7) documents
    (shorthands, [weekday] [date] [time]); anything else is refused with
    systemd's own words."""
    if args[1:2] == ["--"]:
        args = args[:1] + args[2:]
    if len(args) != 2 or args[0] != "calendar":
        raise ToolError("fake systemd-analyze: only 'calendar [--] SPEC' is played", 1)
    spec = args[1]
    parts = spec.split()
    ok = spec.strip().lower() in CALENDAR_WORDS
    if not ok and 1 <= len(parts) <= 3:
        kinds = []
        for part in parts:
            kind = next((i for i, rx in enumerate(CALENDAR_PARTS) if rx.match(part)), None)
            kinds.append(kind)
        ok = None not in kinds and kinds == sorted(set(kinds))
    if not ok:
        raise ToolError(f"Failed to parse calendar specification '{spec}': Invalid argument", 1)
    print(f"  Original form: {spec}")


def tool_systemctl(unit, args):
    quiet = "--quiet" in args or "-q" in args
    now = "--now" in args
    args = [a for a in args if not a.startswith("-")]
    if args == ["daemon-reload"]:
        append_jsonl(svc(unit, "events.jsonl"), {"event": "daemon-reload", "time": time.time()})
        return
    if len(args) < 2:
        raise ToolError("Too few arguments.", 1)
    verb, name = args[0], args[1]
    if verb == "daemon-reload":
        return
    if name.startswith("etcd-charm-"):
        return other_unit(unit, verb, name, now)
    if name.removesuffix(".service") != SERVICE:
        raise ToolError(f"Failed to {verb} {name}: Unit {name} not found.", 5)
    if verb == "start":
        start_etcd(unit)
    elif verb == "stop":
        stop_etcd(unit)
    elif verb == "restart":
        stop_etcd(unit)
        start_etcd(unit)
    elif verb == "is-active":
        state = service_state(unit)
        if not quiet:
            print(state)
        if state != "active":
            raise ToolError("", 3)
    elif verb == "is-enabled":
        enabled = is_enabled(unit)
        if not quiet:
            print("enabled" if enabled else "disabled")
        if not enabled:
            raise ToolError("", 1)
    elif verb in ("enable", "disable"):
        if verb == "disable":
            with open(svc(unit, "disabled"), "w"):
                pass
        elif os.path.exists(svc(unit, "disabled")):
            os.remove(svc(unit, "disabled"))
        append_jsonl(svc(unit, "events.jsonl"), {"event": verb, "time": time.time()})
    else:
        raise ToolError(f'Unknown command verb {verb}.', 1)


def tool_journalctl(unit, args):
    """journalctl -u snap.etcd.etcd -n N --no-pager -o cat: the service's
    last log lines (etcd's output, as the journal keeps it)."""
    lines, name, i = 10, None, 0
    while i < len(args):
        a = args[i]
        if a in ("-u", "--unit"):
            name, i = args[i + 1], i + 2
        elif a in ("-n", "--lines"):
            lines, i = int(args[i + 1]), i + 2
        elif a in ("-o", "--output"):
            if args[i + 1] != "cat":
                raise ToolError(f"fake journalctl: output {args[i + 1]} not played", 1)
            i += 2
        elif a == "--no-pager":
            i += 1
        else:
            raise ToolError(f"journalctl: unrecognized option '{a}'", 1)
    if name is None or name.removesuffix(".service") != SERVICE:
        print("-- No entries --")
        return
    try:
        with open(svc(unit, "etcd.log"), errors="replace") as f:
            text = f.read().splitlines()
    except FileNotFoundError:
        text = []
    for line in text[-lines:] if lines > 0 else []:
        print(line)


def cmd_reboot(argv):
    """The machine restarts: every process dies at once (no clean stop),
    then systemd starts the services enabled at boot."""
    import signal

    unit = os.path.abspath(argv[0])
    pid = etcd_pid(unit)
    if pid:
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while etcd_pid(unit) and time.time() < deadline:
            time.sleep(0.05)
    try:
        os.remove(svc(unit, "etcd.pid"))
    except FileNotFoundError:
        pass
    append_jsonl(svc(unit, "events.jsonl"), {"event": "reboot", "time": time.time()})
    started = False
    if is_enabled(unit):
        start_etcd(unit)
        started = True
    print(json.dumps({"started_at_boot": started}))
    return 0


TOOL_FUNCS = {
    "action-get": tool_action_get,
    "action-set": tool_action_set,
    "action-fail": tool_action_fail,
    "action-log": tool_action_log,
    "status-set": tool_status_set,
    "juju-log": tool_juju_log,
    "resource-get": tool_resource_get,
    "relation-ids": tool_relation_ids,
    "relation-list": tool_relation_list,
    "relation-get": tool_relation_get,
    "relation-set": tool_relation_set,
    "config-get": tool_config_get,
    "is-leader": tool_is_leader,
    "leader-get": tool_leader_get,
    "leader-set": tool_leader_set,
    "network-get": tool_network_get,
    "application-version-set": tool_application_version_set,
    "open-port": tool_open_port,
    "close-port": tool_close_port,
    "opened-ports": tool_opened_ports,
    "systemctl": tool_systemctl,
    "journalctl": tool_journalctl,
    "snap": tool_snap,
    "storage-get": tool_storage_get,
    "systemd-analyze": tool_systemd_analyze,
}


def run_tool(name, unit, args):
    append_jsonl(
        jpath(unit, "calls.jsonl"),
        {"tool": name, "args": args, "action": os.environ.get("JUJU_ACTION_NAME", ""), "time": time.time()},
    )
    try:
        TOOL_FUNCS[name](unit, args)
    except ToolError as e:
        if str(e):
            print(str(e), file=sys.stderr)
        return e.code
    return 0


# ------------------------------------------------------------ the "agent"


def init_unit(argv):
    unit = os.path.abspath(argv[0])
    opts = dict(zip(argv[1::2], argv[2::2]))
    for d in ("bin", "juju", "juju/resources", "svc"):
        os.makedirs(os.path.join(unit, d), exist_ok=True)
    info = {
        "unit": opts["--unit"],
        "charm_dir": os.path.abspath(opts["--charm-dir"]),
        "etcd_bin": os.path.abspath(opts["--etcd-bin"]),
        "conf": os.path.abspath(opts["--conf"]),
        "root": os.path.abspath(opts["--root"]),
        "model": os.path.abspath(opts["--model"]) if "--model" in opts else None,
        "address": opts.get("--address", "127.0.0.1"),
        "next_id": 1,
    }
    write_json(jpath(unit, "unit.json"), info)
    me = os.path.abspath(__file__)
    # etcd's own tools are on PATH on a real unit (the snap's); here they
    # are links into the etcd build under test, so a test can swap one.
    for tool in ("etcdctl", "etcdutl"):
        src = os.path.join(info["etcd_bin"], tool)
        dst = os.path.join(unit, "bin", tool)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(src, dst)
    # Hook tools run dozens of times per hook: start Python without the
    # site machinery (-S, a third of its start-up here), with the one
    # package the fake needs (PyYAML) on the path.
    import py_compile

    import yaml

    libs = os.path.dirname(os.path.dirname(os.path.abspath(yaml.__file__)))
    # Compiled once: Python compiles a script it runs every time, and that
    # was half of each tool call.
    compiled = os.path.join(unit, "bin", "fakejuju.pyc")
    py_compile.compile(me, cfile=compiled, doraise=True)
    for tool in TOOLS:
        path = os.path.join(unit, "bin", tool)
        with open(path, "w") as f:
            f.write(
                f"#!/bin/sh\nPYTHONPATH='{libs}' exec '{sys.executable}' -S '{compiled}' tool {tool} '{unit}' \"$@\"\n"
            )
        os.chmod(path, 0o755)
    return 0


def schema_check(spec, params):
    """Juju turns each action's params into a JSON schema with
    additionalProperties false; check the same things."""
    props = spec.get("params") or {}
    errors = []
    if spec.get("additionalProperties", False) is False:
        for k in params:
            if k not in props:
                errors.append(f'additional property "{k}" is not allowed')
    for k in spec.get("required") or []:
        if k not in params:
            errors.append(f"{k} is required")
    types = {
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "array": list,
        "object": dict,
    }
    for k, v in params.items():
        p = props.get(k)
        if not p:
            continue
        t = p.get("type")
        ok = isinstance(v, types.get(t, object))
        if t in ("integer", "number") and isinstance(v, bool):
            ok = False
        if not ok:
            errors.append(f"{k}: invalid type, expected {t}")
            continue
        if "minimum" in p and v < p["minimum"]:
            errors.append(f"{k}: must be greater than or equal to {p['minimum']}")
        if "maximum" in p and v > p["maximum"]:
            errors.append(f"{k}: must be less than or equal to {p['maximum']}")
        if "enum" in p and v not in p["enum"]:
            errors.append(f"{k}: must be one of {p['enum']}")
    for k, p in props.items():
        if k not in params and "default" in p:
            params[k] = p["default"]
    return errors


def juju_env(unit, info, extra):
    env = {
        "PATH": os.path.join(unit, "bin") + ":" + BASE_PATH,
        "CHARM_DIR": info["charm_dir"],
        "JUJU_CHARM_DIR": info["charm_dir"],
        "JUJU_CONTEXT_ID": f"{info['unit']}-ctx-{info['next_id']}",
        "JUJU_UNIT_NAME": info["unit"],
        "JUJU_MODEL_NAME": "test",
        "JUJU_MODEL_UUID": "2f9a3b1c-0000-4000-8000-000000000001",
        "JUJU_VERSION": "3.6.1",
        "JUJU_MACHINE_ID": info["unit"].split("/")[-1],
        "JUJU_AVAILABILITY_ZONE": "",
        "JUJU_HOOK_NAME": "",
        "ETCD_CHARM_ROOT": info["root"],
        "ETCD_CHARM_CONF": info["conf"],
        "LANG": "C.UTF-8",
    }
    # Test-only seams (for example the restore's abort-at-step) reach the
    # charm; nothing else from the caller's environment does.
    env.update({k: v for k, v in os.environ.items() if k.startswith("ETCD_CHARM_TEST_")})
    env.update(extra)
    return env


def run_dispatch(unit, info, env, timeout, legacy=None):
    """Runs the charm as the unit agent does: `dispatch` when it exists,
    or with `legacy` ("hooks/x", "actions/x") that file, as Juju < 2.8
    did, without JUJU_DISPATCH_PATH."""
    import subprocess

    started = time.time()
    entry = os.path.join(info["charm_dir"], "dispatch")
    if legacy:
        entry = os.path.join(info["charm_dir"], legacy)
        env = {k: v for k, v in env.items() if k != "JUJU_DISPATCH_PATH"}
    proc = subprocess.Popen(
        [entry],
        cwd=info["charm_dir"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with open(jpath(unit, "dispatch.pid"), "w") as f:
        f.write(str(proc.pid))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err, time.time() - started


def parse_value(text):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def nest(flat):
    out = {}
    for key, value in sorted(flat.items()):
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def run_action(argv):
    unit = os.path.abspath(argv[0])
    name = argv[1]
    as_json, timeout, params, legacy = False, 600.0, {}, None
    it = iter(argv[2:])
    for a in it:
        if a == "--json":
            as_json = True
        elif a == "--legacy":
            legacy = f"actions/{name}"
        elif a == "--timeout":
            timeout = float(next(it))
        else:
            k, _, v = a.partition("=")
            node = params
            parts = k.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = parse_value(v)
    info = unit_info(unit)
    import yaml

    with open(os.path.join(info["charm_dir"], "actions.yaml")) as f:
        actions = yaml.safe_load(f) or {}
    outcome = {"action": name, "unit": info["unit"], "id": info["next_id"]}
    if name not in actions:
        outcome.update(status="error", message=f'action "{name}" not defined on unit "{info["unit"]}"')
        return report(outcome, as_json)
    errors = schema_check(actions[name] or {}, params)
    if errors:
        outcome.update(status="error", message="validation failed: " + "; ".join(errors))
        return report(outcome, as_json)

    adir = action_dir(unit)
    for f in ("params.json", "results.json", "failed.json", "logs.jsonl"):
        if os.path.exists(os.path.join(adir, f)):
            os.remove(os.path.join(adir, f))
    os.makedirs(adir, exist_ok=True)
    write_json(os.path.join(adir, "params.json"), params)
    aid = info["next_id"]
    info["next_id"] += 1
    write_json(jpath(unit, "unit.json"), info)
    env = juju_env(
        unit,
        info,
        {
            "JUJU_DISPATCH_PATH": f"actions/{name}",
            "JUJU_ACTION_NAME": name,
            "JUJU_ACTION_UUID": str(aid),
            "JUJU_ACTION_TAG": f"action-{aid}",
        },
    )
    code, out, err, secs = run_dispatch(unit, info, env, timeout, legacy)
    results = read_json(os.path.join(adir, "results.json"), {})
    failed = read_json(os.path.join(adir, "failed.json"), None)
    logs = []
    if os.path.exists(os.path.join(adir, "logs.jsonl")):
        with open(os.path.join(adir, "logs.jsonl")) as f:
            logs = [json.loads(line) for line in f if line.strip()]
    # As the unit agent's finalizeAction: a non-zero exit replaces any
    # action-fail message with "exit status N".
    if code != 0:
        status, message = "failed", f"exit status {code}"
    elif failed is not None:
        status, message = "failed", failed["message"]
    else:
        status, message = "completed", ""
    outcome.update(
        status=status,
        message=message,
        results=results,
        logs=[entry["message"] for entry in logs],
        log_times=[entry["time"] for entry in logs],
        exit_code=code,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        seconds=round(secs, 3),
    )
    write_json(os.path.join(adir, "outcome.json"), outcome)
    append_jsonl(jpath(unit, "outcomes.jsonl"), outcome)
    return report(outcome, as_json)


def report(outcome, as_json):
    if as_json:
        print(json.dumps(outcome, sort_keys=True))
        return 0
    # The shape `juju run` (Juju 3) prints.
    import yaml

    times = outcome.get("log_times", [])
    for line, at in zip(outcome.get("logs", []), times):
        print(time.strftime("%H:%M:%S", time.gmtime(at)) + " " + line)
    if outcome["status"] == "error":
        print(f"ERROR {outcome['message']}")
        return 1
    if outcome["status"] == "failed":
        print(f"Action id {outcome['id']} failed: {outcome['message']}")
    body = nest(outcome.get("results", {}))
    if outcome.get("stdout"):
        body["stdout"] = outcome["stdout"]
    if outcome.get("stderr"):
        body["stderr"] = outcome["stderr"]
    if body:
        sys.stdout.write(yaml.safe_dump(body, default_flow_style=False, width=1000))
    return 0 if outcome["status"] == "completed" else 1


def fire(unit, name, extra=None):
    """Runs one hook on a unit as the agent does, then queues what Juju
    would fire because of it: relation-changed on the units that see this
    one when its relation data changed, leader-settings-changed on the
    other units when the leader changed its settings."""
    info = unit_info(unit)
    model = model_dir(unit)
    env = juju_env(unit, info, {"JUJU_DISPATCH_PATH": f"hooks/{name}", "JUJU_HOOK_NAME": name})
    env.update(extra or {})
    info["next_id"] += 1
    write_json(jpath(unit, "unit.json"), info)
    data_before = reldata(model)
    leader_before = leader_settings(model)
    legacy = f"hooks/{name}" if (extra or {}).get("__legacy") else None
    env.pop("__legacy", None)
    code, out, err, secs = run_dispatch(unit, info, env, 600, legacy)
    outcome = {
        "hook": name,
        "unit": info["unit"],
        "remote": env.get("JUJU_REMOTE_UNIT", ""),
        "exit_code": code,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
        "status": read_json(jpath(unit, "status.json"), {}),
        "seconds": round(secs, 3),
    }
    append_jsonl(jpath(unit, "outcomes.jsonl"), outcome)
    state = model_state(model)
    me = info["unit"]
    data_after = reldata(model)
    for rid, units in data_after.items():
        if units.get(me) != data_before.get(rid, {}).get(me):
            for other, udir in state.get("units", {}).items():
                if other != me and me in relations(udir).get(PEER, {}).get(rid, []):
                    enqueue(model, other, f"{PEER}-relation-changed", rid, me)
    if leader_settings(model) != leader_before:
        for other in state.get("units", {}):
            if other != state.get("leader"):
                enqueue(model, other, "leader-settings-changed")
    return outcome


def enqueue(model, unit, hook, rid="", remote=""):
    queue = read_json(mpath(model, "queue.json"), [])
    event = {"unit": unit, "hook": hook, "rid": rid, "remote": remote}
    if event not in queue:
        queue.append(event)
    write_json(mpath(model, "queue.json"), queue)


def relation_env(rid, remote, departing=""):
    env = {}
    if rid:
        env.update(JUJU_RELATION=rid.split(":")[0], JUJU_RELATION_ID=rid)
    if remote:
        env.update(JUJU_REMOTE_UNIT=remote, JUJU_REMOTE_APP=remote.split("/")[0])
    if departing:
        env["JUJU_DEPARTING_UNIT"] = departing
    return env


def mark_error(model, unit):
    state = model_state(model)
    state.setdefault("errors", [])
    if unit not in state["errors"]:
        state["errors"].append(unit)
    save_model(model, state)


def settle(model, limit=200):
    """Runs queued hooks in order until none are left (bounded)."""
    ran = []
    deadline = time.time() + 900
    while len(ran) < limit and time.time() < deadline:
        queue = read_json(mpath(model, "queue.json"), [])
        if not queue:
            return ran
        event, queue = queue[0], queue[1:]
        write_json(mpath(model, "queue.json"), queue)
        state = model_state(model)
        udir = state["units"].get(event["unit"])
        if not udir or event["unit"] in state.get("errors", []):
            continue
        ran.append(fire(udir, event["hook"], relation_env(event["rid"], event["remote"])))
        if ran[-1]["exit_code"] != 0:
            mark_error(model, event["unit"])
    raise SystemExit(f"the model did not settle after {len(ran)} hooks")


def see(udir, rid, remote, present):
    rels = relations(udir)
    seen = rels.setdefault(rid.split(":")[0], {}).setdefault(rid, [])
    if present and remote not in seen:
        seen.append(remote)
    if not present and remote in seen:
        seen.remove(remote)
    write_json(jpath(udir, "relations.json"), rels)


def model_report(ran):
    print(json.dumps(ran, sort_keys=True))
    return 0


def cmd_add_unit(argv):
    model, udir = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    os.makedirs(model, exist_ok=True)
    state = model_state(model)
    me = unit_info(udir)["unit"]
    rid = f"{PEER}:0"
    state["units"][me] = udir
    save_model(model, state)
    # The peer relation exists from the start, with no one in it yet.
    see(udir, rid, me, False)
    ran = []
    refreshed = "--refreshed" in argv
    # A unit that ran another charm until `juju refresh` switched it to
    # this one: no install, start or leader-elected, only upgrade-charm
    # and config-changed (Juju's uniter after a charm upgrade).
    first = ["upgrade-charm"] if refreshed else ["install"]
    if "--lead" in argv:
        # Leadership moves to the new unit as it arrives (the old leader's
        # machine went away, say): it starts as leader without a member.
        state["leader"] = None
    if not state.get("leader"):
        state["leader"] = me
        save_model(model, state)
        if not refreshed:
            first.append("leader-elected")
    elif not refreshed:
        first.append("leader-settings-changed")
    hooks = first[:1]
    if not refreshed:
        # Juju's uniter: relation-created for every relation the
        # application is already in, right after install (the unit sees
        # the relation from then on, not its remote units yet).
        for orid, rel in sorted(state.get("relations", {}).items()):
            hooks.append((f"{rel['endpoint']}-relation-created", orid))
    hooks += first[1:]
    for hook in hooks + (["config-changed"] if refreshed else ["config-changed", "start"]):
        extra = None
        if isinstance(hook, tuple):
            hook, hrid = hook
            rels = relations(udir)
            rels.setdefault(hrid.split(":")[0], {}).setdefault(hrid, [])
            write_json(jpath(udir, "relations.json"), rels)
            extra = relation_env(hrid, "")
        ran.append(fire(udir, hook, extra))
        if ran[-1]["exit_code"] != 0:
            # A failed hook puts the unit in error: Juju runs nothing more
            # on it until the operator resolves it.
            mark_error(model, me)
            return model_report(ran)
    for other, odir in sorted(state["units"].items()):
        if other == me:
            continue
        see(odir, rid, me, True)
        enqueue(model, other, f"{PEER}-relation-joined", rid, me)
        enqueue(model, other, f"{PEER}-relation-changed", rid, me)
        see(udir, rid, other, True)
        enqueue(model, me, f"{PEER}-relation-joined", rid, other)
        enqueue(model, me, f"{PEER}-relation-changed", rid, other)
    # Relations to other applications reach the new unit too.
    for orid, rel in sorted(state.get("relations", {}).items()):
        see(udir, orid, rel["remote"], True)
        enqueue(model, me, f"{rel['endpoint']}-relation-joined", orid, rel["remote"])
        enqueue(model, me, f"{rel['endpoint']}-relation-changed", orid, rel["remote"])
    ran += settle(model)
    return model_report(ran)


def cmd_attach_storage(argv):
    """juju attach-storage: the storage must be declared, its count within
    the declared range; then storage-attached runs with JUJU_STORAGE_ID."""
    udir, sid, location = os.path.abspath(argv[0]), argv[1], argv[2]
    name = sid.split("/")[0]
    meta, _ = charm_meta(unit_info(udir)["charm_dir"])
    decl = (meta.get("storage") or {}).get(name)
    if decl is None:
        print(f'ERROR charm storage "{name}" not found', file=sys.stderr)
        return 1
    have = [k for k in storage(udir) if k.split("/")[0] == name]
    rng = str((decl.get("multiple") or {}).get("range", "1"))
    most = int(rng.split("-")[-1]) if rng.split("-")[-1] else None
    if most is not None and len(have) + 1 > most:
        print(f'ERROR cannot attach: storage "{name}" already has {len(have)} of at most {most}', file=sys.stderr)
        return 1
    st = storage(udir)
    st[sid] = {"kind": decl.get("type", "filesystem"), "location": location}
    write_json(jpath(udir, "storage.json"), st)
    ran = [fire(udir, f"{name}-storage-attached", {"JUJU_STORAGE_ID": sid})]
    if ran[-1]["exit_code"] != 0:
        mark_error(model_dir(udir), unit_info(udir)["unit"])
        return model_report(ran)
    return model_report(ran + settle(model_dir(udir)))


def cmd_detach_storage(argv):
    """juju detach-storage: storage-detaching (the storage still there),
    then it is gone."""
    udir, sid = os.path.abspath(argv[0]), argv[1]
    name = sid.split("/")[0]
    if sid not in storage(udir):
        print(f'ERROR storage "{sid}" not found', file=sys.stderr)
        return 1
    ran = [fire(udir, f"{name}-storage-detaching", {"JUJU_STORAGE_ID": sid})]
    if ran[-1]["exit_code"] != 0:
        mark_error(model_dir(udir), unit_info(udir)["unit"])
        return model_report(ran)
    st = storage(udir)
    st.pop(sid, None)
    write_json(jpath(udir, "storage.json"), st)
    return model_report(ran + settle(model_dir(udir)))


def cmd_existing_unit(argv):
    """A unit that has been in the model all along (another charm ran it):
    it sees its peers and they see it, and the application's relations; no
    hook runs."""
    model, udir = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    os.makedirs(model, exist_ok=True)
    state = model_state(model)
    me = unit_info(udir)["unit"]
    rid = f"{PEER}:0"
    see(udir, rid, me, False)
    for other, odir in sorted(state["units"].items()):
        see(odir, rid, me, True)
        see(udir, rid, other, True)
    for orid, rel in sorted(state.get("relations", {}).items()):
        see(udir, orid, rel["remote"], True)
    state["units"][me] = udir
    if not state.get("leader"):
        state["leader"] = me
    save_model(model, state)
    return model_report([])


def cmd_seed(argv):
    """What the charm before this one left in the model: leader settings
    and relation data, set as they were, no hooks."""
    model = os.path.abspath(argv[0])
    with open(argv[1]) as f:
        seed = json.load(f)
    settings = leader_settings(model)
    merge_settings(settings, seed.get("leader", {}))
    write_json(mpath(model, "leader.json"), settings)
    data = reldata(model)
    for rid, bags in seed.get("reldata", {}).items():
        for who, pairs in bags.items():
            if not all(isinstance(v, str) for v in pairs.values()):
                print("ERROR relation settings must be strings", file=sys.stderr)
                return 1
            merge_settings(data.setdefault(rid, {}).setdefault(who, {}), pairs)
    write_json(mpath(model, "reldata.json"), data)
    return model_report([])


def charm_meta(charm_dir):
    import yaml

    with open(os.path.join(charm_dir, "metadata.yaml")) as f:
        meta = yaml.safe_load(f) or {}
    try:
        with open(os.path.join(charm_dir, "config.yaml")) as f:
            options = (yaml.safe_load(f) or {}).get("options") or {}
    except FileNotFoundError:
        options = {}
    return meta, options


def refresh_refusal(app, url, old, new, relations_in_use):
    """Juju's SetCharm checks (state/application.go): an established
    relation whose endpoint the new charm lacks (same name, role and
    interface), a required storage removed, a storage whose type or
    location changed."""
    why = None

    def endpoint(meta, name):
        for role in ("provides", "requires", "peers"):
            ep = (meta.get(role) or {}).get(name)
            if ep is not None:
                return role, ep.get("interface") if isinstance(ep, dict) else ep
        return None

    for name in sorted(relations_in_use):
        if endpoint(old, name) != endpoint(new, name):
            why = f'would break relation "{app}:{name}"'
            break
    if why is None:
        for name, s in sorted((old.get("storage") or {}).items()):
            n = (new.get("storage") or {}).get(name)
            rng = str((s.get("multiple") or {}).get("range", "1"))
            required = not rng.startswith("0")
            if n is None:
                if required:
                    why = f'required storage "{name}" removed'
                    break
                continue
            if n.get("type") != s.get("type"):
                why = f'existing storage "{name}" type changed from "{s.get("type")}" to "{n.get("type")}"'
                break
            if n.get("location") != s.get("location"):
                why = f'existing storage "{name}" location changed from "{s.get("location")}" to "{n.get("location")}"'
                break
    if why:
        return f'cannot upgrade application "{app}" to charm "{url}": {why}'
    return None


def cmd_refresh(argv):
    """juju refresh --switch: refused as Juju refuses it, else every unit
    gets the new charm (config values whose option is gone or whose type
    no longer fits are dropped, as Juju's FilterSettings drops them), then
    each unit, in the order given, runs upgrade-charm and config-changed;
    then what they queued."""
    model, charm = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    state = model_state(model)
    order = sorted(state["units"])
    if "--order" in argv:
        order = argv[argv.index("--order") + 1].split(",")
    any_unit = next(iter(state["units"].values()))
    old, _ = charm_meta(unit_info(any_unit)["charm_dir"])
    new, options = charm_meta(charm)
    in_use = {rel["endpoint"] for rel in state.get("relations", {}).values()}
    app = next(iter(state["units"])).split("/")[0]
    refusal = refresh_refusal(app, f"local:{os.path.basename(charm)}", old, new, in_use)
    if refusal:
        print(f"ERROR {refusal}", file=sys.stderr)
        return 1
    types = {"string": str, "int": int, "float": (int, float), "boolean": bool}
    kept = {}
    for k, v in state.get("config", {}).items():
        o = options.get(k)
        if not o:
            continue
        want = types.get(o.get("type"), str)
        if isinstance(v, want) and not (o.get("type") == "int" and isinstance(v, bool)):
            kept[k] = v
    state["config"] = kept
    save_model(model, state)
    for udir in state["units"].values():
        info = unit_info(udir)
        info["charm_dir"] = charm
        write_json(jpath(udir, "unit.json"), info)
    ran = []
    for unit in order:
        udir = state["units"][unit]
        for hook in ("upgrade-charm", "config-changed"):
            ran.append(fire(udir, hook))
            if ran[-1]["exit_code"] != 0:
                mark_error(model, unit)
                break
    ran += settle(model)
    return model_report(ran)


def cmd_relate(argv):
    """juju integrate etcd:ENDPOINT REMOTE: the remote side is played by the
    test (REMOTE is its one unit, e.g. client/0). --existing: a relation
    that was there before this charm (no hooks)."""
    model, endpoint, remote = os.path.abspath(argv[0]), argv[1], argv[2]
    state = model_state(model)
    rels = state.setdefault("relations", {})
    rid = f"{endpoint}:{len(rels) + 1}"
    rels[rid] = {"endpoint": endpoint, "remote": remote}
    save_model(model, state)
    for unit, udir in sorted(state["units"].items()):
        see(udir, rid, remote, True)
        if "--existing" in argv:
            continue
        enqueue(model, unit, f"{endpoint}-relation-joined", rid, remote)
        enqueue(model, unit, f"{endpoint}-relation-changed", rid, remote)
    ran = settle(model)
    print(json.dumps({"relation": rid, "ran": ran}, sort_keys=True))
    return 0


def cmd_unrelate(argv):
    """juju remove-relation: on every unit, departed (the remote unit),
    then broken (the relation is still listed during broken, as Juju lists
    it); then the relation and its data are gone; settle."""
    model, rid = os.path.abspath(argv[0]), argv[1]
    state = model_state(model)
    rel = state.get("relations", {}).pop(rid, None)
    if rel is None:
        print(f"ERROR relation {rid} not found", file=sys.stderr)
        return 1
    save_model(model, state)
    ran = []
    for unit, udir in sorted(state["units"].items()):
        see(udir, rid, rel["remote"], False)
        ran.append(fire(udir, f"{rel['endpoint']}-relation-departed", relation_env(rid, rel["remote"], rel["remote"])))
        ran.append(fire(udir, f"{rel['endpoint']}-relation-broken", relation_env(rid, "")))
        rels = relations(udir)
        rels.get(rel["endpoint"], {}).pop(rid, None)
        write_json(jpath(udir, "relations.json"), rels)
    data = reldata(model)
    data.pop(rid, None)
    write_json(mpath(model, "reldata.json"), data)
    queue = [e for e in read_json(mpath(model, "queue.json"), []) if e["rid"] != rid]
    write_json(mpath(model, "queue.json"), queue)
    ran += settle(model)
    return model_report(ran)


def cmd_remote_set(argv):
    """The remote application of a relation (played by the test) sets its
    data: a unit's databag (WHO = its unit) or, with --app, its
    application's (only its leader may, as in Juju). Values come from a
    JSON file of strings; an empty value deletes. Then relation-changed
    runs on every unit of this application in the relation; settle."""
    model, rid, who, src = os.path.abspath(argv[0]), argv[1], argv[2], argv[3]
    app = "--app" in argv
    with open(src) as f:
        pairs = json.load(f)
    if not all(isinstance(v, str) for v in pairs.values()):
        print("ERROR relation settings must be strings", file=sys.stderr)
        return 1
    state = model_state(model)
    rel = state.get("relations", {}).get(rid)
    if rel is None:
        print(f"ERROR relation {rid} not found", file=sys.stderr)
        return 1
    data = reldata(model)
    key = who.split("/")[0] if app else who
    merge_settings(data.setdefault(rid, {}).setdefault(key, {}), pairs)
    write_json(mpath(model, "reldata.json"), data)
    for unit in sorted(state["units"]):
        enqueue(model, unit, f"{rel['endpoint']}-relation-changed", rid, rel["remote"])
    return model_report(settle(model))


def cmd_elect(argv):
    """Leadership moves to UNIT (the old leader's lease lapsed): it runs
    leader-elected; every other unit runs leader-settings-changed, as Juju
    runs it when the new leader writes its settings; settle."""
    model, me = os.path.abspath(argv[0]), argv[1]
    state = model_state(model)
    if me not in state["units"]:
        print(f"ERROR unit {me} not found", file=sys.stderr)
        return 1
    state["leader"] = me
    save_model(model, state)
    ran = [fire(state["units"][me], "leader-elected")]
    for other, odir in sorted(state["units"].items()):
        if other != me:
            ran.append(fire(odir, "leader-settings-changed"))
    ran += settle(model)
    return model_report(ran)


def cmd_remove_unit(argv):
    model, me = os.path.abspath(argv[0]), argv[1]
    state = model_state(model)
    udir = state["units"][me]
    rid = f"{PEER}:0"
    ran = []
    for other, odir in sorted(state["units"].items()):
        if other == me:
            continue
        see(odir, rid, me, False)
        ran.append(fire(odir, f"{PEER}-relation-departed", relation_env(rid, me, me)))
        see(udir, rid, other, False)
        ran.append(fire(udir, f"{PEER}-relation-departed", relation_env(rid, other, me)))
    # No relation-broken for a peer relation on the leaving unit (Juju's
    # uniter: remoteBroken && !isPeer); then stop and remove.
    ran.append(fire(udir, "stop"))
    ran.append(fire(udir, "remove"))
    state = model_state(model)
    del state["units"][me]
    data = reldata(model)
    for units in data.values():
        units.pop(me, None)
    write_json(mpath(model, "reldata.json"), data)
    if state.get("leader") == me:
        state["leader"] = min(state["units"]) if state["units"] else None
        save_model(model, state)
        if state["leader"]:
            ran.append(fire(state["units"][state["leader"]], "leader-elected"))
    save_model(model, state)
    queue = [e for e in read_json(mpath(model, "queue.json"), []) if e["unit"] != me]
    write_json(mpath(model, "queue.json"), queue)
    ran += settle(model)
    return model_report(ran)


def cmd_config(argv):
    model = os.path.abspath(argv[0])
    state = model_state(model)
    any_unit = next(iter(state["units"].values()))
    import yaml

    with open(os.path.join(unit_info(any_unit)["charm_dir"], "config.yaml")) as f:
        options = (yaml.safe_load(f) or {}).get("options") or {}
    types = {"string": str, "int": int, "float": (int, float), "boolean": bool}
    for a in argv[1:]:
        k, _, v = a.partition("=")
        if k not in options:
            print(f'ERROR unknown option "{k}"', file=sys.stderr)
            return 1
        value = parse_value(v) if options[k]["type"] != "string" else v
        want = types[options[k]["type"]]
        if not isinstance(value, want) or (options[k]["type"] == "int" and isinstance(value, bool)):
            print(f'ERROR option "{k}" expected {options[k]["type"]}, got {v!r}', file=sys.stderr)
            return 1
        state["config"][k] = value
    save_model(model, state)
    for u in sorted(state["units"]):
        enqueue(model, u, "config-changed")
    return model_report(settle(model))


def cmd_run_all(argv):
    model, hook = os.path.abspath(argv[0]), argv[1]
    state = model_state(model)
    ran = [fire(udir, hook) for _, udir in sorted(state["units"].items())]
    ran += settle(model)
    return model_report(ran)


def cmd_settle(argv):
    return model_report(settle(os.path.abspath(argv[0])))


def run_hook(argv):
    """One hook; --relation RID --remote UNIT [--departing UNIT] give it
    the relation environment Juju sets for a relation hook."""
    unit = os.path.abspath(argv[0])
    name = argv[1]
    extra = {"__legacy": "1"} if "--legacy" in argv else {}
    opts = dict(zip(argv[2::1], argv[3::1]))
    if "--relation" in opts:
        extra.update(relation_env(opts["--relation"], opts.get("--remote", ""), opts.get("--departing", "")))
    if "--storage" in opts:
        extra["JUJU_STORAGE_ID"] = opts["--storage"]
    outcome = fire(unit, name, extra)
    if outcome["exit_code"] == 0:
        # `juju resolved` retried the hook and it succeeded: out of error.
        model = model_dir(unit)
        state = model_state(model)
        me = unit_info(unit)["unit"]
        if me in state.get("errors", []):
            state["errors"].remove(me)
            save_model(model, state)
    if "--json" in argv:
        print(json.dumps(outcome, sort_keys=True))
    else:
        print(f"{name}: exit {outcome['exit_code']}, status {outcome['status']}")
    return 0


def attach_resource(argv):
    unit = os.path.abspath(argv[0])
    name = argv[1]
    info = unit_info(unit)
    import shutil

    import yaml

    with open(os.path.join(info["charm_dir"], "metadata.yaml")) as f:
        declared = (yaml.safe_load(f) or {}).get("resources") or {}
    d = jpath(unit, "resources", name)
    shutil.rmtree(d, ignore_errors=True)
    if len(argv) > 2:
        os.makedirs(d)
        shutil.copyfile(argv[2], os.path.join(d, declared[name]["filename"]))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[0] == "tool":
        return run_tool(argv[1], argv[2], argv[3:])
    commands = {
        "init-unit": init_unit,
        "run-action": run_action,
        "run-hook": run_hook,
        "resource": attach_resource,
        "add-unit": cmd_add_unit,
        "remove-unit": cmd_remove_unit,
        "elect": cmd_elect,
        "config": cmd_config,
        "run-all": cmd_run_all,
        "settle": cmd_settle,
        "relate": cmd_relate,
        "remote-set": cmd_remote_set,
        "unrelate": cmd_unrelate,
        "reboot": cmd_reboot,
        "existing-unit": cmd_existing_unit,
        "seed": cmd_seed,
        "refresh": cmd_refresh,
        "attach-storage": cmd_attach_storage,
        "detach-storage": cmd_detach_storage,
    }
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
