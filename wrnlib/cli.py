"""Command line: ``python -m wrnlib {params,train,runs,evaluate,bench,sweep,study}``.

A thin shell: each command parses its flags and calls the library (or the study). Expected
problems (bad values, data, run folders, a full disk, a NaN loss) end in one ``error:`` line and
exit code 2; an interrupt exits with 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from pathlib import Path

from .config import TrainConfig, read_config_file


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one line: the problem, the flag meant where one is close, and where
    the help is."""

    commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:  # reported by the command's own parser, which knows its flags
            command = self.commands.get(getattr(namespace, "command", None), self)
            known = [option for action in command._actions for option in action.option_strings]
            meant = next((match for word in unknown if word.startswith("-")
                          for match in difflib.get_close_matches(word, known, n=1)), None)
            hint = f"; did you mean {meant}?" if meant else ""
            command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return namespace

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _int_at_least(low: int):
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value
    return convert


positive_int, non_negative_int = _int_at_least(1), _int_at_least(0)


def _add_config_flags(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (``--batch-size``, ``--flip/--no-flip``, ...), default unset.

    Help texts and allowed values come from the fields' metadata in wrnlib.config.
    """
    for field in dataclasses.fields(TrainConfig):
        if field.name in skip:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind, choices = str(field.type), field.metadata["choices"]
        help_text = f"{field.metadata['help']} (default: {field.default!r})"
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=float, nargs="+", default=None, metavar="X", help=help_text)
        else:
            convert = {"int": int, "float": float}.get(kind, str)
            parser.add_argument(flag, type=convert, default=None, choices=choices, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A --config JSON file (if given) overridden by every flag that was set.

    With --resume, unset flags fall back to the run's own saved config, not to the defaults.
    """
    base = read_config_file(args.config) if args.config else {}
    source = f"--config {args.config}" if args.config else "the command line"
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                if getattr(args, f.name) is not None}
    if args.resume:
        from .runfolder import CONFIG, load_config

        run_dir = TrainConfig.from_dict(base | explicit, source=source).run_dir
        if (run_dir / CONFIG).exists():
            base = load_config(run_dir).to_dict()
    return TrainConfig.from_dict(base | explicit, source=source)


def cmd_runs(args: argparse.Namespace) -> int:
    from .study.run_list import runs_command

    return runs_command(args.folder or TrainConfig.__dataclass_fields__["out_dir"].default)


def cmd_params(args: argparse.Namespace) -> int:
    from .model import model_stats

    stats = model_stats(args.depth, args.width)
    print(f"WRN-{args.depth}-{args.width:g}")
    print(f"  parameters        {stats.params:,} ({stats.params / 1e6:.2f} M)")
    print(f"  forward FLOPs     {stats.forward_flops / 1e9:.3f} GFLOP per image "
          f"(training ~{stats.train_flops / 1e9:.2f} GFLOP per image)")
    print(f"  stage widths      {' / '.join(map(str, stats.stage_widths))} channels")
    print(f"  activations       ~{stats.activation_bytes * args.batch_size / 2**30:.2f} GiB in bf16 "
          f"for a batch of {args.batch_size}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .train import fit

    config = config_from_args(args)
    result = fit(config, existing="resume" if args.resume else "error")
    if not distributed.is_main():  # under torchrun, rank 0 speaks for the run
        return 0
    s = result.summary
    tta = f", with flip-TTA {100 * s['test_acc_tta']:.2f}%" if s.get("test_acc_tta") is not None else ""
    print(f"final test accuracy {100 * s['test_acc']:.2f}%{tta}; run folder {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run, record_evaluation
    from .progress import duration, rough_eval_seconds

    if args.download:
        from .data import load_cifar10

        load_cifar10(args.data_dir, download=True)

    def say_how_long(config, images: int) -> None:  # stderr: stdout stays the JSON report
        passes = 1 if args.no_tta else 3  # flip-TTA evaluates the images and their mirrors again
        seconds = rough_eval_seconds(config, images * passes, args.device)
        print(f"evaluating {args.run_dir} on {images:,} test images{'' if args.no_tta else ', plain and flip-TTA'}: "
              f"roughly {duration(seconds)}", file=sys.stderr, flush=True)

    report = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device, batch_size=args.batch_size,
                          progress=True, test_limit=args.test_limit, tta=not args.no_tta, on_start=say_how_long)
    print(json.dumps(report, indent=2))
    if report.get("agrees") is False:
        print(f"warning: {report['disagreement']}", file=sys.stderr)
    if args.record:
        record_evaluation(args.run_dir, report)
        print(f"recorded in {Path(args.run_dir) / 'evaluation.json'} and summary.json")
    return 1 if report.get("agrees") is False else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .study.bench import run_benchmarks

    modes = [m.strip() for m in args.modes.split(",") if m.strip()] if args.modes else None
    run_benchmarks(modes, depth=args.depth, width=args.width, batch_size=args.batch_size,
                   steps=args.steps, warmup=args.warmup, device=args.device, compile_mode=args.compile_mode,
                   loader_workers=args.loader_workers, out=args.out, profile_out=args.profile_out)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .study import sweep

    shared = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
              if f.name not in sweep.PER_RUN_FIELDS and getattr(args, f.name) is not None}
    overrides = {"schedules": args.schedules, "seeds": args.seeds, "ablation_name": args.ablation,
                 "ablation_dir": args.ablation_dir, "existing": args.existing, "executor": args.executor,
                 "gpus_per_run": args.gpus_per_run}
    return sweep.sweep_command(args.profile, overrides=overrides, shared=shared, cpus_per_run=args.cpus_per_run)


