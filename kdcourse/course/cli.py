"""The ``kdcourse`` command: execute the chapters, build the book, run the tests.

Examples::

    kdcourse execute theory --profile smoke   # run one chapter with papermill
    kdcourse build-html                       # build _build/html from the executed notebooks
    kdcourse book --profile full              # execute every chapter, then build
    kdcourse test -x -k losses                # unit tests + nbval of the chapters (pytest args pass through)
    kdcourse timings record --precision fp32  # time `kdcourse book` and `kdcourse test`, record them
    kdcourse timings readme                   # rewrite the README's timing section from the records
    kdcourse format --check                   # do the chapters' code cells need ruff format?
    kdcourse lab                              # JupyterLab on book/, chapters open as notebooks
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kdcourse.course import book, build
from kdcourse.course.profiles import PROFILES


def _print_time(name: str, seconds: float) -> None:
    print(f"{name}: {seconds:.1f} s", flush=True)


def _parameter(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` → ``(NAME, value)``, the value read as a Python literal (``EUROSAT=False``, ``SEEDS=(0, 1)``).

    Tuples become lists, which papermill can write into a notebook (it would turn a tuple into a string).
    """
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or name == "PROFILE":
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with NAME a parameter other than PROFILE (use --profile), got {text!r}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as error:
        raise argparse.ArgumentTypeError(f"the value of {name} must be a Python literal such as False, 3 or (0, 1); got {value!r}") from error
    return name, list(parsed) if isinstance(parsed, tuple) else parsed


def _execute(args: argparse.Namespace) -> dict[str, float]:
    print(f"executing with the {args.profile} profile", flush=True)
    return book.execute_chapters(
        args.chapters or None, profile=args.profile, out_dir=args.output, timeout=args.timeout, on_done=_print_time,
        parameters=dict(getattr(args, "param", [])), devices=args.gpus,
    )


