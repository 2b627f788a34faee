"""The `tb-cnnviz` command.

Subcommands:

* `tb-cnnviz demo`: trains the demo CNN on generated shapes as two runs with different learning
  rates, with every callback, then serves TensorBoard with the CNN Viz tab.
* `tb-cnnviz serve`: serves TensorBoard on a logdir, on loopback, keeping every logged step.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]

DEMO_RUNS = (("lr_1e-3", 1e-3), ("lr_1e-4", 1e-4))


def main(argv: list[str] | None = None) -> int:
    """Runs the `tb-cnnviz` command line.

    Args:
        argv: Arguments without the program name; defaults to `sys.argv[1:]`.

    Returns:
        The exit status.

    Example:
        >>> main(["--version"])  # doctest: +ELLIPSIS
        tb-cnnviz ...
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from tb_cnnviz import __version__

        print(f"tb-cnnviz {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tb-cnnviz", description="See what convolutional networks learn while they train."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
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
        print(f"tb-cnnviz serve: --logdir {args.logdir!r} is not a directory.", file=sys.stderr)
        return 2
    return serve(args.logdir, port=args.port, host=args.host)


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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1-65535), got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