def cmd_study(args: argparse.Namespace) -> int:
    from .study.runner import run_study

    return run_study(args.profile, only=args.only, output_root=args.output_root, results_root=args.results_root,
                     log_output=args.stream)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m wrnlib", description="Train, evaluate and benchmark Wide Residual Networks on "
                    "CIFAR-10, and run the notebook study.", formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog=EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of the commands below; `python -m wrnlib COMMAND --help` lists its flags")
    for add in (_params_parser, _train_parser, _runs_parser, _evaluate_parser, _bench_parser, _sweep_parser,
                _study_parser):
        add(sub)
    parser.commands = sub.choices
    return parser


EXAMPLES = """examples:
  python -m wrnlib train --data-dir sample --depth 10 --width 1 --epochs 10   # seconds, on the shipped sample
  python -m wrnlib train --help                     # every training flag, with its default
  python -m wrnlib evaluate runs/<name>             # test accuracy of a run's saved model
  python -m wrnlib study --profile quick            # run the notebooks
"""


def _params_parser(sub) -> None:
    p = sub.add_parser("params", help="parameters, FLOPs and stage widths of a WRN")
    p.add_argument("--depth", type=int, default=28, help="WRN depth, 6n + 4 (default: 28)")
    p.add_argument("--width", type=float, default=3.5, help="widening factor k (default: 3.5)")
    p.add_argument("--batch-size", type=positive_int, default=512,
                   help="batch size of the activation-memory estimate (default: 512)")
    p.set_defaults(func=cmd_params)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a WRN and write its run folder")
    p.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run named by --name from its checkpoint")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)


