"""The `tb-cnnviz` command.

Subcommands:

* `tb-cnnviz demo`: trains the demo CNN on generated shapes as two runs with different learning
  rates, with every callback, then serves TensorBoard with the CNN Viz tab.
* `tb-cnnviz serve`: serves TensorBoard on a logdir, on loopback, keeping every logged step.
* `tb-cnnviz export`: writes a layer's grid as a figure (.png, .pdf, .svg), its evolution over
  every step as a .gif (`--animate`), or two runs side by side (`--compare`); with
  `--kind similarity`, CKA heatmaps (`--mode time|runs|layers`), and with `--kind examples`,
  each filter's dataset examples, for runs logged with reference images.
* `tb-cnnviz replay`: logs the pictures of a folder of saved checkpoints (one `.keras` file per
  epoch) as if the callbacks had run during training.
* `tb-cnnviz probe`: runs an image through a run's model at a logged step (`tb_cnnviz.probe`)
  and draws the image, the top predictions, Grad-CAM and a layer's feature maps.

Bad input (a missing run, layer or step, an unwritable output, …) ends with exit status 2 and one
line on stderr saying what is wrong and what exists instead; an existing output file is only ever
replaced by a complete new one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types

from tb_cnnviz import metadata

__all__ = ["main"]

DEMO_RUNS = (("lr_1e-3", 1e-3), ("lr_1e-4", 1e-4))
#: `export --kind` values beyond the picture kinds: figures of the data for comparing runs.
COMPARE_KINDS = ("similarity", "examples")


def main(argv: list[str] | None = None) -> int:
    """Runs the `tb-cnnviz` command line.

    Args:
        argv: Arguments without the program name; defaults to `sys.argv[1:]`.

    Returns:
        The exit status.

    Example:
        >>> try:  # --version, like --help, prints and exits as argparse does
        ...     main(["--version"])
        ... except SystemExit as e:
        ...     print("exit status", e.code)  # doctest: +ELLIPSIS
        tb-cnnviz ...
        exit status 0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    args.as_program = argv is None
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tb-cnnviz", description="See what convolutional networks learn while they train."
    )
    from tb_cnnviz import __version__

    parser.add_argument("--version", action="version", version=f"tb-cnnviz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="train the demo CNN as two runs and serve TensorBoard",
        description="Train the demo CNN (32x32 shapes generated on the spot, no download) as two "
        "runs with different learning rates, logging every kind of picture, then serve "
        "TensorBoard with the CNN Viz tab.",
    )
    demo.add_argument("--logdir", default=os.path.join("logs", "demo"), help="default: logs/demo")
    demo.add_argument("--epochs", type=_positive_int, default=5, help="epochs per run (default 5)")
    demo.add_argument(
        "--samples", type=_positive_int, default=4000, help="training images (default 4000)"
    )
    demo.add_argument("--port", type=_port, default=6006, help="TensorBoard port (default 6006)")
    demo.add_argument("--no-serve", action="store_true", help="train, then exit")
    demo.set_defaults(func=_demo)

    serve = sub.add_parser(
        "serve",
        help="serve TensorBoard with the CNN Viz tab on a logdir",
        description="Serve TensorBoard on loopback with every logged step kept.",
    )
    serve.add_argument("--logdir", required=True)
    serve.add_argument("--port", type=_port, default=6006, help="default 6006")
    serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    serve.set_defaults(func=_serve)

    export = sub.add_parser(
        "export",
        help="write a layer's grid as .png/.pdf/.svg, or its evolution as .gif",
        description="Write one layer's pictures of one kind as a figure with a title, filter "
        "ids and a colorbar (.png, .pdf or .svg, by the extension of -o); with --animate, its "
        "evolution over every logged step as a .gif; with --compare, two runs side by side. "
        "Leave out --run, --layer or --kind to be told what the logdir holds.",
    )
    export.add_argument("--logdir", required=True, help="the log directory")
    export.add_argument(
        "--run", help="the run (NAME also finds NAME/train); optional when there is one"
    )
    export.add_argument("--layer", help="the layer, or the method for --kind attribution")
    export.add_argument(
        "--kind",
        choices=(*metadata.KINDS, *COMPARE_KINDS),
        help="the kind of picture; similarity (CKA heatmaps) or examples (dataset examples) "
        "for runs logged with reference images",
    )
    export.add_argument(
        "--mode",
        choices=("time", "runs", "layers"),
        help="--kind similarity: a layer over time (default), runs against runs, or layers",
    )
    export.add_argument(
        "--runs", nargs="+", metavar="RUN", help="--kind similarity --mode runs: the runs"
    )
    export.add_argument(
        "--filters",
        nargs="+",
        type=_step,
        metavar="ID",
        help="--kind examples: the filters to show (default: the first 16)",
    )
    export.add_argument(
        "--top-k", type=_positive_int, help="--kind examples: examples per filter (default all)"
    )
    export.add_argument("--step", type=_step, help="the step (default: the latest)")
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="FILE.png, .pdf, .svg, or .gif"
    )
    export.add_argument(
        "--animate", action="store_true", help="write the evolution over all steps as a .gif"
    )
    export.add_argument(
        "--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="draw two runs side by side"
    )
    export.add_argument(
        "--normalization",
        choices=("filter", "layer", "tile"),
        default="filter",
        help="stretch colours per filter (default), share one scale per layer, or per slice "
        "(weights are stored per filter since format version 3)",
    )
    export.add_argument("--cmap", help="a matplotlib colormap (default: by kind)")
    export.add_argument(
        "--slice",
        dest="slices",
        metavar="all|N",
        help="which slices each filter shows: all, or one input channel / probe image",
    )
    export.add_argument(
        "--width", type=_positive_float, help="figure width in inches (default 7; 10 to compare)"
    )
    export.add_argument(
        "--dpi", type=_positive_float, help="least resolution (default 200; 100 for .gif)"
    )
    export.add_argument(
        "--fps", type=_positive_float, default=2.0, help="frames per second (default 2)"
    )
    export.set_defaults(func=_export)

    replay = sub.add_parser(
        "replay",
        help="log the pictures of saved checkpoints, as if the callbacks had run",
        description="Load the .keras checkpoints of CHECKPOINT_DIR in epoch order (as written "
        "by keras.callbacks.ModelCheckpoint('ckpt/model_{epoch:02d}.keras')) and log every "
        "kind of picture into the 'train' run of --logdir, as CNNViz would have. "
        "Checkpoint epoch N (1-based, as Keras names files) is logged at step N-1, the step "
        "the callbacks log that epoch at.",
    )
    replay.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR")
    replay.add_argument(
        "--logdir", required=True, help="where to log (pictures go to its train run)"
    )
    replay.add_argument(
        "--probe-images",
        metavar="FILE.npy",
        help="probe images [n, *input_shape] saved with numpy.save; without them, kinds that "
        "need images are skipped",
    )
    replay.add_argument("--probe-labels", metavar="FILE.npy", help="the probe images' true classes")
    replay.add_argument(
        "--layers", nargs="+", metavar="LAYER", help="layers to draw (default: every conv layer)"
    )
    replay.set_defaults(func=_replay)

    probe = sub.add_parser(
        "probe",
        help="run an image through the model at a logged step and draw what it sees",
        description="Run IMAGE through the model of --run at --step (rebuilt from the snapshots "
        "the callbacks keep, in Keras' safe_mode) and draw the image, the top predictions, the "
        "Grad-CAM heatmap and the feature maps of --layer.",
    )
    probe.add_argument("image", metavar="IMAGE", help="a .png, .jpg or other image file")
    probe.add_argument("--logdir", required=True, help="the log directory")
    probe.add_argument("--run", required=True, help="the run (NAME also finds NAME/train)")
    probe.add_argument("--step", type=_step, help="the step (default: the latest snapshot)")
    probe.add_argument("--layer", help="the layer whose feature maps to draw (default: last conv)")
    probe.add_argument("--target", type=_step, help="the class Grad-CAM explains (default: top)")
    probe.add_argument("--top", type=_positive_int, default=5, help="predictions listed (5)")
    probe.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="FILE.png, .pdf or .svg"
    )
    probe.add_argument("--dpi", type=_positive_float, help="least resolution (default 200)")
    probe.set_defaults(func=_probe)
    return parser


