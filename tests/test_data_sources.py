"""Arbitrary image buckets: local trees, globs, list files and S3 (a real moto server on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_ray.config import UserError
from fer_ray.data import decode, read_labeled
from fer_ray.data.fer2013 import read_image_folders
from fer_ray.data.fetch import fetch_bytes, is_transient_error
from fer_ray.data.listing import list_images
from fer_ray.data.s3 import S3Settings, resolve_filesystem
from fer_ray.data.sources import IMAGE_SCHEMA, read_images
from tests.test_data_fer2013 import PARQUET_LABELS, basename, check_folder_rows, write_fer_folders, write_fer_parquet
from tests.test_preprocess import png_header

BUCKET = "fer-bucket"


def encode(fmt: str, level: int = 128, size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(buf, format=fmt)
    return buf.getvalue()


def write_tree(root: Path) -> dict[str, bytes]:
    """A photo tree with mixed formats, nested folders and files that are not images."""
    files = {
        "a.jpg": encode("JPEG", 10),
        "b.PNG": encode("PNG", 20),
        "sub/c.webp": encode("WEBP", 30),
        "sub/deeper/d.bmp": encode("BMP", 40),
        "sub/deeper/e.tiff": encode("TIFF", 50),
        "sub/f.gif": encode("GIF", 60),
        "notes.txt": b"not an image",  # skipped when listing a directory
        "sub/.DS_Store": b"\0\0\0\1Bud1",
        "._a.jpg": b"\0\5\26\7 macOS resource fork",  # dot files are skipped too
        ".thumbs/a.jpg": encode("JPEG", 10),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def names(df: pd.DataFrame) -> list[str]:
    return sorted(os.path.basename(p) for p in df["path"])


@contextlib.contextmanager
def user_error(kind: type[Exception], match: str):
    """The builtin error a library caller catches, which is also a UserError: one line from the CLI."""
    with pytest.raises(kind, match=match) as info:
        yield
    assert isinstance(info.value, UserError), type(info.value).__mro__


# -- listing on the driver ------------------------------------------------------------------------


def test_list_local_tree_recursive_keeps_images_only(tmp_path):
    files = write_tree(tmp_path)
    df = list_images([str(tmp_path)])
    assert list(df.columns) == ["path", "size", "mtime", "error"]
    assert names(df) == ["a.jpg", "b.PNG", "c.webp", "d.bmp", "e.tiff", "f.gif"]
    assert df["error"].isna().all() and all(os.path.isabs(p) for p in df["path"])
    sizes = dict(zip(df["path"].map(os.path.basename), df["size"], strict=True))
    assert sizes["a.jpg"] == len(files["a.jpg"]) and df["mtime"].gt(1e9).all()


def test_globs_and_explicit_files(tmp_path):
    write_tree(tmp_path)
    assert names(list_images([str(tmp_path / "sub" / "**" / "*.bmp")])) == ["d.bmp"]
    assert names(list_images([str(tmp_path / "*")])) == ["a.jpg", "b.PNG"]  # one level, images only
    with user_error(FileNotFoundError, match=r"nothing\*\.png"):
        list_images([str(tmp_path / "nothing*.png")])


def test_explicit_non_image_file_is_kept(tmp_path):
    """A file named explicitly is kept whatever its extension, so decode can say what is wrong with it."""
    write_tree(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    df = list_images([str(tmp_path / "model.onnx"), str(tmp_path / "a.jpg"), str(tmp_path / "a.jpg")])
    assert names(df) == ["a.jpg", "model.onnx"]  # duplicates are listed once


def test_list_files(tmp_path):
    write_tree(tmp_path)
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "batch.txt").write_text(
        f"# photos to score\n../a.jpg\n\n{tmp_path / 'sub' / 'c.webp'}\n../gone.jpg\n"
    )
    pd.DataFrame({"path": [str(tmp_path / "b.PNG"), str(tmp_path / "notes.txt")]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    pd.DataFrame({"path": ["sub/f.gif", "sub/missing.png"], "id": [1, 2]}).to_parquet(tmp_path / "l.parquet")
    df = list_images([str(tmp_path / "lists" / "batch.txt"), str(tmp_path / "l.csv"), str(tmp_path / "l.parquet")])
    assert names(df) == ["a.jpg", "b.PNG", "c.webp", "f.gif", "gone.jpg", "missing.png", "notes.txt"]
    errors = dict(zip(df["path"].map(os.path.basename), df["error"], strict=True))
    assert errors["gone.jpg"] == f"not found: {tmp_path / 'gone.jpg'}"
    assert errors["missing.png"] == f"not found: {tmp_path / 'sub' / 'missing.png'}"
    assert errors["notes.txt"] is None and errors["a.jpg"] is None
    (tmp_path / "nolist.csv").write_text("file\nx.jpg\n")
    with user_error(ValueError, match="no 'path' column"):
        list_images([str(tmp_path / "nolist.csv")])


def test_missing_local_input_names_it(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with user_error(FileNotFoundError, match=str(missing)):
        list_images([str(missing)])
    (tmp_path / "empty").mkdir()
    with user_error(FileNotFoundError, match="no image files"):
        list_images([str(tmp_path / "empty")])
    with user_error(ValueError, match="unsupported URI scheme 'gs'"):
        list_images(["gs://bucket/x"])


def test_fetch_bytes_per_file_failures(tmp_path):
    (tmp_path / "ok.png").write_bytes(encode("PNG"))
    (tmp_path / "big.png").write_bytes(encode("PNG", size=(400, 400)) + b"\0" * 5000)
    locked = tmp_path / "locked.png"
    locked.write_bytes(encode("PNG"))
    locked.chmod(0)
    listing = list_images([str(tmp_path)])
    listing.loc[len(listing)] = [str(tmp_path / "prior.png"), 0, None, "not found: earlier"]
    (tmp_path / "ok.png").rename(tmp_path / "moved.png")  # vanished between listing and fetching
    out = fetch_bytes(listing, None, max_bytes=4000).set_index(listing["path"].map(os.path.basename))
    assert len(out) == len(listing) == 4
    assert out.loc["ok.png", "error"] == f"not found: {tmp_path / 'ok.png'}"
    assert "over the limit of 4,000" in out.loc["big.png", "error"]
    assert out.loc["prior.png", "error"] == "not found: earlier"
    if os.geteuid() != 0:  # root reads anything
        assert out.loc["locked.png", "error"].startswith("permission denied")
    assert out["image"].isna().sum() == 4 - (os.geteuid() == 0)


def test_s3_settings(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:2")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = S3Settings.from_env()
    assert (s.endpoint_url, s.region, s.access_key) == ("http://127.0.0.1:2", "eu-west-1", "k")
    assert "secret" not in repr(s)
    fs_args = s.filesystem().__reduce__()[1][0]  # pyarrow exposes its options only through pickling
    assert (fs_args["endpoint_override"], fs_args["scheme"], fs_args["region"]) == ("127.0.0.1:2", "http", "eu-west-1")
    assert s.client().meta.endpoint_url == "http://127.0.0.1:2"
    # Without an endpoint in the settings the client goes to AWS, whatever the environment says.
    assert "amazonaws.com" in S3Settings(region="eu-west-1").client().meta.endpoint_url
    with user_error(ValueError, match="endpoint_url"):
        S3Settings(endpoint_url="127.0.0.1:9000")
    with user_error(ValueError, match="together"):
        S3Settings(access_key="k")


# -- through Ray Data ---------------------------------------------------------------------------


def bad_corpus() -> dict[str, bytes]:
    """name -> bytes; every one must come back as exactly one error row."""
    full = encode("JPEG", size=(64, 64))
    return {
        "zero.jpg": b"",
        "truncated.jpg": full[: len(full) // 2],
        "random.png": np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "text.jpg": b"just some text\n",
        "doc.pdf": b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n",
        "bomb.png": png_header(30000, 30000),
    }


def test_read_images_local_with_bad_corpus(ray_local, tmp_path):
    write_tree(tmp_path / "good")
    for name, data in bad_corpus().items():
        (tmp_path / "bad" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "bad" / name).write_bytes(data)
    inputs = [str(tmp_path / "good")] + [str(tmp_path / "bad" / n) for n in bad_corpus()] + [str(tmp_path / "l.txt")]
    (tmp_path / "l.txt").write_text("gone.png\n")
    rows = decode(read_images(inputs, max_bytes=10_000_000)).drop_columns(["face"]).to_pandas()
    assert set(rows.columns) == set(IMAGE_SCHEMA.names) - {"image"}  # decode drops the bytes
    n_in = 6 + len(bad_corpus()) + 1
    assert len(rows) == n_in and rows["path"].is_unique  # counts in = rows out
    errors = dict(zip(rows["path"].map(os.path.basename), rows["error"], strict=True))
    assert all(pd.isna(errors[n]) for n in ["a.jpg", "b.PNG", "c.webp", "d.bmp", "e.tiff", "f.gif"])
    assert errors["gone.png"].startswith("not found")
    assert "empty" in errors["zero.jpg"] and "truncated" in errors["truncated.jpg"]
    assert "%PDF" in errors["doc.pdf"] and "just som" in errors["text.jpg"] and "pixels" in errors["bomb.png"]
    assert len({errors[n] for n in bad_corpus()}) == len(bad_corpus())  # a distinct reason each
    assert (rows["label"] == -1).all() and rows["split"].isna().all()


@pytest.fixture(scope="module")
def bucket(ray_local, s3_server, tmp_path_factory):
    """A moto bucket with a photo tree, a corrupt file, a list file and a FER image-folder copy.

    Ray is started before ``s3_server`` sets the AWS variables, so Ray's workers never see
    them: this checks that the settings travel with the tasks.
    """
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    objects = {
        "photos/a.jpg": encode("JPEG", 10),
        "photos/b.png": encode("PNG", 20),
        "photos/sub/c.webp": encode("WEBP", 30),
        "photos/corrupt.jpg": encode("JPEG", size=(64, 64))[:300],  # truncated
        "photos/notes.txt": b"not listed from a prefix",
        "photos/sub/": b"",  # a "folder" placeholder object, as consoles create
        "lists/batch.txt": b"../photos/a.jpg\nmissing.jpg\ns3://%s/photos/notes.txt\n" % BUCKET.encode(),
    }
    objects["parquet/fer2013.parquet"] = write_fer_parquet(tmp_path_factory.mktemp("pq") / "f.parquet").read_bytes()
    root = write_fer_folders(tmp_path_factory.mktemp("fer"))
    for p in root.rglob("*.jpg"):
        objects[f"fer/{p.relative_to(root).as_posix()}"] = p.read_bytes()
    for key, data in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
    return objects


def test_list_s3(bucket):
    s = S3Settings.from_env()
    df = list_images([f"s3://{BUCKET}/photos"], s)
    assert sorted(df["path"]) == [f"s3://{BUCKET}/photos/{k}" for k in ("a.jpg", "b.png", "corrupt.jpg", "sub/c.webp")]
    assert df["size"].tolist() == [len(bucket[p[len(f"s3://{BUCKET}/") :]]) for p in df["path"]]
    assert df["mtime"].gt(1e9).all() and df["error"].isna().all()
    df = list_images([f"s3://{BUCKET}/lists/batch.txt", f"s3://{BUCKET}/photos/*.png"], s)
    errors = dict(zip(df["path"], df["error"], strict=True))
    assert errors == {
        f"s3://{BUCKET}/photos/a.jpg": None,
        f"s3://{BUCKET}/lists/missing.jpg": f"not found: s3://{BUCKET}/lists/missing.jpg",
        f"s3://{BUCKET}/photos/notes.txt": None,  # named explicitly
        f"s3://{BUCKET}/photos/b.png": None,
    }
    fs, path = resolve_filesystem(f"s3://{BUCKET}/photos/a.jpg", s)  # the pyarrow side, for Parquet on S3
    assert fs.get_file_info(path).size == len(bucket["photos/a.jpg"])


def test_missing_bucket_and_prefix(bucket, s3_server):
    s = S3Settings.from_env()
    with user_error(FileNotFoundError, match=r"bucket 'no-such-bucket' does not exist at endpoint " + s3_server):
        list_images(["s3://no-such-bucket/x"], s)
    with user_error(FileNotFoundError, match=rf"nothing at 's3://{BUCKET}/nope/'.*no object or prefix"):
        list_images([f"s3://{BUCKET}/nope/"], s)
    closed_port = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
    with user_error(ConnectionError, match="cannot reach S3 at endpoint http://127.0.0.1:9"):
        list_images([f"s3://{BUCKET}/photos"], closed_port)


def test_read_images_from_s3(bucket):
    inputs = [f"s3://{BUCKET}/photos", f"s3://{BUCKET}/lists/batch.txt"]
    rows = decode(read_images(inputs, S3Settings.from_env())).to_pandas()
    # 4 listed under photos/ + from the list: a.jpg again (listed once), missing.jpg, notes.txt
    assert len(rows) == 6 and rows["path"].is_unique
    by_name = rows.set_index(rows["path"].map(basename))
    assert by_name.loc["missing.jpg", "error"] == f"not found: s3://{BUCKET}/lists/missing.jpg"
    assert "not a recognised image" in by_name.loc["notes.txt", "error"]
    assert "corrupt or truncated" in by_name.loc["corrupt.jpg", "error"]
    for name, level in (("a.jpg", 10), ("b.png", 20), ("c.webp", 30)):
        assert pd.isna(by_name.loc[name, "error"])
        assert abs(int(np.asarray(by_name.loc[name, "face"]).mean()) - level) <= 2
    assert by_name.loc["b.png", "size"] == len(bucket["photos/b.png"])
    mtime = by_name["mtime"].to_numpy(dtype=float, na_value=np.nan)  # S3 LastModified; unknown for missing.jpg
    assert np.isfinite(mtime).sum() == 5 and (mtime[np.isfinite(mtime)] > 1e9).all()


def test_read_image_folders_from_s3(bucket):
    rows = decode(read_image_folders(f"s3://{BUCKET}/fer", settings=S3Settings.from_env())).drop_columns(["face"])
    check_folder_rows(rows.to_pandas())


def test_read_fer_parquet_from_s3(bucket):
    # Ray's read_parquet alone would ignore AWS_ENDPOINT_URL and go to AWS; the reader passes the endpoint.
    ds = read_labeled(f"s3://{BUCKET}/parquet/fer2013.parquet")
    assert sorted(ds.select_columns(["label"]).to_pandas()["label"].tolist()) == PARQUET_LABELS


# -- S3 listing without Ray (after the tests above, so that Ray starts before moto's variables are set) ---------

HIDDEN_BUCKET = "fer-hidden"


@pytest.fixture(scope="module")
def hidden_bucket(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=HIDDEN_BUCKET)
    for key in ("p/a.jpg", "p/.thumbs/a.jpg", "p/sub/b.png", "p/sub/._b.png", "p/.DS_Store"):
        client.put_object(Bucket=HIDDEN_BUCKET, Key=key, Body=encode("PNG"))
    return HIDDEN_BUCKET


def test_s3_prefixes_and_patterns_skip_dot_files_like_local_ones(hidden_bucket, tmp_path):
    s = S3Settings.from_env()
    root = f"s3://{hidden_bucket}/p"
    assert sorted(list_images([root], s)["path"]) == [f"{root}/a.jpg", f"{root}/sub/b.png"]
    # "**" does not descend into dot folders, on S3 as on disk (glob.glob's rule)
    assert list_images([f"{root}/**/*.jpg"], s)["path"].tolist() == [f"{root}/a.jpg"]
    write_tree(tmp_path)
    assert names(list_images([str(tmp_path / "**" / "*.jpg")])) == ["a.jpg"]
    # a dot folder spelled out in the pattern, or an object named explicitly, is what was asked for
    assert list_images([f"{root}/.thumbs/*.jpg"], s)["path"].tolist() == [f"{root}/.thumbs/a.jpg"]
    assert list_images([f"{root}/sub/._b.png"], s)["error"].isna().all()


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """This process's AWS chain emptied: no keys, no profile files, no instance role, no cached session."""
    import boto3

    from fer_ray.data.s3 import client_for

    for k in [k for k in os.environ if k.startswith("AWS_") and "ENDPOINT" not in k and "REGION" not in k]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it keeps credentials once resolved
    client_for.cache_clear()  # so do cached clients
    yield
    client_for.cache_clear()


def test_missing_credentials_say_so(hidden_bucket, s3_server, no_aws_credentials):
    settings = S3Settings(endpoint_url=s3_server, region="us-east-1")  # what the driver sends to tasks
    with user_error(PermissionError, match=r"no AWS credentials found .* AWS_PROFILE"):
        list_images([f"s3://{hidden_bucket}/p"], settings)
    # A worker without credentials: every row says so, and the next run (credentials fixed) retries them.
    listing = pd.DataFrame({"path": [f"s3://{hidden_bucket}/p/a.jpg"], "size": [100], "mtime": [0.0], "error": [None]})
    (error,) = fetch_bytes(listing, settings, max_bytes=10_000)["error"]
    assert is_transient_error(error) and "no AWS credentials on the worker" in error
