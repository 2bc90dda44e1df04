"""The deploy files stay true to the code: every YAML parses, every `stxpipe ...` command they
(and deploy/README.md) show exists with the options it uses, the image's Ray is the Ray that
pyproject pins, and no file exposes the Ray dashboard / job API beyond the cluster.

Exposure rules (decided here, tested below):
- KubeRay: head services are ClusterIP (explicitly); no Service of type LoadBalancer/NodePort,
  no Ingress/Route; `dashboard-host` left to KubeRay's in-pod default (the pod network only; the
  submitter and the Service need it) and a NetworkPolicy limits who in the cluster reaches the
  pods. Users reach the dashboard with `kubectl port-forward`, which binds 127.0.0.1.
- Cluster launcher: the head's `ray start` passes `--dashboard-host=127.0.0.1` (never 0.0.0.0)
  and users reach it through the SSH tunnel of `ray dashboard`; no container port is published;
  every node type names a pre-made security group (the launcher's own admits SSH from
  0.0.0.0/0), and no `0.0.0.0/0` CIDR appears anywhere.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import tomllib
import typer
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
RAYJOB = DEPLOY / "kuberay" / "rayjob.yaml"
RAYCLUSTER = DEPLOY / "kuberay" / "raycluster.yaml"
NETPOL = DEPLOY / "kuberay" / "networkpolicy.yaml"
LAUNCHER = DEPLOY / "cluster-launcher" / "aws.yaml"
README = DEPLOY / "README.md"
YAMLS = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kuberay_clusters() -> list[tuple[str, dict]]:
    """(file name, RayCluster spec) for the RayCluster and the RayJob's rayClusterSpec."""
    out = []
    for path in (RAYJOB, RAYCLUSTER):
        for d in _docs(path):
            if d.get("kind") == "RayCluster":
                out.append((path.name, d["spec"]))
            elif d.get("kind") == "RayJob":
                out.append((path.name, d["spec"]["rayClusterSpec"]))
    return out


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


# ---------------------------------------------------------------------------------- parsing


def test_deploy_files_exist():
    for p in (DOCKERFILE, RAYJOB, RAYCLUSTER, NETPOL, LAUNCHER, README):
        assert p.is_file(), p


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path):
    docs = _docs(path)
    assert docs, f"{path} holds no document"
    for d in docs:
        assert isinstance(d, dict)
        if "apiVersion" in d:  # Kubernetes objects
            assert d.get("kind") and d.get("metadata", {}).get("name"), f"{path}: kind and metadata.name needed"


# -------------------------------------------------------------------- commands against the CLI

_CONT = re.compile(r"\\\n\s*(#\s*)?")  # a shell line continuation (also inside comments)
# `stxpipe` where a command starts: line start, after a shell separator, `-- ` (ray job submit),
# `do ` or `$(`; not inside prose or arguments (`kubectl get secret stxpipe`, paths).
_CMD = re.compile(r"(?m)(?:^|(?<=[;&|(`])|(?<=-- )|(?<=\bdo ))[ \t]*stxpipe((?:[ \t]+(?:\"[^\"]*\"|'[^']*'|[^\s;&|`)#\"']+))*)")


def _snippets(path: Path) -> list[str]:
    """The places a file shows commands (not prose): Dockerfile RUN instructions; a RayJob's
    entrypoint and YAML comment lines indented as examples (`#   ...`); README fenced code
    blocks and `inline code` spans. Shell continuations are joined first."""
    text = path.read_text()
    if path.name == "Dockerfile":
        joined = re.sub(r"\\\n", " ", text)
        return [line[4:] for line in joined.splitlines() if line.startswith("RUN ")]
    if path.suffix in (".yaml", ".yml"):
        out = [d["spec"]["entrypoint"] for d in _docs(path) if d.get("kind") == "RayJob"]
        joined = _CONT.sub(" ", text)
        out += [m.group(1) for m in re.finditer(r"^\s*#(?: {2,})(\S.*)$", joined, re.M)]
        return out
    if path.suffix == ".md":
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
        out = [_CONT.sub(" ", b) for b in blocks]
        prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
        out += re.findall(r"`([^`\n]+)`", prose)
        return out
    return []


