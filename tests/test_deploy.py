"""The deployment files agree with the code: Dockerfile, cluster.yaml, KubeRay manifests, runtime_env.

No image can be built and no cloud reached here, so each file is checked by what can run locally:
versions against pyproject.toml, cluster.yaml through Ray's own launcher config code, entrypoints
through the jobs' own argument parsers, the Serve app's args through ``ServeConfig``.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")

REPO = Path(__file__).resolve().parent.parent
KUBERAY = REPO / "deploy" / "kuberay"
IMAGE_DIR = "/home/ray/fer_ray"  # where the Dockerfile puts the repo


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pins() -> dict[str, Requirement]:
    """Every pinned requirement of a cluster node: the lean install and the `train` extra (torch)."""
    project = _pyproject()["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["train"]]
    pins: dict[str, Requirement] = {}
    for r in map(Requirement, reqs):
        pins.setdefault(r.name, r)
    return pins


def _pinned(name: str) -> str:
    (spec,) = [s for s in _pins()[name].specifier if s.operator == "=="]
    return spec.version


RAY_VERSION = _pinned("ray")
VERSION = _pyproject()["project"]["version"]
IMAGE_RE = re.compile(rf"^[\w.-]+(?::\d+)?/[\w./-]*fer-ray:{re.escape(VERSION)}-(cpu|gpu)$")


def _dockerfile() -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(ARG defaults, [(instruction, rest)]) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    args: dict[str, str] = {}
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        steps.append((instr.upper(), rest.strip()))
        if instr.upper() == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args.setdefault(k.strip(), v.strip())
    return args, steps


def test_dockerfile_builds_on_our_ray_and_python():
    args, steps = _dockerfile()
    (base,) = [rest for instr, rest in steps if instr == "FROM"]
    for variant in ("cpu", "gpu"):
        image = re.sub(r"\$\{(\w+)\}", lambda m, v=variant: v if m[1] == "VARIANT" else args[m[1]], base)
        m = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<major>\d)(?P<minor>\d+)-(?P<variant>cpu|gpu)", image)
        assert m, f"{image} is not an official rayproject/ray tag"
        assert m["ray"] == RAY_VERSION, f"Dockerfile Ray {m['ray']} != pyproject's {RAY_VERSION}"
        python = f"{m['major']}.{m['minor']}"
        assert python in SpecifierSet(_pyproject()["project"]["requires-python"]), python
    assert args["VARIANT"] == "cpu"
    assert args["TORCH_VERSION"] == _pinned("torch")
    assert ("WORKDIR", IMAGE_DIR) in steps
    # What it copies exists and is not excluded from the build context.
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    for instr, rest in steps:
        if instr == "COPY":
            for src in [w for w in rest.split() if not w.startswith("--")][:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies {src}, which is not in the repo"
                assert src not in ignored, f"Dockerfile copies {src}, but .dockerignore excludes it"
    assert ".venv" in ignored and ".git" in ignored


def test_cluster_yaml_passes_rays_launcher_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config = prepare_config(copy.deepcopy(raw))  # Ray's defaults for AWS, no cloud calls
    validate_config(config)
    types = config["available_node_types"]
    gpu = [t for t in types.values() if re.match(r"g[56]\.", t["node_config"]["InstanceType"])]
    cpu_workers = [n for n, t in types.items() if n != config["head_node_type"] and t not in gpu]
    assert gpu and cpu_workers, "cluster.yaml needs a GPU worker type (g5/g6) and a CPU worker type"
    for name, t in types.items():
        if name != config["head_node_type"]:
            assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert config["idle_timeout_minutes"] > 0
    assert IMAGE_RE.match(config["docker"]["image"]) and config["docker"]["image"].endswith("-cpu")
    assert all(t["docker"]["worker_image"].endswith("-gpu") for t in gpu)
    # The dashboard runs any job it is sent: loopback only, reached through `ray dashboard cluster.yaml`.
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in (REPO / "cluster.yaml").read_text()


def _manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"] = doc
    return docs


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def _containers(doc: dict) -> list[dict]:
    spec = _cluster_spec(doc)
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def _job_parser(script: Path):
    spec = importlib.util.spec_from_file_location(f"_deploy_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_args_parser()


def test_kuberay_manifests_use_our_image_ray_and_entrypoints():
    docs = _manifests()
    kinds = sorted(d["kind"] for d in docs.values())
    assert kinds == ["RayJob", "RayJob", "RayService"], kinds
    scripts = set()
    for name, doc in docs.items():
        assert doc["apiVersion"] == "ray.io/v1", name
        assert _cluster_spec(doc)["rayVersion"] == RAY_VERSION, name
        for c in _containers(doc):
            assert IMAGE_RE.match(c["image"]), f"{name}: {c['image']} is not the Dockerfile's image"
            gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
            assert c["image"].endswith("-gpu") == bool(gpus), f"{name}: GPU pods need the gpu image and vice versa"
        if doc["kind"] != "RayJob":
            continue
        argv = shlex.split(doc["spec"]["entrypoint"])
        assert argv[0] == "python" and argv[1].startswith(IMAGE_DIR + "/"), argv[:2]
        script = REPO / argv[1][len(IMAGE_DIR) + 1 :]
        assert script.is_file(), f"{name}: entrypoint {argv[1]} is not in the repo"
        _job_parser(script).parse_args(argv[2:])  # every flag exists and parses
        yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
        scripts.add(script.name)
    assert scripts == {"train.py", "score.py"}


def test_rayservice_runs_our_serve_app_with_the_key_from_a_secret():
    (doc,) = [d for d in _manifests().values() if d["kind"] == "RayService"]
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    (app,) = serve_cfg["applications"]
    module, _, attr = app["import_path"].partition(":")
    serve_mod = importlib.import_module(module)
    assert callable(getattr(serve_mod, attr)), app["import_path"]
    from fer_ray.serve import API_KEY_ENV, ServeConfig

    ServeConfig.from_args(app["args"])  # refuses unknown or secret-looking args
    assert app["args"].get("model") is None or Path(str(app["args"]["model"])).is_absolute()
    for c in _containers(doc):
        env = {e["name"]: e for e in c["env"]}
        assert env[API_KEY_ENV]["valueFrom"]["secretKeyRef"]["name"], f"{c['name']}: API key not from a Secret"
        assert "value" not in env[API_KEY_ENV]


def test_runtime_env_pins_are_pyprojects():
    from ray.runtime_env import RuntimeEnv

    env = yaml.safe_load((REPO / "deploy" / "runtime_env.yaml").read_text())
    RuntimeEnv(**env)  # Ray's own validation of the fields
    theirs = {Requirement(p).name: str(Requirement(p).specifier) for p in env["pip"]["packages"]}
    ours = {n: str(r.specifier) for n, r in _pins().items() if n != "ray"}  # the cluster's Ray is used
    assert theirs == ours, "deploy/runtime_env.yaml must list pyproject.toml's pins (without ray)"
    assert env["env_vars"]["RAY_USAGE_STATS_ENABLED"] == "0"


@pytest.mark.parametrize("path", ["cluster.yaml", *(p.name for p in KUBERAY.glob("*.yaml"))])
def test_no_credentials_in_deploy_files(path):
    text = (REPO / path if (REPO / path).exists() else KUBERAY / path).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|AWS_SECRET_ACCESS_KEY", text), path
