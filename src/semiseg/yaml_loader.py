"""The YAML reader of config files and `key=value` overrides.

`yaml.safe_load` follows YAML 1.1, where `off`, `on`, `no`, `yes`, `y` and
`n` are booleans, so `train.amp=off` would reach the string option as
False. `ConfigLoader` is a `yaml.SafeLoader` that resolves booleans as YAML
1.2 core does (`true` / `false`, in any case; everything else stays a
string), reads floats with an exponent and no dot (`1e-3`) as floats, keeps
dates as strings (as OmegaConf does: `output_dir=2024-01-01`), and refuses
a mapping that names the same key twice (`DuplicateKeyError`).
"""

from __future__ import annotations

import re

import yaml

BOOL_TAG = "tag:yaml.org,2002:bool"
FLOAT_TAG = "tag:yaml.org,2002:float"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
MERGE_TAG = "tag:yaml.org,2002:merge"

BOOL_RE = re.compile(r"^(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$")
# YAML 1.1 floats (underscores allowed) plus exponents without a dot (1e-3, 5E+6); no sexagesimal
FLOAT_RE = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping names `key` twice: first on line `first_line`, again on `line` (1-based)."""

    def __init__(self, key: str, line: int, first_line: int, mark=None):
        super().__init__(None, None, f"key '{key}' appears twice (lines {first_line} and {line})", mark)
        self.key, self.line, self.first_line = key, line, first_line


class ConfigLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, `1e-3` floats and no duplicate keys (see the module docstring)."""

    def construct_document(self, node):
        _check_duplicate_keys(node)
        return super().construct_document(node)


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (BOOL_TAG, FLOAT_TAG, TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(BOOL_TAG, BOOL_RE, list("tTfF"))
ConfigLoader.add_implicit_resolver(FLOAT_TAG, FLOAT_RE, list("-+0123456789."))


def _check_duplicate_keys(root) -> None:
    """Raise DuplicateKeyError when a mapping in the document names a key twice."""
    seen_nodes = set()
    stack = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        if id(node) in seen_nodes:  # an alias of a node already checked
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, f"{prefix}[{i}]") for i, child in reversed(list(enumerate(node.value))))
        elif isinstance(node, yaml.MappingNode):
            first_line = {}
            children = []
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = (key_node.tag, key_node.value)
                name = f"{prefix}.{key_node.value}" if prefix else key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise DuplicateKeyError(name, line, first_line[key], key_node.start_mark)
                first_line[key] = line
                children.append((value_node, name))
            stack.extend(reversed(children))


def load(text: str):
    """The YAML document in `text` (None when empty); raises yaml.YAMLError (DuplicateKeyError included)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
