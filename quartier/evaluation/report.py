"""The progress report: HTML (German by default, English on request) and PDF via WeasyPrint.

``render_html`` is pure (strategy, evaluation, districts, data-quality facts in; HTML out), with
charts and district maps embedded as SVG. ``build_report`` gathers what it needs from the store;
``write_report`` writes HTML or PDF. PDF needs WeasyPrint and the Pango libraries (Debian:
``libpango-1.0-0``, ``libpangoft2-1.0-0``); without them :class:`PdfUnavailableError` says so and
HTML still works.

Length: one job (the report, from its data to HTML or PDF): the German/English text table ``T``,
the sections and the SVG district maps they embed belong together.
"""

from __future__ import annotations

import base64
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import geopandas as gpd
import jinja2

from quartier.errors import PdfUnavailableError
from quartier.evaluation import charts, current
from quartier.evaluation.evaluate import Evaluation, KpiResult
from quartier.evaluation.indicators import CATALOGUE, IndicatorValue
from quartier.evaluation.progress import STATUSES
from quartier.evaluation.strategy import Strategy
from quartier.geo import io as geo_io
from quartier.store.db import Conn

log = logging.getLogger(__name__)

NETWORK_INDICATORS = ("sensor_availability", "sensor_stale_count", "sensor_data_freshness")
STALE_MANUAL = timedelta(days=400)


T: dict[str, dict[str, str]] = {
    "de": {
        "report": "Fortschrittsbericht", "as_of": "Stichtag", "run": "Auswertung",
        "compared_with": "verglichen mit", "adopted": "beschlossen", "vision": "Vision",
        "summary": "Übersicht", "field": "Handlungsfeld", "kpi": "Kennzahl",
        "baseline": "Ausgangswert", "current": "Aktuell", "target": "Ziel",
        "progress": "Fortschritt", "projection": "Prognose", "status": "Status",
        "summary_note": "Fortschritt: Anteil des Wegs vom Ausgangs- zum Zielwert. Prognose: "
        "Wert des linearen Trends zur Frist. Status nach den Regeln im Abschnitt Methodik.",
        "standard": "Standard", "expected": "Soll-Fortschritt", "band": "90-%-Band",
        "slope": "Trend/Jahr", "provenance": "Herkunft", "by_district": "Nach Stadtbezirken",
        "district": "Stadtbezirk", "measures": "Maßnahmen", "measure": "Maßnahme",
        "owner": "Verantwortlich", "budget": "Budget", "period": "Zeitraum",
        "partners": "Partner", "quality": "Datenqualität",
        "quality_intro": "Woher die Zahlen stammen, wie aktuell sie sind und wo Daten fehlen. "
        "Jeder Wert ist mit Zeitraum, Datenbasis und Berechnungszeitpunkt gespeichert.",
        "network": "Sensornetz", "indicator": "Indikator", "value": "Wert",
        "sources": "Datenbasis der Kennzahlen", "origin": "Art",
        "latest_value": "Letzter Wert", "missing": "Fehlende Daten", "reason": "Grund",
        "method": "Methodik", "computed": "berechnet", "manual": "erfasst",
        "data": "Daten", "computed_at": "berechnet", "source": "Quelle", "readings": "Messwerte",
        "stations": "Datenströme", "cells": "Zellen", "points": "Werte im Trend",
        "coverage_run": "Versorgungsanalyse",
        "broadband_map": "Breitbandversorgung",
        "broadband_caption": "Abbildung: Breitbandversorgung je 100-m-Zelle (bestes Angebot, "
        "Kategorien der Gigabit-Richtlinie 2.0), Versorgungslücken violett umrandet; "
        "Versorgungsanalyse vom {date}.",
        "changed": "vorher", "unchanged": "unverändert", "new": "neu", "stale": "veraltet",
    },
    "en": {
        "report": "Progress report", "as_of": "as of", "run": "evaluation",
        "compared_with": "compared with", "adopted": "adopted", "vision": "Vision",
        "summary": "Summary", "field": "Field of action", "kpi": "KPI",
        "baseline": "Baseline", "current": "Current", "target": "Target",
        "progress": "Progress", "projection": "Projection", "status": "Status",
        "summary_note": "Progress: share of the way from baseline to target. Projection: the "
        "linear trend's value at the deadline. Status by the rules in the Method section.",
        "standard": "Standard", "expected": "Expected progress", "band": "90 % band",
        "slope": "Trend/year", "provenance": "Provenance", "by_district": "By district",
        "district": "District", "measures": "Measures", "measure": "Measure",
        "owner": "Owner", "budget": "Budget", "period": "Period", "partners": "Partners",
        "quality": "Data quality",
        "quality_intro": "Where the numbers come from, how current they are and where data are "
        "missing. Every value is stored with its period, data basis and computation time.",
        "network": "Sensor network", "indicator": "Indicator", "value": "Value",
        "sources": "Data basis of the KPIs", "origin": "Kind", "latest_value": "Latest value",
        "missing": "Missing data", "reason": "Reason", "method": "Method",
        "computed": "computed", "manual": "recorded", "data": "data",
        "computed_at": "computed", "source": "source", "readings": "readings",
        "stations": "datastreams", "cells": "cells", "points": "Values in the trend",
        "coverage_run": "coverage run",
        "broadband_map": "Broadband coverage",
        "broadband_caption": "Figure: broadband coverage per 100 m cell (best offer, categories "
        "of the Gigabit-Richtlinie 2.0), coverage gaps outlined in purple; coverage analysis of "
        "{date}.",
        "changed": "was", "unchanged": "unchanged", "new": "new", "stale": "outdated",
    },
}  # fmt: skip

