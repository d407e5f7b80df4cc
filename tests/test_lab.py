"""A real Jupyter server started as ``kdcourse lab`` starts it serves the chapters as notebooks."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdcourse.course.book import BOOK_DIR, notebook_chapters, repo_root
from kdcourse.course.lab import lab_environment

STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A JupyterLab server on 127.0.0.1 serving ``book/`` with the repository's settings, and only
    those: the user's own configuration and settings folders are replaced by empty ones."""
    root, home = repo_root(), tmp_path_factory.mktemp("jupyter-home")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_PATH": "",
    }
    env.update(lab_environment(root))
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root / BOOK_DIR}"]
    log = (home / "server.log").open("w")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                _get(f"{url}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Jupyter did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_a_chapter_is_served_as_a_notebook_with_its_kernel(server: tuple[str, str]) -> None:
    url, token = server
    model = _get(f"{url}/api/contents/mhist_transfer.md?type=notebook&content=1", token)
    assert model["type"] == "notebook"
    notebook = model["content"]
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert any(cell["cell_type"] == "code" for cell in notebook["cells"])


def test_jupytext_notebook_is_the_default_viewer_of_the_chapters(server: tuple[str, str]) -> None:
    url, token = server
    plugin = _get(f"{url}/lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
    viewers = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers["markdown"] == "Jupytext Notebook"
    # no user setting: the effective value is the repository's default
    assert plugin["settings"].get("defaultViewers", viewers)["markdown"] == "Jupytext Notebook"


def test_the_lab_environment_puts_the_repository_settings_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", "elsewhere")
    paths = lab_environment(tmp_path)["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    assert paths == [str(tmp_path / ".jupyter"), "elsewhere"]
    overrides = repo_root() / ".jupyter" / "labconfig" / "default_setting_overrides.json"
    assert json.loads(overrides.read_text())["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]


def test_saving_a_chapter_from_jupyter_leaves_its_file_unchanged(tmp_path: Path) -> None:
    """JupyterLab autosaves a chapter it opened through jupytext: the save must write the same text back
    (the book's ``jupytext.toml`` keeps jupytext from adding its version to the front matter)."""
    from jupyter_server.services.contents.largefilemanager import LargeFileManager
    from jupytext.sync_contentsmanager import build_sync_jupytext_contents_manager_class

    book = repo_root() / BOOK_DIR
    copy = tmp_path / BOOK_DIR
    copy.mkdir()
    chapters = notebook_chapters()
    for path in [*chapters, book / "jupytext.toml"]:
        (copy / path.name).write_bytes(path.read_bytes())
    manager = build_sync_jupytext_contents_manager_class(LargeFileManager)(root_dir=str(copy))
    changed = []
    for path in chapters:
        manager.save(manager.get(path.name, type="notebook", content=True), path.name)
        if (copy / path.name).read_bytes() != path.read_bytes():
            changed.append(path.name)
    assert not changed, f"saving from Jupyter rewrote {changed}"
