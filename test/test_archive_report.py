"""replay-many's archive report without Ray: real `endoarss replay` outputs of tiny synthetic bags (tiny model)
in an archive folder, one with a hostile name, plus a failure record with a hostile error; the picture keeps its
size from 4 to 1,200 recordings and says where ground truth is missing; report.html is parsed (every recording,
every link to an existing file, nothing external, untrusted strings kept as text) and, where Chromium is
installed, opened headless, sorted and filtered through its URL, and screenshotted."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from endoarss_ros.bag.archive import Recording, record_failure
from endoarss_ros.bag.archive_report import FIGURES, write_aggregate
from endoarss_ros.bag.replay import ReplayOptions, replay
from endoarss_ros.bag.synth_bag import write_synth_bag
from endoarss_ros.tools.bench.bench_archive import write_synthetic_archive

HOSTILE = "<img src=x onerror=alert(1)> & \"q\" 's"  # a folder name someone else left in OUT_ROOT
HOSTILE_ERROR = "BagError: </script><script>alert(2)</script><a href=\"https://evil.example/\">x</a>"
MADE_FROM = {"package_version": "test", "options": {"batch": 4}}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from endoarss_ros.inference import InferenceEngine
    from endoarss_ros.model import ModelConfig, build_model, save_model

    root = tmp_path_factory.mktemp("archive_report")
    model = str(save_model(build_model(ModelConfig.endoarss_tiny()), root / "tiny"))
    engine = InferenceEngine(model, device="cpu", max_batch=4)
    out = root / "out"
    try:
        for i, (name, seconds) in enumerate([("alpha", 0.6), ("beta", 0.3), (HOSTILE, 0.4)]):
            bag = root / "in" / f"bag{i}"
            write_synth_bag(bag, seconds=seconds, fps=10, size=(32, 40), seed=i)
            replay(ReplayOptions(input=bag, output=out / name / name, model=model, engine=engine, progress=False,
                                 video=out / name / f"{name}.mp4" if name == "alpha" else None,
                                 made_from=dict(MADE_FROM, input={"path": str(bag)})))
    finally:
        engine.close()
    record_failure(Recording(root / "in" / "damaged", "damaged", 0), out,
                   {"name": "damaged", "input": str(root / "in" / "damaged"), "error": HOSTILE_ERROR, "attempts": 1})
    return {"root": root, "out": out, "report": write_aggregate(out)}


class _Page(HTMLParser):
    """Every start tag with its attributes, the text of <style> and <script> blocks, and the page's text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.blocks: dict[str, list[str]] = {"style": [], "script": []}
        self.text: list[str] = []
        self._in: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in self.blocks else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        (self.blocks[self._in] if self._in else self.text).append(data)

    def data(self) -> dict:
        (attrs,) = [a for t, a in self.tags if t == "script" and a.get("id") == "data"]
        index = [a for t, a in self.tags if t == "script"].index(attrs)
        return json.loads(self.blocks["script"][index])


def _assert_self_contained(page: _Page) -> None:
    assert not [t for t, _ in page.tags if t in ("link", "iframe", "object", "embed", "base", "form", "frame")]
    assert all("src" not in a for t, a in page.tags if t == "script")
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            value = (value or "").strip().lower()
            assert "http:" not in value and "https:" not in value and not value.startswith("//"), (tag, key, value)
            if key == "src":
                assert value.startswith("data:image/png;base64,"), (tag, value[:40])
    css = "".join(page.blocks["style"]).lower()
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert "fetch(" not in "".join(page.blocks["script"]) and "XMLHttpRequest" not in "".join(page.blocks["script"])


def _target(out: Path, href: str) -> Path:
    parts = urlsplit(href)
    assert not parts.scheme and not parts.netloc and not parts.path.startswith("/"), href
    return out / unquote(parts.path)