def _demo(args) -> int:
    from tb_cnnviz.demo.train import train_demo

    train_demo(args.logdir, epochs=args.epochs, samples=args.samples, runs=DEMO_RUNS, clean=True)
    if args.no_serve:
        print(f"Logged to {args.logdir}. Browse with: tb-cnnviz serve --logdir {args.logdir}")
        return 0
    return serve(args.logdir, port=args.port)


def _serve(args) -> int:
    if not os.path.isdir(args.logdir):
        return _fail("serve", f"--logdir {args.logdir!r} is not a directory.")
    return serve(args.logdir, port=args.port, host=args.host)


def _export(args) -> int:
    try:
        return _export_checked(args)
    except _BadInput as e:
        return _fail("export", str(e))


def _export_checked(args) -> int:
    if args.as_program:
        _skip_tensorflow_for_reading()
        # TensorBoard's reader warns about its own bookkeeping (runs deleted while it lists
        # them, …); an export user needs none of it. Our own warnings still show.
        logging.getLogger("tensorboard").setLevel(logging.ERROR)
    # Everything that can be checked without reading the logdir is checked first.
    output = args.output
    _check_writable(output)
    ext = os.path.splitext(output)[1].lower()
    if args.animate and ext != ".gif":
        raise _BadInput(f"--animate writes a .gif; -o {output!r} does not end in .gif")
    if not args.animate and ext not in (".png", ".pdf", ".svg"):
        hint = " (a .gif needs --animate)" if ext == ".gif" else ""
        raise _BadInput(f"-o {output!r} must end in .png, .pdf or .svg{hint}")
    if args.compare and args.run:
        raise _BadInput("give either --run or --compare RUN_A RUN_B, not both")
    if args.animate and args.step is not None:
        raise _BadInput("--animate shows every step; leave out --step")
    if args.kind in COMPARE_KINDS:
        if args.animate or args.compare:
            raise _BadInput(f"--kind {args.kind} draws no --animate or --compare; leave them out")
        if args.runs and not (args.kind == "similarity" and args.mode == "runs"):
            raise _BadInput("--runs goes with --kind similarity --mode runs")
        if (args.filters or args.top_k) and args.kind != "examples":
            raise _BadInput("--filters and --top-k go with --kind examples")
    elif args.mode or args.runs or args.filters or args.top_k:
        raise _BadInput(
            "--mode, --runs, --filters and --top-k go with --kind similarity or examples"
        )
    slices = args.slices
    if slices is not None and slices != "all":
        if not slices.isdigit():
            raise _BadInput(f"--slice must be 'all' or a number; got {slices!r}")
        slices = int(slices)

    if args.as_program:
        import matplotlib

        matplotlib.use("Agg")  # files only: no window, no display needed
    from matplotlib import pyplot as plt

    from tb_cnnviz import plot
    from tb_cnnviz.reader import Logdir, NotFoundError

    note = None
    try:
        logs = Logdir(args.logdir)
        if args.kind in COMPARE_KINDS:
            target = _compare_figure(logs, args, plot)
        else:
            target = _picture_figure(logs, args, plot, slices)
            if args.animate:
                note = _thinned_note(logs, args)
    except (NotFoundError, ValueError) as e:
        raise _BadInput(str(e)) from None
    code = _write_figure(target, output, args, plot, plt)
    if note:
        print(note)
    return code


