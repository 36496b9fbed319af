"""`semiseg` command line: list, train, eval, predict, show, demo, bench, report.

Every user-fixable problem surfaces as one line `error: ...` and exit status
2 (SemisegError); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import SemisegError


def _cmd_list(args) -> int:
    from . import catalog
    from .models.encoder import CPU_ENCODERS

    print("methods:")
    for name in catalog.METHODS:
        doc = (catalog.METHODS.get(name).__module__ and sys.modules[catalog.METHODS.get(name).__module__].__doc__ or "")
        print(f"  {name:<14} {doc.strip().splitlines()[0] if doc.strip() else ''}")
    print("datasets:")
    for name in catalog.DATASETS:
        preset = catalog.DATASETS.get(name)
        classes = f"{preset.num_classes} classes" if preset.class_names else "classes from its dataset.yaml"
        print(f"  {name:<14} {classes}, eval {preset.eval_mode}, crop {preset.crop_size}")
    print("encoders: any timm model with features_only; CPU-size ones: " + ", ".join(CPU_ENCODERS))
    return 0


def _default_output_dir(config: str | None, overrides) -> str:
    stem = Path(config).stem if config else "default"
    return str(Path("runs") / stem)


def _cmd_train(args) -> int:
    from .config import load_config
    from .engine.trainer import train

    overrides = list(args.overrides)
    if args.root:
        overrides.append(f"data.root={args.root}")
    cfg = load_config(args.config, overrides)
    if cfg.output_dir is None:
        cfg.output_dir = _default_output_dir(args.config, overrides)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
            print(f"{summary['method']}: last mIoU {summary['last_miou']:.2f}, best {summary['best_miou']:.2f} "
              f"(iteration {summary['best_step']}); outputs in {cfg.output_dir}")
    return 0


def _cmd_eval(args) -> int:
    from .engine.inference import evaluate_checkpoint

    result, label = evaluate_checkpoint(args.checkpoint, args.mode, args.root, list(args.overrides), args.network)
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(result.table(label))
        print(f"mIoU {result.miou:.2f} (present classes {result.miou_present:.2f}), calibration error (ECE) "
              f"{result.ece:.2f} % over {result.num_images} images")
        if args.reliability:
            from .engine.calibration import reliability_diagram
            from .engine.checkpoint import reporting_write_errors

            with reporting_write_errors(args.reliability, setting="--reliability"):
                reliability_diagram(result.calibration, args.reliability, label)
            print(f"wrote {args.reliability}")
    return 0


def _cmd_predict(args) -> int:
    from .engine.inference import predict_files

    result = predict_files(args.checkpoint, args.inputs, args.out, args.mode, args.network, args.variance,
                           confidence=args.confidence, recursive=args.recursive, batch_size=args.batch_size,
                           progress=not args.no_progress)
    how = f"mode {args.mode}" if args.mode else result.summary()  # docs/deployment.md: Predicting images
    files = ["NAME.EXT.pred.png palette PNG", "NAME.EXT.overlay.jpg"]
    files += ["NAME.EXT.confidence.png"] if args.confidence else []
    files += ["NAME.EXT.variance.png"] if args.variance else []
    print(f"wrote {len(result.written)} predictions to {args.out} ({how}; per image NAME.EXT: "
          f"{' + '.join(files)})")
    return 0


def _cmd_export(args) -> int:
    from .engine.export import TOLERANCE, export_checkpoint

    result = export_checkpoint(args.checkpoint, args.format, args.out, args.network, args.overwrite)
    sizes = ", ".join(f"{'x'.join(map(str, shape))}: {diff:.1e}" for shape, diff in result.differences)
    print(f"wrote {result.path} ({result.format}, {result.exporter})")
    print(f"parity with PyTorch (fp32): max |difference| {result.max_difference:.2e} <= {TOLERANCE:g} ({sizes})")
    return 0


def _cmd_show(args) -> int:
    from .engine.batch_picture import show_batch

    written = show_batch(args.config, list(args.overrides), args.out, step=args.step, checkpoint=args.checkpoint,
                         root=args.root, val_images=args.val)
    for path in written if isinstance(written, list) else [written]:
        print(f"wrote {path}")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.output_dir, list(args.overrides), seeds=args.seeds)


def _cmd_bench_quality(args) -> int:
    from .bench.quality import run
    from .bench.suite import load_suite

    suite = load_suite(args.suite)
    failed = run(suite, Path(args.results), Path(args.runs), cells=args.cells, seeds=args.seeds, jobs=args.jobs,
                 root=Path(args.root) if args.root else None, threads=args.threads, dry_run=args.dry_run)
    if failed:
        print(f"error: {failed} run(s) failed or could not be collected (see above); run the same command "
              "again to resume them", file=sys.stderr)
        return 1
    return 0


def _cmd_bench_speed(args) -> int:
    from .bench.speed import run

    words = ["semiseg", "bench", "speed", "--setting", *args.setting, "--precisions", *args.precisions,
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
             "--threads", str(args.threads), "--eval-images", str(args.eval_images)]
    words += ["--methods", *args.methods] if args.methods else []
    words += ["--against", args.against] if args.against else []
    words += ["--device", args.device] if args.device != "cpu" else []
    failed = run(settings=args.setting, methods=args.methods, precisions=args.precisions, steps=args.steps,
                 warmup=args.warmup, repeats=args.repeats, against=args.against, threads=args.threads,
                 eval_images=args.eval_images, out=Path(args.out), data_dir=Path(args.data),
                 camvid_root=Path(args.root) if args.root else None, device=args.device,
                 overrides=list(args.overrides), timeout=args.timeout, dry_run=args.dry_run,
                 command=" ".join(words + list(args.overrides)))
    if failed:
        print(f"error: {failed} measurement(s) failed (their errors are in the records, see above)", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args) -> int:
    from .bench.report import write_report

    readmes = [Path(file) for file in args.readme or []]
    written = write_report(args.results, Path(args.out), readme=readmes, figures=not args.no_figures,
                           dataset_root=Path(args.root) if args.root else None)
    print(f"wrote {len(written)} file(s) to {args.out}"
          + (f" and the tables of {', '.join(map(str, readmes))}" if readmes else ""))
    return 0


def _cmd_data_check(args) -> int:
    from .data.check import check_dataset, load_check_config

    overrides = list(args.overrides) + ([f"data.root={args.root}"] if args.root else [])
    report = check_dataset(load_check_config(args.target, overrides), jobs=args.jobs, progress=not args.no_progress)
    print(report.format())
    return 0 if report.clean else 1


def _cmd_data_split(args) -> int:
    from .data.listsplit import split_list

    result = split_list(args.list, args.labeled, args.seed, args.out, balanced=args.balanced, root=args.root,
                        dataset=args.dataset, overwrite=args.overwrite, jobs=args.jobs)
    total = len(result.labeled) + len(result.unlabeled)
    print(f"wrote {' and '.join(str(p) for p in result.written)}: {len(result.labeled)} of {total} images labeled"
          + (f", holding {result.classes_covered} of the list's {result.classes_total} classes"
             if result.classes_total is not None else ""))
    lists = [f"data.labeled_list={Path(result.written[0]).resolve()}"]
    lists += [f"data.unlabeled_list={Path(result.written[1]).resolve()}"] if len(result.written) > 1 else []
    print(f"train on it with: {' '.join(lists)}")
    return 0


def one_line(exc: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it with its traceback."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split("SemisegError: ", 1)[-1]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _add_network_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--network", metavar="NAME",
                   help="use this network of the checkpoint (e.g. model = the student, teacher, model2) "
                        "instead of the one the method predicts with")


class _Parser(argparse.ArgumentParser):
    """argparse with the one-line contract: a usage error is one `error: ...` line and exit status 2, and
    options are never abbreviated (`--resum` is an error, not `--resume`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="semiseg", description="Semi-supervised semantic segmentation.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("list", help="list methods, datasets and encoders")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("train", help="train a method from a config file",
                       description="Train from a YAML config; later key=value pairs override it "
                                   "(e.g. train.total_iters=1000 output_dir=runs/x).")
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--root", help="dataset folder (same as data.root=...)")
    p.add_argument("--resume", help="'auto' continues from output_dir/latest.pt if present, or a checkpoint path")
    p.add_argument("--overwrite", action="store_true",
                   help="output_dir holds a run: delete its files (checkpoints, config.yaml, run_info.json, "
                        "metrics.jsonl, summary.json, tensorboard/; nothing else) and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on its dataset's val set",
                       description="Evaluate a checkpoint (its saved config says which dataset); "
                                   "key=value pairs override that config (e.g. data.val_list=...).")
    p.add_argument("checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--mode", choices=["original", "center_crop", "resize", "sliding_window"],
                   help="evaluation mode (default: the dataset's)")
    p.add_argument("--root", help="dataset folder (same as data.root=...)")
    p.add_argument("--reliability", metavar="FILE.png",
                   help="also draw the reliability diagram (accuracy against confidence, 15 bins)")
    _add_network_option(p)
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", help="segment images with a checkpoint",
                       description="Write a palette PNG of the predicted classes and an overlay per image: "
                                   "NAME.EXT gives NAME.EXT.pred.png and NAME.EXT.overlay.jpg in --out (folders "
                                   "are read one level deep, or all levels with --recursive; a quoted pattern "
                                   "such as 'photos/**/*.jpg' is expanded; images of several arguments that "
                                   "share a file name keep their paths relative to a common folder). Images are "
                                   "turned upright by their EXIF orientation first. Inputs are never written to: "
                                   "--out may be an input folder, and *.pred.png / *.overlay.jpg files there are "
                                   "skipped as earlier predictions (docs/deployment.md).")
    p.add_argument("checkpoint")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_DIR_OR_PATTERN")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--mode", choices=["original", "resize", "sliding_window"], default=None,
                   help="evaluation mode for every image (default: original, and sliding windows of the "
                        "checkpoint's crop for an image larger than the crop in either side)")
    p.add_argument("--recursive", action="store_true", help="read folders' sub-folders too")
    p.add_argument("--batch-size", type=int, default=4, metavar="N",
                   help="images of one size segmented together (default 4; the results do not depend on it)")
    p.add_argument("--confidence", action="store_true",
                   help="also write NAME.EXT.confidence.png: the per-pixel largest class probability p, "
                        "8-bit grey = round(255 p)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--variance", action="store_true",
                   help="also write NAME.EXT.variance.png: the per-pixel variance of a model with a variance head "
                        "(DUEB), 16-bit grey = round(variance x 1000)")
    _add_network_option(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("export", help="export the network a checkpoint predicts with to ONNX or TorchScript",
                       description="Write what evaluation runs (the method's predict, or --network) as one file: "
                                   "input an ImageNet-normalised float32 batch N x 3 x H x W (N, H, W dynamic), "
                                   "output the logits N x C x H x W; the file carries the class names, palette and "
                                   "normalisation. It is loaded back and compared with PyTorch at three input sizes "
                                   "and written only when they agree within 1e-4 (docs/deployment.md). ONNX needs "
                                   "pip install 'semiseg[export]'.")
    p.add_argument("checkpoint")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", metavar="FILE", help="the file to write, or a folder for it (default: next to the "
                                                  "checkpoint, CHECKPOINT_STEM.onnx or CHECKPOINT_STEM.torchscript.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the checkpoint)")
    _add_network_option(p)
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("show", help="a picture of what the method does with a training batch",
                       description="Draw the training batch of step N as training draws it (same seed: same crops, "
                                   "boxes and strong views), run the method's explain() on it and write its panels "
                                   "as one PNG (needs matplotlib: pip install 'semiseg[report]'); key=value pairs "
                                   "override the config.")
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--out", required=True, help="the PNG to write (its folder is created)")
    p.add_argument("--step", type=int, help="the training step whose batch to draw (default: the checkpoint's "
                                            "step, or 0)")
    p.add_argument("--checkpoint", help="latest.pt, best.pt or a run folder (its latest.pt): use its method state")
    p.add_argument("--root", help="dataset folder (same as data.root=...)")
    p.add_argument("--val", type=int, default=0, metavar="N",
                   help="instead of a training batch, the first N val images, unaugmented (OUT_0.png, OUT_1.png, ...)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("demo", help="supervised vs FixMatch on the synthetic scenes, with a comparison table")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for both runs")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (the table averages them)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="benchmarks: `bench quality SUITE` fills a suite's table of results, "
                                     "`bench speed` times every method against another commit")
    bench = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", parser_class=_Parser, required=True)
    q = bench.add_parser("quality", help="train every missing (cell, seed) of a suite and record its result",
                         description="For each cell and seed of the suite without benchmarks/results/<suite>/<cell>/"
                                     "seed<k>.json: train it in runs/bench/<suite>/<cell>/seed<k> (--resume auto: an "
                                     "interrupted benchmark goes on where it stopped) and write that record.")
    q.add_argument("suite", help="suite file (benchmarks/suites/*.yaml)")
    q.add_argument("--cells", nargs="+", metavar="CELL", help="only these rows (default: all)")
    q.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="only these seeds (default: the suite's)")
    q.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    q.add_argument("--threads", type=int, help="threads per run (default: CPU cores / jobs)")
    q.add_argument("--root", help="dataset folder (default: the suite's dataset_root)")
    q.add_argument("--results", default="benchmarks/results", help="where the records go")
    q.add_argument("--runs", default="runs/bench", help="where the run directories go")
    q.add_argument("--dry-run", action="store_true", help="print the runs it would start, start none")
    q.set_defaults(func=_cmd_bench_quality)
    q = bench.add_parser("speed", help="step time, memory, network / non-network split and evaluation speed",
                         description="For each setting, method and precision: the training step time (median after "
                                     "warm-up), the split of the step into network forward, backward, optimiser "
                                     "and the rest, peak memory and evaluation seconds per image (original, "
                                     "sliding_window), each measured in its own process; with --against, the same "
                                     "for another commit (a git worktree), the two alternating. Writes "
                                     "OUT/<setting>.json (docs/benchmarks.md: Speed). key=value pairs are added "
                                     "to every run's config.")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for every run")
    q.add_argument("--setting", nargs="+", choices=["pascal", "camvid"], default=["pascal", "camvid"],
                   help="pascal: UniMatch V1's network shape on generated VOC-layout data; camvid: the CamVid "
                        "CPU configs (default: both)")
    q.add_argument("--methods", nargs="+", metavar="METHOD", help="default: every method of this tree")
    q.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "bf16_cl", "fp32_cl"],
                   default=["fp32", "bf16", "bf16_cl"],
                   help="fp32, bf16 autocast, bf16 with channels_last (default: these three); fp32_cl: fp32 with "
                        "channels_last")
    q.add_argument("--steps", type=int, default=10, help="measured steps per run (default 10)")
    q.add_argument("--warmup", type=int, default=3, help="steps before the measured ones (default 3)")
    q.add_argument("--repeats", type=int, default=2, help="runs per tree, alternating the trees (default 2)")
    q.add_argument("--against", metavar="COMMIT", help="also measure this commit (in a temporary git worktree)")
    q.add_argument("--threads", type=int, default=2, help="CPU threads per run (default 2)")
    q.add_argument("--eval-images", type=int, default=4, help="val images timed per evaluation mode (default 4)")
    q.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    q.add_argument("--out", default="benchmarks/results/speed", help="folder of the <setting>.json records")
    q.add_argument("--data", default="runs/bench/speed_data", help="where the generated VOC-layout data is kept")
    q.add_argument("--root", help="CamVid folder (default ../shared/data/camvid of the repository)")
    q.add_argument("--timeout", type=float, default=3600, help="seconds one run may take (default 3600)")
    q.add_argument("--dry-run", action="store_true", help="print the runs it would start, start none")
    q.set_defaults(func=_cmd_bench_speed)

    p = sub.add_parser("report", help="markdown tables and figures from benchmark results",
                       description="Tables (mean ± std over seeds, gain over the supervised baseline, share of "
                                   "the supervised-to-full-label gap recovered) and PNG figures from result records.")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result JSON files or folders holding them")
    p.add_argument("--out", required=True, help="output folder for <suite>.md and the figures")
    p.add_argument("--readme", action="append", metavar="FILE",
                   help="also rewrite the tables between <!-- report:<suite>:begin/end --> (quality suites) and "
                        "<!-- report:speed/<record>:begin/end --> (speed records) in this markdown file; repeatable")
    p.add_argument("--root", help="dataset folder, for the images and ground truth of the prediction grid")
    p.add_argument("--no-figures", action="store_true", help="tables only")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("data", help="dataset tools: `data check` reports every problem of a dataset, "
                                    "`data split` writes reproducible labeled/unlabeled lists")
    data = p.add_subparsers(dest="data_command", metavar="TOOL", parser_class=_Parser, required=True)
    q = data.add_parser("check", help="every problem of a dataset's lists and files, and its class histogram",
                        description="Resolve the labeled, unlabeled and val lists as training does and read every "
                                    "file the way training reads it; report each problem with its file (missing "
                                    "or unreadable files, size mismatches, labels outside the classes, colour or "
                                    "16-bit masks, EXIF-rotated images, duplicates, images in two sets, empty "
                                    "lists) and the labeled set's class histogram. Exit status 0: clean, 1: "
                                    "problems found, 2: the config or dataset cannot be loaded (docs/datasets.md).")
    q.add_argument("target", metavar="CONFIG_OR_PRESET", help="a config file (configs/...) or a dataset preset name")
    q.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. data.split=1_8)")
    q.add_argument("--root", help="dataset folder (same as data.root=...)")
    q.add_argument("--jobs", type=int, metavar="N", help="files read at a time (default: the CPU count)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_data_check)
    q = data.add_parser("split", help="reproducible labeled.txt / unlabeled.txt from a list file",
                        description="Cut LIST into DIR/labeled.txt and DIR/unlabeled.txt (the list format; use "
                                    "them as data.labeled_list / data.unlabeled_list, or as a split folder of "
                                    "data.splits_dir). The images are ordered by SHA-256 of (seed, path): the same "
                                    "seed gives the same split on any machine. Existing files are never replaced "
                                    "without --overwrite, and LIST never (docs/datasets.md).")
    q.add_argument("list", metavar="LIST", help="list file, 'image [mask]' per line")
    q.add_argument("--labeled", required=True, metavar="1/8|N",
                   help="a fraction of the list (rounded half up, at least 1) or a count of images")
    q.add_argument("--seed", type=int, default=0, metavar="S", help="split seed (default 0)")
    q.add_argument("--balanced", action="store_true",
                   help="class-balanced: first cover every class of the list, rarest first, then fill in seed order "
                        "(reads the masks)")
    q.add_argument("--out", required=True, metavar="DIR", help="folder for labeled.txt and unlabeled.txt")
    q.add_argument("--root", metavar="DIR",
                   help="--balanced: the folder the list's paths are relative to (default: LIST's folder)")
    q.add_argument("--dataset", metavar="NAME",
                   help="--balanced: read the masks with this preset's classes and label map (default: raw values, "
                        "255 = ignore)")
    q.add_argument("--overwrite", action="store_true", help="replace labeled.txt / unlabeled.txt already in DIR")
    q.add_argument("--jobs", type=int, metavar="N", help="--balanced: masks read at a time (default: the CPU count)")
    q.set_defaults(func=_cmd_data_split)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also come after options (`train cfg.yaml --resume auto lr=0.1`)
    stray = [item for item in extra if item.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except SemisegError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint (if any) is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
