"""Every registered method's `ranges`: defaults pass, a value outside stops with one line naming the key."""

import dataclasses
import math

import pytest

from semiseg import catalog
from semiseg.errors import SemisegError


def ranged_keys():
    for name in catalog.METHODS:
        params = catalog.METHODS.get(name).Params
        merged = {}
        for cls in reversed(params.__mro__):
            merged.update(vars(cls).get("ranges", {}))
        for key in merged:
            yield name, params, key, merged[key][0]


@pytest.mark.parametrize("name, params, key, check", list(ranged_keys()))
def test_default_passes_and_outside_values_stop(name, params, key, check):
    params()  # the defaults are in range
    fields = {f.name for f in dataclasses.fields(params)}
    assert key in fields, f"{name}: ranges names '{key}', which is not a parameter"
    for bad in [-1.0, math.nan] + ([] if check(7.5) else [7.5]):  # 7.5: above every bounded range
        with pytest.raises(SemisegError) as err:
            params(**{key: bad})
        text = str(err.value)
        assert f"'method.{key}'" in text and "allowed" in text and "\n" not in text


def test_threshold_above_one_is_refused():
    with pytest.raises(SemisegError, match=r"'method.threshold': 7.0 \(allowed: 0 <= x <= 1\)"):
        catalog.METHODS.get("fixmatch").Params(threshold=7.0)
