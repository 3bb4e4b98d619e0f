"""The service and call reports written for people, in Polish or English: text for a
terminal and CSV for a spreadsheet, with whole words, the locale's decimal comma and its
dates. JSON (`--json`) stays the machine's: plain numbers, ISO dates, the field names.
"""
from __future__ import annotations

import csv
import io
from datetime import date

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal

from daemon.formats import day, locale_of, number, share
from daemon.words import word

DIMENSIONS = ("client", "tier", "channel", "technician")
SCORES = (1, 2, 3, 4, 5)

# Every word the reports print, (Polish, English).
WORDS = {
    "report": ("Raport za okres", "Report for"),
    "calls": ("Połączenia w okresie", "Calls for"),
    "total": ("Razem", "Total"),
    "by client": ("Według klienta", "By client"),
    "by tier": ("Według poziomu", "By tier"),
    "by channel": ("Według kanału", "By channel"),
    "by technician": ("Według technika", "By technician"),
    "no client": ("(bez klienta)", "(no client)"),
    "no technician": ("(nieprzypisane)", "(unassigned)"),
    "opened": ("przyjęte", "opened"),
    "resolved": ("rozwiązane", "resolved"),
    "backlog": ("zaległe na koniec okresu", "backlog at the end"),
    "first response": ("czas do pierwszej odpowiedzi", "time to first response"),
    "resolution": ("czas do rozwiązania", "time to resolution"),
    "median": ("mediana", "median"),
    "p90": ("90. percentyl", "90th percentile"),
    "sla met": ("dotrzymane SLA", "SLA met"),
    "sla first response": ("pierwsza odpowiedź", "first response"),
    "sla resolution": ("rozwiązanie", "resolution"),
    "of": ("z", "of"),
    "at l1": ("rozwiązane na L1", "resolved at L1"),
    "target": ("cel", "target"),
    "ratings": ("Oceny klientów", "Customer ratings"),
    "average": ("średnia", "average"),
    "none": ("brak", "none"),
    "ticket": (("zgłoszenie", "zgłoszenia", "zgłoszeń"), ("ticket", "tickets")),
    # calls
    "offered": ("przychodzące", "offered"),
    "answered": ("odebrane", "answered"),
    "missed": ("nieodebrane", "missed"),
    "abandoned": ("porzucone", "abandoned"),
    "other": ("inne", "other"),
    "outgoing": ("wychodzące", "outgoing"),
    "answer rate": ("odsetek odebranych", "answer rate"),
    "abandonment rate": ("odsetek porzuconych", "abandonment rate"),
    "speed of answer": ("średni czas oczekiwania na odebranie", "average speed of answer"),
    "service level": ("poziom obsługi (odebrane do {seconds} s)",
                      "service level (answered within {seconds} s)"),
    "callbacks": ("oddzwonienia", "callbacks"),
    "needed": ("potrzebne", "needed"),
    "made": ("wykonane", "made"),
    "within target": ("w terminie", "within target"),
    "per day": ("Dzień po dniu", "Per day"),
    "unknown technician": ("(nieznany technik)", "(unknown technician)"),
    "talk": ("rozmowy", "talk"),
}

# CSV: one column per figure, its heading in the report's language.
CSV_COLUMNS = {
    "dimension": ("przekrój", "breakdown"),
    "group": ("grupa", "group"),
    "opened": ("przyjęte", "opened"),
    "resolved": ("rozwiązane", "resolved"),
    "backlog": ("zaległe na koniec okresu", "backlog at the end"),
    "first_response_median": ("pierwsza odpowiedź, mediana (h)", "first response, median (h)"),
    "first_response_p90": ("pierwsza odpowiedź, 90. percentyl (h)",
                           "first response, 90th percentile (h)"),
    "resolution_median": ("rozwiązanie, mediana (h)", "resolution, median (h)"),
    "resolution_p90": ("rozwiązanie, 90. percentyl (h)", "resolution, 90th percentile (h)"),
    "first_response_met": ("SLA pierwszej odpowiedzi dotrzymane",
                           "first response SLA met"),
    "first_response_breached": ("SLA pierwszej odpowiedzi przekroczone",
                                "first response SLA breached"),
    "first_response_compliance": ("SLA pierwszej odpowiedzi dotrzymane (%)",
                                  "first response SLA met (%)"),
    "resolution_met": ("SLA rozwiązania dotrzymane", "resolution SLA met"),
    "resolution_breached": ("SLA rozwiązania przekroczone", "resolution SLA breached"),
    "resolution_compliance": ("SLA rozwiązania dotrzymane (%)", "resolution SLA met (%)"),
    "resolved_at_l1": ("rozwiązane na L1", "resolved at L1"),
    "l1_rate": ("rozwiązane na L1 (%)", "resolved at L1 (%)"),
    "l1_target": ("cel dla L1 (%)", "L1 target (%)"),
    "ratings": ("liczba ocen", "ratings"),
    "rating_average": ("średnia ocena", "average rating"),
    **{f"rating_{s}": (f"oceny {s}", f"rated {s}") for s in SCORES},
}
CSV_DIMENSIONS = {"total": ("razem", "total"), "client": ("klient", "client"),
                  "tier": ("poziom", "tier"), "channel": ("kanał", "channel"),
                  "technician": ("technik", "technician"), "month": ("miesiąc", "month")}
