"""The HTML of `gankit report`: the page around the charts, its style, and its one inline script.

The script (plain JavaScript, no library; a few lines of it first in <head> collect errors)
does two things. It steps the snapshot timeline:
buttons, a slider and the arrow keys show one grid at a time. And it checks the page once it
has loaded, writing the result into the #selfcheck element: script errors (window.onerror),
images that did not decode (naturalWidth 0), charts with no data line, and whether the
timeline steps when its buttons are clicked. The browser test reads that element from the DOM
chromium dumps; a reader sees it as one small line at the foot of the page.

The Content-Security-Policy allows only what is inline (styles, the script, data: images):
the page can fetch nothing, so it reads the same from disk, by mail, or offline.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'")

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 0 18px 30px; color: #222; }
h1 { font-size: 20px; margin: 18px 0 4px; } h2 { font-size: 16px; margin: 22px 0 8px; border-bottom: 1px solid #ddd; }
.sub { color: #666; font-size: 12px; }
table.config { border-collapse: collapse; font-size: 13px; }
table.config th, table.config td { text-align: left; padding: 3px 10px 3px 0; vertical-align: top; }
table.config th { color: #555; font-weight: 600; white-space: nowrap; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 10px; }
figure { margin: 0; } figure.chart svg { max-width: 100%; height: auto; display: block; }
figcaption, .note { color: #555; font-size: 12px; }
#timeline { display: flex; gap: 18px; align-items: flex-start; flex-wrap: wrap; }
#timeline .frames img { image-rendering: pixelated; width: 448px; max-width: 90vw; border: 1px solid #ccc; }
.controls { display: flex; flex-direction: column; gap: 8px; min-width: 240px; }
.controls button { font-size: 14px; padding: 3px 10px; } #tl-slider { width: 240px; }
#tl-label { font-weight: 600; }
.finals { display: flex; flex-wrap: wrap; gap: 14px; } .finals img { image-rendering: pixelated; width: 300px; border: 1px solid #ccc; }
.warnings { font-size: 12px; color: #7a4a00; }
#selfcheck { color: #888; font-size: 11px; margin-top: 24px; }
#selfcheck[data-status=fail] { color: #b00; }
"""

# First thing in <head>: collect script errors (and console.error calls) from the first line on.
ERRORS = r"""
window.gankitErrors = [];
window.onerror = function (message, source, line) { window.gankitErrors.push(String(message) + " (line " + line + ")"); };
(function (original) {
  console.error = function () { window.gankitErrors.push(Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
})(console.error);
"""

# At the end of <body>: the timeline and the page's own check.
SCRIPT = r"""
(function () {
  var errors = window.gankitErrors || ["the error collector in <head> did not run"];
  var frames = Array.prototype.slice.call(document.querySelectorAll("#timeline .frames img"));
  var slider = document.getElementById("tl-slider"), label = document.getElementById("tl-label");
  var index = frames.length - 1;
  function show(i) {
    if (!frames.length) return;
    index = Math.max(0, Math.min(frames.length - 1, i));
    frames.forEach(function (f, j) { f.hidden = j !== index; });
    slider.value = index;
    label.textContent = (index + 1) + " of " + frames.length + ": " + frames[index].dataset.caption;
  }
  if (frames.length) {
    document.getElementById("tl-first").onclick = function () { show(0); };
    document.getElementById("tl-prev").onclick = function () { show(index - 1); };
    document.getElementById("tl-next").onclick = function () { show(index + 1); };
    document.getElementById("tl-last").onclick = function () { show(frames.length - 1); };
    slider.oninput = function () { show(parseInt(slider.value, 10)); };
    document.addEventListener("keydown", function (e) {
      if (e.key === "ArrowLeft") show(index - 1); else if (e.key === "ArrowRight") show(index + 1);
    });
    show(index);
  }
  function hasData(chart) {
    var lines = chart.querySelectorAll("svg g[id*='-data'] path, svg g[id*='-data'] use");
    return Array.prototype.some.call(lines, function (p) { return p.tagName === "use" || /[0-9]/.test(p.getAttribute("d") || ""); });
  }
  function check() {
    var images = Array.prototype.slice.call(document.images);
    var undecoded = images.filter(function (im) { return !im.complete || im.naturalWidth === 0; })
                          .map(function (im) { return im.alt; });
    var charts = Array.prototype.slice.call(document.querySelectorAll("figure.chart"));
    var empty = charts.filter(function (c) { return !hasData(c); }).map(function (c) { return c.id; });
    var steps = null;
    if (frames.length > 1) {
      var start = index;
      document.getElementById("tl-first").click();
      document.getElementById("tl-next").click();
      var second = index === 1 && !frames[1].hidden && frames[0].hidden;
      document.getElementById("tl-last").click();
      document.getElementById("tl-prev").click();
      steps = second && index === frames.length - 2 && label.textContent.indexOf(String(frames.length - 1) + " of ") === 0;
      show(start);
    }
    var result = { errors: errors, images: images.length, undecoded: undecoded, charts: charts.length,
                   empty_charts: empty, frames: frames.length, timeline_steps: steps };
    var ok = !errors.length && !undecoded.length && !empty.length && steps !== false;
    var out = document.getElementById("selfcheck");
    out.dataset.status = ok ? "ok" : "fail";
    out.textContent = "page check: " + (ok ? "ok" : "FAILED") + " " + JSON.stringify(result);
  }
  window.addEventListener("load", check);
})();
"""