def _thinned_note(logs, args) -> str | None:
    """What `--animate` says of a long run's thinned steps: its frames are the drawn steps."""
    from tb_cnnviz.reader import thinned_spans

    runs = list(args.compare) if args.compare else [_pick_run(logs, args.run)]
    lines = []
    for run in runs:
        for first, last, count, why in thinned_spans(logs.thinned(run)):
            where = f"step {first}" if first == last else f"steps {first}-{last}"
            lines.append(f"  {run}: {where} ({count}) {why}")
    if not lines:
        return None
    return (
        "Steps were thinned (a long run draws fewer steps as it grows); the frames go from "
        "drawn step to drawn step, each titled with its step:\n" + "\n".join(lines)
    )


def _compare_figure(logs, args, plot):
    """The figure of `--kind similarity` or `--kind examples`."""
    mode = args.mode or "time"
    options = {"width": args.width} if args.width else {}
    if args.kind == "similarity" and mode == "runs":
        with_data = [r for r in logs.runs() if _has_responses(logs, r)]
        runs = args.runs or with_data
        if len(runs) < 2:
            raise _BadInput(
                "--mode runs compares two or more runs logged with reference images (--runs); "
                "runs with them: " + (", ".join(with_data) or "none")
            )
        return plot.similarity(logs, "runs", layer=args.layer, runs=runs, step=args.step, **options)
    from tb_cnnviz import compare

    run = _pick_run(logs, args.run)
    layers = compare.layers(logs, run)  # NotFoundError saying how to log reference images
    if args.kind == "similarity" and mode == "layers":
        return plot.similarity(logs, "layers", run=run, step=args.step, **options)
    if args.layer is None:
        raise _BadInput(
            f"--layer is needed; layers of run {run!r} with responses: " + ", ".join(layers)
        )
    if args.kind == "similarity":
        if args.step is not None:
            raise _BadInput("--mode time shows every step; leave out --step")
        return plot.similarity(logs, "time", run=run, layer=args.layer, **options)
    return plot.examples(
        logs, run, args.layer, args.step, filters=args.filters, top_k=args.top_k, **options
    )


