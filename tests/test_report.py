"""report: the CLI (exit codes, JSON summary), a self-contained page (inline PNGs, no scripts,
no external requests, escaped text), and the page loaded in a real headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_bn_cnn
from typer.testing import CliRunner

from kerasaudit.cli.app import app

runner = CliRunner()
TRIGGER = "patch:size=3,pos=br,value=1"
PNG = b"\x89PNG\r\n\x1a\n"
CHROMIUM = Path("/usr/bin/chromium")
SECTIONS = ("summary", "inventory", "scan", "reverse", "sweep", "prune", "gradcam", "about")
# A name a careless page would turn into markup.
HOSTILE_NAME = 'spiked <b>bold & "quoted".keras'


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from kerasaudit import _tf

    keras = _tf.keras()
    out = tmp_path_factory.mktemp("report")
    paths = {"model": out / "tiny.keras", "spiked": out / HOSTILE_NAME, "data": out / "data.npz"}
    build_bn_cnn(keras, nested=True, seed=7).save(paths["model"])
    spiked = build_bn_cnn(keras, seed=7)
    conv = spiked.get_layer("f_conv1")
    kernel = conv.kernel.numpy()
    kernel[..., 0] *= 40.0  # one channel with an outsized peak: the scan must flag it
    conv.kernel.assign(kernel)
    spiked.save(paths["spiked"])
    rng = np.random.default_rng(3)
    np.savez(
        paths["data"],
        x=rng.integers(0, 120, (96, 8, 8, 1)).astype("uint8"),
        y=rng.integers(0, 3, 96).astype("uint8"),
    )
    return paths


@pytest.fixture(scope="module")
def full_report(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every stage that can run without --reverse: trigger, sweep, prune, Grad-CAM."""
    page = tmp_path_factory.mktemp("page") / "report.html"
    args = ["report", str(files["model"]), "-d", str(files["data"]), "-o", str(page), "-q"]
    args += ["--trigger", TRIGGER, "--target", "0", "--sweep-ratios", "0.25,0.5"]
    args += ["--criteria", "linf-trigger,l1", "--max-acc-drop", "100", "--cam-images", "4"]
    result = runner.invoke(app, [*args, "-f", "json"])
    return {"page": page, "exit_code": result.exit_code, "output": result.output,
            "stdout": result.stdout, "stderr": result.stderr}  # fmt: skip


