"""The command line every job shares: flags from the config dataclasses, --config files, errors a person can act on.

The jobs run as the user runs them (``python jobs/X.py ...`` in a subprocess) wherever the exit status,
stderr or start-up cost is the point; none of these tests starts Ray (``--print-config`` and the checks
before Ray leave first). Round trips of every job's settings run in-process through the same ``main``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fer_ray.models.config import ModelConfig
from fer_ray.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
JOBS = ("train", "tune", "score", "serve", "evaluate", "calibrate", "export_onnx", "describe_data", "report")
# Settings each job is given in the round trip: a few of its own, incl. a nested one where it has them.
SAMPLE_ARGS = {
    "train": ["--arch", "cnn_attn", "--lr", "0.01", "--widths", "16,32", "--no-augment", "--address", "auto"],
    "tune": ["--arch", "cnn_attn", "--run-name", "s1", "--num-samples", "3", "--epochs", "2", "--grace-period", "2"],
    "score": ["in", "more/*.jpg", "--out", "o", "--min-face", "30", "--engine", "onnx", "--no-tta", "--ray-cpus", "3"],
    "serve": ["--model", "cnn_attn", "--max-batch-size", "16", "--detector", "haar", "--replicas", "auto"],
    "evaluate": ["cnn_attn", "--model", "default", "--out", "o", "--no-engines"],
    "calibrate": ["--model", "cnn_attn", "--data", "d.parquet"],
    "export_onnx": ["cnn_attn", "--calib", "64"],
    "describe_data": ["a.parquet", "b/", "--limit", "5"],
    "report": ["out/x"],
}
# A flag per job that the round trip gives on top of the file: (flag, value, its JSON path, the value expected).
OVERRIDE = {
    "train": ("--lr", "0.02", ("lr",), 0.02),
    "tune": ("--epochs", "3", ("base", "epochs"), 3),
    "score": ("--min-face", "50", ("detect", "min_face"), 50),
    "serve": ("--detector", "yunet", ("detect", "detector"), "yunet"),
    "evaluate": ("--seed", "7", ("seed",), 7),
    "calibrate": ("--data", "e.parquet", ("data",), "e.parquet"),
    "export_onnx": ("--seed", "3", ("seed",), 3),
    "describe_data": ("--limit", "9", ("limit",), 9),
    "report": None,  # its one setting is OUT
}


def run_job(job: str, *args: object, env: dict[str, str] | None = None, timeout: float = 600):
    """``python jobs/<job>.py args`` from the repo root, as a user runs it."""
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    e.update(RAY_USAGE_STATS_ENABLED="0", **(env or {}))
    cmd = [sys.executable, f"jobs/{job}.py", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=e)


def user_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """The one stderr line of a user error (exit 2, no traceback), checked to name ``words``."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("fer_ray: error: ") and " — " in lines[0], lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def main_in_child(job: str, argv: list[str]) -> subprocess.CompletedProcess:
    """The job's ``main(argv)`` in a fresh interpreter; stdout ends with ``[ray imported?, torch imported?]``
    as two lists, so a test can tell that a user error came before either was even imported."""
    code = (
        f"import json, sys; sys.path.insert(0, '.'); from jobs.{job} import main; rc = main({argv!r}); "
        "print(json.dumps([[m] if m in sys.modules else [] for m in ('ray', 'torch')])); sys.exit(rc)"
    )
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def in_process(job: str, argv: list[str]) -> tuple[int, str, str]:
    """(status, stdout, stderr) of the job's ``main(argv)`` in this process (no Ray for --print-config)."""
    main = importlib.import_module(f"jobs.{job}").main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def printed_config(job: str, argv: list[str]) -> dict:
    code, out, err = in_process(job, [*argv, "--print-config"])
    assert code == 0, err
    return json.loads(out)


