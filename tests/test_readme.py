"""The README's architecture tree is how a newcomer finds where a change goes: it must name every module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree() -> dict[str, str]:
    """The ``fer_ray/`` block of the README, as {top-level entry: the text that describes it}."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(fer_ray/ .*?)```", text, re.S)
    assert block, "README.md has no architecture tree starting with 'fer_ray/'"
    entries: dict[str, str] = {}
    current = None
    for line in block.group(1).splitlines()[1:]:
        m = re.match(r"  (\S+)", line)  # a top-level entry of fer_ray/ (deeper lines describe it)
        if m and not line.startswith("   "):
            current = m.group(1)
            entries[current] = line
        elif re.match(r"\S", line):
            break  # the next top-level folder of the repository (jobs/, tests/, ...)
        elif current:
            entries[current] += "\n" + line
    return entries


def test_every_module_is_in_the_readme_tree():
    entries = _tree()
    missing = []
    for path in sorted((ROOT / "fer_ray").rglob("*.py")):
        rel = path.relative_to(ROOT / "fer_ray")
        if rel.name == "__init__.py":
            continue
        if len(rel.parts) == 1:
            if rel.name not in entries:
                missing.append(str(rel))
        elif not re.search(rf"\b{re.escape(rel.name)}\b", entries.get(f"{rel.parts[0]}/", "")):
            missing.append(str(rel))
    assert not missing, f"modules missing from the README's architecture tree: {missing}"