def _has_responses(logs, run) -> bool:
    from tb_cnnviz import compare

    try:
        return bool(compare.layers(logs, run))
    except compare.NotFoundError:
        return False


def _picture_figure(logs, args, plot, slices):
    """The figure (or animation) of a picture kind."""
    from tb_cnnviz.reader import names_text

    runs = list(args.compare) if args.compare else [_pick_run(logs, args.run)]
    runs = [logs.resolve_run(run) for run in runs]
    layer = args.layer
    layers = logs.layers(runs[0])
    if layer is None:
        listing = "; ".join(f"{name!r} ({', '.join(k)})" for name, k in layers.items())
        raise _BadInput(f"--layer is needed; layers of run {runs[0]!r}: {listing}")
    if args.kind is None:
        kinds = layers.get(layer)
        if kinds is None:
            raise _BadInput(
                f"--layer and --kind are needed; layers of run {runs[0]!r}: " + names_text(layers)
            )
        raise _BadInput(f"--kind is needed; layer {layer!r} has: {', '.join(kinds)}")
    options = {"normalization": args.normalization, "cmap": args.cmap, "slices": slices}
    if args.width:
        options["width"] = args.width
    if args.animate:
        what = runs if args.compare else runs[0]
        target = plot.animate(logs, what, layer, args.kind, fps=args.fps, **options)
    elif args.compare:
        target = plot.compare(logs, runs, layer, args.kind, args.step, **options)
    else:
        target = plot.layer_grid(logs, runs[0], layer, args.kind, args.step, **options).figure
    return target


def _write_figure(target, output, args, plot, plt) -> int:
    from tb_cnnviz.progress import Progress
    from tb_cnnviz.reader import NotFoundError

    bar = None

    def report(frame, total):
        nonlocal bar
        if bar is None:
            bar = Progress(total, "export")
        bar.advance(f"frame {frame + 1}")

    try:
        plot.save(target, output, dpi=args.dpi, fps=args.fps, progress=report)
    except OSError as e:
        raise _BadInput(f"cannot write -o {output!r}: {e.strerror or e}") from None
    except NotFoundError as e:  # a step that could not be read while drawing a frame
        raise _BadInput(str(e)) from None
    finally:
        if bar is not None:
            bar.close()
        plt.close(plot.figure_of(target))
    print(f"Wrote {output}")
    return 0


def _replay(args) -> int:
    from tb_cnnviz import replay as replay_lib

    try:
        checkpoints = replay_lib.find_checkpoints(args.checkpoint_dir)
        probes = labels = None
        if args.probe_images:
            probes = replay_lib.load_probe_images(args.probe_images)
        if args.probe_labels:
            if probes is None:
                raise _BadInput("--probe-labels needs --probe-images")
            labels = replay_lib.load_probe_images(args.probe_labels)
        _check_log_dir(args.logdir)
        replay_lib.replay(
            args.checkpoint_dir,
            args.logdir,
            probe_images=probes,
            labels=labels,
            layers=args.layers,
        )
    except (_BadInput, ValueError) as e:  # ReplayError and CNNViz's argument errors
        return _fail("replay", str(e))
    first, last = checkpoints[0].step, checkpoints[-1].step
    skipped = (
        "; no --probe-images, so kinds that need images were skipped" if probes is None else ""
    )
    print(
        f"Replayed {len(checkpoints)} checkpoints into {os.path.join(args.logdir, 'train')} "
        f"(steps {first}-{last}{skipped}). Browse with: tb-cnnviz serve --logdir {args.logdir}"
    )
    return 0


