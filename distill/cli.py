"""Command line: ``python -m distill <command>``. User mistakes print one line and exit with code 2."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from distill import UserError
from distill.runlock import RunLock

if TYPE_CHECKING:
    from distill.recipe import Recipe

EXIT_USAGE = 2
# OSErrors that are the machine's state, not a bug: reported as one line naming the file (the atomic writes
# have kept the previous checkpoint), not as a traceback.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag on one line (it would print the usage first), with exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _set_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set teacher.train.epochs=3 or students.*.train.epochs=3 "
        "(repeatable; VALUE is read as YAML)",
    )


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="YAML recipe (see recipes/); parsed with yaml.safe_load")
    _set_arg(p)


def _out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="run directory for checkpoints, logs and summary")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")


def _add_train(sub: argparse._SubParsersAction, section: str, help: str) -> None:
    p = sub.add_parser(section, help=help)
    _recipe_args(p)
    _out_args(p)
    p.set_defaults(func=_cmd_train)


def _add_student(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("student", help="distil a trained teacher into a student (the recipe's 'student')")
    p.add_argument("--teacher", required=True, type=Path, help="run directory of a trained teacher")
    p.add_argument("--name", help="which entry of the recipe's 'students' list to train")
    _recipe_args(p)
    _out_args(p)
    p.set_defaults(func=_cmd_student)


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline: teacher, single model, students, gap report")
    p.add_argument("recipe", help="pipeline recipe (e.g. recipes/digits.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run directory; finished stages in it are reused")
    p.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="STAGE",
        help="train this stage again though --out holds it (teacher, single, or a student's name; repeatable; "
        "the teacher reruns every student); the old one is kept as <stage>.old",
    )
    p.add_argument(
        "--students",
        action="append",
        default=None,
        metavar="NAME",
        help="train and report only these of the recipe's students (repeatable; default: all of them)",
    )
    _set_arg(p)
    p.set_defaults(func=_cmd_run)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="the gap report of trained runs")
    p.add_argument("--teacher", required=True, type=Path, help="teacher run directory")
    p.add_argument(
        "--student", dest="students", action="append", default=[], type=Path, help="student run directory (repeatable)"
    )
    p.add_argument("--single", type=Path, help="single-model baseline run directory")
    p.add_argument(
        "--control",
        dest="controls",
        action="append",
        default=[],
        type=Path,
        help="control run directory (distill run's OUT/controls/<name>; repeatable); the strongest on validation "
        "is named in the report",
    )
    p.add_argument("--out", required=True, type=Path, help="where report.json, report.md and figures go")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="evaluate.KEY=VALUE",
        help="override the teacher's recipe's evaluate section, e.g. --set evaluate.cifar10c=PATH (repeatable)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _add_aggregate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="several runs' reports (seeds): mean ± std, intervals, shares")
    p.add_argument("runs", nargs="+", type=Path, help="run directories of distill run (or report dirs / report.json)")
    p.add_argument("--out", type=Path, help="markdown file to write (also printed)")
    p.add_argument("--json", dest="json_out", type=Path, help="the same numbers as JSON")
    p.add_argument("--title", help="the markdown's title")
    p.add_argument("--confidence", type=float, default=0.95, help="of every interval (default 0.95)")
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="MODEL",
        help="also compare with this model of every run, e.g. control:self_kd (repeatable)",
    )
    p.set_defaults(func=_cmd_aggregate)


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="why ensembles work: loss landscape (Fort et al.) and design diversity")
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    a = asub.add_parser("landscape", help="weight/function similarity, t-SNE, subspace samplers, diversity plane")
    a.add_argument(
        "--teacher",
        required=True,
        type=Path,
        help="teacher run (train it with teacher.record_trajectory=true and record_weights=true)",
    )
    a.add_argument("--out", required=True, type=Path)
    a.set_defaults(func=_cmd_landscape)
    a = asub.add_parser("diversity", help="diversity metrics of a population of ensembles vs accuracy/robustness")
    a.add_argument("--teachers", required=True, nargs="+", type=Path, help="teacher run directories")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--names", nargs="+", help="one label per teacher (default: the shortest distinct path suffix)")
    a.add_argument(
        "--groups",
        nargs="+",
        help="one design label per teacher; repeats are seeds of one design: adds per-design means and the "
        "within-design correlation",
    )
    a.add_argument("--corruption-limit", type=int, help="test images drawn for the corruption sweep (default 1000)")
    a.add_argument("--diversity-images", type=int, help="test images drawn for the attribution measures (default 500)")
    a.add_argument("--subset-seed", type=int, help="seed of the class-stratified draws (default 0)")
    a.set_defaults(func=_cmd_diversity)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed benchmark: step times, ratios, latency, memory")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", help="architecture to time (default: small_cnn on CPU, resnet18 on CUDA)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's setting)")
    p.add_argument("--data-root", type=Path, help="the timed epoch's dataset (default ../shared/data)")
    p.add_argument("--sections", nargs="+", help="run only these sections (default: all)")
    p.set_defaults(func=_cmd_bench)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a run's model as a file that runs with plain PyTorch")
    p.add_argument("run", type=Path, help="run directory (teacher, student or single)")
    p.add_argument(
        "--format",
        default="torchscript",
        choices=["torchscript", "exported", "onnx"],
        help="torchscript (torch.jit), exported (torch.export, .pt2) or onnx (torch.export-based exporter, dynamic "
        "batch; outputs log_probs and the total / data / knowledge uncertainties; checked with onnxruntime in a "
        "subprocess)",
    )
    p.add_argument("--out", type=Path, help="output file (default: inside the run directory)")
    p.set_defaults(func=_cmd_export)


def _add_import_teacher(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-teacher", help="make a teacher run directory from trained networks' checkpoints")
    p.add_argument(
        "--checkpoint",
        dest="checkpoints",
        action="append",
        required=True,
        type=Path,
        help="a member's state dict: .safetensors, or .pt/.pth read with torch.load(weights_only=True) (repeatable)",
    )
    p.add_argument(
        "--arch",
        dest="archs",
        action="append",
        required=True,
        help="registered architecture of every member, or repeated once per --checkpoint in order (see --plugin)",
    )
    _recipe_args(p)
    p.add_argument("--out", required=True, type=Path, help="the new teacher run directory")
    p.add_argument("--mean", nargs="+", type=float, help="input mean the networks were trained with (1 or C values)")
    p.add_argument("--std", nargs="+", type=float, help="input std the networks were trained with (1 or C values)")
    p.add_argument(
        "--normalization-from-data",
        action="store_true",
        help="standardise with the training split's own mean and std (as distill trains) instead of --mean/--std",
    )
    p.set_defaults(func=_cmd_import_teacher)


def build_parser() -> argparse.ArgumentParser:
    """The ``distill`` parser: every leaf subcommand sets ``func``, its handler ``(args) -> exit code``."""
    parser = _Parser(
        prog="distill", description="Ensemble distillation: teachers, perturbations, students and the gap."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub, "teacher", "train a teacher ensemble (the recipe's 'teacher' section)")
    _add_train(sub, "single", "train the single-model baseline (the recipe's 'single' section)")
    _add_student(sub)
    _add_run(sub)
    _add_evaluate(sub)
    _add_aggregate(sub)
    _add_analyze(sub)
    _add_bench(sub)
    _add_export(sub)
    _add_import_teacher(sub)
    _plugin_flags(parser)
    return parser


def _plugin_flags(parser: argparse.ArgumentParser) -> None:
    """``--plugin FILE.py`` on every subcommand (nested ones included): a Python file that registers architectures,
    datasets or terms (distill/plugins.py), imported before the recipe is read; repeatable."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _plugin_flags(sub)
            return
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        type=Path,
        metavar="FILE.py",
        help="import this Python file first: it registers architectures (@register_arch), datasets or terms; "
        "recorded in model.json and imported again from there by later commands (repeatable)",
    )


