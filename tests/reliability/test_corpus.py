"""Every case of the malformed corpus (:mod:`corpus`) through the real ``medsat-sr`` command.

For each case: a medsat_sr error with a clear one-line message (naming the
input when the case is about an input, and the problem), the documented exit
code (2 bad input or options, 3 unwritable output), no traceback without
``--debug``, and nothing written. Known failures are strict xfails whose
reason names the module to fix.

The whole input corpus also goes through ``medsat-sr batch`` at once (every
input fails alone and is recorded; exit 4), and a few cases run as real
processes to show what a user's terminal gets.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import Case, build_corpus, memory_guard, snapshot  # noqa: E402

from medsat_sr.batch import read_jsonl  # noqa: E402
from medsat_sr.cli import main  # noqa: E402

_ROOT = Path(tempfile.mkdtemp(prefix="medsat_corpus_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
CASES = build_corpus(_ROOT)
def _params() -> list[object]:
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=f"known bug: {c.known_bug}")] if c.known_bug else []
        out.append(pytest.param(c, id=c.name, marks=marks))
    return out


def test_the_corpus_is_large_and_covers_every_kind() -> None:
    kinds = {c.category for c in CASES}
    assert kinds == {"nifti", "dicom", "geotiff", "model", "options", "output"}
    assert len(CASES) >= 40
    inputs = [c for c in CASES if c.input is not None]
    assert len({c.input for c in inputs}) == len(inputs)
    print(f"{len(CASES)} malformed cases, {sum(c.known_bug is not None for c in CASES)} known failures")


@pytest.mark.parametrize("case", _params())
def test_malformed_case(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(case.watch)
    try:
        with memory_guard():
            code = main(case.argv)
        err = capsys.readouterr().err
    finally:
        after = snapshot(case.watch)
        new = sorted(set(after) - set(before)) + sorted(p for p in before if p in after and after[p] != before[p])
        for p in new:  # keep the next cases clean even when this one fails
            shutil.rmtree(p, ignore_errors=True)
            Path(p).unlink(missing_ok=True)
    lines = [ln for ln in err.splitlines() if ln.startswith("medsat-sr: ")]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("medsat-sr: error: "), f"exit {code}: {err!r}"
    assert code == case.code, f"exit {code}, expected {case.code}: {lines[0]}"
    assert case.expect.lower() in lines[0].lower(), f"{lines[0]!r} lacks {case.expect!r}"
    if case.input is not None:
        assert case.input.name in lines[0], f"{lines[0]!r} does not name the input {case.input.name}"
    assert not new, f"left behind: {new}"


def test_the_whole_input_corpus_in_one_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each malformed input fails alone with its error recorded; the batch exits 4 and writes only batch.jsonl."""
    inputs = [c for c in CASES if c.input is not None and c.known_bug is None]
    out = tmp_path / "out"
    with memory_guard():
        code = main(["batch", *(str(c.input) for c in inputs), "-o", str(out), "--method", "cubic", "--scale", "2", "-q"])
    err = capsys.readouterr().err
    assert code == 4 and "Traceback" not in err
    assert f"{len(inputs)} of {len(inputs)} inputs failed" in err
    lines = read_jsonl(out / "batch.jsonl")
    assert len(lines) == len(inputs) and all(ln["status"] == "failed" for ln in lines)
    by_input = {ln["input"]: ln for ln in lines}
    for c in inputs:
        ln = by_input[str(c.input)]
        assert c.expect.lower() in ln["error"].lower(), (c.name, ln["error"])
        assert ln["error_type"] in ("FormatError", "GeometryError", "DataError"), (c.name, ln["error_type"])
        assert ln["error_type"] + ":" not in ln["error"] and "internal error" not in ln["error"]
    assert {p.name for p in out.iterdir()} == {"batch.jsonl"}


@pytest.mark.slow
def test_real_processes_print_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = [c for c in CASES if c.input is not None and c.known_bug is None]
    nifti = next(c for c in bad if c.name == "nifti/truncated_gz")
    exe = [sys.executable, "-m", "medsat_sr"]
    p = subprocess.run([*exe, *nifti.argv], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"medsat-sr: error: {nifti.input}: ")
    picks = [c for c in bad if c.name in ("dicom/truncated_slice", "geotiff/bad_ifd_offset", "nifti/nan_affine")]
    p = subprocess.run(
        [*exe, "batch", *(str(c.input) for c in picks), "-o", str(tmp_path / "out"), "--method", "cubic", "--scale", "2", "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 4 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.splitlines()[0] == "medsat-sr: error: 3 of 3 inputs failed:"
    assert all(any(str(c.input) in ln for ln in p.stderr.splitlines()[1:]) for c in picks)
