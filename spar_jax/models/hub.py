"""Hugging Face Hub ids wherever a checkpoint or data set is named: ``org/name`` or ``org/name@revision``.

``snapshot(ref)`` returns the local snapshot directory (``huggingface_hub.snapshot_download``; the token comes from
``HF_TOKEN`` or the CLI login, is never passed around or logged). With ``HF_HUB_OFFLINE=1`` only the local hub cache
(``HF_HUB_CACHE``) is used, so a model downloaded once loads without network. In a multi-process run process 0
downloads first while the others wait at a barrier, then they find the files in the (shared) cache; with a cache per
host each host's processes fill their own.
"""

from __future__ import annotations

import os
import re

# Weights in formats we do not read (PyTorch pickles, TF, Flax msgpack, ONNX) and upstream's original/ consolidated
# checkpoints are not downloaded.
MODEL_IGNORE = ["*.bin", "*.pt", "*.pth", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.gguf", "original/*"]
_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def is_hub_id(ref: str) -> bool:
    """``org/name`` or ``org/name@revision`` that is not an existing local path."""
    return bool(_ID.match(ref)) and not os.path.exists(ref) and not ref.endswith((".gguf", ".jsonl", ".json"))


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; no ``@`` -> revision None (the default branch)."""
    repo, _, revision = ref.partition("@")
    return repo, revision or None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def snapshot(ref: str, *, repo_type: str = "model", ignore_patterns: list[str] | None = None) -> str:
    """The local directory of hub repo ``ref`` (``org/name[@revision]``), downloaded unless cached.

    Raises FileNotFoundError naming ``ref`` when it is neither cached (offline) nor downloadable."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from spar_jax.parallel import sync_processes

    repo, revision = split_ref(ref)
    kwargs = dict(
        repo_type=repo_type,
        revision=revision,
        cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        local_files_only=_offline(),
        ignore_patterns=ignore_patterns,
    )
    import jax

    path, error = None, None
    for turn in ("first", "rest"):  # process 0 downloads, the others wait and then read the cache
        if (jax.process_index() == 0) == (turn == "first"):
            try:
                path = snapshot_download(repo, **kwargs)
            except LocalEntryNotFoundError:
                error = (
                    "not in the local hub cache and HF_HUB_OFFLINE is set"
                    if _offline()
                    else "could not be downloaded (no network?) and is not in the local hub cache"
                )
            except RepositoryNotFoundError:
                error = "no such repository, or it is private/gated (set HF_TOKEN to a token with access)"
            except RevisionNotFoundError:
                error = f"no revision {revision!r}"
            except (HfHubHTTPError, OSError) as e:
                error = " ".join(str(e).split())[:300]
        sync_processes(f"hub:{ref}:{turn}")
    if path is None:
        raise FileNotFoundError(f"{ref}: hub {repo_type} {error}")
    return path


def data_file(ref: str) -> str:
    """The JSONL/JSON file of hub data set ``ref`` (``org/name[@revision]``): its only ``.jsonl``/``.json`` file
    (``dataset_info.json`` aside)."""
    directory = snapshot(ref, repo_type="dataset")
    found = sorted(
        os.path.relpath(os.path.join(d, f), directory)
        for d, _, files in os.walk(directory)
        for f in files
        if f.endswith((".jsonl", ".json")) and f != "dataset_info.json"
    )
    found = [f for f in found if not f.startswith(".")]
    if len(found) != 1:
        raise ValueError(
            f"{ref}: the hub dataset must hold exactly one .jsonl/.json data file, found {found or 'none'}"
        )
    return os.path.join(directory, found[0])
