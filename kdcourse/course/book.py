"""Find, convert, execute and test the chapters.

The chapters are Jupytext MyST notebooks (``book/*.md``). papermill cannot read them and nbval
collects only ``.ipynb``, so every step starts by converting them with jupytext:

* :func:`execute_chapters` runs them with papermill under a profile (``smoke`` or ``full``) into
  ``_build/executed``, from which :func:`kdcourse.course.build.build_html` builds the HTML book;
* :func:`run_tests` runs the unit tests and, with nbval, every chapter under the smoke profile.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import yaml

from kdcourse.paths import RUNS_ENV
from kdcourse.course.profiles import PROFILE_ENV, resolve_profile

__all__ = [
    "repo_root",
    "notebook_chapters",
    "find_chapters",
    "convert_chapter",
    "chapter_parameters",
    "kernel_environment",
    "shared_folders",
    "visible_gpus",
    "runs_last",
    "execute_chapters",
    "finalise_executed",
    "run_tests",
]

BOOK_DIR = "book"
# configuration of the kernels that run the chapters (it silences one misleading log line)
KERNEL_CONFIG = Path(__file__).resolve().parent / "kernel_config" / "ipython_kernel_config.py"
# the notebook metadata key that records the profile a chapter was executed under
PROFILE_METADATA = "kdcourse"


def _is_book_root(folder: Path) -> bool:
    return (folder / "_config.yml").is_file() and (folder / "_toc.yml").is_file()


def repo_root() -> Path:
    """The folder holding ``_config.yml`` and ``_toc.yml``: searched upwards from the current
    directory, then from this package's location."""
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if _is_book_root(folder):
                return folder
    raise FileNotFoundError(
        "cannot find the kdcourse repository (a folder with _config.yml and _toc.yml) above the current "
        "directory or the installed package; run this command from inside a clone of the repository"
    )


def _toc_files(entry: object) -> Iterator[str]:
    """Every ``file``/``root`` entry of a parsed ``_toc.yml``, in reading order."""
    if isinstance(entry, Mapping):
        for key in ("root", "file"):
            if isinstance(entry.get(key), str):
                yield entry[key]
        for key in ("parts", "chapters", "sections"):
            for child in entry.get(key) or []:
                yield from _toc_files(child)
    elif isinstance(entry, list):
        for child in entry:
            yield from _toc_files(child)