def help_entries(text: str) -> list[str]:
    """Each option's entry of ``--help`` (its flags and help text joined on one line)."""
    entries: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            current = [line.strip()]
            entries.append(current)
        elif current is not None and line.startswith("    "):
            current.append(line.strip())
        else:
            current = None
    return [" ".join(e) for e in entries]


# ---------------------------------------------------------------- --help
@pytest.mark.parametrize("job", JOBS)
def test_help_lists_every_flag_with_its_default(job):
    res = run_job(job, "--help")
    assert res.returncode == 0, res.stderr
    entries = help_entries(res.stdout)
    parser = importlib.import_module(f"jobs.{job}").get_args_parser()
    flags = [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert {"--config", "--print-config", "--verbose", "--debug"} <= set(flags), flags
    for flag in flags:
        (entry,) = [e for e in entries if re.search(rf"(^|, ){re.escape(flag)}( |,|$)", e)]
        text = entry.split("  ", 1)[-1].strip()
        said = "(default: " in entry or entry.endswith("(required)")  # a required value has no default
        assert said and len(text) > len("(default: x)"), f"{job} {flag}: {entry!r}"


# ---------------------------------------------------------------- --config files
@pytest.mark.parametrize("job", JOBS)
def test_config_file_round_trips_and_flags_override_it(job, tmp_path):
    first = printed_config(job, SAMPLE_ARGS[job])
    for suffix, dump in ((".json", json.dumps), (".yaml", yaml.safe_dump)):
        f = tmp_path / f"{job}{suffix}"
        f.write_text(dump(first))
        assert printed_config(job, ["--config", str(f)]) == first, suffix  # the file alone: the same settings
    if OVERRIDE[job] is None:
        return
    flag, value, path, expected = OVERRIDE[job]
    over = printed_config(job, ["--config", str(f), flag, value])
    got = over
    for k in path:
        got = got[k]
    assert got == expected
    unchanged = {k: v for k, v in over.items() if k != path[0]}
    assert unchanged == {k: v for k, v in first.items() if k != path[0]}  # everything else still from the file


def test_config_file_values_reach_the_training_config(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"model": {"name": "cnn_attn", "widths": [16, 32]}, "augment": None, "momentum": 0.8}))
    res = run_job("train", "--config", y, "--lr", "0.005", "--print-config")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    got = json.loads(res.stdout)
    assert (got["model"]["name"], got["model"]["widths"], got["augment"]) == ("cnn_attn", [16, 32], None)
    assert (got["momentum"], got["lr"], got["run_name"]) == (0.8, 0.005, "cnn_attn")  # run name: the arch's


def test_unknown_config_keys_are_named_with_the_valid_ones(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"lr": 0.01, "modle": {}, "model": {"widht": 3}}))
    line = user_error(run_job("train", "--config", y), "model.widht, modle", "valid keys:", "epochs")
    assert "lr" not in line.split("unknown key(s)")[1].split("—")[0]
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"inputs": ["x"], "outt": "y", "detect": {"min_fase": 3}}))
    user_error(run_job("score", "--config", j), "detect.min_fase, outt", "valid keys:")


def test_bad_config_values_and_flags_are_one_line(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"optimizer": "adam"}))
    user_error(run_job("train", "--config", y), "optimizer must be adamw or sgd")
    user_error(run_job("train", "--optimizer", "adam"), "--optimizer", "invalid choice", "--help")
    y.write_text("lr: [unclosed")
    user_error(run_job("train", "--config", y), "not valid YAML")
    user_error(run_job("train", "--config", tmp_path / "missing.yaml"), "no such file")
    # a flag that reads a file keeps the file's own message (argparse would say "invalid _space_file value")
    user_error(run_job("tune", "--space", tmp_path / "missing.json"), "--space", "no such file", "check the path")


def test_stored_metadata_keeps_ignoring_unknown_keys():
    stored = {**TrainConfig().to_dict(), "from_a_newer_version": 1}
    stored["model"] = {**stored["model"], "new_field": True}
    assert TrainConfig.from_dict(stored) == TrainConfig()  # checkpoints and artifacts of other versions load


