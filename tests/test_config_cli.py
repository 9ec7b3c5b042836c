"""How generated flags read: defaults worded one way, a job's actions kept out of its config, URIs of
other schemes refused before any work."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from fer_ray.cli import UserError, check_input_path, check_model, check_output_dir, show_default
from jobs import train as train_job
from jobs import tune as tune_job


def _help(job) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        job.get_args_parser().parse_args(["--help"])
    return out.getvalue()


@pytest.mark.parametrize("job", [train_job, tune_job])
def test_defaults_read_one_way(job):
    """``none`` for an unset value, ``off``/``on`` for switches: never None, False or unset."""
    shown = re.findall(r"\(default: ([^)]*)\)", " ".join(_help(job).split()))
    assert shown and not {"None", "False", "True", "unset", ""} & set(shown)
    assert (show_default(None), show_default(False), show_default(()), show_default(True)) == (
        "none",
        "off",
        "none",
        "on",
    )


def test_actions_are_flags_but_not_settings():
    text = _help(train_job)
    assert "--export-only" in text and "--show-space" in _help(tune_job)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert train_job.main(["--export-only", "--print-config"]) == 0
    assert "export_only" not in json.loads(out.getvalue())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert tune_job.main(["--arch", "cnn_attn", "--show-space"]) == 0
    assert json.loads(out.getvalue())  # the resolved space, and nothing ran


@pytest.mark.parametrize("check", [check_input_path, check_output_dir, check_model])
def test_other_uri_schemes_are_refused_with_the_fix(check):
    args = ("gs://bucket/x", "--flag", "fix") if check is check_input_path else ("gs://bucket/x", "--flag")
    with pytest.raises(
        UserError, match=r"--flag gs://bucket/x: unsupported URI scheme 'gs' — use a local path or s3://"
    ):
        check(*args)


def test_an_output_dir_that_cannot_be_made_is_one_line_and_a_check_leaves_nothing(tmp_path):
    check_output_dir(str(tmp_path / "a" / "b"), "--out")
    assert list(tmp_path.iterdir()) == []  # created to see that it can be, then removed
    with pytest.raises(UserError, match=r"--out /proc/fer_ray/out: (cannot create it|/proc is not writable)"):
        check_output_dir("/proc/fer_ray/out", "--out")  # root may "write" to /proc by the permission bits


def test_file_uris_are_checked_as_local_paths(tmp_path):
    check_input_path(f"file://{tmp_path}", "--data", "fix")
    check_output_dir(f"file://{tmp_path}/out", "--out")
    with pytest.raises(UserError, match="no such file"):
        check_input_path(f"file://{tmp_path}/missing", "--data", "fix")