# A decimal comma needs another field separator: what a Polish spreadsheet expects.
CSV_DELIMITERS = {"pl": ";", "en": ","}


def say(key: str, language: str, **values) -> str:
    text = WORDS[key][language == "en"]
    return text.format(**values) if values else text


def count_of(n: int, key: str, language: str) -> str:
    """N with the noun in the language's plural form: 1 zgłoszenie, 3 zgłoszenia, 5 zgłoszeń."""
    forms = WORDS[key][language == "en"]
    order = ("one", "few", "many") if len(forms) == 3 else ("one", "other")
    form = Locale.parse(locale_of(language)).plural_form(n)
    return f"{n} {forms[order.index(form) if form in order else -1]}"


def hours(seconds: float | None, language: str) -> str:
    return "—" if seconds is None else f"{number(seconds / 3600, language)} h"


def month(text: str, language: str) -> str:
    """'2026-11' as the month's name: 'listopad 2026', 'November 2026'."""
    year, number_of_month = (int(part) for part in text.split("-"))
    return format_date(date(year, number_of_month, 1), "LLLL y", locale=locale_of(language))


def period(result: dict, language: str) -> str:
    first, last = date.fromisoformat(result["from"]), date.fromisoformat(result["to"])
    return f"{day(first, language)} – {day(last, language)} ({result['timezone']})"


def group_name(dimension: str, group, language: str) -> str:
    if group is None:
        return say("no technician" if dimension == "technician" else "no client"
                   if dimension == "client" else "none", language)
    return word(group, language) if dimension == "channel" else str(group)


# -- the service report as text ------------------------------------------------------------
def to_text(result: dict, language: str) -> str:
    """The totals, then every group of every breakdown, a short block each."""
    lines = [f"{say('report', language)} {period(result, language)}", "",
             say("total", language), *_figure_lines(result["totals"], language)]
    for dimension in DIMENSIONS:
        lines += ["", say(f"by {dimension}", language)]
        for entry in result[f"by_{dimension}"]:
            lines.append(f"  {group_name(dimension, entry[dimension], language)}")
            lines += ["  " + line for line in _figure_lines(entry, language)]
    lines += ["", *_rating_lines(result["ratings"], language)]
    return "\n".join(lines)


def _figure_lines(f: dict, language: str) -> list[str]:
    s = lambda key: say(key, language)  # noqa: E731 - a short alias reads best here
    lines = [f"  {s('opened')} {f['opened']}, {s('resolved')} {f['resolved']}, "
             f"{s('backlog')} {f['backlog']}"]
    for clock, key in (("first response", "time_to_first_response"),
                       ("resolution", "time_to_resolution")):
        spread = f[key]
        lines.append(f"  {s(clock)}: {s('median')} {hours(spread['median_seconds'], language)}, "
                     f"{s('p90')} {hours(spread['p90_seconds'], language)} "
                     f"({count_of(spread['count'], 'ticket', language)})")
    first, resolution = f["sla"]["first_response"], f["sla"]["resolution"]
    lines.append(f"  {s('sla met')}: {s('sla first response')} {_part(first, language)}, "
                 f"{s('sla resolution')} {_part(resolution, language)}")
    l1 = f["l1"]
    lines.append(f"  {s('at l1')}: {share(l1['rate'], language)} ({l1['resolved_at_l1']} "
                 f"{s('of')} {l1['resolved']}; {s('target')} {share(l1['target'], language)})")
    return lines


def _part(compliance: dict, language: str) -> str:
    met, whole = compliance["met"], compliance["met"] + compliance["breached"]
    return f"{share(compliance['share'], language)} ({met} {say('of', language)} {whole})"


def _rating_lines(ratings: dict, language: str) -> list[str]:
    def summary(r: dict) -> str:
        spread = ", ".join(f"{s}: {r['distribution'][str(s)]}" for s in SCORES)
        return (f"{r['count']}, {say('average', language)} "
                f"{number(r['average'], language, 2)} ({spread})")
    lines = [f"{say('ratings', language)}: {summary(ratings['totals'])}"]
    for entry in ratings.get("by_technician", []):
        name = group_name("technician", entry["technician"], language)
        lines.append(f"  {name}: {summary(entry)}")
    return lines