# ---------------------------------------------------------------- renamed flags
def test_model_in_train_still_works_with_one_warning():
    res = run_job("train", "--model", "cnn_attn", "--print-config")
    assert res.returncode == 0, res.stderr
    (warning,) = res.stderr.strip().splitlines()
    assert warning.startswith("fer_ray: warning: --model is deprecated") and "--arch" in warning
    got = json.loads(res.stdout)
    assert (got["model"]["name"], got["run_name"]) == ("cnn_attn", "cnn_attn")


def test_resume_command_in_the_notes_resolves_to_the_same_config():
    """The exact command of a run in progress (notes, model cards): same TrainConfig as before the rewrite."""
    argv = (
        "--backend plain --model ae_cnn_attn --widths 32,64,128,256 --epochs 28 --pretrain-epochs 1 --lr 3e-3 "
        "--weight-decay 5e-4 --scheduler onecycle --warmup-epochs 4 --dropout 0.4 --label-smoothing 0.1 "
        "--batch-size 128 --torch-threads 2 --run-name ae_oc_e28 --storage-path /home/u/.cache/fer_ray/runs"
    ).split()
    got = TrainConfig.from_dict(printed_config("train", argv))
    want = TrainConfig(
        model=ModelConfig(name="ae_cnn_attn", widths=(32, 64, 128, 256), dropout=0.4),
        backend="plain", epochs=28, pretrain_epochs=1, lr=3e-3, weight_decay=5e-4, scheduler="onecycle",
        warmup_epochs=4.0, label_smoothing=0.1, batch_size=128, torch_threads=2, run_name="ae_oc_e28",
        storage_path="/home/u/.cache/fer_ray/runs",
    )  # fmt: skip
    assert got == want


def test_tune_run_name_and_its_old_spelling():
    assert printed_config("tune", ["--run-name", "s2"])["name"] == "s2"
    code, out, err = in_process("tune", ["--name", "s3", "--print-config"])
    assert code == 0 and json.loads(out)["name"] == "s3"
    assert "--name is deprecated" in err and "--run-name" in err


# ---------------------------------------------------------------- user errors: one line, exit 2, before Ray
def test_missing_input_fails_before_ray_or_torch_load(tmp_path):
    res = main_in_child("score", [f"{tmp_path}/no_such_dir", "--out", f"{tmp_path}/out"])
    user_error(res, "INPUT", "no_such_dir", "no such file or directory")
    assert json.loads(res.stdout) == [[], []]  # neither Ray nor torch was even imported
    assert not (tmp_path / "out").exists()


def test_changed_sweep_rerun_is_one_line_before_ray(tmp_path):
    """Continuing a sweep with other settings is refused before Ray is even imported; --restart is the way out."""
    from fer_ray.cli import parse_config
    from tests.fer_fixtures import write_tiny_fer_parquet

    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=2)
    argv = ["--arch", "cnn_attn", "--data", str(data), "--storage-path", str(tmp_path / "runs"), "--run-name", "s"]
    tune_job = importlib.import_module("jobs.tune")
    first, _ = parse_config(tune_job.get_args_parser(), [*argv, "--num-samples", "2"], adjust=tune_job._adjust)
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "sweep_config.json").write_text(json.dumps(first.record()))  # as sweep() leaves it
    res = main_in_child("tune", [*argv, "--num-samples", "3"])
    user_error(res, "sweep 's'", "num_samples", "--restart")
    assert json.loads(res.stdout)[0] == []  # Ray was not even imported


def test_debug_shows_the_traceback(tmp_path):
    res = run_job("score", tmp_path / "nothing", "--out", tmp_path / "o", "--debug")
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("fer_ray: error: INPUT")


def test_output_that_is_a_file(tmp_path):
    f = tmp_path / "report.txt"
    f.write_text("x")
    user_error(run_job("score", REPO / "examples" / "images", "--out", f), "--out", "is a file", "pass a directory")
    user_error(run_job("train", "--data", f, "--storage-path", f), "--storage-path", "is a file")


