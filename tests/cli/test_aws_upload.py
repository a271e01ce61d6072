"""`imgclf aws upload` against the moto world: the checks before anything is sent, the resumable upload,
the manifest last, and the execution the manifest's EventBridge event starts (the real ASL and handlers
run it)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
from cli_world import STACK, pw

from imgclf_cli import upload
from imgclf_cli.errors import ExitCode
from imgclf_cli.main import main

MANIFEST_KEY = "datasets/dogImages/manifest.json"


def _upload(directory: Path, *extra: str) -> int:
    return main(["aws", "upload", str(directory), "--stack", STACK, "--wait", "30", *extra])


def _images(directory: Path) -> dict[str, Path]:
    return {f"datasets/dogImages/{p.relative_to(directory).as_posix()}": p
            for p in sorted(directory.rglob("*.jpg"))}


def test_upload_then_the_manifest_then_the_run(world, stack, manifest_trigger, dataset_dir, s3_writes, capsys):
    directory = dataset_dir()
    images = _images(directory)
    assert _upload(directory, "--version", "2026-12-01") == ExitCode.OK
    out = capsys.readouterr().out

    # Every image, then the manifest, last (the pipeline's own writes, e.g. the training source, aside).
    written = _dataset_writes(s3_writes)
    assert written[-1] == MANIFEST_KEY
    assert sorted(written[:-1]) == sorted(images)
    # S3's own SHA-256 of each stored object is the file's.
    for key, path in images.items():
        head = world.s3.head_object(Bucket=pw.BUCKET, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
    manifest = json.loads(world.s3.get_object(Bucket=pw.BUCKET, Key=MANIFEST_KEY)["Body"].read())
    assert manifest == {"schema_version": 1, "version": "2026-12-01"}

    # The execution it printed is the one the manifest's event started, and the pipeline accepts the upload.
    [arn] = re.findall(r"^execution: (\S+)$", out, re.MULTILINE)
    assert manifest_trigger == [arn]
    assert f"imgclf aws watch --stack {STACK} {arn}" in out
    event = json.loads(world.sfn.describe_execution(executionArn=arn)["input"])
    assert (event["detail"]["bucket"]["name"], event["detail"]["object"]["key"]) == (pw.BUCKET, MANIFEST_KEY)
    finished = _wait(world, arn)
    assert finished["status"] == "SUCCEEDED", finished
    assert "Validate" in world.states_entered(arn) and "Succeeded" in world.states_entered(arn)

    # A second upload of the same folder sends nothing, and starts nothing.
    s3_writes.clear()
    assert _upload(directory, "--version", "2026-12-01") == ExitCode.OK
    out = capsys.readouterr().out
    assert _dataset_writes(s3_writes) == []
    assert f"0 file(s) to upload (0 bytes), {len(images)} already there" in out
    assert "is unchanged" in out
    assert manifest_trigger == [arn]


def _dataset_writes(keys: list[str]) -> list[str]:
    return [key for key in keys if key.startswith("datasets/")]


def _wait(world, arn: str, timeout: float = 60.0) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = world.sfn.describe_execution(executionArn=arn)
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.05)
    raise AssertionError(f"{arn} still running")


def test_an_interrupted_upload_resumes(world, stack, manifest_trigger, dataset_dir, s3_writes, capsys):
    directory = dataset_dir()
    images = _images(directory)
    keys = sorted(images)
    # Two files made it before the interruption (as this command stores them), and one object has the
    # right size but other bytes (a different version of that file).
    for key in keys[:2]:
        world.s3.put_object(Bucket=pw.BUCKET, Key=key, Body=images[key].read_bytes(), ChecksumAlgorithm="SHA256")
    stale = bytearray(images[keys[2]].read_bytes())
    stale[-3] ^= 0xFF
    world.s3.put_object(Bucket=pw.BUCKET, Key=keys[2], Body=bytes(stale), ChecksumAlgorithm="SHA256")
    s3_writes.clear()

    assert _upload(directory) == ExitCode.OK
    written = _dataset_writes(s3_writes)
    assert sorted(written[:-1]) == keys[2:]  # the stale one again, and the ones not yet there
    assert written[-1] == MANIFEST_KEY
    assert world.s3.get_object(Bucket=pw.BUCKET, Key=keys[2])["Body"].read() == images[keys[2]].read_bytes()
    assert len(manifest_trigger) == 1
    assert "execution: " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: shutil.rmtree(d / "test"), "missing splits: test"),
        (lambda d: shutil.rmtree(d / "valid" / "002.Afghan_hound"), "class folders differ between splits"),
        (lambda d: (d / "manifest.json").write_text('{"overrides": {"epoch": 3}}'), "unknown overrides ['epoch']"),
        (lambda d: (d / "manifest.json").write_text('{"overrides": {"max_jobs": 0}}'), "max_jobs must be >= 1"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "not valid UTF-8 JSON"),
        (lambda d: [p.write_bytes(b"not an image") for p in (d / "train" / "001.Affenpinscher").iterdir()],
         "class folder(s) with no readable image: ['001.Affenpinscher']"),
    ],
    ids=["no-test-split", "class-missing", "unknown-override", "bad-override", "bad-json", "unreadable-class"],
)
def test_a_bad_dataset_is_refused_before_anything_is_sent(world, stack, dataset_dir, s3_writes, capsys, damage,
                                                         message):
    directory = dataset_dir()
    damage(directory)
    assert _upload(directory) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "refused before uploading" in err and message in err, err
    assert s3_writes == []
    assert world.s3.list_objects_v2(Bucket=pw.BUCKET).get("KeyCount", 0) == 0


def test_the_stack_defaults_come_from_the_deployed_state_machine(world):
    from mlpipeline.settings import Settings

    defaults = upload.stack_defaults(world.sfn, world.state_machine_arn)
    assert defaults is not None
    assert set(defaults) == {f for f in Settings.__dataclass_fields__}
    assert defaults["max_jobs"] == pw.parameter_defaults()["MaxTuningJobs"]


def test_no_execution_within_the_wait_is_a_timeout(world, stack, dataset_dir, capsys):
    # No trigger fixture: the bucket sends no events (EventBridge notifications off), so nothing starts.
    assert _upload(dataset_dir(), "--wait", "0.2") == ExitCode.TIMED_OUT
    assert "no execution" in capsys.readouterr().err


def test_composite_checksum_of_a_multipart_upload(tmp_path):
    """For a file uploaded in parts, S3 reports the SHA-256 of the parts' SHA-256s, with "-<parts>"."""
    data = bytes(range(256)) * (upload.MULTIPART_BYTES // 256) + b"tail"
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    parts = [data[: upload.MULTIPART_BYTES], data[upload.MULTIPART_BYTES:]]
    digest = hashlib.sha256(b"".join(hashlib.sha256(part).digest() for part in parts)).digest()
    expected = base64.b64encode(digest).decode() + "-2"
    assert upload.s3_sha256(path) == expected
    assert upload.same_checksum(expected, expected)
    assert upload.same_checksum(expected.split("-")[0], expected)  # moto leaves out the part count
    assert not upload.same_checksum(expected.replace("-2", "-3"), expected)
    assert not upload.same_checksum(upload.s3_sha256(data), expected)
