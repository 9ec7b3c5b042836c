"""Each shipped model's recipe file, read by `jobs/train.py --config`, resolves to the settings that trained it.

A recipe that drifted from the artifact would rebuild a different model; the teachers are checked by the
weights hash the artifact records for them (a shipped name now, or an artifact in an older commit).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fer_ray.inference.shipped import SHIPPED_NAMES

ROOT = Path(__file__).resolve().parents[1]
# Where a run goes and which Ray it joins are not part of a recipe (fields marked machine=True).
NOT_RECIPE = ("storage_path", "ray")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@functools.cache  # one --print-config subprocess per recipe, shared by the tests below
def _resolved(recipe: Path) -> dict:
    cmd = [sys.executable, str(ROOT / "jobs" / "train.py"), "--config", str(recipe), "--print-config"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@functools.cache
def _defaults() -> dict:
    out = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "train.py"), "--print-config"], cwd=ROOT, capture_output=True, text=True
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_recipe_resolves_to_the_recorded_training_config(name):
    meta = json.loads((ROOT / "fer_ray" / "assets" / name / "artifact.json").read_text())
    recorded = {k: v for k, v in _flat(meta["train_config"]).items() if k.split(".")[0] not in NOT_RECIPE}
    resolved = _flat(_resolved(ROOT / "recipes" / f"{name}.yaml"))
    defaults = _flat(_defaults())
    for key, value in resolved.items():
        if key.split(".")[0] in NOT_RECIPE or key == "teachers":
            continue
        # settings added after the model was trained keep their defaults, which reproduce the old behaviour
        expected = recorded.get(key, defaults[key])
        assert value == expected, f"recipes/{name}.yaml: {key} is {value!r}, {name} was trained with {expected!r}"
    assert not set(recorded) - set(resolved) - {"teachers"}, "settings the artifact records that TrainConfig lost"
    assert len(resolved["teachers"]) == len(recorded["teachers"])


def _weights_hash(teacher: str) -> str | None:
    """First 12 hex digits of a recipe teacher's weights sha256: a shipped name, or
    ``../fer_ray_<commit>/<path>`` read from git history (None where this clone lacks it)."""
    if teacher in SHIPPED_NAMES:
        return json.loads((ROOT / "fer_ray" / "assets" / teacher / "artifact.json").read_text())["weights_sha256"][:12]
    m = re.fullmatch(r"\.\./fer_ray_([0-9a-f]{7,40})/(.+)", teacher)
    assert m, f"a teacher that is not shipped is named as ../fer_ray_<commit>/<artifact dir>, got {teacher!r}"
    show = subprocess.run(
        ["git", "show", f"{m.group(1)}:{m.group(2)}/artifact.json"], cwd=ROOT, capture_output=True, text=True
    )
    return json.loads(show.stdout)["weights_sha256"][:12] if show.returncode == 0 else None


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_recipe_teachers_are_the_recorded_ones(name):
    meta = json.loads((ROOT / "fer_ray" / "assets" / name / "artifact.json").read_text())
    recorded_ids = meta["metrics"]["counts"]["teachers"]  # name@hash[+engine], in the order of --teachers
    teachers = _resolved(ROOT / "recipes" / f"{name}.yaml")["teachers"]
    if any(_weights_hash(t) is None for t in teachers):
        pytest.skip("this clone has no git history for the teachers' commits (a shallow clone)")
    assert [_weights_hash(t) for t in teachers] == [i.split("@")[1].split("+")[0] for i in recorded_ids]


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_model_card_links_its_recipe(name):
    card = (ROOT / "fer_ray" / "assets" / name / "MODEL_CARD.md").read_text()
    assert f"recipes/{name}.yaml" in card