STATUS_LABELS = {
    "de": {"on_track": "im Plan", "at_risk": "gefährdet", "off_track": "nicht im Plan",
           "no_data": "keine Daten"},
    "en": {"on_track": "on track", "at_risk": "at risk", "off_track": "off track",
           "no_data": "no data"},
}  # fmt: skip

MEASURE_STATUS = {
    "de": {"planned": "geplant", "in_progress": "in Umsetzung", "completed": "abgeschlossen",
           "delayed": "verzögert", "cancelled": "abgebrochen"},
    "en": {"planned": "planned", "in_progress": "in progress", "completed": "completed",
           "delayed": "delayed", "cancelled": "cancelled"},
}  # fmt: skip

REASONS_DE = {
    "no value on or before the evaluation date": "kein Wert bis zum Stichtag",
    "deadline passed, target reached": "Frist abgelaufen, Ziel erreicht",
    "deadline passed, target missed": "Frist abgelaufen, Ziel verfehlt",
    "no trend yet; progress keeps pace with the schedule": "noch kein Trend; Fortschritt im "
    "Zeitplan",
    "no trend yet; progress slightly behind the schedule": "noch kein Trend; Fortschritt etwas "
    "hinter dem Zeitplan",
    "no trend yet; progress behind the schedule": "noch kein Trend; Fortschritt deutlich hinter "
    "dem Zeitplan",
    "target reached": "Ziel erreicht",
    "target reached, but the trend falls back": "Ziel erreicht, aber der Trend zeigt zurück",
    "the trend reaches the target by the deadline": "Der Trend erreicht das Ziel bis zur Frist.",
    "the trend misses the target narrowly or uncertainly": "Der Trend verfehlt das Ziel knapp "
    "oder ist zu unsicher für eine klare Aussage.",
    "the trend misses the target by the deadline": "Der Trend verfehlt das Ziel bis zur Frist.",
}

#: the evaluation's "no data" notes in German (they are made in English by compute/evaluate/sources)
NOTES_DE: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"no value recorded \(POST (\S+) or CSV import\)"),
     r"kein Wert erfasst (POST \1 oder CSV-Import)"),
    (re.compile(r"no value recorded yet"), "noch kein Wert erfasst"),
    (re.compile(r"no (\S+) readings before (\S+)"), r"keine Messwerte (\1) vor dem \2"),
    (re.compile(r"no noise readings this year"), "keine Lärmmesswerte in diesem Jahr"),
    (re.compile(r"no (\S+) readings"), r"keine Messwerte (\1)"),
    (re.compile(r"no coverage analysis has been run \(quartier\.geo\)"),
     "noch keine Versorgungsanalyse gerechnet (quartier coverage analyse)"),
    (re.compile(r"the coverage analysis tables do not exist \(geo migrations not applied\)"),
     "die Tabellen der Versorgungsanalyse fehlen (quartier db migrate)"),
    (re.compile(r"coverage_cell lacks columns (.+)"), r"coverage_cell fehlen die Spalten \1"),
    (re.compile(r"coverage run (\d+) has no cells with signal measurements"),
     r"Analyse \1 hat keine Zellen mit Mobilfunkmessungen"),
    (re.compile(r"coverage run (\d+) has no cells"), r"Analyse \1 hat keine Zellen"),
)  # fmt: skip


