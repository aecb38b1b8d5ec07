"""Continuous training on penguins arriving by year as data spans: train on span 1 (2007),
serve with request logging, monitor the 2008-2009 traffic, retrain warm-started on the
window of spans 1-3 when spans 2 (2008) and 3 (2009) arrive, bless on span 3's eval split,
and swap the better model in under load without a failed request."""

import csv
import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import portpicker
import pytest
import yaml
from monitor_testlib import serve_and_log

from pipeline import cli, local_runner
from pipeline.config import load_config
from pipeline.data import read_source
from serving.client import ServingClient
from serving.config import ModelConfig
from serving.manager import State
from serving.server import ModelServer, ServerOptions

pytestmark = pytest.mark.e2e


def _rows(years: set[str]) -> list[dict]:
    rows = csv.DictReader(io.StringIO(read_source("palmerpenguins")))
    return [r for r in rows if r["year"] in years]


def _write_csv(path, rows) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _write_span(root, number: int, rows) -> None:
    (root / f"span-{number}").mkdir(parents=True, exist_ok=True)
    _write_csv(root / f"span-{number}" / "penguins.csv", rows)


def _config(tmp_path, repo_root, data, drift="warn", thresholds=None):
    raw = yaml.safe_load((repo_root / "configs" / "penguins.yaml").read_text())
    raw["schema_file"] = str(repo_root / "configs" / raw["schema_file"])
    raw["data"]["source"] = str(data)
    raw["data"]["spans"] = {"window": 3, "drift": drift}
    raw["monitoring"] = {"thresholds": thresholds or {}}
    # Cheap: one short trial, a short fit; the bar is low for a model of 110 birds.
    raw["tuner"].update(max_trials=1, epochs=3)
    raw["training"].update(epochs=8)
    raw["evaluation"]["lower_bound"] = 0.5
    # 22 eval birds in span 1: a per-sex slice gate at 0.85 would judge a handful of birds.
    raw["evaluation"]["gates"] = []
    raw["quantization"]["enabled"] = False
    path = tmp_path / f"penguins-{drift}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, output_root=str(tmp_path / "out"))


def _summary(tmp_path) -> dict:
    return json.loads((tmp_path / "out" / "summary.json").read_text())


def _accuracy(client: ServingClient, rows: list[dict]) -> float:
    out = client.predict_rows("penguins", rows)
    predicted = [
        c[i].decode() for c, i in zip(out["classes"], np.argmax(out["scores"], 1), strict=True)
    ]
    return float(np.mean([p == r["species"] for p, r in zip(predicted, rows, strict=True)]))


class _Hammer(threading.Thread):
    """Predicts on rows, 8 at a time round and round, until stopped; keeps every failure."""

    def __init__(self, address: str, rows: list[dict]):
        super().__init__(daemon=True)
        self._address, self._rows = address, rows
        self.calls, self.failures = 0, []
        self.stop = threading.Event()

    def run(self) -> None:
        with ServingClient(self._address) as client:
            while not self.stop.is_set():
                start = self.calls * 8 % len(self._rows)
                try:
                    client.predict_rows("penguins", self._rows[start : start + 8])
                    self.calls += 1
                except Exception as err:  # noqa: BLE001 - every failure is what the test counts
                    self.failures.append(repr(err))


def _spans(section, key) -> list[int]:
    return [entry["span"] for entry in section[key]]


