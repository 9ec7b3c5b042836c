"""The scoring report for the people who read it (issue #31, item 6): report.html and the terminal table
from a made-up OUT, no Ray, no model: the plain-language header, per-emotion accuracy from the artifact,
one colour per emotion, paths under the input root, engineering details at the bottom."""

from __future__ import annotations

import json
import re

import pytest

from fer_ray.inference.artifact import META, SHIPPED_MODELS
from fer_ray.labels import EMOTIONS
from fer_ray.score.driver import model_accuracy
from fer_ray.score.report import ACCURACY_CAUTION, EMOTION_COLORS, figures, format_table, write_report
from tests.helpers_score import write_scored

ROOT = "/data/shoot"
# summary.json's keys before the report was rewritten for analysts: they must stay what readers parse.
SUMMARY_KEYS = {
    "by_model", "complete", "confidence_histogram", "duplicate_images", "elapsed_s", "emotions",
    "emotions_by_folder", "error_examples", "errors_by_reason", "faces", "faces_per_image", "generated_at",
    "image_rows_out", "images_by_folder", "images_by_status", "images_in", "images_per_s", "last_run",
    "mean_confidence", "model_id", "models", "out", "part_files", "rows", "rows_by_status",
    "rows_not_in_inputs", "uncertain_faces",
}  # fmt: skip


def _shipped_meta(name: str = "ae_cnn_attn") -> dict:
    return json.loads((SHIPPED_MODELS[name] / META).read_text())


def _run(accuracy: dict | None) -> dict:
    return {
        "run_id": "20261207T000000Z-abc123", "images_scored": 10, "images_skipped": 0, "pipeline_s": 4.0,
        "elapsed_s": 9.0, "images_per_s": 1.11, "model_id": "m", "engine": "onnx-int8", "flip_tta": True,
        "detector": "yunet", "model_accuracy": accuracy,
    }  # fmt: skip


@pytest.fixture()
def scored(tmp_path):
    """Ten photos in two folders under ROOT: five happy faces, two uncertain sad ones, a neutral one,
    one photo without a face and one that could not be read."""
    happy, sad = ("happy", 0.9), ("sad", 0.4)
    images = [[happy], [happy, happy], [happy], [happy], [sad], [sad], [("neutral", 0.8)], [], [], []]
    paths = [f"{ROOT}/{'a' if i < 5 else 'b'}/img{i:04d}.jpg" for i in range(len(images))]
    errors = {9: "corrupt or truncated image: image file is truncated"}
    write_scored(tmp_path / "out", images, paths=paths, uncertain_below=0.5, errors=errors)
    return tmp_path / "out"


def _header(page: str) -> str:
    """What the page says before its first section."""
    return page.split("<h2>", 1)[0]


def test_header_says_what_was_scored_in_plain_words(scored):
    summary = write_report(str(scored), run=_run(model_accuracy(_shipped_meta())))
    page = (scored / "report.html").read_text()
    header = re.sub(r"<[^>]+>", " ", _header(page))
    assert "Scored 10 images from /data/shoot: 8 faces found in 7 of them; 2 without a face" in header
    assert "1 could not be read" in header
    assert "Most faces read as happy (62%), sad (25%) and neutral (12%)." in header
    assert "2 of 8 faces (25%) are uncertain" in header and "read their emotion as a guess" in header
    # No engineer's vocabulary up there: ids, engines and rates live in the details section.
    for detail in ("onnx-int8", "20261207T000000Z-abc123", "images/s", "rows in OUT"):
        assert detail not in header
    details = page.split("<h2>Details</h2>", 1)[1]
    for detail in ("onnx-int8", "20261207T000000Z-abc123", "images/s", summary["model_id"]):
        assert detail in details
    assert page.index("<h2>Details</h2>") > page.index("<h2>Errors</h2>")  # the last section

    table = format_table(summary).splitlines()
    assert table[0].split()[:5] == ["scored", "10", "images", "from", "/data/shoot:"]
    assert any(line.startswith("uncertain") and "2 of 8 faces (25%)" in line for line in table)
    # the run's details come after everything an analyst reads
    assert [line.split()[0] for line in table[-5:]] == ["output", "model", "images", "status", "this"]