def _load_plugins(args: argparse.Namespace) -> None:
    """The --plugin files, then those recorded by the run directories this command reads (a teacher's, the run
    being resumed or exported), so their architectures are known before the recipe is checked."""
    from distill.plugins import load_for_runs, load_plugins  # imports torch

    load_plugins(args.plugins)
    dirs = [getattr(args, "teacher", None), getattr(args, "single", None)]
    for many in ("students", "teachers", "controls"):
        dirs += getattr(args, many, None) or []
    if args.command == "export":
        dirs.append(args.run)
    if args.command == "run":
        dirs.append(args.out / "teacher")
    if getattr(args, "resume", False):
        dirs.append(args.out)
    load_for_runs([d for d in dirs if isinstance(d, Path)])


def _print_summary(summary: dict) -> None:
    test = summary.get("test", {})
    keys = [k for k in ("acc", "nll", "member_acc_mean", "cam_similarity") if k in test]
    print(
        "summary: "
        + "  ".join(f"{k} {test[k]:.4f}" for k in keys)
        + f"  epoch time (median) {summary.get('epoch_time_s_median') or 0:.2f}s"
    )


# The handlers import their command's module on use: those load torch (seconds), and `distill --help` should not.


def _checked_recipe(args: argparse.Namespace) -> Recipe:
    from distill.resolve import load_checked  # the recipe schema and YAML: twice the time of `distill --help`

    return load_checked(args.recipe, args.overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from distill.train import train_ensemble

    recipe = _checked_recipe(args)
    summary = train_ensemble(recipe, args.out, section=args.command, resume=args.resume)
    if "test" in summary:
        _print_summary(summary)
    return 0


def _cmd_student(args: argparse.Namespace) -> int:
    from distill.train import train_student

    recipe = _checked_recipe(args)
    summary = train_student(recipe, args.teacher, args.out, name=args.name, resume=args.resume)
    if "test" in summary:
        _print_summary(summary)
    return 0


def _cmd_import_teacher(args: argparse.Namespace) -> int:
    from distill.api import import_teacher

    summary = import_teacher(
        args.checkpoints,
        args.out,
        arch=args.archs,
        recipe=args.recipe,
        overrides=args.overrides,
        mean=args.mean,
        std=args.std,
        normalization_from_data=args.normalization_from_data,
    )
    test, members = summary["test"], len(args.checkpoints)
    print(f"imported {members} members into {args.out}: test acc {test['acc']:.4f}  nll {test['nll']:.4f}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from distill.pipeline import run_pipeline

    recipe = _checked_recipe(args)
    run_pipeline(recipe, args.out, rerun=args.rerun, only_students=args.students)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from distill.report import evaluate_runs, format_gap_table
    from distill.resolve import evaluate_section

    cfg = evaluate_section(args.teacher, args.overrides) if args.overrides else None
    report = evaluate_runs(args.teacher, args.students, args.single, args.out, cfg, args.controls)
    print(format_gap_table(report))
    return 0


def _cmd_aggregate(args: argparse.Namespace) -> int:
    from distill.report.aggregate import aggregate, write

    if not 0.5 < args.confidence < 1:
        raise UserError(f"--confidence {args.confidence}: expected a number in (0.5, 1)")
    print(write(aggregate(args.runs, args.confidence, args.against), args.out, args.json_out, args.title))
    return 0


def _cmd_landscape(args: argparse.Namespace) -> int:
    from distill.analysis import analyze_landscape

    analyze_landscape(args.teacher, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_diversity(args: argparse.Namespace) -> int:
    from distill.analysis import analyze_diversity

    flags = {
        "names": args.names,
        "groups": args.groups,
        "corruption_limit": args.corruption_limit,
        "diversity_images": args.diversity_images,
        "subset_seed": args.subset_seed,
    }
    analyze_diversity(args.teachers, args.out, **{k: v for k, v in flags.items() if v is not None})
    print(f"wrote {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from distill.bench import SECTIONS, run_bench

    result = run_bench(
        device=args.device,
        model=args.model,
        out=args.out,
        quick=args.quick,
        threads=args.threads,
        data_root=args.data_root,
        sections=tuple(args.sections or SECTIONS),
    )
    print((args.out / "bench.md").read_text() if (args.out / "bench.md").exists() else result)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from distill.export import export

    path, err = export(args.run, args.format, args.out)
    print(f"wrote {path} (max |difference| from the checkpoint on random inputs: {err:.2e})")
    if args.format == "onnx":
        print(f"checked with onnxruntime in a subprocess without distill; stored in {path}.check.json")
    return 0


def _environment_error(err: OSError, args: argparse.Namespace) -> int:
    where = err.filename or getattr(args, "out", None) or "a file"
    print(
        f"distill: error: {where}: {err.strerror}; files are written under a temporary name and renamed, so "
        "what was there before (the last finished checkpoint) is intact; free space or fix permissions and rerun",
        file=sys.stderr,
    )
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    held = contextlib.ExitStack()
    try:
        # Every other command writes into --out. Under `accelerate launch` only the main process (RANK 0) holds
        # the lock: the other ranks are the same command, not a concurrent one.
        if args.command not in ("export", "aggregate") and os.environ.get("RANK", "0") == "0":
            held.enter_context(RunLock(args.out))
        _load_plugins(args)
        return args.func(args)
    except UserError as err:
        # one line, always: a message quoting a file's content or a library's error may hold newlines
        print("distill: error: " + " / ".join(x.strip() for x in str(err).splitlines() if x.strip()), file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        if err.errno not in ENVIRONMENT_ERRNOS:
            raise
        return _environment_error(err, args)
    except KeyboardInterrupt:
        print("distill: interrupted; the last finished epoch is kept (use --resume)", file=sys.stderr)
        return 130
    finally:
        held.close()


if __name__ == "__main__":
    sys.exit(main())