class _Page(HTMLParser):
    """Tags, attributes, section ids and their one-sentence descriptions, image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: list[str] = []
        self.whats = 0
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag in ("section", "footer") and attributes.get("id"):
            self.sections.append(str(attributes["id"]))
        if tag == "p" and attributes.get("class") == "what":
            self.whats += 1
        if tag == "img":
            self.images.append(str(attributes.get("src")))


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _check_png_data_uri(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    png = base64.b64decode(src[len(prefix) :], validate=True)
    assert png.startswith(PNG) and len(png) > 1000
    return png


def test_report_cli_runs_every_stage(full_report: dict[str, Any]) -> None:
    summary = json.loads(full_report["stdout"])
    assert full_report["exit_code"] == (1 if summary["has_findings"] else 0), full_report["output"]
    assert summary["schema"] == "kerasaudit.report/1"
    assert summary["output"] == str(full_report["page"])
    sections = summary["sections"]
    assert all(sections[name]["ran"] for name in ("inventory", "scan", "sweep", "prune", "gradcam"))
    assert not sections["reverse"]["ran"] and "--reverse" in sections["reverse"]["reason"]
    assert sections["sweep"]["criteria"] == ["l1", "linf-trigger"]
    assert sections["sweep"]["ratios"] == [0.25, 0.5]
    assert sections["prune"]["layers"] == [sections["sweep"]["recommended"]["layer"]]
    assert sections["prune"]["before"]["asr"] is not None
    roles = [m["role"] for m in sections["gradcam"]["models"]]
    assert roles == ["model", "compare"]  # the pruned model is explained beside the original
    assert sections["gradcam"]["models"][0]["localisation"]["ratio"] is not None
    assert summary["trigger_source"] == "--trigger" and summary["target"] == 0


def test_page_is_self_contained(full_report: dict[str, Any]) -> None:
    text = full_report["page"].read_text(encoding="utf-8")
    page = _parse(text)
    assert page.sections == list(SECTIONS)
    assert page.whats == len(SECTIONS)  # each section says in one sentence what it shows
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "form"}
    csp = [
        a for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in str(csp[0]["content"])
    # scan has no figure; the sweep curve and the Grad-CAM grid are there.
    assert len(page.images) == 2
    for src in page.images:
        _check_png_data_uri(src)
    for _, attributes in page.tags:  # nothing is fetched: no URL anywhere in an attribute
        for name, value in attributes.items():
            if name in ("src", "href", "srcset", "action", "poster", "data"):
                assert str(value).startswith("data:image/png;base64,"), (name, str(value)[:80])
    assert "http://" not in text and "https://" not in text
    assert "Before and after pruning" in text and "Localisation on the trigger" in text


def test_clean_data_leads_are_not_findings_and_text_is_escaped(
    files: dict[str, Path], tmp_path: Path
) -> None:
    page = tmp_path / "spiked.html"
    args = ["report", str(files["spiked"]), "-d", str(files["data"]), "-o", str(page), "-q"]
    result = runner.invoke(app, [*args, "--cam-images", "2", "-f", "json"])
    # A channel that stands out on clean data is a lead, not a backdoor verdict.
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert not summary["has_findings"] and summary["findings"] == []
    assert summary["sections"]["scan"]["flagged"] >= 1
    for name in ("sweep", "prune"):
        assert not summary["sections"][name]["ran"]
        assert "--trigger" in summary["sections"][name]["reason"]
    text = page.read_text(encoding="utf-8")
    assert "a lead, not a verdict" in text
    assert "<b>bold" not in text
    assert "spiked &lt;b&gt;bold &amp; &quot;quoted&quot;.keras" in text
    parsed = _parse(text)
    assert parsed.sections == list(SECTIONS)
    assert "b" not in {tag for tag, _ in parsed.tags}
    assert len(parsed.images) == 1  # Grad-CAM only: nothing to sweep without a trigger
    assert "exit code 0" in text and 'tr class="flagged"' in text  # flagged rows, still a lead


def test_reverse_section(files: dict[str, Path], tmp_path: Path) -> None:
    """With the reverse stage installed, --reverse runs it and shows the recovered masks; without
    it, the section says the stage is not installed (the report still succeeds)."""
    from kerasaudit.report import reverse_available

    page = tmp_path / "reverse.html"
    args = ["report", str(files["model"]), "-d", str(files["data"]), "-o", str(page), "-q"]
    args += ["--reverse", "--reverse-steps", "20", "--cam-images", "2", "-f", "json"]
    result = runner.invoke(app, args)
    summary = json.loads(result.stdout)
    assert result.exit_code == (1 if summary["has_findings"] else 0), result.output
    section = summary["sections"]["reverse"]
    parsed = _parse(page.read_text(encoding="utf-8"))
    if reverse_available():
        assert section["ran"] and isinstance(section["flagged"], list)
        # recovered masks + Grad-CAM grid, and the sweep curve when a flagged label's
        # recovered trigger drove the sweep
        swept = summary["sections"]["sweep"]["ran"]
        assert swept == bool(section["trigger_used_for_pruning"] is not None)
        assert len(parsed.images) == 2 + int(swept)
        for src in parsed.images:
            _check_png_data_uri(src)
    else:
        assert not section["ran"] and "no reverse-engineering stage" in section["reason"]
        assert "not installed" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--target", "0"], "--target needs --trigger"),
        (["--criteria", "linf,bogus"], "--criteria"),
        (["--sweep-ratios", "0.5,1.5"], "--ratios"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path, extra: list[str], message: str
) -> None:
    page = tmp_path / "r.html"
    args = ["report", str(files["model"]), "-d", str(files["data"]), "-o", str(page), "-q"]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert not page.exists()


# --- a real browser ------------------------------------------------------------------------


class DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages, NUL-terminated, we write on the browser's fd 3 and read its fd 4). No network
    port is opened; the browser runs with a fresh profile and no background networking."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--remote-debugging-pipe",
    )

    def __init__(self, binary: Path, profile: Path, log: Path) -> None:
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire_fds() -> None:  # runs in the child, before exec
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [str(binary), *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            pass_fds=(3, 4),
            preexec_fn=wire_fds,  # fine here: the test process starts no threads of its own
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:  # fmt: skip
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        reply = self._read_until(lambda m: m.get("id") == self._next_id, timeout, method)
        if "error" in reply:
            raise AssertionError(f"DevTools {method} failed: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        return self._read_until(lambda m: m.get("method") == method, timeout, method)

    def _read_until(self, wanted: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if "method" in message:
                    self.events.append(message)
                if wanted(message):
                    return dict(message)
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise AssertionError(f"no answer from Chromium to {what} within {timeout:.0f} s")
            ready, _, _ = select.select([self._from_browser], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise AssertionError(f"Chromium closed the DevTools pipe during {what}")
                self._buffer += chunk

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                os.write(
                    self._to_browser,
                    json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0",
                )
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            for fd in (self._to_browser, self._from_browser):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._log.close()


def _is_error(event: dict[str, Any]) -> bool:
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        return True
    if method == "Runtime.consoleAPICalled":
        return params["type"] in ("error", "assert")
    return method == "Log.entryAdded" and params["entry"]["level"] == "error"


@pytest.fixture()
def chromium() -> Path:
    """Never skipped: a machine without Chromium fails here, saying how to install it."""
    binary = Path(os.environ.get("KERASAUDIT_CHROMIUM", CHROMIUM))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"Chromium is needed for the browser test and was not found at {binary}: install it "
            "with `apt-get update && apt-get install -y chromium` (.ci/run does this), or point "
            "KERASAUDIT_CHROMIUM at a Chromium binary"
        )
    return binary


@pytest.mark.slow
def test_report_in_headless_chromium(
    full_report: dict[str, Any], chromium: Path, tmp_path: Path
) -> None:
    page_path: Path = full_report["page"]
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    browser = DevTools(chromium, profile, tmp_path / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 4000, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        browser.send("Page.navigate", {"url": page_path.as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")

        def evaluate(expression: str) -> Any:
            reply = browser.send(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                session=session,
            )
            assert "exceptionDetails" not in reply, reply
            return reply["result"]["value"]

        state = evaluate(
            "JSON.stringify({"
            "title: document.title,"
            "sections: Array.from(document.querySelectorAll('section[id], footer[id]'))"
            "  .map(s => [s.id, s.querySelector('h2').innerText,"
            "             (s.querySelector('p.what') || {innerText: ''}).innerText]),"
            "images: Array.from(document.images).map(i => [i.complete, i.naturalWidth,"
            "  i.naturalHeight, i.getBoundingClientRect().width, i.alt]),"
            "height: document.documentElement.scrollHeight,"
            "width: document.documentElement.scrollWidth})"
        )
        dom = evaluate("document.documentElement.outerHTML")
        shot = browser.send(
            "Page.captureScreenshot", {"format": "png", "fromSurface": True}, session=session
        )
        (tmp_path / "report.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        browser.close()

    info = json.loads(state)
    assert info["title"].startswith("kerasaudit report: tiny.keras")
    assert [s[0] for s in info["sections"]] == list(SECTIONS)
    for ident, heading, what in info["sections"]:
        assert heading and len(what) > 40, (ident, heading, what)
    assert len(info["images"]) == 2
    for complete, width, height, shown, alt in info["images"]:
        assert complete and width > 100 and height > 100 and shown > 100, (alt, width, height)
    assert info["width"] <= 1280  # no horizontal scrolling at 1280 px
    parsed = _parse(dom)  # the DOM the browser built, not the file
    assert parsed.sections == list(SECTIONS) and len(parsed.images) == 2
    for src in parsed.images:
        _check_png_data_uri(src)

    # Nothing went wrong and nothing was fetched.
    errors = [e for e in browser.events if _is_error(e)]
    assert not errors, errors
    requests = [
        e["params"]["request"]["url"]
        for e in browser.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    assert requests and all(u.startswith(("file://", "data:")) for u in requests), requests
    log = (tmp_path / "chromium.log").read_text(errors="replace")
    assert "Uncaught" not in log and "ERROR:CONSOLE" not in log

    screenshot = (tmp_path / "report.png").read_bytes()
    assert screenshot.startswith(PNG) and len(screenshot) > 20_000
    from PIL import Image

    with Image.open(tmp_path / "report.png") as image:
        assert image.size == (1280, 4000)
        colours = image.convert("RGB").resize((64, 200)).getcolors(64 * 200)
    assert colours is not None and len(colours) > 50  # a rendered page, not a blank one
    shutil.rmtree(profile, ignore_errors=True)


def test_a_working_trigger_is_a_finding_on_the_page_and_in_the_exit_code(
    keras_module: Any, tmp_path: Path
) -> None:
    """A known trigger that still works (ASR above --max-asr) must never sit next to "no
    findings" and exit 0 (a CI gate on the exit code would pass the model)."""
    from test_reverse import TRIGGER as PLANTED
    from test_reverse import write_stripe_files

    stripes = write_stripe_files(tmp_path, keras_module)
    page = tmp_path / "backdoored.html"
    args = ["report", str(stripes["backdoored"]), "-d", str(stripes["data"]), "-o", str(page)]
    args += ["-t", PLANTED, "--target", "0", "--sweep-ratios", "0.1", "--criteria", "l1"]
    result = runner.invoke(app, [*args, "--cam-images", "2", "-q", "-f", "json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert any(f.startswith("the trigger works: ASR") for f in summary["findings"])
    text = page.read_text(encoding="utf-8")
    assert "exit code 1" in text and "No findings" not in text
