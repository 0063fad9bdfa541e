"""Fixtures of the study tests: results folders with known values; a failing browser test leaves a screenshot of
its page in test-artifacts/browser/ (git-ignored)."""
import re

import pytest
import torch

import result_folders


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        if hasattr(value, "screenshot") and hasattr(value, "console_errors"):  # a browser.LabPage
            try:
                path = value.screenshot(re.sub(r"[^\w.-]+", "_", item.name), getattr(value, "widget", None))
                report.sections.append(("browser", f"screenshot: {path}"))
            except Exception as exc:  # a dead page must not hide the test's own failure
                report.sections.append(("browser", f"no screenshot: {exc}"))


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny tensor ops (``pytestmark = pytest.mark.usefixtures("one_thread")``): one torch
    thread is fastest for them, and spares a busy machine's other core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def study(tmp_path):
    """result_folders.study: runs, an ablation and a benchmark with known values."""
    return result_folders.study(tmp_path / "study")


@pytest.fixture
def cpu_study(tmp_path):
    """result_folders.cpu_study: a width sweep, a schedule ablation and a headline at CPU scale."""
    return result_folders.cpu_study(tmp_path / "cpu")
