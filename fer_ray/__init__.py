"""fer_ray: facial emotion recognition (FER2013, 7 classes) from a laptop to a Ray cluster."""

import os

# Ray reports usage statistics to the internet unless told not to. Nothing leaves the
# machine unasked: users opt in by exporting RAY_USAGE_STATS_ENABLED=1 themselves.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

__version__ = "0.1.0"


def _job_without_install() -> None:
    """`python jobs/score.py` from a shell without the project's virtualenv would die on a raw
    ModuleNotFoundError from deep inside an import: say in one line what to run instead."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.parent.name != "jobs" or not (script.parent.parent / "fer_ray").is_dir():
        return  # imported as a library: its user's own import errors are theirs to see
    needs = ["numpy", "pyarrow", "onnxruntime"]
    if script.name != "train.py":  # train needs Ray for --backend ray only, known once its flags and --config are read
        needs.append("ray")
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        venv = script.parent.parent / ".venv" / "bin" / "python"
        how = f"`{venv} {' '.join(sys.argv)}`" if venv.exists() else "`make demo` (or `make test`) first"
        sys.stderr.write(
            f"fer_ray: error: {sys.executable} has no {', '.join(missing)} — run the jobs with the project's "
            f"virtualenv: `source .venv/bin/activate`, or {how}\n"
        )
        raise SystemExit(2)


_job_without_install()
