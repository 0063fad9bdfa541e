"""Command line: ``python -m wrnlib {params,train,evaluate,bench,study}``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import TrainConfig


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (``--batch-size``, ``--flip/--no-flip``, ...), default unset."""
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type)
        default = field.default
        help_text = f"default: {default!r}"
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif kind.startswith("tuple"):
            parser.add_argument(flag, type=float, nargs="+", default=None, help=help_text)
        else:
            convert = {"int": int, "float": float}.get(kind, str)
            parser.add_argument(flag, type=convert, default=None, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A --config JSON file (if given) overridden by every flag that was set."""
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name)
        if value is not None:
            base[field.name] = value
    return TrainConfig.from_dict(base)


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
    from .train import fit
    config = config_from_args(args)
    if args.resume:
        # Unset flags fall back to the run's own saved configuration, not the defaults.
        saved = TrainConfig.load(config.run_dir / "config.json") if (config.run_dir / "config.json").exists() else None
        if saved is not None:
            merged = saved.to_dict()
            merged.update({f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)
                           if getattr(args, f.name) is not None})
            config = TrainConfig.from_dict(merged)
    result = fit(config, resume=args.resume)
    s = result.summary
    tta = f", with flip-TTA {100 * s['test_acc_tta']:.2f}%" if s["test_acc_tta"] is not None else ""
    print(f"final test accuracy {100 * s['test_acc']:.2f}%{tta}; run folder {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run
    report = evaluate_run(args.run_dir, data_dir=args.data_dir, device=args.device, batch_size=args.batch_size)
    print(json.dumps(report, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import as_dicts, bench_mode, results_table
    results, modes = [], args.modes.split(",")
    for mode in modes:
        profile = args.profile_out if mode == modes[-1] else None  # profile only the last mode listed
        result = bench_mode(mode, args.depth, args.width, args.batch_size, args.steps, args.warmup, args.device,
                            args.compile_mode, profile)
        print(f"{mode}: {result.train_images_per_s:,.0f} train img/s, {result.train_tflops:.1f} TFLOP/s",
              flush=True)
        results.append(result)
    table = results_table(results)
    print(table)
    if args.out:
        from . import runs
        from .engine import resolve_device
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        env = runs.environment(resolve_device(args.device), data_checksum="n/a (shipped sample images)",
                               data_source="sample")
        runs.write_json(out / "bench.json", {"env": env, "args": vars(args) | {"func": None},
                                              "results": as_dicts(results)})
        (out / "bench.md").write_text(f"Device: {env['device']}, torch {env['torch']}, commit {env['git_commit']}\n\n"
                                      + table)
        print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .study import run_study
    return run_study(args.profile, only=args.only, output_root=args.output_root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wrnlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("params", help="parameters, FLOPs and stage widths of a WRN")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--width", type=float, default=3.5)
    p.add_argument("--batch-size", type=int, default=512, help="for the activation-memory estimate")
    p.set_defaults(func=cmd_params)

    p = sub.add_parser("train", help="train a WRN and write its run folder")
    p.add_argument("--config", help="JSON file of TrainConfig fields; flags override it")
    p.add_argument("--resume", action="store_true", help="continue the run named by --name from its checkpoint")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a run's saved model")
    p.add_argument("run_dir")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=500)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="training/inference throughput and achieved TFLOP/s")
    p.add_argument("--depth", type=int, default=28)
    p.add_argument("--width", type=float, default=3.5)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--modes", default="fp32,bf16,bf16-compile", help="comma-separated, of: fp32, bf16-nchw, bf16, bf16-compile")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--out", default=None, help="folder for bench.json and bench.md")
    p.add_argument("--profile-out", default=None, help="write a torch.profiler table of the last mode here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("study", help="execute the notebooks in order with papermill")
    p.add_argument("--profile", default="quick")
    p.add_argument("--only", nargs="+", default=None, help="notebook number prefixes, e.g. 02 03")
    p.add_argument("--output-root", default="results/executed")
    p.set_defaults(func=cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, FloatingPointError) as exc:
        # Expected user-facing problems (bad flag values, data, run folders, NaN loss): one clear line.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