def _note(note: str | None, lang: str) -> str | None:
    return note_de(note) if note and lang == "de" else note


def note_de(note: str) -> str:
    """A note of the evaluation (``no data: why``) in German; an unknown one stays as it is."""
    prefix, sep, why = note.partition("no data: ")
    if sep and not prefix:
        return "keine Daten: " + note_de(why)
    if note in REASONS_DE:
        return REASONS_DE[note]
    for pattern, german in NOTES_DE:
        if pattern.fullmatch(note):
            return pattern.sub(german, note)
    return note


CHART_LABELS = {
    "de": {"trend": "Trend", "band": "90-%-Konfidenzband", "projection": "Prognose zur Frist",
           "target": "Ziel", "baseline": "Ausgangswert", "values": "Messwerte"},
    "en": {"trend": "trend", "band": "90 % confidence band", "projection": "projection at deadline",
           "target": "target", "baseline": "baseline", "values": "values"},
}  # fmt: skip

METHOD = {
    "de": [
        "Fortschritt = (aktueller Wert − Ausgangswert) / (Zielwert − Ausgangswert); "
        "Soll-Fortschritt = vergangene Zeit seit dem Ausgangsdatum / Zeit bis zur Frist.",
        "Trend: lineare Regression (kleinste Quadrate) über die gespeicherten Werte ab dem "
        "Ausgangsdatum und den Ausgangswert; Prognose = Trendwert zur Frist; 90-%-Konfidenzband "
        "der Regressionsgeraden (Student-t, ab drei Werten).",
        "keine Daten: kein Wert bis zum Stichtag. Frist abgelaufen: im Plan, wenn das Ziel "
        "erreicht ist, sonst nicht im Plan.",
        "Ziel bereits erreicht: im Plan, außer der Trend fällt bis zur Frist hinter das Ziel "
        "zurück (gefährdet).",
        "Ohne Trend (nur ein Datum): im Plan bei Fortschritt ≥ Soll, gefährdet bei ≥ 75 % des "
        "Solls, sonst nicht im Plan.",
        "Prognose erreicht das Ziel: im Plan. Verfehlt sie es, reicht aber der günstige Rand des "
        "Konfidenzbands oder ≥ 90 % des Wegs: gefährdet. Sonst: nicht im Plan.",
        "Luftqualität: Tagesmittel aus Stundenmitteln (gültig ab 18 Stunden, Ortszeit), "
        "Stationsmittel über gültige Tage, Gebietsmittel über Stationen; Überschreitungstage "
        "an der ungünstigsten Station (Richtlinie 2008/50/EG). Lärm: Lden nach 2002/49/EG.",
    ],
    "en": [
        "Progress = (current − baseline) / (target − baseline); expected progress = time since "
        "the baseline date / time to the deadline.",
        "Trend: least-squares line through the stored values since the baseline date and the "
        "baseline; projection = the line at the deadline; 90 % confidence band of the line "
        "(Student t, from three values).",
        "no data: no value up to the evaluation date. Deadline passed: on track if the target "
        "is met, otherwise off track.",
        "Target already met: on track, unless the trend falls back behind it by the deadline "
        "(at risk).",
        "Without a trend (one date only): on track if progress ≥ expected, at risk if ≥ 75 % of "
        "it, otherwise off track.",
        "Projection meets the target: on track. If it misses but the favourable edge of the band "
        "meets it, or the projection covers ≥ 90 % of the way: at risk. Otherwise off track.",
        "Air quality: daily means from hourly means (valid from 18 hours, local time), station "
        "means over valid days, area means over stations; exceedance days at the worst station "
        "(Directive 2008/50/EC). Noise: Lden after Directive 2002/49/EC.",
    ],
}


def fmt_num(x: float | None, lang: str, digits: int | None = None) -> str:
    if x is None:
        return "–"
    if digits is None:
        whole = float(x).is_integer()
        digits = 0 if whole or abs(x) >= 1000 else (1 if abs(x) >= 10 else 2)
    text = f"{x:,.{digits}f}"
    if lang == "de":
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def fmt_value(x: float | None, unit: str, lang: str) -> str:
    if x is None:
        return "–"
    sep = "" if unit == "%" else "\u00a0"
    return f"{fmt_num(x, lang)}{sep}{unit}"