# -- the service report as CSV -------------------------------------------------------------
def to_csv(result: dict, language: str) -> str:
    """One row per group of every breakdown, ratings beside; months of ratings after."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=CSV_DELIMITERS["en" if language == "en" else "pl"],
                        lineterminator="\n")
    writer.writerow([pair[language == "en"] for pair in CSV_COLUMNS.values()])
    for row in csv_rows(result, language):
        writer.writerow([row.get(column, "") for column in CSV_COLUMNS])
    return out.getvalue()


def csv_rows(result: dict, language: str) -> list[dict]:
    rated = result["ratings"]
    rows = [{**_figure_cells("total", None, result["totals"], language),
             **_rating_cells(rated["totals"], language)}]
    for dimension in DIMENSIONS:
        by_rating = {r[dimension]: r for r in rated.get(f"by_{dimension}", [])}
        for entry in result[f"by_{dimension}"]:
            group = entry[dimension]
            rows.append({**_figure_cells(dimension, group, entry, language),
                         **_rating_cells(by_rating.get(group), language)})
    for entry in rated["by_month"]:
        rows.append({"dimension": CSV_DIMENSIONS["month"][language == "en"],
                     "group": month(entry["month"], language),
                     **_rating_cells(entry, language)})
    return rows


def decimal(value: float | None, language: str, digits: int = 1) -> str:
    """A plain number for a spreadsheet: the locale's decimal mark, no grouping; none empty."""
    if value is None:
        return ""
    pattern = "0" + ("." + "#" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=locale_of(language))


def _hours_cell(seconds: float | None, language: str) -> str:
    return decimal(None if seconds is None else seconds / 3600, language)


def _share_cell(value: float | None, language: str) -> str:
    return decimal(None if value is None else value * 100, language)


def _figure_cells(dimension: str, group, f: dict, language: str) -> dict:
    cells = {"dimension": CSV_DIMENSIONS[dimension][language == "en"],
             "group": "" if dimension == "total" else group_name(dimension, group, language),
             "opened": f["opened"], "resolved": f["resolved"], "backlog": f["backlog"],
             "resolved_at_l1": f["l1"]["resolved_at_l1"],
             "l1_rate": _share_cell(f["l1"]["rate"], language),
             "l1_target": _share_cell(f["l1"]["target"], language)}
    for clock, key in (("first_response", "time_to_first_response"),
                       ("resolution", "time_to_resolution")):
        cells[f"{clock}_median"] = _hours_cell(f[key]["median_seconds"], language)
        cells[f"{clock}_p90"] = _hours_cell(f[key]["p90_seconds"], language)
        compliance = f["sla"][clock]
        cells[f"{clock}_met"], cells[f"{clock}_breached"] = compliance["met"], compliance["breached"]
        cells[f"{clock}_compliance"] = _share_cell(compliance["share"], language)
    return cells


def _rating_cells(summary: dict | None, language: str) -> dict:
    if not summary:
        return {}
    return {"ratings": summary["count"], "rating_average": decimal(summary["average"], language, 2),
            **{f"rating_{s}": summary["distribution"][str(s)] for s in SCORES}}


# -- the call report as text ---------------------------------------------------------------
def calls_to_text(figures: dict, language: str) -> str:
    s = lambda key, **values: say(key, language, **values)  # noqa: E731
    totals = figures["totals"]
    lines = [f"{s('calls')} {period(figures, language)}",
             "  " + ", ".join(f"{s(k)} {totals[k]}" for k in
                              ("offered", "answered", "missed", "abandoned", "other", "outgoing"))]
    speed = totals["average_speed_of_answer"]
    lines.append(f"  {s('answer rate')} {share(totals['answer_rate'], language)}, "
                 f"{s('abandonment rate')} {share(totals['abandonment_rate'], language)}, "
                 f"{s('speed of answer')} {'—' if speed is None else number(speed, language)} s, "
                 f"{s('service level', seconds=figures['service_level_seconds'])} "
                 f"{share(totals['service_level'], language)}")
    callbacks = totals["callbacks"]
    lines.append(f"  {s('callbacks')}: {s('needed')} {callbacks['needed']}, {s('made')} "
                 f"{callbacks['made']}, {s('within target')} {callbacks['within_target']}")
    lines.append(f"{s('per day')}:")
    for entry in figures["per_day"]:
        if entry["offered"] or entry["outgoing"]:
            lines.append(f"  {day(date.fromisoformat(entry['date']), language):<10}  " + ", ".join(
                f"{s(k)} {entry[k]}" for k in ("offered", "answered", "missed", "abandoned")))
    lines.append(f"{s('by technician')}:")
    for tech in figures["per_technician"]:
        who = tech["technician"] or s("unknown technician")
        lines.append(f"  {who}: {s('answered')} {tech['answered']}, {s('talk')} "
                     f"{number(tech['talk_seconds'], language, 0)} s, {s('outgoing')} "
                     f"{tech['outgoing']}")
    return "\n".join(lines)
