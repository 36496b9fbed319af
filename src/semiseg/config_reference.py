"""The config reference (docs/config.md), generated from the schema and its source comments.

    python -m semiseg.config_reference > docs/config.md

Every key of the typed schema (`semiseg.config.Config` and the dataclasses under it, walked
generically) is listed with its dotted key, type, default and meaning. The meaning is the
trailing `# comment` on the field's line or, when there is none, the comment lines directly
above the field. A schema field without either raises `UndocumentedKeyError` naming the key,
so no key can be added without a word on what it does.

The second part lists the `method.*` keys of every registered method (`Method.Params`). A
method parameter is documented by the comment in the class that declares it (the most derived
one, so an override's comment wins); without one, by the paragraph of that class's docstring
that names every word of the field; else its meaning is left empty (never an error).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import yaml

_PACKAGE_DIR = Path(__file__).resolve().parent
_NON_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
             tokenize.ENCODING, tokenize.ENDMARKER}
WRAP = 110


class UndocumentedKeyError(ValueError):
    """A schema field has neither a trailing comment nor comment lines above it."""


# -- reading the source ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _source(path: str) -> Tuple[ast.Module, Dict[int, str], Dict[int, str]]:
    """(AST, trailing comments by line, own-line comments by line) of a source file."""
    text = Path(path).read_text(encoding="utf-8")
    code_lines, comments = set(), []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            comments.append(tok)
        elif tok.type not in _NON_CODE:
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    trailing, own_line = {}, {}
    for tok in comments:
        body = tok.string[1:].strip()
        (trailing if tok.start[0] in code_lines else own_line)[tok.start[0]] = body
    return ast.parse(text, filename=path), trailing, own_line


def _class_node(cls: type) -> Tuple[ast.ClassDef, str]:
    """The `class` statement of `cls` in its source file, found by qualified name."""
    path = inspect.getsourcefile(cls)
    if path is None:
        raise TypeError(f"no source file for {cls.__qualname__}")
    tree = _source(path)[0]
    node: ast.AST = tree
    for part in cls.__qualname__.split("."):
        if part == "<locals>":
            continue
        direct = [n for n in getattr(node, "body", []) if isinstance(n, ast.ClassDef) and n.name == part]
        found = direct or [n for n in ast.walk(node) if isinstance(n, ast.ClassDef) and n.name == part]
        if not found:
            raise TypeError(f"class {cls.__qualname__} not found in {path}")
        node = found[-1]  # a name bound twice: the last statement wins, as at run time
    return node, path


def field_comments(cls: type) -> Dict[str, Optional[str]]:
    """Each field declared in the body of `cls` -> its comment (trailing, else the lines above) or None."""
    node, path = _class_node(cls)
    _, trailing, own_line = _source(path)
    out: Dict[str, Optional[str]] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        end = getattr(stmt, "end_lineno", None) or stmt.lineno
        comment = next((trailing[n] for n in range(stmt.lineno, end + 1) if n in trailing), None)
        if comment is None:
            above, line = [], stmt.lineno - 1
            while line in own_line:
                above.insert(0, own_line[line])
                line -= 1
            comment = " ".join(c for c in above if c) or None
        out[stmt.target.id] = comment or None
    return out


def class_docstring(cls: type) -> str:
    """The docstring written in the class body ('' if none; never the one dataclasses generates)."""
    return ast.get_docstring(_class_node(cls)[0]) or ""


def declaring_class(cls: type, name: str) -> type:
    """The most derived class in the MRO of `cls` whose body declares field `name`."""
    for klass in cls.__mro__:
        if name in inspect.get_annotations(klass):
            return klass
    raise KeyError(f"{cls.__qualname__} declares no field {name!r}")


def _words(text: str) -> set:
    return set(re.findall(r"[a-z0-9]+", text.lower().replace("_", " ")))


def docstring_mention(cls: type, name: str) -> str:
    """The first paragraph of the class docstring containing every word of `name` ('' if none)."""
    wanted = _words(name)
    for paragraph in re.split(r"\n\s*\n", class_docstring(cls)):
        text = " ".join(paragraph.split())
        if text and wanted <= _words(text):
            return text
    return ""


def schema_meaning(cls: type, name: str, key: str) -> str:
    """The comment of a core schema field; raises UndocumentedKeyError (naming `key`) without one."""
    comment = field_comments(declaring_class(cls, name)).get(name)
    if not comment:
        owner = declaring_class(cls, name)
        raise UndocumentedKeyError(
            f"config key '{key}' ({owner.__qualname__}.{name} in {_display_path(owner)}) has no comment: "
            "add a trailing `# comment` (or comment lines above it) saying what it does"
        )
    return comment


def param_meaning(cls: type, name: str) -> str:
    """The comment of a method parameter, else its declaring class's docstring mention, else ''."""
    owner = declaring_class(cls, name)
    return field_comments(owner).get(name) or docstring_mention(owner, name)


# -- formatting -------------------------------------------------------------------------------------