def fmt_date(d: date | datetime | None, lang: str) -> str:
    if d is None:
        return "–"
    if isinstance(d, datetime):
        d = d.date()
    return d.strftime("%d.%m.%Y") if lang == "de" else d.isoformat()


def fmt_pct(x: float | None, lang: str) -> str:
    return "–" if x is None else f"{fmt_num(100 * x, lang, 0)}\u00a0%"


@dataclass
class Quality:
    """Facts for the data-quality section."""

    network: list[IndicatorValue] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


def _provenance(p: Mapping[str, Any], lang: str) -> str:
    t = T[lang]
    parts: list[str] = []
    src = p.get("source")
    if src:
        parts.append(f"{t['source']}: {', '.join(src) if isinstance(src, list) else src}")
    if p.get("data_from") or p.get("data_to"):
        parts.append(
            f"{t['data']} {fmt_date(_parse(p.get('data_from')), lang)} – "
            f"{fmt_date(_parse(p.get('data_to')), lang)}"
        )
    for key, label in (("readings_used", "readings"), ("datastreams", "stations"),
                       ("cells", "cells"), ("coverage_run", "coverage_run")):  # fmt: skip
        if p.get(key) is not None:
            parts.append(f"{t[label]}: {p[key]}")
    if p.get("note"):
        parts.append(str(p["note"]))
    if p.get("computed_at"):
        parts.append(f"{t['computed_at']} {fmt_date(_parse(p['computed_at']), lang)}")
    return "; ".join(parts) or "–"


def _parse(v: Any) -> datetime | None:
    if v is None or isinstance(v, datetime):
        return v
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        return None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _b64(svg: str) -> str:
    return base64.b64encode(svg.encode()).decode()


def _change(r: KpiResult, lang: str) -> str:
    if r.previous_status is None or r.previous_status == r.status:
        return ""
    return f"{T[lang]['changed']}: {STATUS_LABELS[lang][r.previous_status]}"


def _kpi_view(
    r: KpiResult,
    district_rows: Sequence[KpiResult],
    districts: gpd.GeoDataFrame | None,
    as_of: datetime,
    lang: str,
    notes: Mapping[str, str],
) -> dict[str, Any]:
    d = CATALOGUE[r.indicator_id]
    band = (
        f"{fmt_num(r.projected_low, lang)} … {fmt_num(r.projected_high, lang)}"
        if r.projected_low is not None and r.projected_high is not None
        else "–"
    )
    view: dict[str, Any] = {
        "name": r.name,
        "scope": r.scope_name if r.scope_type != "city" else "",
        "status": r.status,
        "status_label": STATUS_LABELS[lang][r.status],
        "definition": d.description(lang),
        "standard": d.standard,
        "baseline": fmt_value(r.baseline, r.unit, lang),
        "baseline_date": fmt_date(r.baseline_date, lang),
        "current": fmt_value(r.current, r.unit, lang),
        "current_at": fmt_date(r.current_at, lang),
        "target": fmt_value(r.target, r.unit, lang),
        "deadline": fmt_date(r.deadline, lang),
        "progress": fmt_pct(r.progress, lang),
        "expected": fmt_pct(r.expected_progress, lang),
        "projected": fmt_value(r.projected, r.unit, lang),
        "band": band,
        "slope": fmt_num(r.slope_per_year, lang),
        "points": str(r.points_used),
        "reason": REASONS_DE.get(r.reason, r.reason) if lang == "de" else _sentence(r.reason),
        "change": _change(r, lang),
        "note": _note(notes.get(r.indicator_id) or r.note, lang) if r.status == "no_data" else None,
        "provenance": _provenance(r.provenance, lang),
        "chart": _b64(
            charts.kpi_chart(
                [(h.at, h.value) for h in r.history],
                baseline=r.baseline,
                baseline_date=r.baseline_date,
                target=r.target,
                deadline=r.deadline,
                as_of=as_of,
                unit=r.unit,
                labels=CHART_LABELS[lang],
                status=r.status,
                bounds=d.bounds,
            )
        ),
        "districts": [
            {
                "name": x.scope_name,
                "current": fmt_value(x.current, x.unit, lang),
                "progress": fmt_pct(x.progress, lang),
                "projected": fmt_value(x.projected, x.unit, lang),
                "status": x.status,
                "status_label": STATUS_LABELS[lang][x.status],
            }
            for x in district_rows
        ],
        "map": None,
    }
    if district_rows and districts is not None and len(districts):
        view["map"] = _b64(
            charts.district_map(
                districts,
                {x.scope_code: x.status for x in district_rows},
                {x.scope_code: fmt_value(x.current, x.unit, lang) for x in district_rows},
                status_labels=STATUS_LABELS[lang],
            )
        )
    return view


