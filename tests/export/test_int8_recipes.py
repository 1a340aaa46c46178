"""INT8 recipes as data: refused values, one-line descriptions, the order `auto` tries them on each CPU."""

from __future__ import annotations

import pytest

from toolchain.errors import VariantRejectedError
from toolchain.export.int8_recipes import AUTO_ORDER, Int8Mode, Int8Recipe, auto_order


def test_auto_order_follows_the_cpu():
    avx2 = {"avx2": True, "avx512": False, "vnni": False, "amx": False}
    assert auto_order(avx2) == AUTO_ORDER and [r.mode.value for r in AUTO_ORDER] == ["u8s8", "u8s8-reduce", "u8u8"]
    for vnni in ({**avx2, "avx512": True, "vnni": True}, {**avx2, "amx": True}):
        assert [r.mode.value for r in auto_order(vnni)] == ["u8s8", "u8s8-reduce"]


def test_recipe_rejects_bad_values():
    with pytest.raises(VariantRejectedError, match="calibration method 'kl'"):
        Int8Recipe(calibrate="kl")
    with pytest.raises(VariantRejectedError, match="percentile 101"):
        Int8Recipe(calibrate="percentile", percentile=101)
    with pytest.raises(VariantRejectedError, match="auto"):
        Int8Recipe(Int8Mode.auto)


def test_a_recipe_describes_itself_in_one_short_line():
    assert Int8Recipe().describe() == "u8s8 (conv1, fc in float)"
    many = Int8Recipe(keep_float=tuple(f"layer3.{i}.conv1" for i in range(36)), op_types=("Conv", "Gemm"))
    assert many.describe() == ("u8s8 (layer3.0.conv1, layer3.1.conv1, layer3.2.conv1, layer3.3.conv1, layer3.4.conv1, "
                               "layer3.5.conv1, ... +30 in float), only Conv+Gemm quantized")
