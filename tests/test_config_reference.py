"""docs/config.md is generated from the schema and its comments, and stays in sync with them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from semiseg.config import Config
from semiseg.config_reference import UndocumentedKeyError, field_comments, param_meaning, render

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"
FIX = "run `.venv/bin/python -m semiseg.config_reference > docs/config.md`"


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        value = node._get_node(key)
        dotted = f"{prefix}{key}"
        if isinstance(value, DictConfig):
            keys += _leaf_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


def test_committed_reference_is_up_to_date():
    assert DOCS.is_file(), f"docs/config.md is missing; {FIX}"
    assert DOCS.read_text(encoding="utf-8") == render(), f"docs/config.md is out of date; {FIX}"


def test_every_schema_key_is_listed():
    text = render()
    keys = _leaf_keys(OmegaConf.structured(Config))
    assert "train.total_iters" in keys and "data.synthetic.num_train" in keys and "method.name" in keys
    missing = [key for key in keys if f"`{key}`" not in text]
    assert not missing, f"keys missing from the reference: {missing}"


SCHEMA_MODULE = '''
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Inner:
    """A nested section."""

    documented: int = 1  # a trailing comment
    # comment lines above
    # the field, joined
    above: Optional[str] = None
    bare: float = 0.5{bare_comment}


@dataclass
class Root:
    top: str = "x"  # a top-level key
    inner: Inner = field(default_factory=Inner)


@dataclass
class Params:
    """Parameters of a toy method.

    The loss weight scales the unsupervised term.
    """

    loss_weight: float = 1.0
    nothing: int = 0
    commented: int = 2  # said here


@dataclass
class MoreParams(Params):
    commented: int = 3  # the override's own comment
'''


def _load(tmp_path, monkeypatch, name: str, bare_comment: str = ""):
    path = tmp_path / f"{name}.py"
    path.write_text(SCHEMA_MODULE.replace("{bare_comment}", bare_comment))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy(tmp_path, monkeypatch):
    return _load(tmp_path, monkeypatch, "toy_schema")


def test_field_comments_trailing_then_lines_above(toy):
    assert field_comments(toy.Inner) == {"documented": "a trailing comment",
                                         "above": "comment lines above the field, joined", "bare": None}
    assert field_comments(toy.Root) == {"top": "a top-level key", "inner": None}


def test_render_raises_on_an_undocumented_schema_field(toy):
    with pytest.raises(UndocumentedKeyError, match=r"'inner\.bare'"):
        render(toy.Root, methods={})


def test_render_lists_a_documented_schema(tmp_path, monkeypatch):
    toy = _load(tmp_path, monkeypatch, "toy_schema_documented", "  # now documented")
    text = render(toy.Root, methods={})
    for key in ("`top`", "`inner.documented`", "`inner.above`", "`inner.bare`"):
        assert key in text
    assert "comment lines above the field, joined" in text and "now documented" in text


def test_method_params_never_raise(toy):
    assert param_meaning(toy.Params, "loss_weight") == "The loss weight scales the unsupervised term."
    assert param_meaning(toy.Params, "nothing") == ""
    assert param_meaning(toy.MoreParams, "commented") == "the override's own comment"
    assert param_meaning(toy.MoreParams, "loss_weight") == "The loss weight scales the unsupervised term."
