"""JupyterLab in a real Chromium for the browser tests: a server on 127.0.0.1 with a token, and page helpers.

Chromium is Debian's package (``apt-get install chromium``), driven by the ``playwright`` package
through ``executable_path`` (Playwright's own browser download is not reachable from CI). Without
them the browser tests skip, unless ``WRNLIB_BROWSER_TESTS=require`` (set by ``.ci/run``) makes that a
failure. Every wait is bounded; a failing test leaves a screenshot in ``test-artifacts/browser/``.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"  # git-ignored
CHROMIUM = os.environ.get("WRNLIB_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach Google's services, which
# on a closed network only produces refused connections and noise.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRE_ENV = "WRNLIB_BROWSER_TESTS"
# User settings of the test's JupyterLab: no news pop-up over the notebook, no autosave (the copies
# are throwaway), and every cell kept in the DOM (the default windowing detaches far-away cells).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
TRACEBACK = "Traceback (most recent call last)"


def unavailable() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set WRNLIB_CHROMIUM)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` serving ``root`` on 127.0.0.1 with a random port and token; kernels import this wrnlib."""

    def __init__(self, root: Path, state: Path, env: dict[str, str] | None = None, start_timeout: float = 90):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        for plugin, values in LAB_SETTINGS.items():
            path = state / "settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        paths = [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
                        JUPYTER_CONFIG_DIR=str(state / "config"), IPYTHONDIR=str(state / "ipython"))
        full_env.update(env or {})
        self.log_path = state / "jupyterlab.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
             "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly",  # never asks PyPI (CI has no way out)
             f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}"],
            cwd=root, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_until_up(start_timeout)

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def url(self, path: str, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{path}?{query + '&' if query else ''}token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text()[-chars:]

    def stop(self, timeout: float = 20) -> None:
        """Stop the server (it shuts its kernels down); kill its process group if it does not stop in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(5)
        self._log.close()


def launch_chromium(playwright: Any, profile_dir: Path):
    """A persistent context with a fresh user-data folder (Debian's Chromium, not Playwright's download)."""
    shutil.rmtree(profile_dir, ignore_errors=True)
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1400, "height": 1000})


class LabPage:
    """One JupyterLab tab: open a notebook, run it, read what it shows; collects the browser console's errors."""

    def __init__(self, page: Any, server: LabServer):
        self.page, self.server = page, server
        self.console_errors: list[str] = []
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.console_errors.append(f"page error: {exc}"))

    def open(self, name: str, timeout: float = 90) -> None:
        """Open ``name`` in a fresh workspace and wait until its new kernel is idle."""
        self.page.goto(self.server.url(f"lab/tree/{name}", "reset"), timeout=timeout * 1000)
        self.page.wait_for_function(
            """name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                         const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                         return !!(w && w.context && w.context.path === name && k && k.status === 'idle'); }""",
            arg=name, timeout=timeout * 1000)

    def run_all(self, timeout: float) -> bool:
        """Run every cell (Run > Run All Cells); True when all succeeded. Bounded by ``timeout``."""
        self.page.evaluate("""() => { window.__runAll = null;
            window.jupyterapp.commands.execute('notebook:run-all-cells')
                .then(ok => { window.__runAll = (ok !== false); }, () => { window.__runAll = false; }); }""")
        self.page.wait_for_function("window.__runAll !== null", timeout=timeout * 1000)
        self.wait_idle(timeout)
        return self.page.evaluate("window.__runAll")

    def wait_idle(self, timeout: float = 30) -> None:
        self.page.wait_for_function(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
            timeout=timeout * 1000)

    def notebook_text(self) -> str:
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook").text_content() or ""

    def tracebacks(self) -> list[str]:
        """The text of every output in the notebook that shows a Python traceback."""
        outputs = self.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output")
        return [t for t in outputs.all_text_contents() if TRACEBACK in t or "Error" in t and "----> " in t]

    def images(self, scope: Any) -> list[dict[str, Any]]:
        """src, title and natural width of the images under ``scope`` (a locator)."""
        return scope.locator("img").evaluate_all(
            "els => els.map(e => ({src: e.src, title: e.title || '', width: e.naturalWidth}))")

    def wait_for(self, check, timeout: float, what: str, state=None, interval: float = 0.2):
        """Poll ``check()`` until it returns a truthy value; on timeout fail naming ``what`` (and ``state()``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            self.page.wait_for_timeout(interval * 1000)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f"; it shows {state()}" if state else ""))

    def screenshot(self, name: str, focus: Any = None) -> Path:
        """Save the page, scrolled to ``focus`` (a locator), else to the first traceback, else to the end."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        errors = self.page.locator(".jp-NotebookPanel:visible .jp-OutputArea-output").filter(has_text=TRACEBACK)
        target = focus if focus is not None else (errors.first if errors.count() else None)
        if target is not None:
            target.scroll_into_view_if_needed(timeout=5000)
        else:
            self.page.evaluate("() => { const n = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                               ".jp-WindowedPanel-outer'); if (n) n.scrollTop = n.scrollHeight; }")
        self.page.screenshot(path=str(path))
        return path