def test_missing_or_bad_artifact(tmp_path):
    images = REPO / "examples" / "images"
    user_error(run_job("score", images, "--out", tmp_path / "o", "--model", tmp_path / "nope"), "--model", "cnn_attn")
    (tmp_path / "empty").mkdir()
    line = user_error(run_job("serve", "--model", tmp_path / "empty"), "not a model artifact", "artifact.json")
    assert "jobs/train.py" in line
    user_error(run_job("evaluate", "--model", tmp_path / "nope"), "--model")
    user_error(run_job("calibrate"), "no model to calibrate")


def test_missing_training_data(tmp_path):
    user_error(run_job("train", "--data", tmp_path / "fer.parquet"), "--data", "no such file", "FER_RAY_DATA")
    (tmp_path / "root").mkdir()
    line = user_error(run_job("train", env={"FER_RAY_DATA": str(tmp_path / "root")}), "no training data found")
    assert "--data" in line
    user_error(run_job("report", tmp_path / "never_scored"), "no such directory")
    (tmp_path / "folders" / "train" / "happy").mkdir(parents=True)
    line = user_error(run_job("train", "--backend", "plain", "--data", tmp_path / "folders"), "Parquet only")
    assert "leave out --backend plain" in line


def test_serve_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        user_error(run_job("serve", "--port", port), f"127.0.0.1:{port}", "--port")


def test_s3_bucket_missing_or_no_credentials(s3_server, tmp_path):
    from fer_ray.data.s3 import S3Settings

    S3Settings.from_env().client().create_bucket(Bucket="photos")
    images = REPO / "examples" / "images"
    user_error(run_job("score", "s3://no-such-bucket/x/", "--out", tmp_path / "o"), "no-such-bucket not found")
    line = user_error(run_job("score", images, "--out", "s3://reports-missing/r"), "reports-missing not found")
    assert f"aws s3 mb s3://reports-missing --endpoint-url {s3_server}" in line
    no_credentials = {
        "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
    }  # fmt: skip
    user_error(run_job("score", "s3://photos/x/", "--out", tmp_path / "o", env=no_credentials), "no S3 credentials")


def test_unusable_teachers_starting_weights_or_resume_are_one_line(tmp_path):
    from tests.fer_fixtures import write_tiny_fer_parquet

    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=2)
    small = ["--arch", "cnn_attn", "--widths", "8,16", "--latent-channels", "8", "--epochs", "1", "--batch-size", "8"]
    base = ["--backend", "plain", *small, "--data", data, "--storage-path", tmp_path / "runs", "--torch-threads", "1"]
    user_error(run_job("train", *base, "--teachers", f"cnn_attn,{tmp_path}/nope"), "--teachers", "nope")
    user_error(run_job("train", *base, "--init-from", "cnn_attn"), "--init-from cnn_attn", "widths", "--arch")
    assert run_job("train", *base, "--run-name", "r").returncode == 0
    res = run_job("train", *base, "--run-name", "r", "--label-smoothing", "0.2")  # after the data's log line
    assert res.returncode == 2 and "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("fer_ray: error: run 'r' was trained with a different label_smoothing")
    assert line.endswith("— use a new --run-name to train with these settings")