def _runs_parser(sub) -> None:
    p = sub.add_parser("runs", help="list the runs in a folder: status, model, epochs, test accuracy, time, date")
    p.add_argument("folder", nargs="?", default=None,
                   help=f"folder of run folders (default: {TrainConfig.__dataclass_fields__['out_dir'].default}, "
                        f"the scratch runs; the study's are under results/runs)")
    p.set_defaults(func=cmd_runs)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="test accuracy (plain and flip-TTA) of a run's saved model")
    p.add_argument("run_dir", help="a run folder, e.g. results/runs/<name>")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: the run's, else $CIFAR10_DIR)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 into the cache")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=positive_int, default=500, help="evaluation batch size (default: 500)")
    p.add_argument("--record", action="store_true",
                   help="write evaluation.json into the run folder and make summary.json carry these numbers "
                        "(refused when they disagree with the recorded ones)")
    p.add_argument("--test-limit", type=non_negative_int, default=None,
                   help="a quick look: a fixed stratified subset of this many test images (0: all; default: the "
                        "run's own)")
    p.add_argument("--no-tta", action="store_true", help="skip the flip-TTA pass (half the time)")
    p.set_defaults(func=cmd_evaluate)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="training/inference throughput and achieved TFLOP/s")
    p.add_argument("--depth", type=int, default=28, help="WRN depth (default: 28)")
    p.add_argument("--width", type=float, default=3.5, help="widening factor (default: 3.5)")
    p.add_argument("--batch-size", type=positive_int, default=512, help="training batch size (default: 512)")
    p.add_argument("--modes", default=None,
                   help="comma-separated, of: conventional, fp32, fp32-cl, bf16-nchw, bf16, bf16-compile, bf16-graph "
                        "(default: conventional, fp32 and wrnlib's default for the device, plus bf16-compile and "
                        "bf16-graph on a GPU)")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="DataLoader worker processes of the conventional mode (default: one per core, at most 4)")
    p.add_argument("--steps", type=positive_int, default=30, help="timed steps per mode (default: 30)")
    p.add_argument("--warmup", type=positive_int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode for bf16-compile")
    p.add_argument("--out", default=None, help="folder for bench.json and bench.md")
    p.add_argument("--profile-out", default=None, help="write a torch.profiler table of the last mode here")
    p.set_defaults(func=cmd_bench)


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="the schedule ablation (schedules x seeds), here or on a Ray cluster, and "
                                     "its tidy CSVs")
    p.add_argument("--profile", default=None, help="take the ablation of a study profile (e.g. quick); flags "
                   "override it (default: none, the settings below)")
    p.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="local: one run after another here; ray: one Ray task per run, on $RAY_ADDRESS, a "
                        "`ray start` cluster of this machine, or a new local Ray (default: the profile's, else local)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPU share of each run, e.g. 0.5 packs two runs on a GPU (default: 1 when the "
                        "cluster has GPUs)")
    p.add_argument("--cpus-per-run", type=float, default=None,
                   help="CPU share and torch threads of each run (default: ray 1, local this process's)")
    p.add_argument("--schedules", nargs="+", default=None, metavar="S", help="schedules to compare")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="N", help="seeds of each schedule")
    p.add_argument("--ablation", default=None, help="ablation name: its folder, and a column of the tables")
    p.add_argument("--ablation-dir", default=None, help="tables go to <ablation-dir>/<ablation>/, runs to .../runs/")
    p.add_argument("--existing", choices=("reuse", "error"), default=None,
                   help="reuse: read finished runs back and resume interrupted ones (default); error: refuse them")
    _add_config_flags(p, skip=("name", "out_dir", "schedule", "seed"))
    p.set_defaults(func=cmd_sweep)


def _profiles() -> list[str]:
    from .study.profiles import known_profiles

    return known_profiles()


def _study_parser(sub) -> None:
    p = sub.add_parser("study", help="execute the notebooks in order with papermill")
    p.add_argument("--profile", default="quick", help=f"one of {', '.join(_profiles())} (wrnlib/study/profiles; "
                   "default: quick)")
    p.add_argument("--only", nargs="+", default=None, help="notebook number prefixes, e.g. 02 03")
    p.add_argument("--output-root", default="results/executed",
                   help="executed notebooks go to <output-root>/<profile>/ (default: results/executed)")
    p.add_argument("--results-root", default=None,
                   help="write runs, ablations, figures and summary.md here instead of the profile's results_root")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                   help="print the cells' output (training lines) while they run (default: on)")
    p.set_defaults(func=cmd_study)


def main(argv: list[str] | None = None) -> int:
    from .distributed import rank_tag, report_failure
    from .errors import command_line, for_the_user

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a flag argparse rejected (it printed the message)
        return exc.code if isinstance(exc.code, int) else 2
    with command_line():
        try:
            return args.func(args)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            message = for_the_user(exc)
            if message is None:
                raise
            print(f"error: {rank_tag()}{message}", file=sys.stderr)
            report_failure(exc)
            return 2


if __name__ == "__main__":
    sys.exit(main())
