"""Device identity: one relation between fingerprints, and lookup, transfer and import agree with it."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
from db_helpers import make_records

import tunesvc.lookup  # noqa: F401  (the module: tunesvc.lookup the attribute is the function)
from tunesvc import identity, templates
from tunesvc.cache import Store
from tunesvc.cache.exchange import import_files
from tunesvc.replay.files import load
from tunesvc.replay.runner import RecordedRunner, recorded_fingerprint
from tunesvc.search.transfer import seed_configs
from tunesvc.types import Fingerprint, Measurement, Record, Timing

lookup_mod = sys.modules["tunesvc.lookup"]
KT = Path(__file__).parent / "data" / "pnpoly_RTX_3090_small.json.gz"

H100_CUDA = Fingerprint("cuda", "NVIDIA", "gpu", "sm_90", "NVIDIA H100 80GB HBM3", "550.54")
H100_CL = Fingerprint("opencl", "NVIDIA", "gpu", "sm_90", "NVIDIA H100 80GB HBM3", "NVIDIA CUDA 550.54.15")
EPYC_POCL = Fingerprint("opencl", "AMD", "cpu", "x86 family 25 model 1", "pthread-AMD EPYC 7B13 64-Core Processor",
                        "PoCL 3.1+debian")
EPYC_INTEL = Fingerprint("opencl", "AMD", "cpu", "x86 family 25 model 1", "AMD EPYC 7B13 64-Core Processor",
                         "Intel OpenCL 2024.18.6.0.02_160000")
RADEON = Fingerprint("opencl", "AMD", "gpu", "gfx1100", "AMD Radeon RX 7900 XTX", "AMD APP 3590.0")
A100 = Fingerprint("cuda", "NVIDIA", "gpu", "sm_80", "NVIDIA A100-SXM4-80GB", "550.54")

PAIRS = [
    (H100_CUDA, H100_CUDA, "exact"),
    (H100_CUDA, H100_CL, "family"),  # the same GPU through CUDA and through OpenCL
    (EPYC_POCL, EPYC_INTEL, "family"),  # the same CPU through PoCL and through Intel's runtime
    (replace(EPYC_POCL, architecture=""), EPYC_INTEL, "family"),  # the same normalised name, one architecture unknown
    (EPYC_POCL, replace(EPYC_INTEL, vendor="Advanced Micro Devices, Inc."), "family"),  # vendors compared normalised
    (EPYC_POCL, RADEON, "other"),  # an AMD CPU and an AMD GPU: one's results say nothing of the other's
    (H100_CUDA, A100, "vendor"),  # two NVIDIA GPUs of different names and architectures
    (A100, replace(A100, name="NVIDIA A800 80GB PCIe", driver="535"), "family"),  # the same architecture, other names
    (H100_CUDA, replace(EPYC_POCL, device_type="gpu"), "other"),  # another vendor
    (replace(A100, vendor=""), replace(H100_CUDA, vendor=""), "other"),  # two devices that name no vendor share nothing
]  # fmt: skip


@pytest.mark.parametrize("a, b, want", PAIRS)
def test_relation(a, b, want):
    assert identity.relation(a, b) == want
    assert identity.relation(b, a) == want  # symmetric


@pytest.mark.parametrize("a, b, want", [p for p in PAIRS if p[0].key != p[1].key and p[0].vendor])
def test_lookup_answers_at_the_level_of_the_relation(tmp_path, monkeypatch, a, b, want):
    """Records of ``b`` answer a lookup for ``a`` at the relation's level, and never when it is ``other``."""
    monkeypatch.setattr(lookup_mod, "shipped_db_dir", lambda: tmp_path / "no_tuning_db")
    lookup_mod.clear_cache()
    store = Store(tmp_path / "t.db")
    store.put_many(make_records(b))
    store.close()
    try:
        res = lookup_mod.lookup("matmul", (100, 100, 100), "float32", a.key, tmp_path / "t.db")
    finally:
        lookup_mod.clear_cache()
    assert res.level == ("default" if want == "other" else want)


def test_transfer_ranks_by_the_relation():
    """Seeds come from the same hardware first (any driver or backend), then the vendor's, then any device."""
    tpl = templates.get("matmul")
    from tunesvc.search import SearchSpace
    from tunesvc.templates.base import Context

    space = SearchSpace.from_template(tpl, Context((64, 64, 64), "float32", None))
    configs = list(space.configs[:3])
    t = Timing(1e-3, 1e-3, 1e-3, 0.0, 1)
    recs = [Record(fp, tpl.name, tpl.source_hash, "float32", (64, 64, 64), Measurement(c, "ok", timing=t))
            for fp, c in ((RADEON, configs[0]), (A100, configs[1]), (H100_CL, configs[2]))]
    assert seed_configs(recs, H100_CUDA, (64, 64, 64), space) == [configs[2], configs[1], configs[0]]


@pytest.mark.parametrize("name, vendor", [
    ("NVIDIA GeForce RTX 3090", "NVIDIA"), ("Tesla V100-PCIE-32GB", "NVIDIA"), ("A100-SXM4-40GB", "NVIDIA"),
    ("AMD Instinct MI250X", "AMD"), ("Radeon Pro W6800", "AMD"), ("Intel(R) Data Center GPU Max 1100", "Intel"),
    ("Some Board", "unknown"),
])  # fmt: skip
def test_guess_vendor_gives_the_normalised_vendor(name, vendor):
    assert identity.guess_vendor(name) == vendor == identity.normalise_vendor(vendor)


def test_one_kernel_tuner_file_is_one_device_replayed_or_imported(tmp_path, monkeypatch):
    """Replayed, a Kernel Tuner file is the device of recorded_fingerprint; imported, its records are
    stored under the same fingerprint (vendor 'NVIDIA' both ways), so the keys agree."""
    from test_interop import RecordedPnpoly

    tpl = RecordedPnpoly()
    monkeypatch.setitem(templates._instances, tpl.name, tpl)
    space = load(KT)
    assert import_files([KT], tmp_path / "t.db").added == len(space.configs)
    store = Store(tmp_path / "t.db", readonly=True)
    stored = {r.fingerprint for r in store.records()}
    store.close()
    replayed = RecordedRunner(KT).info.fingerprint
    assert stored == {replayed} == {recorded_fingerprint(space)} and replayed.vendor == "NVIDIA"
