"""YAML read the way users write it: ``1e-4`` is a number, ``no`` is text, a key given
twice is an error.

PyYAML follows YAML 1.1, where a float needs a dot (``1e-4`` stays the text
'1e-4', so ``alpha: 1e-4`` reached scikit-learn as a string), where yes/no/on/off
are booleans (``classes: [no, yes]``, the labels of many a data set, became
[False, True] and every row was refused), and where a repeated key silently keeps
the last value. YAML 1.2, JSON and every other loader users meet read ``1e-4`` as
a float and ``no`` as text; a repeated key is almost always a mistake (two edits
of one file), so it is refused with its line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2's core-schema float (plus 1.1's forms PyYAML already reads: .inf, .nan).
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names one key twice."""


class Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats and no repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<' merges another mapping; it may appear more than once
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                continue  # an unhashable key: the base class names that error
            if key in seen:
                raise DuplicateKeyError(
                    None, None, f"key '{key}' is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's core-schema booleans: true and false only.
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")

# Replace 1.1's float and bool resolvers: a plain integer keeps resolving as int first.
_REPLACED = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:bool")
Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
Loader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))


def load(text: str) -> Any:
    """Parse one YAML document with ``Loader``; raises yaml.YAMLError."""
    return yaml.load(text, Loader=Loader)
