"""The app as a person uses it, in real headless Chromium (Debian's, driven by Playwright): run the
default preset, wait for it, read the perplexities and see the figures, run a second method, open
Compare, and type a bad pattern. Screenshots go to artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
FLAGS = [  # the sandbox and the closed network of CI machines
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: make test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    """The app in its own process, as `make app` starts it (on a free port)."""
    port = _free_port()
    code = f"import app; app.demo.launch(server_name='127.0.0.1', server_port={port}, quiet=True)"
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen([sys.executable, "-c", code], cwd=root)
    address = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(address, timeout=1)
                break
            except OSError:
                assert server.poll() is None, "the app exited while starting"
                time.sleep(0.5)
        yield address
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def page(url):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.goto(url)
        page.get_by_text("Pruning Lab").first.wait_for()
        yield page
        browser.close()


def _choose(page, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def _settle(page, timeout: int = 300_000) -> None:
    """Wait until no component shows Gradio's 'processing' tracker."""
    page.wait_for_function(
        "() => !document.body.innerText.includes('processing |')", timeout=timeout
    )


def _tab(page, name: str) -> None:
    """Open a tab, from the overflow menu ("More tabs") where the bar is too narrow to show it;
    the bar sorts tabs into the menu only once it has measured them, so wait for that first."""
    tab = page.get_by_role("tab", name=name, exact=True).first
    try:
        tab.wait_for(state="visible", timeout=15_000)
    except sync_api.TimeoutError:
        page.get_by_label("More tabs").click()
        page.locator(".overflow-dropdown").get_by_text(name, exact=True).click()
        return
    tab.click()


def _plots(page, n: int) -> None:
    """Wait until at least n plots are drawn and visible (plotly renders after the data lands)."""
    page.locator(".js-plotly-plot:visible").nth(n - 1).wait_for(timeout=60_000)


def _status(page):
    return page.locator("#status")


def test_default_preset_then_second_method_then_compare(page):
    page.get_by_role("button", name="Run preset").click()
    _status(page).get_by_text("Done:").first.wait_for(timeout=600_000)
    text = _status(page).inner_text()
    found = re.findall(r"(magnitude|wanda) 50% · dense\*\*?: perplexity ([\d.]+) → ([\d.]+)", text)
    found = found or re.findall(
        r"(magnitude|wanda) 50% · dense: perplexity ([\d.]+) → ([\d.]+)", text
    )
    assert {m for m, _, _ in found} == {"magnitude", "wanda"}, text
    ppl = {m: (float(d), float(p)) for m, d, p in found}
    assert ppl["magnitude"][0] == ppl["wanda"][0] < ppl["wanda"][1] < ppl["magnitude"][1]
    _plots(page, 2)  # perplexity bars and block errors
    page.screenshot(path=str(SHOTS / "1-preset.png"), full_page=True)

    _choose(page, "Method", "sparsegpt")
    page.get_by_role("button", name="Run", exact=True).click()
    _status(page).get_by_text(re.compile(r"sparsegpt 50% · dense: perplexity \d")).wait_for(
        timeout=600_000
    )

    _tab(page, "Model map")
    page.get_by_label("error").check()
    _settle(page)
    title = page.locator(".js-plotly-plot:visible text.gtitle", has_text="reconstruction error")
    title.first.wait_for(timeout=60_000)  # the map redrawn in errors, not still in sparsity
    assert page.get_by_text("needs the dense Hessians").count() == 0  # SparseGPT cached them
    _plots(page, 1)
    page.screenshot(path=str(SHOTS / "2-model-map.png"), full_page=True)

    _tab(page, "Layer")
    _settle(page)
    _plots(page, 4)
    page.screenshot(path=str(SHOTS / "3-layer.png"), full_page=True)

    _tab(page, "Compare")
    page.get_by_text(re.compile(r"Layer .+: .+ against .+\.")).first.wait_for(timeout=30_000)
    _settle(page)
    _plots(page, 2)
    page.screenshot(path=str(SHOTS / "4-compare.png"), full_page=True)


