"""The generation API: the contract between the SPaR steps and evaluations and a sampling engine, and how they call it.

They never import the real engine (`spar_jax.sampling.Engine`); they accept anything that satisfies `Generator`
below, so they run unchanged against the JAX engine, a test double, or another backend.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}
Request = list[Message] | list[int]  # chat messages, or prompt token ids


@runtime_checkable
class CompletionLike(Protocol):
    """One sampled continuation (generated tokens only)."""

    @property
    def text(self) -> str: ...

    @property
    def token_ids(self) -> Sequence[int]: ...

    @property
    def logprobs(self) -> Sequence[float]: ...

    @property
    def finish_reason(self) -> str: ...  # "stop" | "length"


@runtime_checkable
class ResultLike(Protocol):
    """The `n` completions of one request."""

    @property
    def completions(self) -> Sequence[CompletionLike]: ...


@runtime_checkable
class Generator(Protocol):
    """`spar_jax.sampling.Engine.generate`: results come back in request order, each with `n` completions."""

    def generate(
        self,
        requests: Sequence[Request],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        n: int = 1,
        seed: int = 0,
        stop: Sequence[str] | None = None,
    ) -> Sequence[ResultLike]: ...


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Per-call sampling settings (everything `Generator.generate` takes except requests, n and seed)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0, got {self.top_k!r}")
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop) if self.stop is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SamplingParams":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"SamplingParams: unknown key(s) {sorted(unknown)}")
        return cls(**d)


def derive_seed(base: int, *tags: Any) -> int:
    """A 31-bit seed that depends only on `base` and `tags` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(repr((int(base),) + tags).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def generate(
    engine: Generator, requests: Sequence[Request], *, n: int, sampling: SamplingParams, seed: int
) -> list[list[CompletionLike]]:
    """One `engine.generate` call; returns `len(requests)` lists of `n` completions.

    An empty request list makes no call. A result of the wrong shape raises ValueError.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not requests:
        return []
    with naming_prompts(requests):
        results = engine.generate(
            list(requests),
            max_new_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            n=n,
            seed=seed,
            stop=list(sampling.stop) if sampling.stop is not None else None,
        )
    if len(results) != len(requests):
        raise ValueError(f"engine returned {len(results)} results for {len(requests)} requests")
    out = []
    for i, result in enumerate(results):
        completions = list(result.completions)
        if len(completions) != n:
            raise ValueError(f"engine returned {len(completions)} completions for request {i}, expected n={n}")
        out.append(completions)
    return out


# -- naming the prompt behind an over-long request ------------------------------------------------------------------

_SOURCES: contextvars.ContextVar[tuple[tuple[tuple[tuple[str, str], ...], str], ...]] = contextvars.ContextVar(
    "prompt_sources", default=()
)


@contextlib.contextmanager
def prompt_source(prompts: Iterable[tuple[Any, str]], file: str = ""):
    """Within this block, requests built from these prompts are named by them in errors: ``prompts`` are
    (key, prompt text) pairs read from ``file`` (a stage's input). Every request a stage derives from a prompt (the
    actor's answer, a judgement, a refinement) quotes the prompt text, which is how a request is traced back."""
    token = _SOURCES.set(_SOURCES.get() + ((tuple((str(k), str(t)) for k, t in prompts), str(file)),))
    try:
        yield
    finally:
        _SOURCES.reset(token)


def describe_request(request: Request) -> str:
    """``prompt 'KEY' of FILE`` for the registered prompt whose text the request quotes (the longest one), else ''."""
    if not isinstance(request, (list, tuple)) or not all(isinstance(m, dict) for m in request):
        return ""
    text = "\n".join(str(m.get("content", "")) for m in request)
    best = None
    for prompts, file in _SOURCES.get():
        for key, prompt in prompts:
            if prompt and prompt in text and (best is None or len(prompt) > len(best[1])):
                best = (key, prompt, file)
    if best is None:
        return ""
    return f"prompt {best[0]!r}" + (f" of {best[2]}" if best[2] else "")


@contextlib.contextmanager
def naming_prompts(requests: Sequence[Request]):
    """Re-raise an engine's over-long-prompt error (an error with ``index``, ``tokens``, ``room``, ``max_length``
    and ``max_new_tokens``, as ``spar_jax.sampling.PromptTooLongError``) naming the prompt and the settings that
    decide the room, as one ValueError."""
    try:
        yield
    except ValueError as e:
        fields = ("index", "tokens", "room", "max_length", "max_new_tokens")
        if not all(hasattr(e, f) for f in fields) or not 0 <= e.index < len(requests):
            raise
        where = describe_request(requests[e.index]) or f"request {e.index} of the call"
        raise ValueError(
            f"{where}: the prompt has {e.tokens} tokens, but only {e.room} fit: the engine's context is {e.max_length} "
            f"tokens (config key engine.max_length; 0 = the model's max_position_embeddings) and this call generates "
            f"up to {e.max_new_tokens} new tokens. Raise engine.max_length (up to the model's context), lower the "
            f"stage's max_new_tokens setting, shorten the prompt, or set engine.truncate=left to drop its oldest tokens"
        ) from None
