"""Configs as files and as text: JSON/YAML configs (a past run's ``config.json``) and the ``--print_config`` listing.

A run writes its resolved config as ``WORKDIR/config.json``; ``--config=WORKDIR/config.json`` reads it back onto the
schema (``spar_jax.config.default_config``), so the rerun has exactly that run's settings. YAML files with the same
nesting are accepted too. Python config files (``configs/*.py``) keep going through ml-collections.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections
from ml_collections.config_flags import config_flags

DATA_SUFFIXES = (".json", ".yaml", ".yml")


def _tuples(value: Any) -> Any:
    """JSON and YAML have lists only; the schema keeps sequences as tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def load(path: str) -> ml_collections.ConfigDict:
    """Read a JSON or YAML config onto the schema; an unknown key or a wrong type fails naming the file and key."""
    from spar_jax.config import default_config

    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path} does not exist")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    config = default_config()
    _merge(config, data, path, "")
    return config


def _merge(target: ml_collections.ConfigDict, data: dict, path: str, prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in target:
            raise ValueError(f"{path}: unknown config key {dotted!r}")
        if isinstance(target[key], ml_collections.ConfigDict):
            if not isinstance(value, dict):
                raise ValueError(f"{path}: config key {dotted!r} must be a section, got {value!r}")
            _merge(target[key], value, path, dotted + ".")
            continue
        try:
            target[key] = _tuples(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: config key {dotted!r}: {e}") from None


class _FileParser(config_flags.ConfigFileFlagParser):
    """ml-collections' config-file parser, extended to JSON and YAML files."""

    def parse(self, path):
        if not path.endswith(DATA_SUFFIXES):
            return super().parse(path)
        try:
            config = load(path)
        except ImportError:
            raise ValueError(f"{path}: reading YAML configs needs PyYAML (pip install pyyaml)") from None
        config.lock()
        return config


def define_config_flag(name: str, help_string: str):
    """``config_flags.DEFINE_config_file`` with JSON/YAML support (same override flags ``--NAME.key=value``)."""
    from absl import flags

    flag = config_flags._ConfigFlag(  # the flag class DEFINE_config_file builds, with our parser
        parser=_FileParser(name=name, lock_config=True),
        serializer=flags.ArgumentSerializer(),
        name=name,
        default=None,
        help_string=help_string,
        flag_values=flags.FLAGS,
        accept_new_attributes=False,
    )
    return flags.DEFINE_flag(flag, flags.FLAGS)


def _fmt(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) and len(repr(value)) > 60 else value)


def listing(raw: dict[str, Any]) -> str:
    """Every key of a resolved config (``RunConfig.raw``) with its value and description, grouped by top-level
    section in schema order."""
    from spar_jax.config import descriptions

    docs = descriptions()
    flat: dict[str, Any] = {}

    def walk(d: dict, prefix: str):
        for key, value in d.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(raw, "")
    order = {key: i for i, key in enumerate(docs)}
    groups: dict[str, list[str]] = {}
    for key in sorted(flat, key=lambda k: order.get(k, len(order))):
        groups.setdefault(key.split(".")[0] if "." in key else "", []).append(key)
    lines = []
    for group, keys in sorted(groups.items(), key=lambda g: order.get(g[0], -1)):
        lines.append(f"[{group or 'run'}] {docs.get(group, 'top-level keys')}")
        width = max(len(k) for k in keys)
        lines += [f"  {k:<{width}} = {_fmt(flat[k])}  # {docs.get(k, '(no description)')}" for k in keys]
        lines.append("")
    return "\n".join(lines)
