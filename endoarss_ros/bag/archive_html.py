"""``report.html``: one self-contained page to browse an archive, opened from the file system.

At the top the overall figures, the failed recordings with their reason and the settings the summaries were made
from (``made_from`` less each input); then the picture (``aggregate.png``, inline as base64); then a table of every
recording whose rows link to that recording's files (relative links, only to files that exist). The rows travel
as one JSON array drawn by a little inline script (sort by a column, filter by text or status, a page at a time),
so 10,000 recordings stay a small file and a fast table. The state lives in the URL's fragment:
``report.html#sort=-frames_failed&status=failed&q=damaged`` opens sorted (``-``: descending) and filtered.

Names and errors come from the recordings' folders and files: untrusted. The static part escapes them; in the JSON,
``<``, ``>`` and ``&`` are written as ``\\u`` escapes (no ``</script>`` can close the block); the script puts
them in the page as text only and every link segment through ``encodeURIComponent``. A Content-Security-Policy
forbids anything but the inline script, the inline style and data: images (nothing is fetched)."""
from __future__ import annotations

import base64
import json
import re
from collections import Counter
from html import escape
from pathlib import Path
from urllib.parse import quote, urlencode

from .archive import FAILURE_FILE
from .archive_report import error_kind, is_number

FAILURES_LISTED = 20  # at the top; all of them are in the table (status: failed)
KINDS_LISTED = 10
PAGE_ROWS = 500  # rows drawn at a time; "more" draws the next
# (key, header, kind) of the table's columns, in the JSON row's order; kind: text, int, pct, num
COLUMNS = (("name", "recording", "text"), ("status", "status", "text"), ("frames_out", "frames", "int"),
           ("frames_failed", "failed frames", "int"), ("activity_accuracy", "accuracy", "pct"),
           ("miou_foreground", "fg mIoU", "pct"), ("usable_fraction", "usable", "pct"),
           ("frames_per_s", "frames/s", "num"), ("main_activity", "main activity", "text"), ("error", "error", "text"))
# The files a row may link to: (key, label, path relative to the page; {name} is the recording's folder name).
LINKS = (("summary", "summary", "{name}/{name}.summary.json"), ("timeline", "timeline", "{name}/{name}.timeline.png"),
         ("video", "video", "{name}/{name}.mp4"), ("failure", "failure", "{name}/" + FAILURE_FILE))
LINK_PATHS = {key: template for key, _, template in LINKS}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def link_path(template: str, name: str) -> str:
    return template.replace("{name}", name)


def _links(out_root: Path, name: str) -> str:
    """The keys' first letters of the files this recording has (``stv``: summary, timeline, video)."""
    return "".join(key[0] for key, _, template in LINKS if (out_root / link_path(template, name)).is_file())