def _probe(args) -> int:
    try:
        _check_writable(args.output)
        if os.path.splitext(args.output)[1].lower() not in (".png", ".pdf", ".svg"):
            raise _BadInput(f"-o {args.output!r} must end in .png, .pdf or .svg")
        if not os.path.isdir(args.logdir):
            raise _BadInput(f"--logdir {args.logdir!r} is not a directory")
        if not os.path.isfile(args.image):
            raise _BadInput(f"no image file {args.image!r}")
        if args.as_program:
            import matplotlib

            matplotlib.use("Agg")  # files only: no window, no display needed
        from matplotlib import pyplot as plt

        from tb_cnnviz import plot
        from tb_cnnviz import probe as probe_lib

        try:
            result = probe_lib.probe(
                args.logdir, args.run, args.image, args.step, args.layer, args.target
            )
        except ValueError as e:
            raise _BadInput(str(e)) from None
        figure = plot.probe(result, top=args.top)
        try:
            plot.save(figure, args.output, dpi=args.dpi)
        except OSError as e:
            raise _BadInput(f"cannot write -o {args.output!r}: {e.strerror or e}") from None
        finally:
            plt.close(figure)
    except _BadInput as e:
        return _fail("probe", str(e))
    print(f"Wrote {args.output}")
    return 0


def serve(logdir: str, *, port: int = 6006, host: str = "127.0.0.1") -> int:
    """Serves TensorBoard with the CNN Viz tab until interrupted.

    Every logged step stays browsable: the plugin's loader keeps all cnnviz samples unless
    `--samples_per_plugin` says otherwise.

    Args:
        logdir: The log directory.
        port: The port.
        host: The address to bind; loopback by default.

    Returns:
        The exit status.

    Example:
        >>> callable(serve)  # blocks until Ctrl-C, so not run here
        True
    """
    from tensorboard import default, program

    tb = program.TensorBoard(plugins=default.get_plugins())
    tb.configure(argv=[None, "--logdir", logdir, "--host", host, "--port", str(port)])
    url = f"http://{host}:{port}/#cnnviz"
    print(f"TensorBoard with CNN Viz at {url} (Ctrl-C to stop)", flush=True)
    try:
        return tb.main() or 0
    except KeyboardInterrupt:
        return 0


class _BadInput(Exception):
    """Input the user can fix; reported in one line, without a traceback."""


def _fail(command: str, message: str) -> int:
    print(f"tb-cnnviz {command}: {message}", file=sys.stderr)
    return 2


def _pick_run(logs, run: str | None) -> str:
    from tb_cnnviz.reader import names_text

    if run is not None:
        return run
    runs = logs.runs()
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise logs.no_data()
    raise _BadInput(f"--run is needed; runs with CNN Viz pictures: {names_text(runs)}")


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise _BadInput(f"-o {path!r} is a directory; give a file name")
    if not os.path.isdir(folder):
        raise _BadInput(f"cannot write -o {path!r}: {folder!r} is not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _BadInput(f"cannot write -o {path!r}: {folder!r} is not writable")


def _check_log_dir(logdir: str) -> None:
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise _BadInput(f"--logdir {logdir!r} is not a directory")


def _skip_tensorflow_for_reading() -> None:
    """Keeps TensorBoard's event reader from importing TensorFlow in this process.

    TensorBoard reads event files through `tensorboard.compat.tf`, which imports TensorFlow when
    it is installed (seconds of start-up) unless the module `tensorboard.compat.notf` exists:
    the switch TensorBoard's own TF-free build uses. Only `export` does this, and only when it
    runs as its own process (not when `main` is called from Python) before anything imported
    TensorFlow: in a process that goes on to write summaries (`demo`, `replay`) TensorBoard's
    summary ops need the real TensorFlow behind `tensorboard.compat`.
    """
    if "tensorflow" in sys.modules or "tensorboard.compat.notf" in sys.modules:
        return
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")


def _number(convert, expected: str, ok):
    """An argparse `type=` that converts, checks `ok(value)`, and says what was expected."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_step = _number(int, "a step number (0 or more)", lambda v: v >= 0)
_positive_float = _number(float, "a positive number", lambda v: 0 < v < float("inf"))
_positive_int = _number(int, "a positive integer", lambda v: v >= 1)
_port = _number(int, "a port number (1-65535)", lambda v: 1 <= v <= 65535)


if __name__ == "__main__":
    sys.exit(main())
