"""``bench.json`` -> ``bench.md``: one table per section."""

from __future__ import annotations

CPU_TARGET_SDDE_OVER_DE = 2.0  # the CPU target for the SDDE step / DE step ratio


def _f(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def target_line(ratio: float, device: str) -> str:
    if device != "cpu":
        return f"SDDE / DE step: {ratio:.2f}x (the CPU target of <= {CPU_TARGET_SDDE_OVER_DE:.1f}x applies to CPU runs)"
    if ratio <= CPU_TARGET_SDDE_OVER_DE:
        return f"SDDE / DE step: **{ratio:.3f}x**: meets the CPU target (<= {CPU_TARGET_SDDE_OVER_DE:.1f}x)"
    over = ratio / CPU_TARGET_SDDE_OVER_DE - 1
    return (
        f"SDDE / DE step: **{ratio:.3f}x**: misses the CPU target (<= {CPU_TARGET_SDDE_OVER_DE:.1f}x) by "
        f"{100 * over:.1f} %"
    )


def _teacher(t: dict, device: str) -> list[str]:
    lines = ["## Teacher step (forward + backward + optimizer step)", ""]
    per_s = {k: t["member_images_per_step"] / v["median_ms"] * 1000 for k, v in t["steps"].items()}
    rows = [
        [k, _f(v["median_ms"]), f"{_f(v['q1_ms'])}-{_f(v['q3_ms'])}", _f(per_s[k], 0)] for k, v in t["steps"].items()
    ]
    lines += _table(["objective / mode", "median ms", "IQR ms", "member-images/s"], rows)
    lines += [
        "",
        f"- DE throughput ({t['mode']} mode): **{_f(t['de_member_images_per_s'], 0)} member-images/s**",
        f"- {target_line(t['sdde_over_de'], device)}",
        f"- SDDE reusing the training forward (same_batch: true) / DE: {t['sdde_same_batch_over_de']:.2f}x",
        f"- SDDE with the diversity batch in train-mode BatchNorm (diversity_bn: train) / SDDE: "
        f"{t['sdde_train_bn_over_sdde']:.2f}x",
    ]
    if "plain_over_best_de" in t:
        lines += [
            f"- plain per-member fp32 loop / best DE step ({t['best_de']}): **{t['plain_over_best_de']:.2f}x** "
            "(> 1: the toolkit's step is faster)",
            f"- SDDE / DE in the best DE setting: {t['best_sdde_over_best_de']:.2f}x",
        ]
    if "vmap_over_loop" in t:
        v = t["vmap_over_loop"]
        lines.append(f"- vmap / loop step time: DE {v['de']:.2f}x, SDDE {v['sdde']:.2f}x (> 1: the loop is faster)")
    return lines


def _breakdown(b: dict) -> list[str]:
    lines = ["", f"## Where the SDDE step goes ({b['mode']} mode, synchronised phases)", ""]
    rows = [[k, _f(v), f"{100 * b['sdde_phase_fractions'][k]:.0f} %"] for k, v in b["sdde_phases_ms"].items()]
    lines += _table(["phase", "median ms", "share"], rows)
    lines += [""]
    rows = [[k, _f(v), f"{100 * b['parts_fractions'][k]:.0f} %"] for k, v in b["parts_ms"].items()]
    return lines + _table(["part (backward split by DE's backward)", "ms", "share"], rows)


def _student(s: dict) -> list[str]:
    lines = ["", f"## Student KD step by perturbation (teacher {s['teacher_mode']} mode)", ""]
    rows = [[k, _f(v["median_ms"]), f"{s['over_plain_kd'][k]:.2f}x"] for k, v in s["steps"].items()]
    return lines + _table(["perturbation", "median ms", "/ plain KD"], rows)


def _inference(inf: dict) -> list[str]:
    lines = ["", "## Inference (eval mode, no grad)", ""]
    rows = [
        [k.split("/")[0], k.split("/")[1][1:], _f(v["median_ms"], 2), _f(v["images_per_s"], 0),
         _f(v["peak_memory_mb"])]
        for k, v in inf["cases"].items()
    ]  # fmt: skip
    lines += _table(["model", "batch", "median ms", "images/s", "peak memory MB"], rows)
    lines += ["", "Weights: " + ", ".join(f"{k} {v:.2f} MB" for k, v in inf["weights_mb"].items()) + "."]
    if "peak_memory_note" in inf:
        lines += [f"Peak memory {inf['peak_memory_note']}."]
    return lines


def _epoch(e: dict) -> list[str]:
    lines = ["", "## A whole epoch through the training loop", ""]
    return lines + _table(
        ["data", "model", "objective", "steps", "epoch s", "member-images/s"],
        [[e["data"], f"{e['members']} x {e['arch']} ({e['mode']})", e["objective"], str(e["steps"]),
          _f(e["epoch_s"]), _f(e["member_images_per_s"], 0)]],
    )  # fmt: skip


def _flops(fl: dict) -> list[str]:
    rates = fl["matmul_gflop_per_s"]
    lines = ["", "## Achieved FLOP/s (FlopCounterMode) vs the measured matmul rate", ""]
    lines += [
        "Matmul "
        + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in rates.items())
        + f" ({fl['matmul_n']}x{fl['matmul_n']})."
        + (f" TF32: {fl['tf32']}." if "tf32" in fl else ""),
        "",
    ]
    rows = []
    for name in ("de", "sdde"):
        d = fl[name]
        if "error" in d:
            rows.append([name, d["error"], "", ""])
            continue
        shares = ", ".join(f"{100 * v:.1f} % of {k}" for k, v in d["share_of_matmul"].items())
        rows.append([name, _f(d["gflop_per_step"], 2), _f(d["achieved_gflop_per_s"]), shares])
    lines += _table(["step", "GFLOP", "achieved GFLOP/s", "share of matmul rate"], rows)
    if "sdde_over_de_flops" in fl:
        lines += [
            "",
            f"SDDE / DE FLOPs per step: {fl['sdde_over_de_flops']:.3f}x (counted in {fl['counted_in']} mode).",
        ]
    return lines


def markdown(r: dict) -> str:
    c = r["config"]
    lines = [
        f"# Benchmark: {c['device_name']}",
        "",
        f"`{c['command']}`",
        "",
        f"torch {c['torch']}, {c['threads']} CPU thread(s), {c['timestamp']}. Teacher: {c['members']} x "
        f"{c['arch']}, batch {c['batch']} per member, {c['channels']}x{c['size']}x{c['size']} images, "
        f"{c['reps']} timed repetitions after {c['warmup']} warm-up, interleaved; medians"
        + (" (quick smoke-test sizes)." if c["quick"] else "."),
        "",
    ]
    if r.get("teacher") is not None:
        lines += _teacher(r["teacher"], c["device"])
    # the other sections in the order they are measured; a section not run is left out
    for key, section in (
        ("sdde_breakdown", _breakdown),
        ("student", _student),
        ("inference", _inference),
        ("epoch", _epoch),
        ("flops", _flops),
    ):
        if r.get(key) is not None:
            lines += section(r[key])
    lines += [""]
    return "\n".join(lines)
