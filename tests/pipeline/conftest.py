"""A real small run through `pipeline.runner.submit`, made once per test session and shared by the
results, report and CLI tests: 4 rows that succeed (a 2 x 2 sweep of `iterations` x
`style_weight`, 32 px, on the real `vgg16-hed` weights) and 1 row whose content image does not
exist (an `error` row), plus a carried-through column. Tests must not modify it: copy
`<out>/results` first (see `copy_run`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

MISSING = "no-such-photo.jpg"


@dataclass(frozen=True)
class SmallRun:
    out: str
    manifest: str
    row_ids: dict[str, dict]  # row_id -> {"content", "style", "iterations", "style_weight", "tag", "ok"}
    seconds: float

    @property
    def ok_ids(self) -> set[str]:
        return {r for r, v in self.row_ids.items() if v["ok"]}

    @property
    def error_ids(self) -> set[str]:
        return {r for r, v in self.row_ids.items() if not v["ok"]}


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory, hed: str, samples: Path) -> SmallRun:
    """Build the manifest, submit it on an embedded Ray (1 worker), return what was asked."""
    from pipeline.manifest import RowSpec, read_manifest, write_manifest
    from pipeline.runner import SubmitConfig, submit

    root = tmp_path_factory.mktemp("small_run")
    content = str(samples / "content" / "tubingen.jpg")
    starry = str(samples / "style" / "starry_night.jpg")
    scream = str(samples / "style" / "the_scream.jpg")
    specs = [
        RowSpec(content, (starry,), {"size": 32, "iterations": it, "style_weight": sw}, extra={"tag": f"it{it}-sw{sw:g}"})
        for it in (2, 3)
        for sw in (10.0, 1000.0)
    ]
    specs.append(RowSpec(str(root / MISSING), (scream,), {"size": 32, "iterations": 2, "style_weight": 10.0}, extra={"tag": "broken"}))
    manifest = str(root / "small.parquet")
    write_manifest(specs, manifest)

    out = str(root / "out")
    cfg = SubmitConfig(manifest=manifest, out=out, workers=1, batch_size=4, weights=hed, lpips_weights=hed)
    summary = submit(cfg, progress=False, echo=lambda _line: None)
    assert summary.ok == 4 and summary.failed == 1, summary

    rows = read_manifest(manifest, base=_base(hed))  # the same ids submit computed
    ids = {
        r.row_id: {
            "content": r.content,
            "style": ";".join(r.styles),
            "iterations": r.params.iterations,
            "style_weight": r.params.style_weight,
            "tag": r.extra.get("tag"),
            "ok": MISSING not in r.content,
        }
        for r in rows
    }
    return SmallRun(out=summary.out, manifest=manifest, row_ids=ids, seconds=summary.seconds)


def _base(weights: str):
    from stylecore.params import Params

    return Params.from_dict({"weights": weights, "lpips_weights": weights})


@pytest.fixture()
def copy_run(small_run: SmallRun, tmp_path: Path) -> str:
    """A private copy of the run's results (images stay shared, read-only): safe to append to."""
    out = tmp_path / "out"
    shutil.copytree(Path(small_run.out) / "results", out / "results")
    return str(out)