def test_relative_paths_in_a_submitted_job_fail_with_the_fix(tmp_path, monkeypatch):
    """`ray job submit --working-dir .` runs in a temporary copy: a relative --out would vanish at `ray stop`,
    and a git-ignored input is not there. Both become one line that says what to pass instead."""
    import json

    from fer_ray.cli import UserError, check_input_path, check_output_dir, submitted_working_dir

    job = {"runtime_env": {"working_dir": "gcs://_ray_pkg_0123.zip"}, "metadata": {}}
    assert not submitted_working_dir({}) and not submitted_working_dir({"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})
    assert submitted_working_dir({"RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job)})
    monkeypatch.chdir(tmp_path)
    check_output_dir("runs", "--storage-path")  # outside a submitted job: fine
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    with pytest.raises(UserError) as e:
        check_output_dir("runs", "--storage-path")
    assert "relative" in str(e.value) and "ray stop" in str(e.value) and "absolute path" in e.value.fix
    check_output_dir(str(tmp_path / "runs"), "--storage-path")  # absolute: fine
    with pytest.raises(UserError) as e:
        check_input_path("out/tiny", "--data", "unused")
    assert "git does not ignore" in str(e.value) and "s3://" in e.value.fix
    (tmp_path / "there").mkdir()
    check_input_path("there", "--data", "unused")  # uploaded with the working dir: fine


def test_misspelled_flag_gets_did_you_mean(capsys):
    from jobs.score import main

    assert main(["examples/images", "--ouput", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unrecognized arguments: --ouput x" in err[0] and "did you mean --out?" in err[0], err


def test_score_exit_codes_and_nothing_written_for_no_images(tmp_path, capsys):
    """Documented statuses: 0 complete, 1 incomplete, 3 when every input is an error row; inputs without any
    image are a usage mistake (2) that leaves no --out behind."""
    from jobs.score import exit_code, main

    assert exit_code({"complete": True, "images_in": 3, "images_by_status": {"ok": 2, "error": 1}}) == 0
    assert exit_code({"complete": True, "images_in": 2, "images_by_status": {"no_face": 2}}) == 0
    assert exit_code({"complete": True, "images_in": 2, "images_by_status": {"error": 2}}) == 3
    assert exit_code({"complete": False, "images_in": 2, "images_by_status": {"error": 1}}) == 1
    videos = {"complete": True, "images_in": 0, "images_by_status": {}, "video_segments_in": 3}
    assert exit_code({**videos, "video_segments_failed": 3}) == 3  # only videos, none could be read
    assert exit_code({**videos, "video_segments_failed": 1}) == 0
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert main([str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no image or video files" in err[0], err
    assert not out.exists()


def test_job_without_the_virtualenv_says_how_to_run_it():
    """A Python without the project's packages (here: ours with site-packages switched off, -S) gets one line."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, "-S", str(repo / "jobs" / "score.py"), "examples/images", "--out", "out/x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=repo,
    )
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1, res.stderr[-2000:]
    assert err[0].startswith("fer_ray: error: ") and "virtualenv" in err[0] and "Traceback" not in res.stderr

    # a Python with the lean packages but no Ray (a GPU box's): every job but train asks for Ray at start
    code = "import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
    code += "run_name='__main__')"
    res = subprocess.run(
        [sys.executable, "-c", code, str(repo / "jobs" / "serve.py")], capture_output=True, text=True, timeout=60
    )
    err = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(err) == 1 and "has no ray" in err[0], res.stderr[-2000:]


@pytest.mark.parametrize("job", ["score", "train", "tune", "evaluate", "serve", "export_onnx", "calibrate"])
def test_help_shows_no_empty_default(job, capsys):
    """An empty list default read "(default: )" (INPUT, --teachers); it reads "(default: none)"."""
    mod = importlib.import_module(f"jobs.{job}")
    with pytest.raises(SystemExit):
        mod.main(["--help"])
    text = capsys.readouterr().out
    assert "usage:" in text and "(default: )" not in text


def test_config_file_beside_positional_inputs(tmp_path):
    """The README's `jobs/score.py photos/ --config score.yaml`: the file holds some settings, the command
    line the inputs; checking the file alone refused it for lacking inputs."""
    f = tmp_path / "score.yaml"
    f.write_text(yaml.safe_dump({"detect": {"min_face": 30}}))
    cfg = printed_config("score", ["examples/images", "--out", str(tmp_path / "out"), "--config", str(f)])
    assert cfg["inputs"] == ["examples/images"] and cfg["detect"]["min_face"] == 30