def _commands() -> list[tuple[str, list[str]]]:
    """Every `stxpipe ...` invocation shown in the deploy files and deploy/README.md, as
    (where, argv after `stxpipe`). Shell variables stay as placeholders."""
    found = []
    for path in [DOCKERFILE, README, *YAMLS]:
        for snippet in _snippets(path):
            for m in _CMD.finditer(snippet.strip()):
                raw = m.group(1).strip()
                try:
                    argv = shlex.split(raw)
                except ValueError:
                    argv = raw.split()
                if not argv:
                    continue  # `stxpipe` alone
                found.append((f"{path.relative_to(ROOT)}: stxpipe {raw}", argv))
    return found


def _root_command():
    """The click command behind the `stxpipe` Typer app (Typer may carry its own click)."""
    from pipeline.cli import app

    return typer.main.get_command(app)


def _resolve(argv: list[str]):
    """(command path, click command, remaining args) for `stxpipe argv...`."""
    cmd = _root_command()
    path: list[str] = []
    rest = list(argv)
    while getattr(cmd, "commands", None) is not None and rest and not rest[0].startswith("-"):
        sub = cmd.commands.get(rest[0])
        if sub is None:
            raise LookupError(f"`stxpipe {' '.join(path + rest[:1])}` is not a command (there are: {sorted(cmd.commands)})")
        path.append(rest.pop(0))
        cmd = sub
    return path, cmd, rest


def _option_names(cmd) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        if getattr(p, "param_type_name", None) == "option":
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names


def test_commands_are_found():
    cmds = [argv[:1] for _, argv in _commands()]
    assert ["submit"] in cmds, "the RayJob's entrypoint must be found"
    assert ["models"] in cmds, "the Dockerfile's `stxpipe models pull` must be found"


@pytest.mark.parametrize("where,argv", _commands(), ids=lambda x: x if isinstance(x, str) else "")
def test_command_and_options_exist(where, argv):
    """The command exists, its `--help` runs, and every option used is one of its options."""
    try:
        path, cmd, rest = _resolve(argv)
    except LookupError as e:
        pytest.fail(f"{where}: {e}")
    assert path, f"{where}: no subcommand"
    from pipeline.cli import app

    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, f"{where}: `stxpipe {' '.join(path)} --help` failed: {res.output}"
    known = _option_names(cmd)
    used = {a.split("=", 1)[0] for a in rest if a.startswith("-") and a != "-"}
    unknown = sorted(used - known)
    assert not unknown, f"{where}: `stxpipe {' '.join(path)}` has no option(s) {unknown}; it has {sorted(known)}"


def test_rayjob_entrypoint_is_a_submit_on_object_storage():
    (job,) = [d for d in _docs(RAYJOB) if d["kind"] == "RayJob"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["stxpipe", "submit"]
    path, cmd, rest = _resolve(argv[1:])
    manifest = [a for a in rest if not a.startswith("-")][0]
    out = rest[rest.index("--out") + 1]
    assert manifest.startswith("s3://") and out.startswith("s3://")
    assert "--address" not in rest, "inside a RayJob RAY_ADDRESS is set: the run joins its own cluster"
    assert "--no-progress" in rest, "a progress bar in job logs is noise"


# -------------------------------------------------------------------------- the pinned Ray


def _pyproject_ray_spec() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if re.match(r"^ray(\[|\s|=|>|<|~|!|$)", d)]
    return ray


def _image_ray_version() -> tuple[str, str]:
    m = re.search(r"^FROM\s+rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(gpu|cu\d+)\s*$", DOCKERFILE.read_text(), re.M)
    assert m, "deploy/Dockerfile must build FROM an official Ray GPU image with an exact tag: rayproject/ray:X.Y.Z-pyNNN-gpu"
    return m.group(1), f"{m.group(2)}.{m.group(3)}"