def test_accuracy_per_emotion_comes_from_the_artifact(scored):
    meta = _shipped_meta()
    acc = model_accuracy(meta)
    assert acc["split"] == "PrivateTest" and set(acc["recall"]) == set(acc["precision"]) == set(EMOTIONS)
    assert acc["recall"]["happy"] == round(meta["metrics"]["test"]["per_class"]["happy"]["recall"], 4)
    summary = write_report(str(scored), run=_run(acc))
    page = (scored / "report.html").read_text()
    assert ACCURACY_CAUTION in page
    table = page.split("<table class='emotions'>", 1)[1].split("</table>", 1)[0]
    for e in EMOTIONS:
        row = re.search(rf"<tr><td><span[^>]*></span>{e}</td>(.*?)</tr>", table).group(1)
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[2:] == [f"{100 * acc['recall'][e]:.0f}%", f"{100 * acc['precision'][e]:.0f}%"], e
    lines = format_table(summary)
    assert f"happy {100 * acc['recall']['happy']:.0f}%" in lines and ACCURACY_CAUTION in lines

    # An artifact without recorded test figures says so, and how to get them, instead of a blank table.
    write_report(str(scored), run=_run(model_accuracy({"metrics": {}})))
    page = (scored / "report.html").read_text()
    assert "records no per-emotion test accuracy" in page and "jobs/evaluate.py" in page
    assert ACCURACY_CAUTION not in page and "found (recall)" not in page


@pytest.mark.parametrize("name", sorted({n for n in SHIPPED_MODELS if n != "default"}))
def test_every_shipped_model_records_its_test_accuracy_per_emotion(name):
    meta = _shipped_meta(name)
    test = meta["metrics"]["test"]
    assert test["split"] == "PrivateTest" and test["n"] > 0
    # the figures are those of the file scoring runs by default
    assert test["engine"] in meta["engines"]
    assert set(test["per_class"]) == set(EMOTIONS)
    assert all(0 < v["recall"] <= 1 and 0 < v["precision"] <= 1 for v in test["per_class"].values())


def test_one_colour_per_emotion_in_every_chart_and_table(scored):
    from matplotlib.colors import to_hex

    assert set(EMOTION_COLORS) == set(EMOTIONS) and len(set(EMOTION_COLORS.values())) == len(EMOTIONS)
    summary = write_report(str(scored), run=_run(None))
    charts = dict(figures(summary))
    bars = charts["Emotion distribution"].axes[0].patches
    assert [to_hex(b.get_facecolor()) for b in bars] == [EMOTION_COLORS[e] for e in EMOTIONS]
    per_folder = charts["Per folder"].axes[0]
    for container in per_folder.containers:
        assert {to_hex(b.get_facecolor()) for b in container} == {EMOTION_COLORS[container.get_label()]}
    assert {c.get_label() for c in per_folder.containers} == set(EMOTIONS)
    page = (scored / "report.html").read_text()
    for e in EMOTIONS:
        assert f"background:{EMOTION_COLORS[e]}'></span>{e}" in page


def test_paths_are_shown_under_the_input_root(scored):
    summary = write_report(str(scored), run=_run(None))
    assert summary["input_root"] == ROOT
    page = (scored / "report.html").read_text()
    listed = page.split("<table class='sortable'>", 1)[1].split("</table>", 1)[0]
    cells = re.findall(r"<tr><td>(.*?)</td>", listed)
    assert cells and all(re.fullmatch(r"[ab]/img\d{4}\.jpg", c) for c in cells), cells
    errors = page.split("error rows:</p>", 1)[1]
    assert "<td>b/img0009.jpg</td>" in errors and f"{ROOT}/b/img0009.jpg" not in errors
    assert f"paths are under {ROOT}" in page


def test_summary_json_keys_are_unchanged(scored):
    write_report(str(scored), run=_run(None))
    assert set(json.loads((scored / "summary.json").read_text())) == SUMMARY_KEYS