def render_html(
    strategy: Strategy,
    evaluation: Evaluation,
    *,
    lang: str = "de",
    districts: gpd.GeoDataFrame | None = None,
    quality: Quality | None = None,
    broadband_map: Mapping[str, str] | None = None,
) -> str:
    """The report as one self-contained HTML document (charts and maps embedded as SVG;
    ``broadband_map``: the broadband map as a base64 PNG, ``png``, and its ``caption``)."""
    if lang not in T:
        raise ValueError(f"unknown language {lang!r}; de or en")
    quality = quality or Quality()
    t = T[lang]
    fields = {f.id: f.name for f in strategy.fields_of_action}
    main = [r for r in evaluation.results if not r.breakdown]
    by_kpi: dict[str, list[KpiResult]] = {}
    for r in evaluation.results:
        if r.breakdown:
            by_kpi.setdefault(r.kpi_id, []).append(r)
    goal_titles = {g.id: g.title for _, g in strategy.goals()}
    notes = {**evaluation.notes, **quality.notes}
    summary = [
        {
            "field": fields.get(r.field_id, r.field_id),
            "goal": goal_titles.get(r.goal_id, r.goal_id),
            "name": r.name,
            "scope": r.scope_name if r.scope_type != "city" else "",
            "baseline": fmt_value(r.baseline, r.unit, lang),
            "baseline_date": fmt_date(r.baseline_date, lang),
            "current": fmt_value(r.current, r.unit, lang),
            "current_at": fmt_date(r.current_at, lang),
            "target": fmt_value(r.target, r.unit, lang),
            "deadline": fmt_date(r.deadline, lang),
            "progress": fmt_pct(r.progress, lang),
            "projected": fmt_value(r.projected, r.unit, lang),
            "status": r.status,
            "status_label": STATUS_LABELS[lang][r.status],
            "change": _change(r, lang),
        }
        for r in main
    ]
    goals = []
    for foa, goal in strategy.goals():
        kpis = [
            _kpi_view(r, by_kpi.get(r.kpi_id, []), districts, evaluation.as_of, lang, notes)
            for r in main
            if r.goal_id == goal.id
        ]
        measures = [
            {
                "title": m.title,
                "owner": m.owner,
                "budget": "–" if m.budget_eur is None else f"{fmt_num(m.budget_eur, lang, 0)} €",
                "period": f"{fmt_date(m.start, lang)} – {fmt_date(m.end, lang)}",
                "status": MEASURE_STATUS[lang][m.status],
                "partners": ", ".join(m.partners),
            }
            for m in goal.measures
        ]
        goals.append(
            {"field": foa.name, "title": goal.title, "description": goal.description,
             "kpis": kpis, "measures": measures}
        )  # fmt: skip
    sources = []
    for r in main:
        latest = r.history[-1] if r.history else None
        stale = (
            latest is not None
            and latest.origin == "manual"
            and (evaluation.as_of - latest.at > STALE_MANUAL)
        )
        sources.append(
            {
                "kpi": r.name,
                "indicator": r.indicator_id,
                "origin": t["manual"] if CATALOGUE[r.indicator_id].origin == "manual"
                else t["computed"],
                "latest": "–" if latest is None else fmt_date(latest.at, lang)
                + (f" ({t['stale']})" if stale else ""),
                "stale": stale,
                "provenance": _provenance(r.provenance, lang),
            }
        )  # fmt: skip
    missing = [
        {
            "id": r.indicator_id,
            "name": r.name + ("" if r.scope_type == "city" else f" ({r.scope_name})"),
            "reason": _note(notes.get(r.indicator_id) or r.note or r.reason, lang),
        }
        for r in main
        if r.status == "no_data"
    ] + [
        {"id": i, "name": CATALOGUE[i].name(lang), "reason": _note(notes[i], lang)}
        for i in NETWORK_INDICATORS
        if i in notes and i not in {r.indicator_id for r in main}
    ]
    network = [
        {
            "name": CATALOGUE[v.indicator_id].name(lang),
            "value": fmt_value(v.value, v.unit, lang),
            "provenance": _provenance({**v.provenance, "computed_at": v.computed_at}, lang),
        }
        for v in quality.network
        if v.scope_type == "city" and not v.variant
    ]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("quartier.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("report.html.j2").render(
        lang=lang,
        t=t,
        strategy=strategy,
        as_of=fmt_date(evaluation.as_of, lang),
        adopted=fmt_date(strategy.adopted, lang) if strategy.adopted else None,
        run_id=evaluation.run_id,
        previous_run_id=evaluation.previous_run_id,
        statuses=[
            {"key": s, "label": STATUS_LABELS[lang][s], "count": evaluation.summary.get(s, 0)}
            for s in STATUSES
        ],
        summary=summary,
        goals=goals,
        network=network,
        sources=sources,
        missing=missing,
        method=METHOD[lang],
        broadband_map=broadband_map,
    )