def _front_matter(path: Path) -> dict:
    """The YAML front matter of a Markdown file, or ``{}`` when it has none."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    for end, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            meta = yaml.safe_load("\n".join(lines[1:end]))
            return meta if isinstance(meta, dict) else {}
    return {}


def notebook_chapters(root: Path | None = None) -> list[Path]:
    """The ``.md`` files of ``_toc.yml``, in its order, that are Jupytext notebooks (a ``kernelspec``
    in the front matter); plain Markdown pages are left out."""
    root = Path(root) if root is not None else repo_root()
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    chapters = []
    for name in _toc_files(toc):
        path = root / (name if name.endswith(".md") else f"{name}.md")
        if path.is_file() and "kernelspec" in _front_matter(path) and path not in chapters:
            chapters.append(path)
    return chapters


def find_chapters(names: Iterable[str] | None, root: Path | None = None) -> list[Path]:
    """The notebook chapters called ``names`` (``theory``, ``book/theory`` or ``book/theory.md``),
    or all of them when ``names`` is ``None``."""
    root = Path(root) if root is not None else repo_root()
    chapters = notebook_chapters(root)
    if names is None:
        return chapters
    by_name = {path.stem: path for path in chapters}
    selected = []
    for name in names:
        stem = Path(name).name.removesuffix(".md").removesuffix(".ipynb")
        if stem not in by_name:
            raise ValueError(f"no notebook chapter {name!r} in _toc.yml; choose from {', '.join(by_name)}")
        selected.append(by_name[stem])
    return selected


def convert_chapter(md_path: Path, out_dir: Path) -> Path:
    """Convert a Jupytext MyST chapter into ``out_dir/<name>.ipynb`` and return that path."""
    import jupytext

    md_path, out_dir = Path(md_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{md_path.stem}.ipynb"
    jupytext.write(jupytext.read(md_path), out)
    return out


def chapter_parameters(md_path: Path) -> list[str]:
    """The names a chapter's ``parameters`` cell assigns (``["PROFILE", "SEEDS"]``), in its order:
    the names ``kdcourse execute -p NAME=VALUE`` may set."""
    import jupytext

    names: list[str] = []
    for cell in jupytext.read(md_path).cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    names += [t.id for t in node.targets if isinstance(t, ast.Name) and t.id not in names]
                elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id not in names:
                    names.append(node.target.id)
    return names


def _parameters_by_chapter(chapters: Sequence[Path], parameters: Mapping[str, object]) -> dict[Path, dict[str, object]]:
    """The ``parameters`` each chapter declares (a name its parameters cell lacks is not passed to it).

    Raises ValueError, before anything runs, for a name that none of ``chapters`` declares (a typo such
    as ``SEED`` for ``SEEDS`` would otherwise run the defaults), listing each chapter's names.
    """
    declared = {chapter: chapter_parameters(chapter) for chapter in chapters}
    if unknown := [name for name in parameters if not any(name in names for names in declared.values())]:
        listed = "; ".join(f"{chapter.stem}: {', '.join(names) or 'none'}" for chapter, names in declared.items())
        raise ValueError(f"no chapter to execute has the parameter {', '.join(unknown)}; the parameters are {listed}")
    return {chapter: {k: v for k, v in parameters.items() if k in names} for chapter, names in declared.items()}


def kernel_environment(root: Path, profile: str) -> dict[str, str]:
    """Environment variables for a kernel that runs the chapters of ``root`` under ``profile``: the
    profile, no progress bars (ours and third-party tqdm bars), results under ``book/results``, the
    ``python3`` kernel of :func:`_kernel_spec_folder`, and ``KDCOURSE_DATA`` and ``KDCOURSE_WEIGHTS``
    from ``shared/data`` and ``shared/weights`` folders beside the repository if unset."""
    kernels = _kernel_spec_folder(root)
    env = {
        PROFILE_ENV: profile,
        "KDCOURSE_PROGRESS": "0",
        "TQDM_DISABLE": "1",
        "KDCOURSE_RESULTS": str(root / BOOK_DIR / "results"),
        "JUPYTER_PATH": os.pathsep.join(filter(None, [str(kernels), os.environ.get("JUPYTER_PATH")])),
    }
    return {**env, **shared_folders(root)}


def shared_folders(root: Path) -> dict[str, str]:
    """``KDCOURSE_DATA`` and ``KDCOURSE_WEIGHTS`` pointing at ``shared/data`` and ``shared/weights``
    folders beside the repository at ``root``, for each variable that is unset and folder that exists."""
    env = {}
    for variable, folder in (("KDCOURSE_DATA", "data"), ("KDCOURSE_WEIGHTS", "weights")):
        shared = root.parent / "shared" / folder
        if not os.environ.get(variable) and shared.is_dir():
            env[variable] = str(shared)
    return env


def _kernel_spec_folder(root: Path) -> Path:
    """A Jupyter data folder (for ``$JUPYTER_PATH``) holding a ``python3`` kernel spec: this Python,
    started with :data:`KERNEL_CONFIG`. Written under ``_build/jupyter``; it shadows the default
    ``python3`` kernel only for the chapters' kernels."""
    folder = root / "_build" / "jupyter"
    spec = folder / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 f"--IPKernelApp.extra_config_file={KERNEL_CONFIG}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": True},
    }, indent=1) + "\n")
    return folder


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the kernels started inside), restoring them after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as indices for ``CUDA_VISIBLE_DEVICES`` (``[]`` without CUDA)."""
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def runs_last(chapter: Path) -> bool:
    """Whether a chapter reads what the others record (front matter ``kdcourse: {runs_last: true}``,
    e.g. the appendix of results): it runs after every other chapter has finished."""
    return bool(_front_matter(chapter).get(PROFILE_METADATA, {}).get("runs_last"))


def execute_chapters(
    names: Iterable[str] | None = None,
    profile: str = "smoke",
    out_dir: Path | None = None,
    timeout: float | None = None,
    root: Path | None = None,
    on_done: Callable[[str, float], None] | None = None,
    parameters: dict[str, object] | None = None,
    devices: Sequence[str] | None = None,
) -> dict[str, float]:
    """Run the chapters (all notebook chapters by default) with papermill under ``profile``.

    Executed notebooks go to ``out_dir`` (``_build/executed``), with ``timings.json`` holding the
    wall time of each chapter in seconds. ``timeout`` limits each cell (seconds); ``on_done`` is
    called with each chapter's name and wall time as it finishes. ``parameters`` override further
    names of the chapters' ``parameters`` cells (e.g. ``{"SEEDS": (0, 1)}``), each chapter getting those
    its cell names; a name no chapter names raises ValueError before any chapter runs.

    With several ``devices`` (default: :func:`visible_gpus` when there are two or more), chapters run
    side by side, one per device, each in its own process that sees only its device
    (``CUDA_VISIBLE_DEVICES``); chapters that need the same network wait for each other's checkpoint
    (:class:`kdcourse.checkpoints.RunLock`), and :func:`runs_last` chapters start when all others are done.

    The profile reaches the kernels through ``$KDCOURSE_PROFILE`` (the chapters' ``PROFILE = None``
    reads it), and :func:`finalise_executed` folds any other parameters into the chapter's own
    parameters cell, so an executed notebook has exactly one parameters cell for a reader to edit.
    Smoke runs keep their checkpoints in a temporary folder (unless ``$KDCOURSE_RUNS`` is set).
    """
    root = Path(root) if root is not None else repo_root()
    profile = resolve_profile(profile)
    out_dir = Path(out_dir) if out_dir is not None else root / "_build" / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = list(devices) if devices is not None else visible_gpus()
    timings_path = out_dir / "timings.json"
    timings: dict[str, float] = {}
    if timings_path.is_file():
        previous = json.loads(timings_path.read_text())
        if previous.get("profile") == profile:
            timings = {k: v for k, v in previous.items() if k != "profile"}

    def finished(name: str, seconds: float) -> None:
        timings[name] = round(seconds, 1)
        timings_path.write_text(json.dumps({**timings, "profile": profile}, indent=1) + "\n")
        if on_done is not None:
            on_done(name, timings[name])

    chapters = find_chapters(names, root)
    own_parameters = _parameters_by_chapter(chapters, parameters or {})
    environment = kernel_environment(root, profile)
    with contextlib.ExitStack() as stack:
        if profile == "smoke" and not os.environ.get(RUNS_ENV):
            # smoke checkpoints are throw-away: they live in a temporary folder, shared by the chapters of
            # this call (later chapters reuse earlier chapters' teachers) and removed at the end
            environment[RUNS_ENV] = stack.enter_context(tempfile.TemporaryDirectory(prefix="kdcourse-smoke-runs-"))
        stack.enter_context(_environment(environment))
        if len(devices) > 1 and len(chapters) > 1:
            _execute_side_by_side(chapters, profile, out_dir, timeout, root, own_parameters, devices, finished)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            for chapter in chapters:
                start = time.perf_counter()
                _execute_one(chapter, profile, out_dir, timeout, root, own_parameters[chapter], tmp)
                finished(chapter.stem, time.perf_counter() - start)
    return timings


def _execute_one(chapter: Path, profile: str, out_dir: Path, timeout: float | None, root: Path,
                 parameters: dict[str, object], tmp: Path) -> None:
    """Run one chapter with papermill in this process's environment into ``out_dir/<name>.ipynb``."""
    import papermill

    source = convert_chapter(chapter, tmp)
    output = out_dir / source.name
    try:
        papermill.execute_notebook(
            str(source), str(output), parameters=dict(parameters), cwd=str(root / BOOK_DIR),
            kernel_name="python3", progress_bar=False, execution_timeout=timeout,
        )
        finalise_executed(output, profile)
    except Exception as exc:
        raise RuntimeError(
            f"chapter {chapter.stem!r} failed under the {profile} profile; the partially executed "
            f"notebook is {output}\n{exc}"
        ) from exc


