"""Mesh construction, logical-axis rules, and sharded forward == single-device forward."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from spar_jax.models import from_pretrained
from spar_jax.parallel import DEFAULT_RULES, logical_to_spec, make_mesh, normalize_rules, resolve_mesh_shape

from tiny_checkpoints import write_checkpoint


def test_resolve_mesh_shape():
    assert resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
    assert resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="needs 12 devices"):
        resolve_mesh_shape((2, 3, 2), 8)
    with pytest.raises(ValueError, match="at most one axis"):
        resolve_mesh_shape((-1, -1, 1), 8)
    with pytest.raises(ValueError, match="does not divide"):
        resolve_mesh_shape((3, -1, 1), 8)


def test_logical_rules_and_divisibility_fallback():
    mesh = make_mesh((2, 2, 2))
    assert len(jax.devices()) == 8
    assert logical_to_spec(("embed", "heads", "head_dim"), (64, 4, 16), mesh, DEFAULT_RULES) == P(
        "fsdp", "tensor", None
    )
    # 9 heads do not divide over tensor=2: replicated instead of failing
    assert logical_to_spec(("embed", "heads", "head_dim"), (576, 9, 64), mesh, DEFAULT_RULES) == P("fsdp", None, None)
    assert logical_to_spec(("batch", "length"), (8, 5), mesh, DEFAULT_RULES) == P(("data", "fsdp"), None)
    assert logical_to_spec(("batch", "length"), (2, 5), mesh, DEFAULT_RULES) == P("data", None)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        normalize_rules([("embed", "model")])


@pytest.mark.parametrize("arch", ["llama", "glm"])
def test_sharded_forward_matches_single_device(arch, tmp_path):
    directory = write_checkpoint(tmp_path / arch, arch, seed=7)
    ids = np.random.default_rng(0).integers(3, 256, size=(4, 10)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    single = np.asarray(from_pretrained(directory)(ids, mask))
    mesh = make_mesh((2, 2, 2))
    model = from_pretrained(directory, mesh=mesh)
    q = model.layers.q[...]
    assert q.sharding.spec == P(None, "fsdp", "tensor", None)  # layers, embed, heads, head_dim
    assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (2, 32, 2, 16)
    sharded = jax.jit(lambda m, x, a: m(x, a))(model, ids, mask)
    assert sharded.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(np.asarray(sharded), single, atol=1e-5, rtol=1e-5)
    # The unrolled layer loop splits the sharded stack per layer; same result.
    unrolled = jax.jit(lambda m, x, a: m(x, a))(from_pretrained(directory, mesh=mesh, scan_layers=False), ids, mask)
    np.testing.assert_allclose(np.asarray(unrolled), single, atol=1e-5, rtol=1e-5)


def test_only_process_zero_writes_shared_files(tmp_path, monkeypatch):
    from spar_jax import files

    files.write_json(tmp_path / "a.json", {"x": 1})
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not files.is_writer()
    files.write_json(tmp_path / "b.json", {"x": 1})
    files.write_jsonl(tmp_path / "c.jsonl", [{"x": 1}])
    files.write_text(tmp_path / "d.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
