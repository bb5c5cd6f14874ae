"""The report: the Köln example strategy evaluated on a small synthetic city, rendered to HTML
(German and English) and PDF; the PDF's pages rendered to PNG with pdftoppm when it is there."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from store_fixtures import insert_filled, station

from quartier.evaluation import manual, report
from quartier.evaluation.evaluate import Evaluation, KpiResult
from quartier.evaluation.strategy import load_strategy
from quartier.geo.io import import_districts
from quartier.resources import resource

EXAMPLE = Path(str(resource("strategy-koeln.yaml")))
AS_OF = datetime(2026, 3, 10, 12, tzinfo=UTC)
START = datetime(2025, 12, 31, 23, tzinfo=UTC)  # local midnight, 1 January 2026

SITES = {  # Stadtbezirk: (lon, lat), level factor
    "1": ((6.9583, 50.9413), 1.3),
    "4": ((6.9100, 50.9500), 1.0),
    "7": ((7.0600, 50.8800), 0.8),
    "9": ((7.0064, 50.9626), 1.1),
}
MANUAL_CSV = """\
indicator,date,value,source
ozg_services_online_share,2024-12-31,45,OZG-Dashboard
ozg_services_online_share,2025-12-31,52,OZG-Dashboard
open_data_datasets,2024-12-31,810,Open-Data-Portal Köln
open_data_datasets,2025-12-31,990,Open-Data-Portal Köln
digital_skills_participants,2024-12-31,5100,VHS Köln
digital_skills_participants,2025-12-31,6300,VHS Köln
schools_gigabit_share,2024-08-01,68,Amt für Schulentwicklung
schools_gigabit_share,2025-08-01,79,Amt für Schulentwicklung
business_parks_gigabit_share,2024-12-31,52,KölnBusiness
business_parks_gigabit_share,2025-12-31,61,KölnBusiness
"""


# the 15-minute buckets the rows touch, marked as the ingest writer marks them (the rollups read
# them from raw rows until they are refreshed)
_MARK = (
    "insert into observation_dirty (datastream_id, bucket)"
    " select distinct datastream_id, date_bin('15 minutes', phenomenon_time,"
    " timestamptz '2000-01-03') from observation on conflict do nothing"
)


def _copy(conn: psycopg.Connection, rows: list[tuple[int, datetime, float]]) -> None:
    with (
        conn.cursor() as cur,
        cur.copy("copy observation (datastream_id, phenomenon_time, result) from stdin") as copy,
    ):
        for row in rows:
            copy.write_row(row)
    conn.execute(_MARK)


def fill_city(conn: psycopg.Connection, tmp: Path) -> None:
    """Districts, air and noise stations with hourly data since 1 January, temperature sensors
    with gaps, manual values, and (if the geo tables exist) a coverage run."""
    rng = random.Random(4)
    import_districts(conn)
    hours = int((AS_OF - START).total_seconds() // 3600)
    rows: list[tuple[int, datetime, float]] = []
    for code, (where, level) in SITES.items():
        for quantity, base in (("pm10", 19.0), ("pm25", 10.0), ("no2", 27.0)):
            ds = station(conn, f"{quantity}-{code}", where, quantity)
            for h in range(hours):
                t = START + timedelta(hours=h)
                winter = 1.0 + 0.35 * math.cos(2 * math.pi * h / (24 * 60))  # slowly improving
                daily = 1.0 + 0.3 * math.sin(2 * math.pi * (h % 24) / 24)
                episode = 2.6 if quantity == "pm10" and code == "1" and (h // 24) % 9 == 0 else 1
                value = base * level * winter * daily * episode * rng.uniform(0.85, 1.15)
                rows.append((ds, t, round(value, 1)))
        noise = station(conn, f"noise-{code}", where, "noise_laeq")
        for h in range(hours):
            local = (h + 1) % 24
            night = local >= 22 or local < 6
            rows.append((noise, START + timedelta(hours=h),
                         (40 if night else 48) + 4 * level + rng.uniform(-2, 2)))  # fmt: skip
    for i, (code, (where, _)) in enumerate(SITES.items()):
        ds = station(conn, f"temp-{code}", where, "temperature")
        gaps = {j for j in range(144) if (j * (i + 1)) % 11 == 0} if i else set()
        for j in range(24 * 6 * 3):
            t = AS_OF - timedelta(days=3) + timedelta(minutes=10 * j)
            if j % 144 not in gaps and not (i == 3 and t > AS_OF - timedelta(hours=2)):
                rows.append((ds, t, 8.0))
    _copy(conn, rows)
    path = tmp / "manual.csv"
    path.write_text(MANUAL_CSV)
    manual.import_csv(conn, path)
    if conn.execute("select to_regclass('coverage_cell')").fetchone() == (None,):
        return
    run = conn.execute(
        "insert into coverage_run (profile, parameters, inputs, classes, operators, technologies)"
        " values ('de', '{}', '{}', '{}', '{Telekom,Vodafone,Telefónica}', '{2G,3G,4G,5G}')"
        " returning id"
    ).fetchone()[0]
    cells = []
    for d in range(1, 10):
        for k in range(60):
            speed = rng.choice([16, 50, 100, 250, 500, 1000, 1000, 1000])
            tech = "ftth" if speed == 1000 and rng.random() < 0.4 + d / 30 else "hfc"
            klass = ("white" if speed < 30 else "grey" if speed < 100 else "dark_grey"
                     if speed < 500 else "very_high" if speed < 1000 else "gigabit")  # fmt: skip
            mask = 0
            for i in range(3):  # operator i: 4G (bit 4i + 2) mostly, 5G (bit 4i + 3) often
                mask |= (rng.random() < 0.9) << (4 * i + 2) | (rng.random() < 0.6) << (4 * i + 3)
            mask = 0 if rng.random() < 0.03 else mask
            cells.append(
                {"run_id": run, "e": 4_000_000 + k * 100, "n": 3_000_000 + d * 1000,
                 "district_code": str(d), "households": rng.randint(0, 40),
                 "best_technology": tech, "max_down_mbps": speed, "class_key": klass,
                 "n_signal": 5, "mobile_mask": mask, "dead_zone": mask == 0}
            )  # fmt: skip
    insert_filled(conn, "coverage_cell", cells)


@pytest.mark.services
def test_report_for_the_example_strategy(db_url: str, tmp_path: Path) -> None:
    strategy = load_strategy(EXAMPLE)
    with psycopg.connect(db_url, autocommit=True) as conn:
        fill_city(conn, tmp_path)
        evaluation, files = report.evaluate_to_report(
            conn, EXAMPLE, tmp_path / "report.html", as_of=AS_OF, history_months=2
        )
        html_en = report.build_report(conn, strategy, evaluation, lang="en")
    by = {(r.kpi_id, r.scope_code): r for r in evaluation.results}
    assert by[("pm10-days", "05315000")].current is not None
    assert by[("ozg-online", "05315000")].current == 52.0
    assert len(by[("no2-annual", "05315000")].history) == 3  # two months back and now
    assert evaluation.summary["kpis"] == len(list(strategy.kpis()))
    assert files == [tmp_path / "report.html"]

    html = files[0].read_text()
    assert '<html lang="de">' in html and "Fortschrittsbericht" in html
    assert "Digitalstrategie Köln 2030" in html and "Datenqualität" in html
    for foa in strategy.fields_of_action:
        assert foa.name in html
    assert "Amt für Informationsverarbeitung" in html  # measures and owners
    assert "Nach Stadtbezirken" in html and html.count("data:image/svg+xml;base64,") >= 20
    assert "Sensornetz" in html and "Verfügbarkeit des Sensornetzes" in html
    assert "Progress report" in html_en and "Data quality" in html_en
    # the German report has no English "no data" notes left (they come from the computations)
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(style|svg)\b.*?</\1>", "", html, flags=re.S))
    assert "keine Daten:" in text
    english = re.findall(r"no data:[^<\n]*|no value[^<\n]*|[^<\n]*\breadings\b[^<\n]*", text)
    assert english == []
    assert "no data:" in html_en

    pdf = tmp_path / "report.pdf"
    try:
        assert report.write_report(html, tmp_path / "report.html", pdf=True)[1] == pdf
    except report.PdfUnavailableError as exc:
        pytest.skip(f"HTML checked; no PDF: {exc}")
    assert pdf.read_bytes().startswith(b"%PDF")
    if shutil.which("pdftoppm") is None:
        pytest.skip(
            "pdftoppm not found (Debian package poppler-utils: apt-get install poppler-utils);"
            " the PDF was written and checked, its pages not rendered"
        )
    subprocess.run(
        ["pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "3", str(pdf), str(tmp_path / "page")],
        check=True,
    )
    assert len(list(tmp_path.glob("page-*.png"))) == 3


def test_render_html_without_store_and_number_formats() -> None:
    strategy = load_strategy(EXAMPLE)
    r = KpiResult(
        kpi_id="ozg-online", name="OZG", field_id="e-government", goal_id="egov-online",
        indicator_id="ozg_services_online_share", unit="%", scope_type="city",
        scope_code="05315000", scope_name="Köln", baseline=38, baseline_date=date(2023, 12, 31),
        target=100, deadline=date(2027, 12, 31), direction="increase", status="no_data",
        reason="no value on or before the evaluation date", note="no data: nothing recorded",
    )  # fmt: skip
    ev = Evaluation(
        strategy_id=strategy.id, strategy_title=strategy.title, strategy_hash="x", as_of=AS_OF,
        summary={"no_data": 1, "kpis": 1}, results=[r],
    )  # fmt: skip
    html = report.render_html(strategy, ev, lang="de")
    assert "keine Daten" in html and "kein Wert bis zum Stichtag" in html
    assert "10.03.2026" in html
    assert report.fmt_num(1234567.0, "de") == "1\u202f234\u202f567"
    assert report.fmt_num(12.345, "de") == "12,3" and report.fmt_num(12.345, "en") == "12.3"
    assert report.fmt_value(61.5, "%", "de") == "61,5%"
    with pytest.raises(ValueError, match="unknown language"):
        report.render_html(strategy, ev, lang="fr")


def test_pdf_written_to_a_pdf_path(tmp_path: Path) -> None:
    try:
        report.write_report("<html><body><h1>Köln</h1></body></html>", tmp_path / "r.pdf")
    except report.PdfUnavailableError as exc:
        pytest.skip(str(exc))
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.services
def test_cli_evaluate_and_import(settings, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from quartier import cli

    monkeypatch.setenv("QUARTIER_DATABASE__URL", settings.require_database_url())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.csv").write_text(MANUAL_CSV)
    runner = CliRunner()
    r = runner.invoke(cli.app, ["indicators", "import", "v.csv"])
    assert r.exit_code == 0, r.output
    assert "recorded 10 indicator value(s)" in r.output
    r = runner.invoke(cli.app, ["indicators", "import", "missing.csv"])
    assert r.exit_code == 1 and "cannot read missing.csv" in r.output
    r = runner.invoke(
        cli.app, ["evaluate", "--strategy", str(EXAMPLE), "--out", "r.html", "--lang", "en",
                  "--as-of", "2026-03-10T12:00:00"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "evaluation run 1:" in r.output
    assert "Progress report" in (tmp_path / "r.html").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("target: 100", "target: hundert", 1))
    r = runner.invoke(cli.app, ["evaluate", "--strategy", str(bad)])
    assert r.exit_code == 1
    line = EXAMPLE.read_text().splitlines().index("            target: 100") + 1
    assert f"bad.yaml:{line}:" in r.output and "target" in r.output


def test_missing_weasyprint_is_reported_not_crashed(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "weasyprint", None)  # import fails as without the package
    with pytest.raises(report.PdfUnavailableError, match=r"libpango-1\.0-0"):
        report.write_report("<html></html>", tmp_path / "r.html", pdf=True)
    assert (tmp_path / "r.html").exists()  # the HTML is written before the PDF is attempted


@pytest.mark.parametrize(
    ("note", "german"),
    [
        (
            "no data: no value recorded (POST /indicators/{id}/values or CSV import)",
            "keine Daten: kein Wert erfasst (POST /indicators/{id}/values oder CSV-Import)",
        ),
        (
            "no data: no pm25 readings before 2026-11-28",
            "keine Daten: keine Messwerte (pm25) vor dem 2026-11-28",
        ),
        ("no data: coverage run 3 has no cells", "keine Daten: Analyse 3 hat keine Zellen"),
        ("no value on or before the evaluation date", "kein Wert bis zum Stichtag"),
        ("something new", "something new"),  # unknown: kept, not lost
    ],
)
def test_notes_in_german(note: str, german: str) -> None:
    assert report.note_de(note) == german
