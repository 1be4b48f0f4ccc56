"""The report: files, figures, a text generated from the stored numbers, a browser and a PDF view.

One tiny real study (mnist-sample, 3 seeds, X in {0, 50, 100} %, 2 epochs) is trained once per
module; its report is written through the CLI. Tests that need other numbers copy its store
and rewrite rows with SQL, then check that the claims in the text follow the numbers.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_store, sql
from typer.testing import CliRunner

import noisebench.report as report_pkg
from noisebench.cli import app
from noisebench.report import explain, load, read, write_report
from noisebench.report.figures import catalogue
from noisebench.runner import run_study
from noisebench.store import Store
from noisebench.study import parse_study

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FIGURES = [
    "final_accuracy",
    "final_loss",
    "accuracy_epochs",
    "loss_epochs",
    "generalisation",
    "examples",
    "label_matrix",
    "best_vs_final",
]
TINY = {
    "name": "tiny",
    "seeds": [0, 1, 2],
    "levels": [0.0, 0.5, 1.0],
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "setups": [
        {"name": "label noise", "noise": "labels.uniform"},
        {"name": "pixel noise", "noise": "pixels.replace"},
    ],
}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    run_study(parse_study(TINY), out, dataset="mnist-sample", warn=lambda msg: None)
    return out


@pytest.fixture(scope="module")
def cli_report(study_dir):
    """`noisebench report DIR` on the tiny study, with every dataset loader refusing to run:
    (directory, CLI result, list of attempted dataset loads)."""
    from noisebench import data, runner

    loads: list[tuple] = []

    def refuse(*args, **kwargs):
        loads.append(args)
        raise AssertionError("the report must not load the dataset")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "load_dataset", refuse)
        mp.setattr(runner, "load_dataset", refuse)
        result = CliRunner().invoke(app, ["report", str(study_dir)])
    return study_dir, result, loads


def set_acc(directory: Path, setup: str, base: float, where: str = "level > 0") -> None:
    """Every epoch of `setup`'s runs gets test accuracy base + 1 point × seed."""
    sql(
        directory,
        "UPDATE epochs SET test_acc = ? + 0.01 * (SELECT seed FROM runs r WHERE r.run_id ="
        f" epochs.run_id) WHERE run_id IN (SELECT run_id FROM runs WHERE setup = ? AND {where})",
        base,
        setup,
    )


def shown(directory: Path) -> list[str]:
    """Every figure of the report in order: the main FIGURES, then the sections' figures."""
    return re.findall(r"\]\(figures/([^)/]+)\.png\)", (directory / "report.md").read_text())


def sentences(directory: Path) -> list[str]:
    with Store.open_existing(directory) as store:
        return explain(read(store))


def one(texts: list[str], fragment: str) -> str:
    """The one sentence containing `fragment` (case-insensitive)."""
    hits = [s for s in texts if fragment.lower() in s.lower()]
    assert len(hits) == 1, f"{fragment!r} in {len(hits)} sentences: {texts}"
    return hits[0]


