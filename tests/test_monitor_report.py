"""The pipeline report's "Continuous training" section: where the Trainer started and the
drift that made a monitor start the run, with the drifted features' figures inlined."""

from __future__ import annotations

import re

import matplotlib.image
import numpy as np

from pipeline import report


def _summary(tmp_path, warm_start, monitoring):
    return {
        "pipeline": "penguins",
        "run_id": "r2",
        "status": "succeeded",
        "error": None,
        "seconds": 10.0,
        "components": {},
        "warm_start": warm_start,
        "monitoring": monitoring,
    }


def _monitoring(tmp_path):
    figure = tmp_path / "figures" / "island.png"
    figure.parent.mkdir()
    matplotlib.image.imsave(figure, np.random.default_rng(0).random((20, 30)))
    entry = {"role": "feature", "threshold": 0.25}
    return {
        "trigger": "drift and new data",
        "drift_file": str(tmp_path / "drift.json"),
        "new_data": True,
        "data_fingerprint": "f",
        "drift": {
            "served_version": "1700000000",
            "serving": {"rows": 168, "source": "/logs/penguins"},
            "features": {
                "island": {
                    **entry,
                    "statistic": "L_infinity",
                    "value": 0.51,
                    "drifted": True,
                    "figure": str(figure),
                },
                "bill_length_mm": {
                    **entry,
                    "statistic": "jensen_shannon_divergence",
                    "value": 0.07,
                    "drifted": False,
                },
            },
            "drifted_features": ["island"],
        },
    }


def _section(page: str) -> str:
    return re.search(r'<section id="continuous-training">(.*?)</section>', page).group(1)


def test_a_retrain_shows_its_warm_start_and_the_drift_that_triggered_it(tmp_path):
    warm = {
        "from": "/out/Quantization/model/7",
        "reason": "the last blessed model",
        "layers_loaded": ["dense_1", "species"],
        "layers_skipped": {"dense": "shapes changed: (9, 8) -> (10, 8)"},
    }
    page = report.render(_summary(tmp_path, warm, _monitoring(tmp_path)))
    section = _section(page)
    assert '<a href="#continuous-training">Continuous training</a>' in page
    assert "<td>warm start from</td><td>/out/Quantization/model/7</td>" in section
    assert "<td>layers loaded</td><td>dense_1, species</td>" in section
    assert "dense (shapes changed: (9, 8) -&gt; (10, 8))" in section
    assert "Trigger: <b>drift and new data</b>" in section
    assert f'href="file://{tmp_path}/report.html"' in section
    assert (
        "<tr class='fail'><td>island</td><td>feature</td><td>L_infinity</td><td>0.5100</td>"
        "<td>0.2500</td><td>drift</td></tr>"
    ) in section
    assert "<tr><td>bill_length_mm</td>" in section
    # Only the drifted feature's figure, inlined from the monitor's figures folder.
    assert re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', section) == [
        "drift of island"
    ]


def test_a_run_by_hand_from_scratch_says_so(tmp_path):
    scratch = {"from": None, "reason": "training.warm_start is false: from scratch"}
    section = _section(report.render(_summary(tmp_path, scratch, None)))
    assert "<td>warm start from</td><td>nothing: trained from scratch</td>" in section
    assert "Started by hand, not by a monitor." in section
    section = _section(report.render(_summary(tmp_path, None, None)))
    assert "No warm start and no monitor trigger" in section