def test_new_spans_retrain_warm_started_and_swap_in_without_a_failed_request(tmp_path, repo_root):
    data = tmp_path / "penguins"
    _write_span(data, 1, _rows({"2007"}))
    config = _config(tmp_path, repo_root, data)
    first = local_runner.run(config)
    assert first["status"] == "succeeded", first["error"]
    assert first["warm_start"]["from"] is None
    assert _spans(first["spans"], "ingested") == [1] and _spans(first["spans"], "trained") == [1]
    assert first["spans"]["evaluated"]["span"] == 1 and first["spans"]["drift"] is None
    old_version = int(first["pushed"]["version"])

    new_rows = [r for r in _rows({"2008", "2009"}) if "NA" not in r.values()]
    serving_dir = local_runner.serving_dir(config)
    # 2008-2009 traffic, logged by the serving model (stopped, so the logs are complete).
    logs = serve_and_log(serving_dir, new_rows, tmp_path / "traffic")
    options = ServerOptions(
        grpc_port=portpicker.pick_unused_port(), rest_port=0, poll_interval_s=0.2
    )
    with ModelServer([ModelConfig("penguins", serving_dir)], options) as server:
        address = f"127.0.0.1:{server.grpc_port}"
        with ServingClient(address) as client:
            assert client.wait_until_available("penguins", timeout_s=60) == old_version
            old_accuracy = _accuracy(client, new_rows)
            argv = ["monitor", "--retrain", "--config", config.source_file]
            argv += ["--output-root", config.output_root]
            first_run = _summary(tmp_path)["run_id"]

            # Garbage never triggers a retrain: a corrupt log is refused before any run.
            garbage = tmp_path / "garbage"
            garbage.mkdir()
            (garbage / "requests-00000.tfrecord").write_bytes(b"not a TFRecord")
            assert cli.main([*argv, "--logs", str(garbage)]) == 1
            assert _summary(tmp_path)["run_id"] == first_run

            # A failed retrain (span 2 with a species the schema does not know) pushes
            # nothing: the served version stays.
            bad = _rows({"2008"})
            bad[-1] = {**bad[-1], "species": "Emperor"}
            _write_span(data, 2, bad)
            assert cli.main([*argv, "--logs", logs]) == 1
            failed = _summary(tmp_path)
            assert failed["status"] == "failed" and "AnomalyGate" in failed["error"]
            assert failed["monitoring"]["trigger"] == "new span"
            assert failed["monitoring"]["new_spans"] == [2]
            assert os.listdir(serving_dir) == [str(old_version)]
            assert client.wait_until_available("penguins", timeout_s=5) == old_version
            # The birds of 2008 and 2009 arrive as spans 2 (corrected) and 3.
            _write_span(data, 2, _rows({"2008"}))
            _write_span(data, 3, _rows({"2009"}))
            hammer = _Hammer(address, new_rows)
            hammer.start()
            code = cli.main([*argv, "--logs", logs])
            summary = _summary(tmp_path)
            new_version = int(summary["pushed"]["version"])
            client.wait_until_available("penguins", timeout_s=60, version=new_version)
            # Requests keep flowing after the swap too.
            before = hammer.calls
            while hammer.calls < before + 20 and hammer.is_alive():
                hammer.join(0.05)
            hammer.stop.set()
            hammer.join()
            new_accuracy = _accuracy(client, new_rows)
            statuses = {s.version: s.state for s in client.get_model_status("penguins")}

    assert code == 0
    assert summary["status"] == "succeeded", summary["error"]
    monitoring = summary["monitoring"]
    # As measured: the 2008-2009 traffic is within the thresholds of 2007's (no false
    # alarm); the changed span 2 and the new span 3 are what trigger the retrain.
    assert monitoring["trigger"] == "new span"
    assert monitoring["new_spans"] == [2, 3]
    assert monitoring["drift"]["drifted_features"] == []
    assert monitoring["drift"]["serving"]["rows"] == len(new_rows)
    assert os.path.isfile(monitoring["drift_file"])
    warm = summary["warm_start"]
    assert warm["from"] is not None and warm["reason"] == "the last blessed model"
    assert "scores" in warm["layers_loaded"]
    # The run's report says where it started and why it ran.
    report = Path(summary["report"]).read_text()
    section = report[report.index('<section id="continuous-training">') :]
    assert f"<td>warm start from</td><td>{warm['from']}</td>" in section
    assert "Trigger: <b>new span</b>" in section and "<td>island</td>" in section
    assert summary["evaluation"]["blessed"] is True
    spans = summary["spans"]
    # Only the new and the changed span are ingested; the window trains on all three and
    # the newest span's eval split decides blessing.
    assert _spans(spans, "ingested") == [2, 3]
    assert _spans(spans, "trained") == [1, 2, 3]
    for entry, year in zip(spans["trained"], ("2007", "2008", "2009"), strict=True):
        assert sum(entry["rows"].values()) == len(_rows({year})), (year, entry)
    assert spans["evaluated"]["span"] == 3
    assert summary["training"]["train_examples"] == sum(
        e["rows"]["train"] for e in spans["trained"]
    )
    slices = summary["evaluation"]["slices"]
    overall = sum(r["example_count"] for r in slices if r["feature"] == "island")
    assert overall == spans["evaluated"]["rows"]["eval"]
    # Span 3 against span 2, every numeric and categorical feature and the label, by the
    # monitor's comparators; as between the years' traffic above, none drifts.
    drift = spans["drift"]
    assert (drift["span"], drift["previous_span"], drift["action"]) == (3, 2, "warn")
    assert set(drift["features"]) == {*config.features, "species"}
    assert drift["features"]["island"]["statistic"] == "L_infinity"
    assert drift["features"]["flipper_length_mm"]["statistic"] == "jensen_shannon_divergence"
    assert drift["drifted_features"] == []
    assert new_version > old_version
    # The new version serves; the old one was unloaded once it did.
    assert statuses == {old_version: State.END, new_version: State.AVAILABLE}
    assert hammer.failures == []
    assert hammer.calls > 20
    assert new_accuracy > old_accuracy, (old_accuracy, new_accuracy)

    # data.spans.drift stop, with island's threshold under the ~0.08 measured between the
    # years: the run fails before anything trains, naming span, feature and value; nothing
    # is ingested again (ML Metadata holds every span) and nothing is pushed.
    strict = _config(tmp_path, repo_root, data, drift="stop", thresholds={"island": 0.05})
    versions = sorted(os.listdir(serving_dir))
    stopped = local_runner.run(strict)
    assert stopped["status"] == "failed"
    island = stopped["spans"]["drift"]["features"]["island"]["value"]
    # Under the default threshold (0.25) that let the retrain above through, over 0.05.
    assert 0.05 < island < 0.25
    assert f"span 3 drifted from span 2: island L_infinity {island:.3f}" in stopped["error"]
    assert "> 0.05" in stopped["error"] and "data.spans.drift is stop" in stopped["error"]
    assert stopped["components"] == {} and stopped["spans"]["ingested"] == []
    assert stopped["spans"]["drift"]["drifted_features"] == ["island"]
    assert sorted(os.listdir(serving_dir)) == versions
