"""Resolve a config value that names user code: `package.module:name` or `path/to/file.py:name`
(`reward.fn`, `rollout.multi_turn.env`, `rollout.multi_turn.tools.<name>`)."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any


def load_object(spec: str, key: str, kind: str = "attribute") -> Any:
    """The object `spec` names; a ValueError naming `key` (and `kind`, what is expected there)
    when it is malformed, the file is missing, the module does not import or lacks the name."""
    if not isinstance(spec, str) or ":" not in spec:
        noun = "name" if kind == "attribute" else kind
        raise ValueError(f"{key}={spec!r}: expected 'package.module:{noun}' or 'file.py:{noun}'")
    target, name = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise ValueError(f"{key}={spec!r}: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ValueError(f"{key}={spec!r}: cannot import {target} ({exc})") from exc
    if not hasattr(module, name):
        raise ValueError(f"{key}={spec!r}: {target} has no {kind} {name!r}")
    return getattr(module, name)
