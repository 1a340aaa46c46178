import json

import numpy as np
import pytest

from toolchain.errors import HealthError
from toolchain.health.assess import HealthThresholds, assess
from toolchain.health.reference import build_reference
from toolchain.health.render import markdown, plot_trend
from toolchain.health.sketch import SketchBuilder


@pytest.fixture
def reference(rng, make_outputs):
    p, y = make_outputs(rng, 600)
    return build_reference(p, np.arange(len(y)), y)


def _run(p, reference, failed=0, **thresholds):
    builder = SketchBuilder(10, reference.temperature)
    for row in p:
        builder.add(row[None])
    for _ in range(failed):
        builder.fail()
    return assess(builder.build(), reference, HealthThresholds(**thresholds), {"classes": list("abcdefghij")})


def test_same_distribution_is_ok_and_one_class_is_drift(rng, make_outputs, reference):
    same, _ = make_outputs(rng, 400)
    report = _run(same, reference)
    assert report.verdict == "ok", report.reason
    one_class = np.eye(10)[0] * 0.7 + 0.03
    drift = _run(np.tile(one_class, (400, 1)), reference)
    assert drift.verdict == "drift"
    assert "class mix shifted" in drift.reason and drift.figures["js_distance"] > 0.5


def test_noise_lowers_expected_accuracy_into_drift(rng, make_outputs, reference):
    noisy, _ = make_outputs(rng, 400, sharpness=1.0)
    report = _run(noisy, reference)
    assert report.verdict == "drift"
    assert report.figures["expected_accuracy"] < reference.expected_accuracy - 0.1
    assert "expected accuracy" in report.reason


def test_small_folders_missing_references_and_failures(rng, make_outputs, reference):
    few, _ = make_outputs(rng, 20)
    small = _run(few, reference)
    assert small.verdict == "insufficient" and "min_files=50" in small.reason
    assert "js_distance" in small.figures  # Reported, not judged.
    some, _ = make_outputs(rng, 200)
    assert _run(some, reference, failed=40).verdict == "warn"
    none = assess(SketchBuilder(10).build(), None)
    assert none.verdict == "no_reference" and "retrain" in none.reason


def test_thresholds_parse_and_refuse():
    assert HealthThresholds.parse("js_distance=0.2, min_files=10") == HealthThresholds(js_distance=0.2, min_files=10)
    assert HealthThresholds.parse("") == HealthThresholds()
    for bad, fragment in (("js=0.1", "NAME one of"), ("psi=abc", "not a number"), ("alpha=0", "out of range"),
                          ("min_files=0", "min_files")):
        with pytest.raises(HealthError, match=fragment):
            HealthThresholds.parse(bad)


def test_report_is_json_and_renders(rng, make_outputs, reference, tmp_path):
    p, _ = make_outputs(rng, 300)
    report = _run(p, reference).to_dict()
    assert json.loads(json.dumps(report, allow_nan=False))["verdict"] in ("ok", "warn", "drift")
    text = markdown(report)
    assert f"**{report['verdict']}**" in text and "Class mix" in text and "█" in text
    assert all(f"\n{name} run " in text for name in "abcdefghij")  # One bar row per class, named.
    rows = [{"finished_at": f"2026-11-{d:02d}T10:00:00", "folder": f"/in/day{d}", "verdict": v,
             "js_distance": j, "expected_accuracy": e}
            for d, v, j, e in ((1, "ok", 0.05, 0.9), (2, "warn", 0.12, 0.85), (3, "drift", 0.4, 0.6),
                               (4, "no_reference", None, None))]
    png = plot_trend(rows, tmp_path / "trend.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_statistics_stay_finite_on_identical_and_disjoint_mixes(rng):
    from scipy.spatial.distance import jensenshannon

    from toolchain.health.assess import js_distance

    for _ in range(2000):
        p = rng.dirichlet(np.ones(10))
        q = np.abs(p + rng.normal(0, 1e-9, 10))
        assert np.isfinite(js_distance(p, q)) and js_distance(p, p) == 0.0
        r = rng.dirichlet(np.ones(10))
        assert js_distance(p, r) == pytest.approx(jensenshannon(p, r))
    assert js_distance(np.eye(3)[0], np.eye(3)[1]) == pytest.approx(np.sqrt(np.log(2)))


def test_a_run_identical_to_the_reference_is_ok_and_json_clean(rng, make_outputs):
    p, y = make_outputs(rng, 300)
    reference = build_reference(p, np.arange(len(y)), y)
    report = _run(p, reference)  # The validation outputs themselves: every statistic at its null value.
    assert report.verdict == "ok" and report.figures["js_distance"] == 0.0
    json.dumps(report.to_dict(), allow_nan=False)


def test_markdown_survives_null_figures(rng, make_outputs, reference):
    p, _ = make_outputs(rng, 100)
    report = _run(p, reference).to_dict()
    report["figures"] = {k: None if k in ("psi", "confidence_ks_p") else v for k, v in report["figures"].items()}
    report["shares"]["class_mix"][0] = None
    text = markdown(report)
    assert "/ n/a" in text and "(n/a)" in text


def test_a_folder_where_nothing_decodes_warns(reference):
    builder = SketchBuilder(10, reference.temperature)
    for _ in range(30):
        builder.fail()
    report = assess(builder.build(), reference)
    assert report.verdict == "warn" and "none of the 30 files decoded" in report.reason