def _gpus(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not all(d.isdigit() for d in devices):
        raise argparse.ArgumentTypeError(f"--gpus takes CUDA device indices separated by commas, such as 0,1; got {text!r}")
    return devices


def _build_html(executed: Path | None, strict: bool) -> None:
    index = build.build_html(executed, strict=strict)
    print(f"HTML: {index}")


def _format(chapters: list[str] | None, check: bool) -> int:
    """Format the chapters' code cells (or, with ``check``, list those that need it); 1 if any does under ``check``."""
    from kdcourse.course.style import format_chapter

    changed = [path.stem for path in book.find_chapters(chapters) if format_chapter(path, check=check)]
    verb = "would reformat" if check else "reformatted"
    print(f"{verb}: {', '.join(changed)}" if changed else "every chapter's code is formatted")
    return 1 if check and changed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdcourse", description="Execute, build and test the kdcourse book.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    execute = sub.add_parser("execute", help="run chapters with papermill (all notebook chapters by default)")
    execute.add_argument("chapters", nargs="*", metavar="CHAPTER", help="e.g. theory or book/theory.md")
    execute.add_argument("--profile", choices=PROFILES, default="smoke", help="run profile (default: smoke)")
    execute.add_argument("--output", type=Path, default=None, help="folder of executed notebooks (default: _build/executed)")
    execute.add_argument("--timeout", type=float, default=None, help="time limit per cell in seconds (default: none)")
    execute.add_argument("--gpus", type=_gpus, default=None, metavar="I,J,...",
                         help="GPUs to run chapters side by side on, one chapter per GPU (default: every visible GPU)")
    execute.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", type=_parameter,
                         help="set a name of the chapters' parameters cell, VALUE a Python literal (e.g. -p EUROSAT=False); repeatable")

    build_html = sub.add_parser("build-html", help="build the HTML book from executed notebooks (no execution)")
    build_html.add_argument("--executed", type=Path, default=None, help="folder of executed notebooks (default: _build/executed)")
    build_html.add_argument("--strict", action="store_true", help="treat Sphinx warnings as errors")

    whole = sub.add_parser("book", help="execute every chapter, then build the HTML book")
    whole.add_argument("--profile", choices=PROFILES, default="smoke", help="run profile (default: smoke)")
    whole.add_argument("--timeout", type=float, default=None, help="time limit per cell in seconds (default: none)")
    whole.add_argument("--strict", action="store_true", help="treat Sphinx warnings as errors")
    whole.add_argument("--gpus", type=_gpus, default=None, metavar="I,J,...",
                         help="GPUs to run chapters side by side on, one chapter per GPU (default: every visible GPU)")

    export = sub.add_parser("export-notebooks", help="write every chapter as an .ipynb for the Colab and Binder buttons")
    export.add_argument("output", type=Path, help="folder of the tree to push to the notebooks branch")
    export.add_argument("--executed", type=Path, default=None, help="folder of executed notebooks (default: _build/executed)")
    export.add_argument("--ref", default=None, help="commit the notebooks install the package at (default: the one checked out)")
    export.add_argument("--repository", default=None,
                        help="git URL the notebooks clone the package from (default: repository.url of _config.yml)")

    timings = sub.add_parser("timings", help="record the README commands' timings, or render them into the README")
    timings_sub = timings.add_subparsers(dest="action", required=True, metavar="ACTION")
    record = timings_sub.add_parser("record", help="time kdcourse book and kdcourse test (smoke) and record the result")
    record.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="precision of the timed runs (default: what the hardware does natively)")
    timings_sub.add_parser("readme", help="rewrite README.md's timing section from book/results")

    fmt = sub.add_parser("format", help="format the chapters' code cells with ruff format (all chapters by default)")
    fmt.add_argument("chapters", nargs="*", metavar="CHAPTER", help="e.g. theory or book/theory.md")
    fmt.add_argument("--check", action="store_true", help="change nothing; fail if a chapter needs formatting")

    # "test", "bench" and "lab" hand their arguments on untouched (see main); listed here for --help.
    sub.add_parser("lab", add_help=False, help="JupyterLab on book/ with the chapters opening as notebooks; args go to jupyter lab")
    sub.add_parser("test", add_help=False, help="unit tests and nbval of every chapter (smoke); other args go to pytest")
    sub.add_parser("bench", add_help=False, help="benchmarks (kdcourse.course.bench; see kdcourse bench --help)")
    return parser


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "test":
        return book.run_tests(argv[1:])
    # --- kdcourse bench: implemented in kdcourse/course/bench.py as main(args) -> int ---
    if argv and argv[0] == "bench":
        from kdcourse.course.bench import main as bench_main

        return bench_main(argv[1:])

    if argv and argv[0] == "lab":
        from kdcourse.course.lab import run_lab

        return run_lab(argv[1:])

    args = _parser().parse_args(argv)
    if args.command == "execute":
        _execute(args)
    elif args.command == "build-html":
        _build_html(args.executed, args.strict)
    elif args.command == "export-notebooks":
        from kdcourse.course.publish import export_notebooks

        written = export_notebooks(args.output, args.executed, repository=args.repository, ref=args.ref)
        print(f"{len(written)} notebooks in {args.output / book.BOOK_DIR}")
    elif args.command == "timings":
        from kdcourse.course import timings

        root = book.repo_root()
        if args.action == "record":
            print(f"recorded {timings.record_commands(root, args.precision)}")
        else:
            changed = timings.update_readme(root)
            print("README.md: timing section " + ("rewritten" if changed else "already up to date"))
    elif args.command == "format":
        return _format(args.chapters or None, args.check)
    elif args.command == "book":
        start = time.perf_counter()
        args.chapters, args.output, args.param = None, None, []
        _execute(args)
        _build_html(None, args.strict)
        print(f"total: {time.perf_counter() - start:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdcourse`` console script; returns the exit status."""
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"kdcourse: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