def test_report_html_lists_every_recording_links_to_its_files_and_references_nothing_outside(archive):
    out = archive["out"]
    text = (out / "report.html").read_text(encoding="utf-8")
    page = _Page(text)
    _assert_self_contained(page)
    assert [t for t, _ in page.tags].count("img") == 1  # the picture; the hostile name stayed text
    assert not [a for t, a in page.tags if t == "a" and "evil" in a.get("href", "")]
    data = page.data()
    rows = {r[0]: r for r in data["rows"]}
    assert set(rows) == {"alpha", "beta", HOSTILE, "damaged"}
    keys = [c["key"] for c in data["columns"]]
    assert rows["damaged"][keys.index("status")] == "failed"
    assert rows["damaged"][keys.index("error")] == HOSTILE_ERROR
    summary = json.loads((out / "beta" / "beta.summary.json").read_text())
    assert rows["beta"][keys.index("frames_out")] == summary["frames_out"]
    assert rows["beta"][keys.index("activity_accuracy")] == summary["ground_truth"]["activity_accuracy"]
    # Every link a row offers resolves to a file, and every file a recording has is offered.
    from urllib.parse import quote

    offered = {}
    for name, row in rows.items():
        for link in data["links"]:
            if link["key"] in row[-1]:
                target = _target(out, link["path"].replace("{name}", quote(name, safe="")))
                assert target.is_file(), target
                offered.setdefault(name, set()).add(target.name)
    assert offered["alpha"] == {"alpha.summary.json", "alpha.timeline.png", "alpha.mp4"}
    assert offered[HOSTILE] == {f"{HOSTILE}.summary.json", f"{HOSTILE}.timeline.png"}
    assert offered["damaged"] == {"failure.json"}
    for tag, attrs in page.tags:  # the static links (failures at the top, the table's own fragment)
        if tag == "a" and not attrs["href"].startswith("#"):
            assert _target(out, attrs["href"]).is_file(), attrs["href"]
    # The run's settings and its failures at the top, the failure's text as text.
    body = "".join(page.text)
    assert HOSTILE_ERROR in body and '"package_version": "test"' in body
    assert body.index("Failed recordings") < body.index("Every recording")
    # The hostile error is only in the JSON data block, escaped: no script block ends early or starts.
    assert [json.dumps(data) == json.dumps(json.loads(b)) for b in page.blocks["script"] if "alert(2)" in b] == [True]
    assert len(page.blocks["script"]) == 2
    assert "</script><script>" not in text


def test_aggregate_names_the_worst_and_keeps_the_settings(archive):
    report = json.loads((archive["out"] / "aggregate.json").read_text())
    assert report["settings"] == [{"recordings": 3, "made_from": MADE_FROM}]
    ok = {r["name"]: r for r in report["recordings"] if r["status"] == "ok"}
    lowest = min(ok, key=lambda n: (ok[n]["activity_accuracy"], n))
    assert report["worst"]["activity_accuracy"][0] == [lowest, ok[lowest]["activity_accuracy"]]
    assert [n for n, _ in report["worst"]["frames_per_s"]] == sorted(ok, key=lambda n: (ok[n]["frames_per_s"], n))
    assert report["worst"]["frames_failed"] == []  # no recording lost a frame
    assert report["failed"] == [{"name": "damaged", "input": str(archive["root"] / "in" / "damaged"),
                                 "error": HOSTILE_ERROR}]


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_the_picture_has_one_size_names_the_worst_and_says_where_ground_truth_is_missing(archive, tmp_path):
    from endoarss_ros.bag.archive_plot import draw
    from endoarss_ros.files import pyplot

    out = archive["out"]
    small = _png_size(out / "aggregate.png")
    assert small == (1600, 1000)
    template = json.loads((out / "alpha" / "alpha.summary.json").read_text())
    big = tmp_path / "big"
    write_synthetic_archive(big, template, 1200, failed_share=0.05, truth_share=0.0, seed=3)
    report = write_aggregate(big)
    assert _png_size(big / "aggregate.png") == small
    assert report["overall"]["recordings"] == 1200 and report["overall"]["activity_accuracy"] is None
    fig = draw(report)
    try:
        texts = _texts(fig)
        assert texts.count("no recording has ground truth") == 2  # accuracy and mIoU
        for figure in FIGURES:
            for name, _ in report["worst"][figure.key][:3]:
                assert name in texts, (figure.key, name)
        assert report["failed"][0]["name"] in texts and "more (report.html" in texts
        assert "no ground truth" in fig._suptitle.get_text()
    finally:
        pyplot().close(fig)
    small_fig = draw(archive["report"])
    try:
        texts = _texts(small_fig)
        assert "no recording has ground truth" not in texts and "damaged" in texts and "no frame failed" in texts
    finally:
        pyplot().close(small_fig)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=True)