def test_image_ray_equals_the_pyproject_pin():
    version, _ = _image_ray_version()
    spec = _pyproject_ray_spec()
    pin = re.search(r"==\s*(\d+\.\d+\.\d+)\b", spec)
    assert pin, f"pyproject.toml must pin Ray exactly (==), like the image; it says {spec!r}"
    assert pin.group(1) == version, f"Dockerfile Ray {version} != pyproject pin {pin.group(1)}"


def test_cluster_specs_name_the_same_ray_and_image():
    version, _ = _image_ray_version()
    images = set()
    for name, spec in _kuberay_clusters():
        assert str(spec["rayVersion"]) == version, f"{name}: rayVersion {spec['rayVersion']} != image Ray {version}"
        for tmpl in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
            images.update(c["image"] for c in _containers(tmpl))
    images.add(_docs(LAUNCHER)[0]["docker"]["image"])
    assert len(images) == 1, f"one image (built from deploy/Dockerfile) everywhere, got {images}"


def test_image_python_is_supported():
    from packaging.specifiers import SpecifierSet

    _, py = _image_ray_version()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert py in SpecifierSet(requires)


# ------------------------------------------------------------------------------ the image


def test_dockerfile_runs_as_non_root_with_weights_staged():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root user"
    for var in ("STXPIPE_HOME", "TORCH_HOME"):
        assert re.search(rf"^\s*(ENV\s+)?{var}=/", text, re.M), f"{var} must be set to an absolute path"
    m = re.search(r'^ARG\s+STXPIPE_PULL="([^"]*)"', text, re.M)
    assert m, "weights to stage at build time: ARG STXPIPE_PULL"
    from stylecore.weights import WEIGHT_SETS

    for name in m.group(1).split():
        assert name in WEIGHT_SETS and WEIGHT_SETS[name].pretrained, f"STXPIPE_PULL names '{name}'"
    assert "stxpipe models pull" in text
    assert (DEPLOY / "weights-cache" / "README.md").is_file(), "the air-gapped staging folder is documented"
    # the build context is the repository root: every COPY source exists there
    for line in re.findall(r"^COPY\s+(.*)$", text, re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        for src in args[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


# ------------------------------------------------------------------------- GPUs and scaling


def test_kuberay_head_has_no_gpu_and_workers_request_gpus():
    for name, spec in _kuberay_clusters():
        head = spec["headGroupSpec"]
        assert str(head["rayStartParams"].get("num-gpus")) == "0", f'{name}: head num-gpus must be "0"'
        for c in _containers(head["template"]):
            res = c.get("resources", {})
            assert "nvidia.com/gpu" not in {**res.get("limits", {}), **res.get("requests", {})}, f"{name}: GPU on the head"
        groups = spec["workerGroupSpecs"]
        assert groups
        for g in groups:
            gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for c in _containers(g["template"])]
            assert gpus and all(int(n or 0) >= 1 for n in gpus), f"{name}/{g['groupName']}: limits nvidia.com/gpu"
            assert str(g["rayStartParams"].get("num-gpus", gpus[0])) == str(gpus[0]), f"{name}/{g['groupName']}: Ray GPUs != pod GPUs"
            assert 0 <= g["minReplicas"] <= g.get("replicas", g["minReplicas"]) <= g["maxReplicas"], f"{name}/{g['groupName']}"
            assert g["maxReplicas"] >= 1
        assert spec.get("enableInTreeAutoscaling") is True, f"{name}: autoscaling"


def test_rayjob_cleans_up():
    (job,) = [d for d in _docs(RAYJOB) if d["kind"] == "RayJob"]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0


def test_launcher_gpu_workers_and_cpu_head():
    cfg = _docs(LAUNCHER)[0]
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU") == 0
    assert not re.match(r"^(g|p)\d", head["node_config"]["InstanceType"]), "head on a GPU instance"
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert any(re.match(r"^(g|p)\d", t["node_config"]["InstanceType"]) for t in workers), "a GPU worker type"
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--num-gpus=0" in start
    assert cfg["docker"]["image"] and cfg["provider"]["type"] == "aws"


# -------------------------------------------------------------------------------- exposure


def test_no_public_dashboard_in_kuberay():
    for name, spec in _kuberay_clusters():
        head = spec["headGroupSpec"]
        assert head.get("serviceType") == "ClusterIP", f"{name}: headGroupSpec.serviceType must be ClusterIP"
        assert "dashboard-host" not in head["rayStartParams"], f"{name}: leave dashboard-host to KubeRay (pod network only)"
        for tmpl in [head["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
            assert not tmpl["spec"].get("hostNetwork"), f"{name}: hostNetwork would bind Ray ports on the node"
            for c in _containers(tmpl):
                assert all("hostPort" not in p for p in c.get("ports", [])), f"{name}: hostPort"
    for path in YAMLS:
        for d in _docs(path):
            kind = d.get("kind")
            assert kind not in ("Ingress", "Route", "Gateway", "HTTPRoute"), f"{path.name}: {kind} exposes the dashboard"
            if kind == "Service":
                assert d.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", f"{path.name}: Service type"


def test_networkpolicy_covers_the_ray_pods():
    (pol,) = _docs(NETPOL)
    assert pol["kind"] == "NetworkPolicy" and "Ingress" in pol["spec"]["policyTypes"]
    selector = pol["spec"]["podSelector"]["matchLabels"]
    for name, spec in _kuberay_clusters():
        for tmpl in [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]:
            labels = tmpl.get("metadata", {}).get("labels", {})
            assert selector.items() <= labels.items(), f"{name}: pods not selected by {NETPOL.name}"
    (job,) = [d for d in _docs(RAYJOB) if d["kind"] == "RayJob"]
    froms = [f.get("podSelector", {}).get("matchLabels", {}) for rule in pol["spec"]["ingress"] for f in rule["from"]]
    assert {"ray.io/originated-from-cr-name": job["metadata"]["name"], "ray.io/originated-from-crd": "RayJob"} in froms, (
        "the RayJob's submitter pod must still reach the job API"
    )


def test_kuberay_turns_on_token_auth():
    for name, spec in _kuberay_clusters():
        assert spec.get("authOptions", {}).get("mode") == "token", f"{name}: authOptions.mode: token"


def test_launcher_dashboard_bound_to_loopback_behind_a_tunnel():
    cfg = _docs(LAUNCHER)[0]
    start = " ".join(cfg["head_start_ray_commands"])
    m = re.search(r"--dashboard-host[= ](\S+)", start)
    assert m and m.group(1) in ("127.0.0.1", "localhost"), "head must bind the dashboard to 127.0.0.1 (reach it via `ray dashboard`)"
    text = LAUNCHER.read_text()
    assert "0.0.0.0/0" not in re.sub(r"#.*", "", text), "no rule open to the world"
    for opt in cfg["docker"].get("run_options", []):
        assert not re.match(r"^(-p|--publish)\b", opt.strip()), f"published container port: {opt}"
    for name, t in cfg["available_node_types"].items():
        assert t["node_config"].get("SecurityGroupIds"), f"{name}: a pre-made security group (the launcher's own admits SSH from anywhere)"
    assert "RAY_AUTH_MODE=token" in " ".join(cfg["docker"].get("run_options", []))
    assert "ray dashboard" in text and "ray dashboard" in README.read_text()


def test_readme_documents_tunnels_not_public_binds():
    text = README.read_text()
    assert "kubectl port-forward" in text
    assert not re.search(r"port-forward[^\n]*--address[= ](0\.0\.0\.0|::)", text), "port-forward must bind loopback"
    assert not re.search(r"dashboard-host[= ]0\.0\.0\.0", text)
    assert not re.search(r"type:\s*(LoadBalancer|NodePort)", text)
