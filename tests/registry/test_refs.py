"""Model references: models:/NAME@ALIAS and models:/NAME/VERSION parse; anything else is one line naming it."""

from __future__ import annotations

import pytest

from toolchain.errors import RegistryError
from toolchain.registry.refs import ModelRef, check_name, is_registry_ref, parse_ref


@pytest.mark.parametrize(("text", "expected"), [
    ("models:/birds@champion", ModelRef("birds", alias="champion")),
    ("models:/kws.v2/12", ModelRef("kws.v2", version=12)),
    ("models:/a-b_c@shadow-2", ModelRef("a-b_c", alias="shadow-2")),
])
def test_references_parse_and_print_back(text, expected):
    assert parse_ref(text) == expected
    assert str(parse_ref(text)) == text


@pytest.mark.parametrize("text", ["models:/", "models:/birds", "models:/birds/0", "models:/birds/x",
                                  "models:/birds@", "models:/@champion", "models:/bi rds@champion",
                                  "models:/birds@2x", "models:/birds/1/2"])
def test_a_malformed_reference_is_one_line_naming_it(text):
    with pytest.raises(RegistryError, match="is not models:/NAME@ALIAS") as info:
        parse_ref(text)
    assert repr(text) in str(info.value) and "\n" not in str(info.value)


def test_paths_are_not_references():
    assert is_registry_ref("models:/x@y") and not is_registry_ref("/data/models/model.onnx")
    assert not is_registry_ref("model.onnx")


def test_names_and_aliases_are_checked():
    assert check_name("name", "birds.v2") == "birds.v2"
    with pytest.raises(RegistryError, match="alias 'champion.x' is not usable"):
        check_name("alias", "champion.x")