# --- files ----------------------------------------------------------------------------------
def test_cli_writes_every_file_and_prints_the_paths(cli_report):
    directory, result, _ = cli_report
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.pdf", "report.md"):
        assert (directory / name).stat().st_size > 1000
        assert str(directory / name) in result.output
    for name in FIGURES:
        assert (directory / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (directory / "figures" / f"{name}.svg").read_bytes()[:2000]
    assert not list(directory.glob(".report-*")), "the staging folder was left behind"


def test_html_is_self_contained_and_holds_every_figure(cli_report):
    directory = cli_report[0]
    page = (directory / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    names = shown(directory)
    assert names[: len(FIGURES)] == FIGURES
    assert len(images) == len(names) == len(re.findall(r"<img\b", page))
    for name, blob in zip(names, images, strict=True):
        assert base64.b64decode(blob) == (directory / "figures" / f"{name}.png").read_bytes()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", page)
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page  # any fetch would be blocked, not silently made
    markdown = (directory / "report.md").read_text()
    for name in FIGURES:
        assert f"(figures/{name}.png)" in markdown


def test_figure_catalogue_matches_the_issue(cli_report):
    directory = cli_report[0]
    with Store.open_existing(directory) as store:
        names = [entry[0] for entry in catalogue(load(store))]
    assert names == FIGURES


def test_missing_store_is_one_line_error_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no results found" in result.output and result.output.count("\n") == 1


def test_report_never_reloads_the_dataset(cli_report):
    directory, result, loads = cli_report
    assert result.exit_code == 0 and loads == []


def test_a_failed_write_leaves_the_previous_report_untouched(cli_report, tmp_path, monkeypatch):
    from noisebench.report.figures import FigureFile

    def one_figure(data, folder):  # fast stand-in: the real figures are tested above
        folder.mkdir(parents=True)
        png, svg = folder / "final_accuracy.png", folder / "final_accuracy.svg"
        shutil.copy(cli_report[0] / "figures" / png.name, png)
        shutil.copy(cli_report[0] / "figures" / svg.name, svg)
        return [FigureFile("final_accuracy", "title", "caption", png, svg)]

    monkeypatch.setattr(report_pkg, "make_figures", one_figure)
    directory = copy_store(cli_report[0], tmp_path / "copy")
    (directory / "report.html").write_text("old html")
    (directory / "figures").mkdir()
    (directory / "figures" / "old.png").write_bytes(b"old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_pkg, "write_pdf", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(directory)
    assert (directory / "report.html").read_text() == "old html"
    assert [p.name for p in (directory / "figures").iterdir()] == ["old.png"]
    assert not (directory / "report.md").exists() and not (directory / "report.pdf").exists()
    assert not list(directory.glob(".report-*"))


# --- the explanation --------------------------------------------------------------------------
def test_summary_has_5_to_20_short_sentences_shown_in_every_format(cli_report):
    directory = cli_report[0]
    texts = sentences(directory)
    assert 5 <= len(texts) <= 20
    for text in texts:
        assert text.endswith(".") and len(text.split()) <= 45, text
    page = html.unescape((directory / "report.html").read_text())
    assert all(text in page for text in texts)
    assert all(text in (directory / "report.md").read_text() for text in texts)


def test_which_setup_hurts_more_follows_the_numbers(study_dir, tmp_path):
    label_worse = copy_store(study_dir, tmp_path / "a")
    set_acc(label_worse, "label noise", 0.30)
    set_acc(label_worse, "pixel noise", 0.70)
    pixel_worse = copy_store(study_dir, tmp_path / "b")
    set_acc(pixel_worse, "label noise", 0.70)
    set_acc(pixel_worse, "pixel noise", 0.30)

    a = one(sentences(label_worse), "points more accuracy")
    b = one(sentences(pixel_worse), "points more accuracy")
    assert a.startswith("Label noise costs 40.0 ± 0.0 points more accuracy than pixel noise")
    assert b.startswith("Pixel noise costs 40.0 ± 0.0 points more accuracy than label noise")
    assert "71.0 % under label noise and 31.0 % under pixel noise" in one(
        sentences(pixel_worse), "last epoch's test accuracy"
    )


def test_order_that_flips_with_x_is_reported_as_a_flip(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "flip")
    set_acc(directory, "label noise", 0.30, "level = 0.5")
    set_acc(directory, "pixel noise", 0.70, "level = 0.5")
    set_acc(directory, "label noise", 0.40, "level = 1.0")
    set_acc(directory, "pixel noise", 0.10, "level = 1.0")
    text = one(sentences(directory), "shared noisy levels")
    assert text == (
        "Over the shared noisy levels after the last epoch, label noise costs clearly more at "
        "X = 50 % and pixel noise costs clearly more at X = 100 %."
    )


def test_unpaired_spread_is_worded_as_the_data_cannot_tell(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "spread")
    for setup, seed_term in (("label noise", "seed"), ("pixel noise", "(2 - seed)")):
        sql(
            directory,
            f"UPDATE epochs SET test_acc = 0.5 + 0.1 * (SELECT {seed_term} FROM runs r WHERE"
            " r.run_id = epochs.run_id) WHERE run_id IN (SELECT run_id FROM runs WHERE"
            " setup = ? AND level > 0)",
            setup,
        )
    text = one(sentences(directory), "costs more accuracy there")
    assert text.startswith("The data cannot tell which setup costs more accuracy there")


def test_noisy_level_above_the_clean_runs_needs_a_clear_paired_difference(study_dir, tmp_path):
    clear = copy_store(study_dir, tmp_path / "clear")
    set_acc(clear, "clean", 0.50, "level = 0")
    set_acc(clear, "label noise", 0.80, "level = 0.5")
    set_acc(clear, "pixel noise", 0.20)
    text = one(sentences(clear), "clean runs")
    assert text == "Label noise at X = 50 % ends above the clean runs: 81.0 % against 51.0 %."

    unclear = copy_store(study_dir, tmp_path / "unclear")
    set_acc(unclear, "clean", 0.50, "level = 0")
    set_acc(unclear, "pixel noise", 0.20)
    sql(
        unclear,
        "UPDATE epochs SET test_acc = 0.52 + 0.1 * (SELECT 2 - seed FROM runs r WHERE r.run_id ="
        " epochs.run_id) WHERE run_id IN (SELECT run_id FROM runs WHERE setup = 'label noise'"
        " AND level = 0.5)",
    )
    assert not [t for t in sentences(unclear) if "clean runs" in t]


def test_peak_then_fall_over_epochs_is_reported(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "memorise")
    sql(
        directory,
        "UPDATE epochs SET test_acc = CASE epoch WHEN 1 THEN 0.60 ELSE 0.30 END"
        " + 0.01 * (SELECT seed FROM runs r WHERE r.run_id = epochs.run_id) WHERE run_id IN"
        " (SELECT run_id FROM runs WHERE setup = 'label noise' AND level = 0.5)",
    )
    after = one(sentences(directory), "Under label noise at X = 50 %, mean test accuracy")
    assert after == (
        "Under label noise at X = 50 %, mean test accuracy peaks at 61.0 % at epoch 1, then "
        "falls by 30.0 points to the last epoch."
    )


def test_divergence_and_partial_studies_are_reported(study_dir, tmp_path):
    directory = copy_store(study_dir, tmp_path / "partial")
    sql(directory, "UPDATE runs SET status = 'pending' WHERE setup = 'pixel noise' AND seed > 0")
    sql(
        directory,
        "DELETE FROM epochs WHERE run_id IN (SELECT run_id FROM runs WHERE status = 'pending')",
    )
    sql(
        directory,
        "UPDATE runs SET status = 'diverged' WHERE setup = 'label noise'"
        " AND level = 0.5 AND seed = 1",
    )
    sql(
        directory,
        "UPDATE epochs SET test_loss = NULL, train_loss = NULL WHERE epoch = 2 AND"
        " run_id IN (SELECT run_id FROM runs WHERE status = 'diverged')",
    )
    assert one(sentences(directory), "diverged").startswith("1 of 11 finished runs diverged")
    paths = write_report(directory)
    page = paths["html"].read_text()
    assert "PARTIAL STUDY: 11 of 15 planned runs have finished" in page
    assert page.count("<img ") == len(shown(directory)) >= len(FIGURES)

    empty = copy_store(study_dir, tmp_path / "empty")
    sql(empty, "DELETE FROM epochs")
    sql(empty, "UPDATE runs SET status = 'pending'")
    paths = write_report(empty)
    assert "No run has finished yet" in paths["md"].read_text()


def test_a_fallback_is_stated_prominently(study_dir, cli_report, tmp_path):
    directory = copy_store(study_dir, tmp_path / "fallback")
    sql(directory, "UPDATE meta SET value = 'true' WHERE key = 'dataset_fallback'")
    sql(directory, "UPDATE meta SET value = '\"mnist\"' WHERE key = 'dataset_requested'")
    paths = write_report(directory)
    page = paths["html"].read_text()
    notice = page.index('<div class="notice"')
    assert "DATA FALLBACK: &#39;mnist&#39; was requested" in page[notice : notice + 300]
    assert notice < page.index("<h2>Summary</h2>")
    md = paths["md"].read_text().splitlines()
    assert md[4].startswith("> **DATA FALLBACK")
    if shutil.which("pdftotext"):
        first = subprocess.run(
            ["pdftotext", "-f", "1", "-l", "1", str(paths["pdf"]), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "DATA FALLBACK" in first.split("Summary")[0]
    clean_page = (cli_report[0] / "report.html").read_text()
    assert "DATA FALLBACK" not in clean_page and 'class="notice"' not in clean_page


def test_sentence_cap_holds_for_many_setups(tmp_path):
    """Four setups, three seeds, numbers written straight into a Store: still 5-20 sentences."""
    setups = [
        {"name": "labels", "noise": "labels.uniform"},
        {"name": "labels excl", "noise": "labels.uniform", "params": {"exclude_true": True}},
        {"name": "pixels", "noise": "pixels.replace"},
        {"name": "pixels uniform", "noise": "pixels.replace", "params": {"values": "uniform"}},
    ]
    study = parse_study({**TINY, "levels": [0.0, 0.3, 0.6, 0.9], "setups": setups})
    from noisebench.study import plan

    runs = plan(study)
    with Store(tmp_path) as store:
        store.set_meta(
            study=study.model_dump(mode="json"),
            study_name="many",
            dataset="x",
            dataset_fallback=False,
            train_size=100,
            test_size=10,
            class_names=[str(i) for i in range(10)],
            changed_share={"pixels": 0.3},
        )
        store.add_pending((r.run_id, r.setup, r.noise, r.level, r.seed, r.config) for r in runs)
        rng = np.random.default_rng(0)
        for r in runs:
            epochs = [
                {
                    "epoch": e,
                    "train_loss": 1.0,
                    "train_acc": 0.5,
                    "test_loss": 1.0 + r.level,
                    "test_acc": max(0.05, 0.9 - 0.8 * r.level * rng.uniform(0.5, 1.5)) + 0.01 * e,
                    "test_conf": 0.5,
                    "wall_s": 0.1,
                }
                for e in (1, 2)
            ]
            store.finish_run(r.run_id, "done", epochs, {}, 0.0, len(runs))
        texts = explain(read(store))
    assert 5 <= len(texts) <= 20


# --- as a person sees it -----------------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
PROBE = """<script>
window.__nb = [];
const nbErr = console.error;
console.error = (...a) => { __nb.push('console.error: ' + a.join(' ')); nbErr.apply(console, a); };
addEventListener('error', e => __nb.push('error: ' + (e.message ||
    (e.target && (e.target.src || e.target.href)) || 'unknown')), true);
document.addEventListener('securitypolicyviolation', e => __nb.push('blocked: ' + e.blockedURI));
addEventListener('load', () => {
  const imgs = [...document.images];
  const out = document.createElement('pre');
  out.id = 'nb-probe';
  out.textContent = JSON.stringify({
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    errors: __nb});
  document.body.appendChild(out);
});
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run(
        ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def probe(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """Load an instrumented copy of `page` in headless Chromium; return what it saw.

    No extra packages: the copy gets a script (allowed by relaxing only script-src in the CSP;
    img-src stays 'data:' so any external image would be blocked *and* reported) that records
    console errors, failed resources and blocked fetches, and on load writes a JSON summary
    into the DOM. `--dump-dom` prints that DOM once the page is loaded (`--virtual-time-budget`
    lets it finish), and `--enable-logging=stderr` additionally exposes every console message
    Chromium saw as a `:CONSOLE` log line, including ones from before the probe ran.
    """
    text = page.read_text().replace(
        "default-src 'none';", "default-src 'none'; script-src 'unsafe-inline';"
    )
    copy = tmp_path / f"probe-{page.name}"
    copy.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    done = chromium(
        tmp_path,
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        copy.as_uri(),
    )
    found = re.search(r'<pre id="nb-probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the probe did not report; chromium said: {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.browser
def test_report_renders_in_headless_chromium(cli_report, tmp_path):
    if not shutil.which("chromium"):
        pytest.skip("chromium is not on PATH (CI installs it in .ci/run)")
    directory = cli_report[0]
    seen, console = probe(directory / "report.html", tmp_path)
    assert seen == {"images": len(shown(directory)), "broken": [], "errors": []}
    assert console == []

    # the probe itself can fail: a broken image, an external fetch, a console error
    bad = tmp_path / "bad.html"
    bad.write_text(
        (directory / "report.html")
        .read_text()
        .replace(
            "</body>",
            '<img alt="broken" src="data:image/png;base64,AAAA">'
            '<img alt="remote" src="http://example.invalid/x.png"></body>',
        )
    )
    seen_bad, _ = probe(bad, tmp_path)
    assert seen_bad["broken"] == ["broken", "remote"]
    assert any("blocked: http://example.invalid" in e for e in seen_bad["errors"])

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        (directory / "report.html").as_uri(),
    )
    assert shot.stat().st_size > 10_000


def test_pdf_pages_are_complete_and_none_is_blank(cli_report, tmp_path):
    if not (shutil.which("pdftoppm") and shutil.which("pdfinfo") and shutil.which("pdftotext")):
        pytest.skip("poppler-utils (pdfinfo, pdftoppm, pdftotext) are not installed")
    import matplotlib.image as mpimg

    pdf = cli_report[0] / "report.pdf"
    figures = shown(cli_report[0])
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.M).group(1))
    assert 1 + len(figures) // 2 <= pages <= 3 + len(figures)
    titles = []
    for number in range(1, pages + 1):
        text = subprocess.run(
            ["pdftotext", "-layout", "-f", str(number), "-l", str(number), str(pdf), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"page {number} of {pages}" in text  # the footer agrees with pdfinfo
        titles += [(int(m), number) for m in re.findall(r"Figure (\d+):", text)]
    assert [t for t, _ in titles] == list(range(1, len(figures) + 1))  # each once, in order
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "p")], check=True)
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == pages
    for image in images:
        pixels = mpimg.imread(image)[..., :3]
        body = pixels[: int(len(pixels) * 0.9)]  # above the footer
        assert (body.min(axis=-1) < 0.8).mean() > 0.01, f"{image.name} is blank"


def test_background_share_is_measured_on_the_whole_training_set(study_dir):
    """Share of the training set's pixels that are exactly 0: about 81 % of MNIST digits."""
    from noisebench.data import load_dataset

    with Store.open_existing(study_dir, readonly=True) as store:
        stored = store.meta()["background_share"]
    train = load_dataset("mnist-sample").train_x
    assert stored == pytest.approx(float((train == 0).float().mean()), abs=1e-9)
    assert 0.75 < stored < 0.85
