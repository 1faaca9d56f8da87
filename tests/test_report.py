"""gankit report: reading runs (finished, resumed, still being written, broken), the page, and
the page in a real browser.

The browser is Debian's chromium, driven by its own headless flags: --dump-dom after the page's
script has checked the page and written the result into #selfcheck, and chromium's console log
on stderr (every console message, CSP violations included). Why not Playwright or selenium:
Playwright wants its own browser build (a download) and selenium a matching chromedriver, each a
moving part more to install and keep in step; the one thing the test needs (run the page's
script, read what it found) chromium does alone. `make test` installs chromium where apt-get can
(as root); where no browser can be installed the browser test skips and says why.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from configs import TINY_DCGAN_ARGS, TOY_ARGS
from fakes import make_npz
from gankit import report
from gankit.cli import main
from gankit.errors import GankitError

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]
NO_BROWSER = ("no chromium: the browser test needs Debian's chromium (apt-get install chromium; "
              "`make test` installs it as root)")


def _train(argv: list[str]) -> None:
    assert main(["train", *argv]) == 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The three runs, trained once for the module (each test gets a copy of the ones it uses):
    a ring-of-8 run with evaluations, trained to 800 images then resumed to 1600; a tiny DCGAN on
    32x32 squares; a 1-D toy run."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:  # conftest's isolated cache, for this module's runs
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.delenv("GANKIT_DATA", raising=False)
        common = ["--snapshot-every", "320", "--checkpoint-every", "400", "--eval-every", "400",
                  "--eval-samples", "500"]
        _train([*TOY_ARGS, *common, "--max-images", "800", "--out", str(root / "toy")])
        _train(["--resume", str(root / "toy"), "--max-images", "1600"])
        data = make_npz(root / "data.npz", n=32, size=32, channels=3)
        _train(["--data", f"npz:{data}", *TINY_DCGAN_ARGS, "--batch-size", "8", "--device", "cpu",
                "--max-images", "96", "--snapshot-every", "16", "--out", str(root / "image")])
        _train(["--data", "toy:gauss1d", "--model", "mlp", "--g-width", "16", "--d-width", "16",
                "--batch-size", "32", "--max-images", "640", "--out", str(root / "oned")])
    return root


def _copy(trained: Path, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained / name, tmp_path / name))


@pytest.fixture
def toy_run(trained, tmp_path):
    return _copy(trained, "toy", tmp_path)


@pytest.fixture
def image_run(trained, tmp_path):
    return _copy(trained, "image", tmp_path)


@pytest.fixture
def oned_run(trained, tmp_path):
    return _copy(trained, "oned", tmp_path)


# --- reading runs ------------------------------------------------------------------------------

def test_a_resume_is_found_and_every_event_is_read(toy_run):
    run = report.load_run(toy_run)
    assert run.resumes == [800]
    assert [e["images"] for e in run.of("eval")] == [400, 800, 1200, 1600]
    assert all(e.get("protocol") for e in run.of("eval"))
    assert run.rows[-1]["images"] == 1600 and not run.skipped and not run.partial_last_line
    assert report.mean_speed(run) > 0
    assert [images for images, _ in run.samples] == [0, 320, 640, 800, 960, 1280, 1600]  # + the end of the first part


def test_a_line_being_written_is_left_for_next_time(image_run):
    metrics = image_run / "metrics.jsonl"
    complete = len(metrics.read_text().splitlines())
    with open(metrics, "a") as f:
        f.write('{"iteration": 99, "images": 9')  # a kill mid-write: no newline
    run = report.load_run(image_run)
    assert len(run.rows) == complete and run.partial_last_line and not run.skipped
    out = report.write_report([image_run])
    assert out == image_run / "report.html"
    assert "last line of metrics.jsonl is incomplete" in out.read_text()


def test_warnings_and_rollbacks_are_marked(image_run):
    metrics = image_run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines.insert(4, json.dumps({"event": "warning", "images": 32, "kind": "d_wins", "message": "D wins"}))
    lines.insert(6, json.dumps({"event": "rollback", "images": 40, "diverged_at": "d_loss", "lr_g": 1e-4, "lr_d": 1e-4}))
    metrics.write_text("\n".join(lines) + "\n")
    run = report.load_run(image_run)
    assert report._marks([run]) == {"warning": [32], "rollback": [40]}
    text = report.build([run])
    assert "warning at 32 images: D wins" in text and "rollback to 40 images" in text


def test_one_run_page_is_self_contained_and_small(image_run):
    text = report.write_report([image_run]).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)|url\(\s*["']?(https?:|//)""", text)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert text.count('<figure class="chart"') == 5
    assert text.count("data:image/png;base64,") == 7  # every snapshot grid, 0 to 96 by 16
    assert len(text.encode()) < 5_000_000


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such folder"),
    (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is not a folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "is empty"),
    (lambda p: (p / "other").mkdir() or (p / "other" / "notes.txt").write_text("x") and p / "other",
     "no config.json"),
])
def test_folders_that_are_not_runs_get_one_clear_line(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["report", str(path)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_run_with_no_rows_or_no_samples_gets_a_clear_error(image_run, capsys):
    good = report.write_report([image_run])
    before = good.read_bytes()
    shutil.rmtree(image_run / "samples")
    assert main(["report", str(image_run)]) == 1
    assert "no samples/ folder" in capsys.readouterr().err
    (image_run / "samples").mkdir()
    (image_run / "metrics.jsonl").write_text('{"iteration": 1, "images": 8, "ti')  # the first row, cut short
    assert main(["report", str(image_run)]) == 1
    assert "no metrics yet" in capsys.readouterr().err
    assert good.read_bytes() == before  # the good report is still there, whole
    (image_run / "metrics.jsonl").unlink()
    assert main(["report", str(image_run)]) == 1
    assert "no metrics yet" in capsys.readouterr().err


def test_a_failure_while_writing_leaves_the_old_report(image_run, monkeypatch):
    out = report.write_report([image_run])
    before = out.read_bytes()

    def broken(self, text, **kwargs):  # half the page written, then the disk is full
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(GankitError, match="cannot write"):
        report.write_report([image_run])
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert not list(image_run.glob(".report.html.tmp-*"))


def test_several_runs_need_out(image_run, oned_run, capsys):
    assert main(["report", str(image_run), str(oned_run)]) == 1
    assert "--out" in capsys.readouterr().err


# --- in a real browser -------------------------------------------------------------------------

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _open(browser: str, page: Path, profile: Path, screenshot: Path | None = None) -> dict:
    """Open the page from disk; its self-check (a dict) and chromium's console lines."""
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    done = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'id="selfcheck" data-status="(\w+)">page check: \w+ (\{.*?\})</div>', done.stdout)
    assert found, f"no page check in the DOM of {page}: {done.stdout[-1500:]}"
    check = json.loads(found.group(2))
    check["status"] = found.group(1)
    check["console"] = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        subprocess.run([browser, *flags, "--window-size=1280,2000", f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=180, check=True)
    return check


@pytest.mark.slow
def test_reports_in_a_real_browser(toy_run, image_run, oned_run, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip(NO_BROWSER)
    pages = {"toy": report.write_report([toy_run]), "image": report.write_report([image_run]),
             "oned": report.write_report([oned_run]),
             "several": report.write_report([toy_run, image_run], tmp_path / "both.html")}
    expected = {"toy": (6, 7), "image": (5, 7), "oned": (6, 0), "several": (6, 0)}  # (charts, timeline frames)
    for name, page in pages.items():
        shot = tmp_path / "image.png" if name == "image" else None
        check = _open(browser, page, tmp_path / f"profile-{name}", shot)
        assert check["status"] == "ok", (name, check)
        assert check["errors"] == [] and check["console"] == [], (name, check)
        assert check["undecoded"] == [] and check["empty_charts"] == [], (name, check)
        assert (check["charts"], check["frames"]) == expected[name], (name, check)
        if check["frames"] > 1:
            assert check["timeline_steps"] is True, (name, check)
        if name == "several":
            assert check["images"] == 2  # the final grids side by side
    assert (tmp_path / "image.png").stat().st_size > 10_000


def test_the_run_table_says_when_d_judges_packs():
    from gankit import report

    config = {"k": 1, "batch_size": 100, "g_loss": "non-saturating", "optimizer": "adam", "lr_g": 2e-4,
              "lr_d": 2e-4, "seed": 0}
    assert "packs" not in report._algorithm_text({"config": config})  # older runs have no "pack"
    assert "packs" not in report._algorithm_text({"config": {**config, "pack": 1}})
    assert report._algorithm_text({"config": {**config, "pack": 2}}).endswith(", D on packs of 2 (PacGAN)")
