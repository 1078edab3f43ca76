"""Property: every reader of user files (JSONL prompts, SFT/DPO records in each accepted layout, templates, IFEval
responses) either loads an input or raises one ValueError whose message names the file (and the line, when the
file has one) -- never another exception type, never an unnamed error."""

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spar_jax import ifeval
from spar_jax.judge.templates import Templates
from spar_jax.spar.sources import load_prompts
from spar_jax.training.records import dpo_triple, iter_records, sft_messages

KEYS = [
    "prompt",
    "messages",
    "conversations",
    "role",
    "content",
    "from",
    "value",
    "instruction",
    "input",
    "output",
    "system",
    "chosen",
    "rejected",
    "key",
    "id",
    "response",
    "judge",
    "refine",
    "user",
    "assistant",
    "human",
    "gpt",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(KEYS),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode()),
    values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=20),
    st.just(b""),
    st.just(b'{"prompt": "caf\xe9"}'),
)
files = st.lists(lines, max_size=6).map(lambda ls: b"\n".join(ls))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _loads_or_names_the_place(fn, path, needs_line=True):
    try:
        fn(str(path))
    except ValueError as e:
        message = str(e)
        assert str(path) in message, f"{type(e).__name__} without the file: {message}"
        if needs_line:
            assert re.search(re.escape(str(path)) + r"(:\d+|\[\d+\]|'?: no prompts)", message), message


@FUZZ
@given(data=files)
def test_jsonl_prompts(tmp_path, data):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(data)
    _loads_or_names_the_place(load_prompts, path)


def _sft(path):
    for where, record in iter_records(path):
        sft_messages(record, where)


def _dpo(path):
    for where, record in iter_records(path):
        dpo_triple(record, where)


@FUZZ
@given(data=files)
def test_sft_and_dpo_records_jsonl(tmp_path, data):
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    _loads_or_names_the_place(_sft, path)
    _loads_or_names_the_place(_dpo, path)


@FUZZ
@given(
    data=st.one_of(
        st.lists(records, max_size=4).map(lambda rs: json.dumps(rs, indent=1).encode()),
        values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=30),
    )
)
def test_sft_and_dpo_records_json(tmp_path, data):
    path = tmp_path / "train.json"
    path.write_bytes(data)
    _loads_or_names_the_place(_sft, path)
    _loads_or_names_the_place(_dpo, path)


@FUZZ
@given(
    data=st.one_of(
        values.map(lambda v: json.dumps(v).encode()),
        records.map(lambda r: json.dumps(r).encode()),
        st.binary(max_size=30),
    )
)
def test_templates(tmp_path, data):
    path = tmp_path / "templates.json"
    path.write_bytes(data)
    _loads_or_names_the_place(Templates.from_file, path, needs_line=False)


@FUZZ
@given(data=files)
def test_ifeval_responses(tmp_path, data):
    path = tmp_path / "responses.jsonl"
    path.write_bytes(data)
    _loads_or_names_the_place(ifeval.load_responses, path, needs_line=False)
