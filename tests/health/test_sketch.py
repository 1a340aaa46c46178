import numpy as np
import pytest

from toolchain.health.sketch import Sketch, SketchBuilder, merge_sketches


def _sketch(blocks, failed=0, temperature=1.0):
    builder = SketchBuilder(10, temperature)
    for block in blocks:
        builder.add(block)
    for _ in range(failed):
        builder.fail()
    return builder.build()


def test_shards_merge_to_the_whole(rng, make_outputs):
    p, _ = make_outputs(rng, 9000)
    files = np.split(p, np.cumsum(rng.integers(1, 4, 3000))[:-1])[:2500]  # Files of 1-3 windows.
    whole = _sketch(files, failed=3, temperature=0.7)
    merged = merge_sketches([_sketch(files[:1000], 1, 0.7), _sketch(files[1000:], 2, 0.7)])
    assert (merged.files, merged.failed, merged.windows) == (whole.files, whole.failed, whole.windows) == (
        2500, 3, sum(len(f) for f in files))
    for name in ("class_mass", "confidence_hist", "entropy_hist"):
        assert np.allclose(getattr(merged, name), getattr(whole, name))
    assert merged.calibrated == pytest.approx(whole.calibrated)
    assert sum(whole.class_mass) == pytest.approx(2500) and sum(whole.confidence_hist) == pytest.approx(2500)
    assert Sketch.from_dict(whole.to_dict()) == whole


def test_a_long_file_counts_once(rng, make_outputs):
    p, _ = make_outputs(rng, 1000)
    one_long = _sketch([p])
    assert one_long.files == 1 and one_long.windows == 1000 and sum(one_long.class_mass) == pytest.approx(1.0)


def test_non_finite_outputs_are_left_out_never_raised():
    builder = SketchBuilder(3)
    builder.add([[np.nan] * 3])  # A model's NaN output: a failed file for the statistics.
    builder.add([[0.2, 0.3, 0.5], [np.inf, 0.0, 0.0]])  # One good window of two.
    sketch = builder.build()
    assert (sketch.files, sketch.failed, sketch.windows) == (1, 1, 1)
    assert np.isfinite(sketch.calibrated) and sum(sketch.class_mass) == pytest.approx(1.0)
