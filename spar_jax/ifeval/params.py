"""Validated access to one IFEval instruction's kwargs.

Each instruction builder reads its kwargs through a :class:`KwargReader`, which
names the instruction id and the key in every error and remembers which keys
were read so that leftover (unknown) keys can be rejected afterwards.

Kwargs whose value is ``None`` count as absent: the Hugging Face copy of IFEval
stores every kwarg of every instruction type in one struct, with ``None`` for
the keys that do not apply.
"""

from __future__ import annotations

import numbers
import re
from typing import Any, Mapping

RELATIONS = ("less than", "at least")


def compare(count: int, relation: str, threshold: int) -> bool:
    """``count < threshold`` for "less than", ``count >= threshold`` for "at least"."""
    if relation == RELATIONS[0]:
        return count < threshold
    return count >= threshold


class KwargReader:
    """Typed, validated reads of one instruction's kwargs."""

    def __init__(self, instruction_id: str, kwargs: Mapping[str, Any] | None):
        if kwargs is None:
            kwargs = {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(
                f"IFEval instruction {instruction_id!r}: kwargs must be a dict, got {type(kwargs).__name__}"
            )
        self.instruction_id = instruction_id
        self._kwargs = {k: v for k, v in kwargs.items() if v is not None}
        self._read: set[str] = set()

    def error(self, key: str, message: str) -> ValueError:
        return ValueError(f"IFEval instruction {self.instruction_id!r}: kwarg {key!r} {message}")

    def _get(self, key: str) -> Any:
        self._read.add(key)
        if key not in self._kwargs:
            raise self.error(key, "is required but missing")
        return self._kwargs[key]

    def has(self, key: str) -> bool:
        return key in self._kwargs

    def count(self, key: str) -> int:
        """A non-negative integer (ints, or floats with an integral value)."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.error(key, f"must be a non-negative integer, got {value!r}")
        if isinstance(value, numbers.Integral):
            value = int(value)
        elif float(value).is_integer():
            value = int(value)
        else:
            raise self.error(key, f"must be a non-negative integer, got {value!r}")
        if value < 0:
            raise self.error(key, f"must be a non-negative integer, got {value!r}")
        return value

    def relation(self, key: str) -> str:
        value = self._get(key)
        if value not in RELATIONS:
            raise self.error(key, f"must be one of {RELATIONS}, got {value!r}")
        return value

    def string(self, key: str, *, allow_empty: bool = False) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {type(value).__name__}")
        if not allow_empty and not value:
            raise self.error(key, "must be a non-empty string")
        return value

    def string_list(self, key: str) -> list[str]:
        value = self._get(key)
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise self.error(key, f"must be a list of strings, got {value!r}")
        if not value:
            raise self.error(key, "must be a non-empty list of strings")
        for item in value:
            if not isinstance(item, str):
                raise self.error(key, f"must contain only strings, got {item!r}")
        return list(value)

    def pattern(self, key: str, source: str, flags: int = 0) -> re.Pattern:
        """Compiles ``source`` (built from this kwarg) as a regular expression.

        The reference uses keyword kwargs as raw regex patterns, unescaped; we
        keep that and turn a pattern that does not compile into a clear error.
        """
        try:
            return re.compile(source, flags)
        except re.error as e:
            raise self.error(key, f"gives an invalid regular expression {source!r}: {e}") from None

    def check_no_extra(self) -> None:
        """Raises if a non-None kwarg was never read by the builder."""
        extra = sorted(set(self._kwargs) - self._read)
        if extra:
            accepted = ", ".join(sorted(self._read)) or "none"
            raise ValueError(
                f"IFEval instruction {self.instruction_id!r}: unexpected kwarg(s) "
                f"{', '.join(repr(k) for k in extra)} (accepted: {accepted})"
            )
