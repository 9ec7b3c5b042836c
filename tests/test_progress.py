"""Progress output: a bar on a terminal (a real pseudo-terminal), plain log lines anywhere else."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fer_ray.models.config import ModelConfig
from fer_ray.progress import Progress, progress_mode
from fer_ray.train.config import TrainConfig
from tests.fer_fixtures import write_tiny_fer_parquet

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_parquet(tmp_path_factory):
    return write_tiny_fer_parquet(tmp_path_factory.mktemp("data") / "tiny.parquet", n_per_class=6)


def _train_code(tmp_path: Path, data: Path) -> str:
    """A child process that trains two tiny epochs with the plain back end (no Ray), as jobs/train.py does."""
    cfg = TrainConfig(
        model=ModelConfig(name="cnn_attn", widths=(8, 16), latent_channels=8),
        data=str(data),
        epochs=2,
        pretrain_epochs=0,
        batch_size=16,
        storage_path=str(tmp_path / "runs"),
        run_name="p",
        backend="plain",
        torch_threads=1,
    )
    return textwrap.dedent(
        f"""
        import json, logging, sys
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        from fer_ray.train.config import TrainConfig
        from fer_ray.train.plain import train_plain
        train_plain(TrainConfig.from_dict(json.loads({json.dumps(json.dumps(cfg.to_dict()))})))
        """
    )


def _run_on_pty(code: str, timeout: float = 600) -> str:
    """Run ``python -c code`` with stdout and stderr on a pseudo-terminal; everything it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=ROOT, close_fds=True
    )
    os.close(slave)
    out, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, out.decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return out.decode(errors="replace")


def test_training_shows_bars_on_a_terminal(tmp_path, tiny_parquet):
    text = _run_on_pty(_train_code(tmp_path, tiny_parquet))
    assert "\r" in text  # a bar redraws its line
    text = text.replace("s/epochs", "epochs/s").replace("s/steps", "steps/s")  # tqdm's rate below 1/s
    assert "training: 100%" in text and "2/2 [" in text and "epochs/s" in text  # tqdm: count, elapsed<ETA, rate
    assert "val_acc=" in text and "best=" in text  # the latest and best validation accuracy in the postfix
    assert "epoch 1:" in text and "steps/s" in text  # the epoch's steps
    assert "epoch 1/2 joint: train acc" in text and "epoch 2/2 joint" in text  # each epoch's line above the bar


def test_training_logs_plain_lines_when_not_a_terminal(tmp_path, tiny_parquet):
    out = subprocess.run(
        [sys.executable, "-c", _train_code(tmp_path, tiny_parquet)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "\r" not in text and "epochs/s" not in text and "steps/s" not in text  # no bar
    lines = [ln for ln in text.splitlines() if "epoch " in ln and "train acc" in ln]
    assert [ln.split(": ", 1)[1].split(" ")[1] for ln in lines] == ["1/2", "2/2"], lines  # one line per epoch
    assert all(ln.startswith("INFO fer_ray.train.plain:") for ln in lines)
    assert json.loads((tmp_path / "runs" / "p" / "history.json").read_text())[-1]["epoch"] == 1


def test_log_mode_lines_carry_count_rate_and_eta(caplog, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal
    assert progress_mode(None) == "log"
    assert progress_mode(True) == "bar" and progress_mode(False) == "off"
    with caplog.at_level(logging.INFO, logger="fer_ray.progress"):
        with Progress("scoring", total=10, unit="images", interval_s=0) as p:
            p.update(4, faces=7)
        with Progress("quiet", total=3, progress=False) as q:
            q.update(3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("scoring: 4/10 images (40%), ") and "ETA " in lines[0] and lines[0].endswith("faces 7")
    assert lines[-1].startswith("scoring: 4/10 images (40%), in ") and "images/s" in lines[-1]  # the closing line
    assert not any(ln.startswith("quiet") for ln in lines)


def test_scoring_progress_counts_images_and_faces(ray_local, tmp_path, caplog):
    """The inference actors' counts reach the driver (a real Ray actor): the closing line says all images."""
    from fer_ray.inference.artifact import save_artifact
    from fer_ray.models.registry import create_model
    from fer_ray.score.config import ScoreConfig
    from fer_ray.score.driver import score
    from tests.helpers_score import copy_samples

    model = save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path / "model")
    copy_samples(tmp_path / "in", ["photos/group_of_three.jpg", "photos/pair_rotated_exif6.jpg"])
    with caplog.at_level(logging.INFO, logger="fer_ray.progress"):
        res = score(ScoreConfig(inputs=(str(tmp_path / "in"),), out=str(tmp_path / "out"), model=str(model)))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring: ")]
    assert lines and lines[-1].startswith("scoring: 2/2 images (100%), in "), lines
    assert lines[-1].endswith(f"faces {res.summary['faces']}") and res.summary["faces"] == 5


@pytest.mark.slow
def test_scoring_cli_shows_a_bar_on_a_terminal(tmp_path):
    """``jobs/score.py`` on a pseudo-terminal: its own private Ray, one bar of images with faces and rate."""
    from fer_ray.inference.artifact import save_artifact
    from fer_ray.models.registry import create_model
    from tests.helpers_score import copy_samples

    model = save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path / "model")
    copy_samples(tmp_path / "in", ["photos/group_of_three.jpg", "photos/pair_rotated_exif6.jpg"])
    argv = ["jobs/score.py", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model)]
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path('jobs/score.py', run_name='__main__')"
    text = _run_on_pty(code)
    bars = [ln for ln in text.replace("\r", "\n").splitlines() if ln.startswith("scoring: ")]
    # count, elapsed<remaining, rate (tqdm writes s/images below one image a second), faces found
    assert bars and "2/2 [" in bars[-1] and "images/s" in bars[-1].replace("s/images", "images/s"), bars[-3:]
    assert "faces=5" in bars[-1]
    assert "Running Dataset" not in text and "MapBatches(FacePredictor):" not in text  # no Ray Data bars
    assert "images/s through the pipeline" in text  # the summary's one throughput figure, and what it measures
    assert "a small run: starting the pipeline's actors takes most of it" in text  # 2 photos: says why it is slow
