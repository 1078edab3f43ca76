"""Cloud TPU generations and slice names: chips, hosts, HBM, peak FLOP/s and HBM bandwidth per chip.

Numbers are Google's published per-chip specifications (cloud.google.com/tpu/docs/v4, v5e, v5p-training, v6e):

| generation | HBM / chip | HBM bandwidth | bf16 peak | TensorCores / chip | chips / host | slice name counts |
|------------|-----------:|--------------:|----------:|-------------------:|-------------:|-------------------|
| v4         | 32 GiB     | 1200 GB/s     | 275 TF/s  | 2                  | 4            | TensorCores       |
| v5e        | 16 GiB     |  819 GB/s     | 197 TF/s  | 1                  | 8            | chips             |
| v5p        | 95 GiB     | 2765 GB/s     | 459 TF/s  | 2                  | 4            | TensorCores       |
| v6e        | 32 GiB     | 1640 GB/s     | 918 TF/s  | 1                  | 8            | chips             |

So ``v5p-128`` is 64 chips on 16 hosts, ``v4-32`` is 16 chips on 4 hosts, ``v5e-16`` (gcloud: ``v5litepod-16``) and
``v6e-16`` are 16 chips on 2 hosts. Slices smaller than a host (v5e-4, v6e-4) are one host.
"""

from __future__ import annotations

import dataclasses
import math
import re

GiB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation. Units: ``hbm_bytes`` bytes, ``hbm_bandwidth`` bytes/s, ``peak_flops`` bf16 FLOP/s."""

    generation: str
    hbm_bytes: int
    hbm_bandwidth: float
    peak_flops: float
    cores_per_chip: int
    chips_per_host: int
    gcloud_prefix: str  # accelerator-type prefix gcloud expects
    runtime_version: str  # default TPU VM software version


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32 * GiB, 1200e9, 275e12, 2, 4, "v4", "tpu-ubuntu2204-base"),
    "v5e": Chip("v5e", 16 * GiB, 819e9, 197e12, 1, 8, "v5litepod", "v2-alpha-tpuv5-lite"),
    "v5p": Chip("v5p", 95 * GiB, 2765e9, 459e12, 2, 4, "v5p", "v2-alpha-tpuv5"),
    "v6e": Chip("v6e", 32 * GiB, 1640e9, 918e12, 1, 8, "v6e", "v2-alpha-tpuv6e"),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice: ``chips`` chips of one generation on ``hosts`` TPU VM hosts."""

    name: str  # as the user wrote it, e.g. "v5p-128"
    chip: Chip
    chips: int
    hosts: int

    @property
    def accelerator_type(self) -> str:
        """The ``--accelerator-type`` value gcloud expects (e.g. ``v5litepod-16`` for ``v5e-16``)."""
        count = self.chips * self.chip.cores_per_chip if self.chip.cores_per_chip > 1 else self.chips
        return f"{self.chip.gcloud_prefix}-{count}"

    @property
    def hbm_bytes(self) -> int:
        return self.chips * self.chip.hbm_bytes


def parse_topology(name: str) -> Topology:
    """``"v5p-128"`` -> Topology(64 chips, 16 hosts). v4/v5p names count TensorCores (2 per chip); v5e/v6e count
    chips. Raises ValueError naming the accepted forms."""
    m = re.fullmatch(r"\s*(v4|v5e|v5p|v6e|v5litepod|v5lite)-(\d+)\s*", str(name))
    if not m:
        known = ", ".join(f"{g}-N" for g in CHIPS)
        raise ValueError(f"topology {name!r}: expected one of {known} (v5e also as v5litepod-N), e.g. v5p-128")
    chip = CHIPS[_ALIASES.get(m.group(1), m.group(1))]
    count = int(m.group(2))
    if count <= 0 or count % chip.cores_per_chip:
        raise ValueError(
            f"topology {name!r}: {chip.generation} names count TensorCores ({chip.cores_per_chip} per "
            f"chip), so the number must be a positive multiple of {chip.cores_per_chip}"
        )
    chips = count // chip.cores_per_chip
    return Topology(name=name.strip(), chip=chip, chips=chips, hosts=math.ceil(chips / chip.chips_per_host))
