"""The machine record every benchmark result carries: which CPU kernels its figures came from."""

from __future__ import annotations

import torch

from dose3d_fl.bench.runner import CPU_FLAGS, cpu_features, machine


def test_the_record_names_torchs_kernels_and_the_vector_units_of_this_cpu() -> None:
    record = machine()
    assert record["cpu_features"]["torch_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert set(record["cpu_features"]["flags"]) <= set(CPU_FLAGS)


def test_only_the_listed_flags_are_kept_in_their_order() -> None:
    flags = ["fpu", "amx_bf16", "sse2", "avx512f", "avx2", "avx512_bf16"]
    assert cpu_features(flags)["flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    assert cpu_features([])["flags"] == []