def test_bad_pattern_shows_a_message_and_the_app_stays_usable(page):
    page.get_by_label("N:M", exact=True).check()
    box = page.get_by_label("N:M (prune N of every M inputs)")
    box.fill("5:7")
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("divisible by 7").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "5-error.png"), full_page=True)
    box.fill("2:4")
    _choose(page, "Method", "magnitude")
    page.get_by_role("button", name="Run", exact=True).click()
    _status(page).get_by_text(re.compile(r"magnitude 2:4 · dense: perplexity \d")).wait_for(
        timeout=600_000
    )


def test_generation_shows_the_dense_and_the_pruned_continuation(page):
    _tab(page, "Generate")
    page.get_by_role("button", name="Generate, dense and pruned").click()
    sync_api.expect(page.get_by_label("Pruned model")).not_to_have_value("", timeout=300_000)
    dense = page.get_by_label("Dense model").input_value()
    pruned = page.get_by_label("Pruned model").input_value()
    assert "Paris" in dense and pruned and pruned != dense  # magnitude 2:4 is far from dense
    page.screenshot(path=str(SHOTS / "6-generate.png"), full_page=True)


def test_the_stepper_walks_a_toy_layer(page):
    _tab(page, "Learn")
    page.get_by_role("button", name="Build the toy").click()
    page.get_by_text("Step 0: nothing pruned yet").wait_for(timeout=60_000)
    step = page.get_by_label("number input for Step")
    step.fill("7")
    step.press("Enter")
    page.get_by_text(re.compile(r"Step 7: column \d+ processed")).wait_for(timeout=60_000)
    _settle(page)
    _plots(page, 3)
    page.screenshot(path=str(SHOTS / "7-stepper.png"), full_page=True)
    page.locator("button.label-wrap", has_text="sparsegpt").first.click()  # its explanation
    page.get_by_text("Optimal Brain Surgeon, made cheap").wait_for(timeout=30_000)
    page.get_by_text("The methods, exactly").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "7-explained.png"), full_page=True)


def test_a_share_link_restores_every_control(page, url):
    _tab(page, "Export")
    page.get_by_role("button", name="Make a share link of the controls").click()
    values = "[...document.querySelectorAll('textarea, input')].map(t => t.value)"
    page.wait_for_function(f"() => {values}.some(v => v.includes('?preset='))")
    link = page.evaluate(f"() => {values}.find(v => v.includes('?preset='))")
    assert link.startswith(url.rstrip("/") + "/?preset=")  # the page's own address, then the query
    assert "method=" in link and "nsamples=" in link
    query = (
        "?preset=GBLM+structure+at+50%25&model=bundled&method=sparsegpt&pattern=N%3AM&nm=4%3A8"
        "&mode=sequential&data=bundled&nsamples=16&seqlen=128&seed=3&eval_tokens=1024"
        "&options=blocksize%3D64%2C+percdamp%3D0.05"
    )
    page.goto(url + query)
    _status(page).get_by_text("restored from the link").wait_for(timeout=60_000)
    assert page.get_by_label("Preset").input_value() == "GBLM structure at 50%"
    assert page.get_by_label("Method").input_value() == "sparsegpt"
    assert page.get_by_label("N:M", exact=True).is_checked()
    assert page.get_by_label("N:M (prune N of every M inputs)").input_value() == "4:8"
    assert page.get_by_label("sequential", exact=True).is_checked()
    page.get_by_text("Calibration and evaluation").click()
    for label, value in (("Windows", "16"), ("Tokens per window", "128"), ("Seed", "3")):
        assert page.get_by_label(label, exact=True).input_value() == value, label
    assert page.get_by_label("Evaluation tokens (0: all)").input_value() == "1024"
    page.get_by_text("Method options").click()
    assert page.get_by_label("key=value, …").input_value() == "blocksize=64, percdamp=0.05"
    assert "SparseGPT" in page.locator("body").inner_text() or "sparsegpt" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "8-share-link.png"), full_page=True)
