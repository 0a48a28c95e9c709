"""The benchmark's smoke test: the quick CPU run writes bench.json and bench.md with every section."""

from __future__ import annotations

import json

import pytest
import torch

from distill import UserError
from distill.bench import SECTIONS, run_bench
from distill.perturb import PERTURBATIONS


def test_quick_bench_writes_every_section(tmp_path):
    result = run_bench("cpu", out=tmp_path, quick=True, threads=1)  # one thread: steady on a shared CI machine
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert set(SECTIONS) <= set(on_disk) and on_disk["config"]["quick"] is True
    t = on_disk["teacher"]
    assert t["mode"] == "loop" and t["de_member_images_per_s"] > 0 and t["sdde_over_de"] > 1
    assert {"de/loop", "sdde/loop", "de/vmap", "sdde/vmap"} <= set(t["steps"])
    assert "sdde_train_bn/loop" in t["steps"] and t["sdde_train_bn_over_sdde"] > 0
    assert set(on_disk["student"]["over_plain_kd"]) == set(PERTURBATIONS)  # every registered method, mixup included
    assert "mixup" in PERTURBATIONS and "plain_fp32_loop" in t["steps"] and t["plain_over_best_de"] > 0
    assert on_disk["student"]["over_plain_kd"]["none"] == 1.0
    fractions = on_disk["sdde_breakdown"]["parts_fractions"]
    assert abs(sum(fractions.values()) - 1) < 1e-6 and all(v >= 0 for v in fractions.values())
    assert {"teacher/b1", "student/b1"} <= set(on_disk["inference"]["cases"])
    assert on_disk["inference"]["cases"]["teacher/b1"]["peak_memory_mb"] is None  # n/a on CPU, said so
    assert on_disk["epoch"]["steps"] >= 1 and on_disk["epoch"]["data"].startswith("digits")
    assert on_disk["flops"]["de"]["gflop_per_step"] > 0 and on_disk["flops"]["matmul_gflop_per_s"]["fp32"] > 0
    assert result["teacher"]["steps"] == on_disk["teacher"]["steps"]

    md = (tmp_path / "bench.md").read_text()
    for heading in ("Teacher step", "Where the SDDE step goes", "Student KD step", "Inference", "epoch", "FLOP/s"):
        assert heading in md
    assert "python -m distill bench --device cpu" in md and "member-images/s" in md


def test_bench_arguments_checked(tmp_path):
    with pytest.raises(UserError, match="unknown architecture"):
        run_bench("cpu", model="nope", out=tmp_path, quick=True)
    with pytest.raises(UserError, match="expected cpu or cuda"):
        run_bench("tpu", out=tmp_path, quick=True)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            run_bench("cuda", out=tmp_path, quick=True)
    assert not (tmp_path / "bench.json").exists()