def _display_path(obj: Any) -> str:
    path = inspect.getsourcefile(obj)
    if path is None:
        return "?"
    path = Path(path).resolve()
    try:
        return "src/semiseg/" + path.relative_to(_PACKAGE_DIR).as_posix()
    except ValueError:
        return path.name


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    if isinstance(tp, type) and tp.__module__ == "builtins":
        return tp.__name__
    if isinstance(tp, type):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _yaml(value: Any) -> str:
    """A value as it would be written in a config file."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).strip()
    return text[: -len("\n...")] if text.endswith("\n...") else text


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _default_cell(f: dataclasses.Field) -> str:
    value = _default(f)
    return "(required)" if value is dataclasses.MISSING else _code(_yaml(value))


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: str) -> str:
    """Free text for a table cell: `|` escaped everywhere, `<` escaped outside code spans."""
    parts = re.split(r"(`+[^`]*`+)", text)
    out = []
    for part in parts:
        if not part.startswith("`"):
            part = part.replace("<", "\\<")
        out.append(part.replace("|", "\\|"))
    return "".join(out)


def _table(rows: List[Tuple[str, str, str, str]]) -> List[str]:
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| {_code(k)} | {_code(t)} | {d} | {_cell(m)} |" for k, t, d, m in rows]
    return lines


def _wrap(text: str) -> List[str]:
    return textwrap.wrap(" ".join(text.split()), WRAP, break_on_hyphens=False, break_long_words=False)


# -- the two parts ----------------------------------------------------------------------------------

def schema_sections(config_cls: type, prefix: str = "") -> List[Tuple[str, type, List[Tuple[str, str, str, str]]]]:
    """(section key, dataclass, rows) for `config_cls` and, depth first, every dataclass field under it."""
    rows, nested = [], []
    for f in dataclasses.fields(config_cls):
        key = f"{prefix}{f.name}"
        default = _default(f)
        if dataclasses.is_dataclass(default) and not isinstance(default, type):
            nested.append((key, type(default)))
            continue
        meaning = schema_meaning(config_cls, f.name, key)
        rows.append((key, _type_name(f.type), _default_cell(f), meaning))
    sections = [(prefix.rstrip("."), config_cls, rows)]
    for key, cls in nested:
        sections += schema_sections(cls, key + ".")
    return sections


def method_rows(params_cls: type) -> List[Tuple[str, str, str, str]]:
    return [(f"method.{f.name}", _type_name(f.type), _default_cell(f), param_meaning(params_cls, f.name))
            for f in dataclasses.fields(params_cls)]


HEADER = """\
# Configuration reference

<!-- Generated by `.venv/bin/python -m semiseg.config_reference > docs/config.md` from
src/semiseg/config.py and the methods' Params classes: edit the comments there, not this file. -->

## How configs work

A config is a YAML file of the keys below. `_base_` names one file or a list of files (paths relative to the
file that names them) merged first, in order; a base file may not have a `_base_` of its own (one level).
Loading merges, in this order: the schema defaults listed here, the `_base_` files, the file itself, then the
`key=value` overrides of the command line (dotted keys, e.g. `train.total_iters=2000`):

```bash
.venv/bin/semiseg train CONFIG [key=value ...]
.venv/bin/semiseg train configs/synthetic/fixmatch.yaml train.total_iters=2000 output_dir=runs/long
```

`--root DIR` is the same as `data.root=DIR`. `semiseg eval CHECKPOINT key=value ...` applies overrides to the
config saved in the checkpoint. The schema is typed: an unknown key, a value of the wrong type or a missing
required value stops the command with one line naming the key (and, for an unknown key, the closest valid
one) and exit status 2, e.g. `error: command line: unknown config key 'train.total_iter' (did you mean
'total_iters'?)`. `train.total_iters` and `train.total_batch_size` must be set to positive values. The
resolved config of a run is written to `<output_dir>/config.yaml`.

An `Optional[...]` key may be `null` (unset); the meaning says what unset does.
"""


def _schema_part(config_cls: type) -> List[str]:
    lines = ["## Core keys", ""]
    for key, cls, rows in schema_sections(config_cls):
        lines.append(f"### {_code(key)}" if key else "### Top level")
        lines.append("")
        doc = class_docstring(cls).split("\n\n")[0]
        intro = f"`{cls.__qualname__}` in `{_display_path(cls)}`" + (f": {' '.join(doc.split())}" if doc else ".")
        lines += _wrap(intro) + [""]
        lines += _table(rows) + [""]
    return lines


def _method_part(methods: Mapping[str, type]) -> List[str]:
    intro = (
        "The `method` section holds `method.name`, the name of a registered method (`semiseg list`), and that "
        "method's parameters, validated against its `Params` dataclass once the name is known. An unknown key "
        "stops with one line naming the closest valid key and listing the method's keys. A meaning left empty "
        "has no comment in the source yet."
    )
    lines = ["## Method keys (`method.*`)", ""] + _wrap(intro) + [""]
    for name in sorted(methods):
        method_cls = methods[name]
        params = method_cls.Params
        declaring = {declaring_class(params, f.name) for f in dataclasses.fields(params)}
        owners = [klass for klass in reversed(params.__mro__) if klass in declaring]  # bases first
        module_doc = (inspect.getmodule(method_cls).__doc__ or "").strip()
        summary = " ".join(module_doc.split("\n\n")[0].split()) if module_doc else ""
        declared = ", ".join(f"`{o.__qualname__}` (`{_display_path(o)}`)" for o in owners)
        text = (f"`method.name: {name}`" + (f": {summary}" if summary else ".")
                + f" Parameters declared in {declared}.")
        lines += [f"### {_code(name)}", ""] + _wrap(text) + [""]
        lines += _table(method_rows(params)) + [""]
    return lines


def _registered_methods() -> Dict[str, type]:
    from .catalog import METHODS

    # the package's own methods only (a test or a user script may register more in this process)
    return {name: METHODS.get(name) for name in METHODS.names() if METHODS.get(name).__module__.startswith("semiseg.")}


def render(config_cls: Optional[type] = None, methods: Optional[Mapping[str, type]] = None) -> str:
    """The whole reference as Markdown (defaults: the schema `Config` and every registered method)."""
    if config_cls is None:
        from .config import Config

        config_cls = Config
    if methods is None:
        methods = _registered_methods()
    lines = [HEADER] + _schema_part(config_cls)
    if methods:
        lines += _method_part(methods)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