def e(text: object) -> str:
    return html.escape(str(text), quote=True)


def data_uri(png: Path | bytes) -> str:
    raw = png if isinstance(png, bytes) else png.read_bytes()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def page(title: str, subtitle: str, sections: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{e(title)}</title>\n<script>{ERRORS}</script>\n<style>{STYLE}</style></head>\n<body>\n"
        f"<h1>{e(title)}</h1><div class=\"sub\">{subtitle}</div>\n"
        + "\n".join(sections)
        + "\n<div id=\"selfcheck\" data-status=\"pending\">page check: pending (needs JavaScript)</div>\n"
        f"<script>{SCRIPT}</script>\n</body></html>\n"
    )


def table(header: list[str] | None, rows: list[tuple[str, list[str]]]) -> str:
    head = ""
    if header:
        head = "<tr><th></th>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    body = "".join(f"<tr><th>{e(name)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>"
                   for name, values in rows)
    return f"<table class=\"config\">{head}{body}</table>"


def chart(key: str, svg: str, caption: str = "") -> str:
    cap = f"<figcaption>{e(caption)}</figcaption>" if caption else ""
    return f"<figure class=\"chart\" id=\"chart-{e(key)}\">{svg}{cap}</figure>"


def timeline(frames: list[tuple[str, str]], note: str = "") -> str:
    """frames: (caption, data URI). The last is shown first; the script steps through them."""
    if not frames:
        return f"<p class=\"note\">{e(note or 'No snapshot grids yet.')}</p>"
    imgs = "".join(f"<img src=\"{uri}\" alt=\"snapshot {e(cap)}\" data-caption=\"{e(cap)}\"{'' if i == len(frames) - 1 else ' hidden'}>"
                   for i, (cap, uri) in enumerate(frames))
    return (
        "<div id=\"timeline\"><div class=\"frames\">" + imgs + "</div>"
        "<div class=\"controls\"><div id=\"tl-label\"></div><div>"
        "<button id=\"tl-first\" title=\"first\">|&lt;</button> <button id=\"tl-prev\" title=\"previous (left arrow)\">&lt;</button> "
        "<button id=\"tl-next\" title=\"next (right arrow)\">&gt;</button> <button id=\"tl-last\" title=\"last\">&gt;|</button></div>"
        f"<input type=\"range\" id=\"tl-slider\" min=\"0\" max=\"{len(frames) - 1}\" value=\"{len(frames) - 1}\" aria-label=\"snapshot\">"
        f"<div class=\"note\">{e(note)}</div></div></div>"
    )


def finals(items: list[tuple[str, str]]) -> str:
    """Final grids side by side: (caption, data URI)."""
    return "<div class=\"finals\">" + "".join(
        f"<figure><img src=\"{uri}\" alt=\"final grid {e(cap)}\"><figcaption>{e(cap)}</figcaption></figure>"
        for cap, uri in items) + "</div>"
