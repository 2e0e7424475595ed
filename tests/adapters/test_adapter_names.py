"""Served names: what users type in `model`, and what can never reach the filesystem."""

from __future__ import annotations

import pytest

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.names import AdapterRef


@pytest.mark.parametrize(("text", "selector", "alias"), [
    ("acme/support", None, "prod"),
    ("acme/support@canary", "canary", "canary"),
    ("acme/support@1177eb82", "1177eb82", None),
    ("acme-2/support.v2_x@prod", "prod", "prod"),
])
def test_valid_names_parse_and_print_back(text, selector, alias):
    ref = AdapterRef.parse(text)
    assert ref.selector == selector
    assert ref.alias == alias
    assert str(ref) == text


@pytest.mark.parametrize("text", [
    "support", "acme/", "/support", "acme/support/x", "acme/support@", "Acme/support",
    "../support", "acme/..", ".hidden/x", "acme/support@abc", "acme/support@deadbeef0@x",
    "acme/support@1beefca", "acme/support@" + "a" * 65, "acme/" + "x" * 65,
])
def test_malformed_names_are_refused_with_the_param(text):
    with pytest.raises(InvalidRequest) as err:
        AdapterRef.parse(text)
    assert err.value.param == "model"
    assert err.value.status_code == 400


def test_an_all_hex_selector_is_a_version_never_an_alias():
    assert AdapterRef.parse("acme/support@deadbeef").alias is None
    assert AdapterRef.parse("acme/support@cafebabe").alias is None
    assert AdapterRef.parse("acme/support@beefcake").alias == "beefcake"  # a "k": not hex