def _dom_rows(dom: str) -> tuple[list[str], dict]:
    page = _Page(dom)
    body = next(a for t, a in page.tags if t == "body")
    return [a["data-name"] for t, a in page.tags if t == "tr" and "data-name" in a], body


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no headless browser installed (Debian: apt-get install chromium)")
def test_report_in_a_headless_browser_sorts_filters_and_renders(archive, tmp_path):
    """Chromium opens the page from the file system with the state in the URL fragment; --dump-dom gives the
    table the script drew. The small archive's links are checked in the DOM; a screenshot is taken."""
    out = archive["out"]
    url = (out / "report.html").as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path / "p1").stdout
    names, body = _dom_rows(dom)
    assert sorted(names) == sorted(["alpha", "beta", HOSTILE, "damaged"]) and body["data-shown"] == "4"
    page = _Page(dom)
    assert [t for t, _ in page.tags].count("img") == 1
    files = [a["href"] for t, a in page.tags if t == "a" and a.get("class") == "file"]
    assert len(files) == 3 + 2 + 2 + 1 and all(_target(out, h).is_file() for h in files)
    shot = tmp_path / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1400,1600", url], tmp_path / "p2")
    from PIL import Image

    with Image.open(shot) as im:
        darkest, lightest = im.convert("L").getextrema()
        assert im.size == (1400, 1600) and lightest - darkest > 100  # drawn, not blank
    # A large archive: sorted by accuracy, only finished recordings, a page of 500 rows.
    template = json.loads((out / "alpha" / "alpha.summary.json").read_text())
    big = tmp_path / "big"
    write_synthetic_archive(big, template, 1200, failed_share=0.05, seed=4)
    report = write_aggregate(big)
    ok = sorted((r["activity_accuracy"], r["name"]) for r in report["recordings"] if r["status"] == "ok")
    big_url = (big / "report.html").as_uri()
    names, body = _dom_rows(_chromium(["--dump-dom", big_url + "#sort=activity_accuracy&status=ok"],
                                      tmp_path / "p3").stdout)
    assert names == [n for _, n in ok][:500] and body["data-matching"] == str(len(ok))
    names, body = _dom_rows(_chromium(["--dump-dom", big_url + "#sort=-name&q=rec-001"],
                                      tmp_path / "p4").stdout)
    expected = sorted((r["name"] for r in report["recordings"] if "rec-001" in r["name"]), reverse=True)
    assert names == expected and body["data-shown"] == str(len(expected)) == "100"
    names, _ = _dom_rows(_chromium(["--dump-dom", big_url + "#filter=failed"],
                                   tmp_path / "p5").stdout)
    assert names == [f["name"] for f in report["failed"]] and names
    # The controls themselves: a copy of the page with a script that clicks the frames/s header twice
    # (descending) and picks status ok, as a user would; the address then holds that view.
    clicks = ("<script>var th = document.querySelector('th[data-key=frames_per_s]'); th.click(); th.click();"
              "var s = document.getElementById('status'); s.value = 'ok'; s.dispatchEvent(new Event('change'));"
              "document.body.setAttribute('data-hash', location.hash);</script></body>")
    clicked = big / "clicked.html"
    clicked.write_text((big / "report.html").read_text(encoding="utf-8").replace("</body>", clicks), encoding="utf-8")
    names, body = _dom_rows(_chromium(["--dump-dom", clicked.as_uri()], tmp_path / "p6").stdout)
    by_fps = sorted((-r["frames_per_s"], r["name"]) for r in report["recordings"] if r["status"] == "ok")
    assert names == [n for _, n in by_fps][:500]
    assert body["data-hash"] == "#sort=-frames_per_s&status=ok"


def test_a_summary_that_is_not_one_and_a_nan_are_reported_not_fatal(archive, tmp_path):
    """Valid JSON that is not a summary is listed as failed with its reason; a NaN figure is left out of the
    rankings and is null in the page's data (which browsers parse as strict JSON)."""
    summary = json.loads((archive["out"] / "alpha" / "alpha.summary.json").read_text())
    summary["ground_truth"]["miou_foreground"] = float("nan")
    for name, text in (("nan", json.dumps(summary)), ("odd", '{"frames_in": 3}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.summary.json").write_text(text)
    report = write_aggregate(tmp_path)
    rows = {r["name"]: r for r in report["recordings"]}
    assert rows["odd"]["status"] == "failed" and "unreadable summary: KeyError" in rows["odd"]["error"]
    assert rows["nan"]["status"] == "ok" and report["worst"]["miou_foreground"] == []

    def strict(constant):
        raise AssertionError(f"{constant} in the page's JSON")

    page = _Page((tmp_path / "report.html").read_text(encoding="utf-8"))
    script = next(b for b in page.blocks["script"] if b.startswith("{"))
    data = json.loads(script, parse_constant=strict)
    keys = [c["key"] for c in data["columns"]]
    assert {r[0]: r[keys.index("miou_foreground")] for r in data["rows"]} == {"nan": None, "odd": None}
