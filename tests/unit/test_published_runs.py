"""The device presets' efficiencies reproduce the published runs they come from."""

from __future__ import annotations

import pytest

from gradsync.core.devices import DATASHEETS
from gradsync.planning.published import PUBLISHED_RUNS, PublishedRun, fit_efficiency, predict_run


@pytest.mark.parametrize("run", PUBLISHED_RUNS, ids=lambda r: r.device)
def test_each_preset_predicts_the_mfu_of_its_published_run(run: PublishedRun) -> None:
    sheet = DATASHEETS[run.device]
    assert abs(fit_efficiency(run) - sheet.efficiency) < 0.01
    assert predict_run(run, sheet.efficiency).mfu == pytest.approx(run.mfu, rel=0.03)
    assert "fitted to" in sheet.efficiency_source


def test_published_mfu_is_recomputed_from_tokens_per_second() -> None:
    a100 = next(r for r in PUBLISHED_RUNS if r.device == "a100-80gb")
    assert a100.mfu == pytest.approx(0.582, abs=0.002)  # the MFU torchtitan printed beside 2,973 WPS
    assert {r.device for r in PUBLISHED_RUNS} <= set(DATASHEETS)
