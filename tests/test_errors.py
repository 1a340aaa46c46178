"""toolchain.errors: one line per exception; reports travel in the constructor."""

from __future__ import annotations

from toolchain.errors import ParityToleranceError, ToolchainError, VariantRejectedError, one_line


def test_one_line_names_the_type_and_keeps_only_the_first_line():
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(EOFError()) == "EOFError"
    assert len(one_line(RuntimeError("x" * 2000), limit=50)) == 50


def test_report_fields_always_exist():
    bare = VariantRejectedError("no calibration clips")
    assert bare.report is None and bare.reports == () and bare.result is None
    with_report = VariantRejectedError("deleted", report="R")
    assert with_report.reports == ("R",)
    gate = ParityToleranceError("parity gate failed", report="P")
    assert gate.report == "P" and isinstance(gate, ToolchainError)