def _execute_side_by_side(chapters: list[Path], profile: str, out_dir: Path, timeout: float | None, root: Path,
                          parameters: Mapping[Path, dict[str, object]], devices: list[str],
                          finished: Callable[[str, float], None]) -> None:
    """Run ``chapters`` as ``kdcourse execute`` processes, one per device at a time (see :func:`execute_chapters`),
    each with its own ``parameters``."""
    import queue
    import threading

    first = [c for c in chapters if not runs_last(c)]
    last = [c for c in chapters if runs_last(c)]
    failures: list[str] = []
    lock = threading.Lock()

    def run(chapter: Path, device: str) -> None:
        own = out_dir / "_side_by_side" / chapter.stem
        shutil.rmtree(own, ignore_errors=True)
        own.mkdir(parents=True)
        command = [sys.executable, "-m", "kdcourse", "execute", chapter.stem, "--profile", profile, "--output", str(own)]
        command += ["--timeout", str(timeout)] if timeout is not None else []
        for name, value in parameters[chapter].items():
            command += ["-p", f"{name}={value!r}"]
        start = time.perf_counter()
        log = own / "log.txt"
        with log.open("w") as handle:
            code = subprocess.run(command, cwd=root, env={**os.environ, "CUDA_VISIBLE_DEVICES": device},
                                  stdout=handle, stderr=subprocess.STDOUT).returncode
        with lock:
            if code != 0:
                failures.append(f"chapter {chapter.stem!r} failed on device {device} (log: {log}):\n"
                                f"{log.read_text()[-2000:]}")
                return
            shutil.move(str(own / f"{chapter.stem}.ipynb"), out_dir / f"{chapter.stem}.ipynb")
            finished(chapter.stem, time.perf_counter() - start)

    for batch in (first, last):
        waiting: queue.SimpleQueue[Path] = queue.SimpleQueue()
        for chapter in batch:
            waiting.put(chapter)

        def worker(device: str) -> None:
            while not failures:
                try:
                    chapter = waiting.get_nowait()
                except queue.Empty:
                    return
                run(chapter, device)

        threads = [threading.Thread(target=worker, args=(device,)) for device in devices[: len(batch)]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError("\n".join(failures))


def _has_tag(cell: Mapping, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def finalise_executed(path: Path, profile: str) -> None:
    """Make the executed notebook at ``path`` one a reader can re-run as it is.

    papermill adds an ``injected-parameters`` cell after the ``parameters`` cell; here each of its
    assignments replaces the line that sets the same name in the ``parameters`` cell (or is appended
    to it), and the injected cell is removed. The profile is recorded in the notebook's metadata
    (``metadata.kdcourse.profile``) for :func:`kdcourse.course.build.build_html`.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    injected = [cell for cell in nb.cells if _has_tag(cell, "injected-parameters")]
    own = next((cell for cell in nb.cells if _has_tag(cell, "parameters")), None)
    for cell in injected:
        if own is None:
            raise ValueError(f"{path} has injected parameters but no cell tagged 'parameters' to fold them into")
        lines = own.source.splitlines()
        for assignment in cell.source.splitlines():
            match = re.match(r"^([A-Za-z_]\w*)\s*=", assignment)
            if not match:
                continue
            name = match.group(1)
            new_line = f"{assignment.rstrip()}  # set for this build"
            at = next((i for i, line in enumerate(lines) if re.match(rf"^{name}\s*=", line)), None)
            if at is None:
                lines.append(new_line)
            else:
                lines[at] = new_line
        own.source = "\n".join(lines)
        nb.cells.remove(cell)
    nb.metadata[PROFILE_METADATA] = {**nb.metadata.get(PROFILE_METADATA, {}), "profile": profile}
    nbformat.write(nb, path)


def run_tests(pytest_args: Iterable[str] = (), root: Path | None = None) -> int:
    """Run ``tests/`` and, with ``nbval --nbval-lax``, every notebook chapter under the smoke profile.

    The chapters are converted into ``_build/nbval``, where nbval starts their kernels (it uses the
    notebook's folder as working directory); results and data are found through ``KDCOURSE_RESULTS``
    and ``KDCOURSE_DATA``, so the chapters do not depend on it. Their checkpoints go to
    ``$KDCOURSE_RUNS`` and are kept when it is set, else to a fresh ``_build/nbval/runs``, removed
    afterwards. Returns pytest's exit code.
    """
    root = Path(root) if root is not None else repo_root()
    if importlib.util.find_spec("nbval") is None:
        raise RuntimeError('nbval is not installed; install the test extras: pip install -e ".[test]"')
    nbval_dir = root / "_build" / "nbval"
    shutil.rmtree(nbval_dir, ignore_errors=True)
    notebooks = [str(convert_chapter(chapter, nbval_dir)) for chapter in notebook_chapters(root)]
    kept = os.environ.get(RUNS_ENV)
    # else a fresh checkpoint folder, so the smoke runs really train instead of loading earlier checkpoints
    runs = Path(kept) if kept else nbval_dir / "runs"
    try:
        with _environment({**kernel_environment(root, "smoke"), RUNS_ENV: str(runs)}):
            # a fresh interpreter: in this one jupytext has imported anyio, whose pytest plugin would then warn
            command = [sys.executable, "-m", "pytest", f"--rootdir={root}", str(root / "tests"), "--nbval-lax", *notebooks, *pytest_args]
            return subprocess.run(command, cwd=root).returncode
    finally:
        if not kept:
            shutil.rmtree(runs, ignore_errors=True)  # smoke checkpoints are throw-away