def _json_for_script(data) -> str:
    """JSON that cannot end its <script> block nor start markup in it."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _percent(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _overall(o: dict) -> str:
    items = [("recordings", f"{o['recordings']:,}"), ("finished", f"{o['finished']:,}"),
             ("failed", f"{o['failed']:,}"), ("frames in / out / failed",
                                              f"{o['frames_in']:,} / {o['frames_out']:,} / {o['frames_failed']:,}"),
             ("activity accuracy (pooled)", _percent(o["activity_accuracy"])),
             ("foreground mIoU (mask-weighted)", _percent(o["miou_foreground_mask_weighted"])),
             ("usable share", _percent(o["usable_fraction"])),
             ("frames/s per replayer", "n/a" if o["frames_per_s"] is None else f"{o['frames_per_s']:,.1f}")]
    return "<dl class=overall>" + "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>"
                                          for k, v in items) + "</dl>"


def _failures(failed: list[dict], out_root: Path) -> str:
    if not failed:
        return "<p class=good>No recording failed.</p>"
    items = []
    for f in failed[:FAILURES_LISTED]:
        href = escape(_href(link_path(LINK_PATHS["failure"], f["name"])))
        record = f" <a href=\"{href}\">failure.json</a>" if (out_root / f["name"] / FAILURE_FILE).is_file() else ""
        items.append(f"<li><b>{escape(f['name'])}</b>: <code>{escape(str(f['error']))}</code>{record}</li>")
    more = (f"<p>... and {len(failed) - FAILURES_LISTED:,} more: <a href=\"#status=failed\">the table, filtered "
            f"to failed</a>.</p>" if len(failed) > FAILURES_LISTED else "")
    kinds = Counter(error_kind(f["error"]) for f in failed)
    by_kind = "<p>By reason (each filters the table): " + ", ".join(
        f"<a href=\"#{escape(urlencode({'status': 'failed', 'q': kind}))}\">{escape(kind)}</a> {n:,}"
        for kind, n in kinds.most_common(KINDS_LISTED)) + (
        f", {len(kinds) - KINDS_LISTED:,} other reasons" if len(kinds) > KINDS_LISTED else "") + ".</p>"
    return f"{by_kind}<ul class=failed>{''.join(items)}</ul>{more}"


def _href(path: str) -> str:
    """A relative link to ``path``: each segment percent-encoded (as the script's encodeURIComponent does)."""
    return "/".join(quote(part, safe="") for part in path.split("/"))


def _settings(settings: list[dict]) -> str:
    if not settings:
        return "<p>No finished recording.</p>"
    parts = []
    for s in settings:
        what = (json.dumps(s["made_from"], indent=2, sort_keys=True) if s["made_from"] is not None
                else "(no made_from record: not written by replay-many)")
        parts.append(f"<details{' open' if len(settings) == 1 else ''}><summary>{s['recordings']:,} "
                     f"recording(s)</summary><pre>{escape(what)}</pre></details>")
    note = ("<p class=warn>The recordings were made from different settings (different runs):</p>"
            if len(settings) > 1 else "")
    return note + "".join(parts)


def _cell(value):
    """A table cell's value as JSON the browser parses: NaN and infinities (not JSON) become null."""
    if isinstance(value, float) and not is_number(value):
        return None
    return value


def _table_data(report: dict, out_root: Path) -> dict:
    rows = [[_cell(r.get(key)) for key, _, _ in COLUMNS] + [_links(out_root, r["name"])]
            for r in report["recordings"]]
    return {"columns": [{"key": k, "label": label, "kind": kind} for k, label, kind in COLUMNS],
            "links": [{"key": k[0], "label": label, "path": template} for k, label, template in LINKS],
            "page": PAGE_ROWS, "rows": rows}


def render_report(report: dict, out_root: Path, picture: bytes | None) -> str:
    """The page for ``report`` (``archive_report.aggregate``), links checked against ``out_root``."""
    out_root = Path(out_root)
    o = report["overall"]
    image = (f"<img alt=\"the archive's picture (aggregate.png)\" src=\"data:image/png;base64,"
             f"{base64.b64encode(picture).decode('ascii')}\">" if picture else "<p>No picture.</p>")
    title = f"replay-many archive {out_root.name}: {o['recordings']:,} recordings, {o['failed']:,} failed"
    parts = {"CSP": CSP, "TITLE": escape(title), "ROOT": escape(str(out_root)), "OVERALL": _overall(o),
             "FAILED_COUNT": f"{len(report['failed']):,}", "FAILURES": _failures(report["failed"], out_root),
             "SETTINGS": _settings(report.get("settings", [])), "PICTURE": image, "SCRIPT": SCRIPT,
             "DATA": _json_for_script(_table_data(report, out_root))}
    # One pass: a placeholder inside a substituted part (a name, an error) stays as it is.
    return re.sub(r"%([A-Z_]+)%", lambda m: parts[m.group(1)], TEMPLATE)


TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
dl.overall{display:flex;flex-wrap:wrap;gap:.5em 2em}dl.overall dt{font-size:.8em;color:#666}
dl.overall dd{margin:0;font-weight:600}
ul.failed li{margin:.2em 0}code,pre{font:12px/1.3 ui-monospace,monospace}pre{background:#f6f6f6;padding:.5em}
.good{color:#2e7d32}.warn{color:#b26a00}img{max-width:100%;border:1px solid #ddd}
#controls{margin:.5em 0;display:flex;gap:1em;align-items:center;flex-wrap:wrap}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #e4e4e4;padding:2px 6px;text-align:left}
th{position:sticky;top:0;background:#fafafa;cursor:pointer;user-select:none;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.failed td{color:#b00020}
td.err{max-width:40em;overflow-wrap:anywhere}th.asc:after{content:" \\25B2"}th.desc:after{content:" \\25BC"}
</style></head><body>
<h1>%TITLE%</h1>
<p>Output root: <code>%ROOT%</code>. Rebuilt from every summary and failure record on disk (also
<code>aggregate.json</code>, <code>aggregate.csv</code>, <code>aggregate.png</code>).</p>
%OVERALL%
<h2>Failed recordings (%FAILED_COUNT%)</h2>
%FAILURES%
<h2>Settings (made_from)</h2>
%SETTINGS%
<h2>Distributions and worst recordings</h2>
%PICTURE%
<h2>Every recording</h2>
<div id="controls"><label>filter <input id="q" type="search" placeholder="name, activity, error"></label>
<label>status <select id="status"><option value="">all</option><option>ok</option><option>failed</option>
</select></label><span id="count"></span><button id="more" type="button">more</button></div>
<table id="recordings"><thead><tr id="head"></tr></thead><tbody id="rows"></tbody></table>
<noscript><p>The table needs JavaScript; the same rows are in aggregate.csv.</p></noscript>
<script type="application/json" id="data">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""

SCRIPT = r"""
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var cols = data.columns, nLinks = cols.length;
  var state = {sort: "", desc: false, q: "", status: "", shown: data.page};
  var q = document.getElementById("q"), status = document.getElementById("status");
  var body = document.getElementById("rows"), head = document.getElementById("head");
  var count = document.getElementById("count"), more = document.getElementById("more");

  function index(key) { for (var i = 0; i < cols.length; i++) if (cols[i].key === key) return i; return -1; }
  function fmt(v, kind) {
    if (v === null || v === undefined) return kind === "text" ? "" : "n/a";
    if (kind === "pct") return (100 * v).toFixed(1) + "%";
    if (kind === "num") return v.toFixed(1);
    return String(v);
  }
  function readHash() {
    var p = new URLSearchParams(location.hash.slice(1)), s = p.get("sort") || "";
    state.desc = s.charAt(0) === "-"; state.sort = index(s.replace(/^-/, "")) >= 0 ? s.replace(/^-/, "") : "";
    state.q = p.get("q") || p.get("filter") || ""; state.status = p.get("status") || "";
    if (state.q === "failed" || state.q === "ok") { state.status = state.q; state.q = ""; }
    q.value = state.q; status.value = state.status; state.shown = data.page;
  }
  function writeHash() {
    var p = new URLSearchParams();
    if (state.sort) p.set("sort", (state.desc ? "-" : "") + state.sort);
    if (state.status) p.set("status", state.status);
    if (state.q) p.set("q", state.q);
    try { history.replaceState(null, "", "#" + p.toString()); } catch (e) { /* some file:// browsers refuse */ }
  }
  function selected() {
    var needle = state.q.toLowerCase(), text = [0, 1, 8, 9];
    var rows = data.rows.filter(function (r) {
      if (state.status && r[1] !== state.status) return false;
      if (!needle) return true;
      return text.some(function (i) { return r[i] !== null && String(r[i]).toLowerCase().indexOf(needle) >= 0; });
    });
    var i = index(state.sort);
    if (i >= 0) {
      var sign = state.desc ? -1 : 1;
      rows.sort(function (a, b) {
        var x = a[i], y = b[i];
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);  // missing values last
        if (x < y) return -sign; if (x > y) return sign;
        return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
      });
    }
    return rows;
  }
  function cell(tr, text, cls) {
    var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td);
    return td;
  }
  function linkCell(tr, r) {
    var td = cell(tr, ""), name = encodeURIComponent(r[0]);
    data.links.forEach(function (l) {
      if (r[nLinks].indexOf(l.key) < 0) return;
      var a = document.createElement("a");
      a.href = l.path.split("{name}").join(name); a.textContent = l.label; a.className = "file";
      td.appendChild(a); td.appendChild(document.createTextNode(" "));
    });
  }
  function draw() {
    var rows = selected(), frag = document.createDocumentFragment();
    rows.slice(0, state.shown).forEach(function (r) {
      var tr = document.createElement("tr"); tr.setAttribute("data-name", r[0]);
      if (r[1] !== "ok") tr.className = "failed";
      cols.forEach(function (c, i) {
        cell(tr, fmt(r[i], c.kind), c.kind === "text" ? (c.key === "error" ? "err" : "") : "n");
      });
      linkCell(tr, r); frag.appendChild(tr);
    });
    body.replaceChildren(frag);
    var shown = Math.min(state.shown, rows.length);
    count.textContent = shown + " of " + rows.length + " shown (" + data.rows.length + " recordings)";
    more.hidden = shown >= rows.length;
    document.body.setAttribute("data-shown", String(shown));
    document.body.setAttribute("data-matching", String(rows.length));
    Array.prototype.forEach.call(head.children, function (th) {
      th.className = th.getAttribute("data-key") === state.sort ? (state.desc ? "desc" : "asc") : "";
    });
  }
  cols.forEach(function (c) {
    var th = document.createElement("th"); th.textContent = c.label; th.setAttribute("data-key", c.key);
    th.title = "sort by " + c.label;
    th.addEventListener("click", function () {
      state.desc = state.sort === c.key ? !state.desc : c.key === "frames_failed";
      state.sort = c.key; state.shown = data.page; writeHash(); draw();
    });
    head.appendChild(th);
  });
  var files = document.createElement("th"); files.textContent = "files"; head.appendChild(files);
  q.addEventListener("input", function () { state.q = q.value; state.shown = data.page; writeHash(); draw(); });
  status.addEventListener("change", function () {
    state.status = status.value; state.shown = data.page; writeHash(); draw();
  });
  more.addEventListener("click", function () { state.shown += data.page; draw(); });
  window.addEventListener("hashchange", function () {  // a link on the page set a view: show the table
    readHash(); draw(); document.getElementById("controls").scrollIntoView();
  });
  readHash(); draw();
})();
"""