def build_report(
    conn: Conn, strategy: Strategy, evaluation: Evaluation, *, lang: str = "de"
) -> str:
    """Gather the districts and the sensor-network facts from the store and render the HTML."""
    districts = geo_io.load_districts(conn, "stadtbezirk")
    values, notes, _ = current.values_as_of(conn, NETWORK_INDICATORS, evaluation.as_of)
    quality = Quality(network=values, notes=notes)
    return render_html(
        strategy, evaluation, lang=lang, districts=districts if len(districts) else None,
        quality=quality, broadband_map=broadband_map(conn, lang),
    )  # fmt: skip


def broadband_map(conn: Conn, lang: str) -> dict[str, str] | None:
    """The broadband map of the current coverage analysis as a base64 PNG with its caption
    (``quartier.maps``), None before an analysis."""
    from quartier.errors import NotFoundError
    from quartier.geo import run_store
    from quartier.maps.pages import render_image
    from quartier.maps.render import MapOptions

    try:
        run = run_store.get_run(conn)
    except NotFoundError:
        return None
    png = render_image(conn, "coverage", MapOptions(lang="en" if lang == "en" else "de"))
    caption = T[lang]["broadband_caption"].format(date=fmt_date(run.created_at, lang))
    return {"png": base64.b64encode(png).decode("ascii"), "caption": caption}


def write_pdf(html: str, path: Path) -> None:
    """Render ``html`` to a PDF file with WeasyPrint."""
    try:
        with warnings.catch_warnings():
            # WeasyPrint announces that libharfbuzz-subset will be required; it works without.
            warnings.filterwarnings("ignore", "HarfBuzz-Subset", DeprecationWarning)
            import weasyprint
    except (ImportError, OSError) as exc:  # OSError: Pango & co. missing
        raise PdfUnavailableError(
            "PDF output needs WeasyPrint (pip install 'quartier[pdf]') and the Pango libraries "
            f"(Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0): {exc}"
        ) from None
    weasyprint.HTML(string=html, base_url=str(path.parent)).write_pdf(str(path))


def write_report(html: str, out: Path, *, pdf: bool = False) -> list[Path]:
    """Write the HTML to ``out`` and, with ``pdf``, a PDF beside it (``out`` with suffix .pdf,
    or ``out`` itself if it ends in .pdf). Returns the files written."""
    written: list[Path] = []
    if out.suffix.lower() == ".pdf":
        write_pdf(html, out)
        return [out]
    out.write_text(html, encoding="utf-8")
    written.append(out)
    if pdf:
        target = out.with_suffix(".pdf")
        write_pdf(html, target)
        written.append(target)
    log.info("wrote %s", ", ".join(str(p) for p in written))
    return written


def evaluate_to_report(
    conn: Conn,
    strategy_path: Path,
    out: Path,
    *,
    as_of: datetime,
    pdf: bool = False,
    lang: str | None = None,
    history_months: int = 0,
) -> tuple[Evaluation, list[Path]]:
    """What ``quartier evaluate`` does: load and validate the strategy, evaluate it as of
    ``as_of`` (storing the values and the run), and write the report (HTML, and PDF on request).
    """
    from quartier.evaluation.evaluate import evaluate
    from quartier.evaluation.strategy import load_strategy

    strategy = load_strategy(strategy_path)
    evaluation = evaluate(conn, strategy, as_of, history_months=history_months, lang=lang)
    html = build_report(conn, strategy, evaluation, lang=lang or strategy.lang)
    return evaluation, write_report(html, out, pdf=pdf)
