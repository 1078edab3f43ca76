"""Reading a JSON data file from a local path or an http(s) URL, with one clear error when it cannot be had."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from spar_jax.files import SourceUnavailableError


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def read_json(location: str, what: str, *, timeout: float = 30.0) -> Any:
    """The parsed JSON at ``location`` (a file path or URL). ``what`` names the data in error messages.

    Raises ValueError for a missing file or invalid JSON, SourceUnavailableError (a RuntimeError) when a URL cannot
    be fetched (with a hint to pass a local copy instead).
    """
    if is_url(location):
        try:
            with urllib.request.urlopen(location, timeout=timeout) as response:
                raw = response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise SourceUnavailableError(
                f"could not download {what} from {location}: {e}. If this machine is offline, download the files "
                "elsewhere and point the source setting at the local folder instead."
            ) from e
    else:
        try:
            with open(location, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ValueError(f"{what}: file not found: {location}") from None
        except OSError as e:
            raise ValueError(f"{what}: cannot read {location}: {e.strerror}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f":{e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise ValueError(f"{location}{where}: invalid JSON in {what}: {e}") from None
