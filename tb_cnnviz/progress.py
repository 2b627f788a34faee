"""A small text progress bar for long command-line work (replay, animated export, demo training).

No dependency and no threads. On a terminal it redraws one line in place::

    replay [##########..........]  2/4  model_02.keras  0:03

Anywhere else (a log file, CI, a pipe) it writes one plain line per finished item instead, so logs
stay readable and grep-able::

    replay 2/4 model_02.keras (0:03)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, TypeVar

__all__ = ["Progress", "progress"]

T = TypeVar("T")

_BAR_WIDTH = 20


class Progress:
    """Reports how many of `total` items are done, on one redrawn line or one line per item.

    Args:
        total: The number of items.
        description: A word or two naming the work, printed first.
        stream: Where to write; defaults to `sys.stderr`, which keeps stdout for results.
        interactive: Redraw one line in place. Defaults to whether `stream` is a terminal.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> with Progress(2, "export", stream=out) as bar:
        ...     bar.advance("step 0")
        ...     bar.advance("step 1")
        >>> print(out.getvalue().replace("0:00", "T"), end="")
        export 1/2 step 0 (T)
        export 2/2 step 1 (T)
    """

    def __init__(
        self,
        total: int,
        description: str = "",
        *,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
    ):
        self.total = max(0, int(total))
        self.description = description
        self.stream = sys.stderr if stream is None else stream
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.done = 0
        self._start = time.monotonic()
        self._width = 0  # the longest line drawn so far, to blank it out on redraw

    def advance(self, item: str = "") -> None:
        """Marks one more item done and reports it.

        Args:
            item: What was just finished, in a few words (a file name, a step).

        Example:
            >>> import io
            >>> bar = Progress(3, "work", stream=io.StringIO())
            >>> bar.advance(); bar.done
            1
        """
        self.done += 1
        elapsed = _clock(time.monotonic() - self._start)
        count = f"{self.done}/{self.total}"
        if self.interactive:
            filled = _BAR_WIDTH * self.done // self.total if self.total else _BAR_WIDTH
            bar = "#" * filled + "." * (_BAR_WIDTH - filled)
            line = f"{self.description} [{bar}] {count:>9}  {item}  {elapsed}".strip()
            self._width = max(self._width, len(line))
            self.stream.write("\r" + line.ljust(self._width))
        else:
            self.stream.write(" ".join(p for p in (self.description, count, item) if p))
            self.stream.write(f" ({elapsed})\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the redrawn line with a newline, so what follows starts on its own line.

        Example:
            >>> import io
            >>> Progress(0, stream=io.StringIO()).close()
        """
        if self.interactive and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(
    items: Iterable[T],
    description: str = "",
    *,
    total: int | None = None,
    label=str,
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Yields `items`, reporting each one as done once the loop body has finished with it.

    Args:
        items: The work.
        description: A word or two naming the work.
        total: The number of items; defaults to `len(items)`.
        label: Turns an item into the few words shown for it.
        stream: Where to write; defaults to `sys.stderr`.

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> [n * 2 for n in progress([1, 2], "double", stream=out)]
        [2, 4]
        >>> out.getvalue().count("\\n")
        2
    """
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, description, stream=stream) as bar:
        for item in items:
            yield item
            bar.advance(label(item))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
