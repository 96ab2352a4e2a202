"""The generator against its promises: same seed same bytes, names in landing order, exports that
vary like a real head-end's, and a ground truth that the contract's rules confirm line by line."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import pytest

from greenstream_dagster.rules import codes
from greenstream_dagster.synthetic import GenerationResult, generate
from greenstream_dagster.synthetic import defects as d
from greenstream_dagster.synthetic.faults import NEAR_ZERO_STRETCH, STUCK_AT_ZERO
from greenstream_dagster.synthetic.writer import NORMALIZED, OFFSET_TIMESTAMP
from greenstream_tests.synthetic import reference

START = dt.date(2026, 11, 2)
# (meters, days, interval, seed): the main set, a 30-minute one, a 5-minute one.
CONFIGS = {
    "15min": (60, 5, 15, 11),
    "30min": (40, 3, 30, 5),
    "5min": (20, 2, 5, 3),
}
NAME = re.compile(r"headend_(\d{8})_c(\d{2})(_resend1)?\.csv(\.gz)?")


@pytest.fixture(scope="module")
def generated(
    tmp_path_factory,
) -> dict[str, tuple[GenerationResult, list[dict], reference.Outcome]]:
    out = {}
    for key, (meters, days, interval, seed) in CONFIGS.items():
        folder = tmp_path_factory.mktemp(key)
        result = generate(folder, meters, days, START, interval_minutes=interval, seed=seed)
        out[key] = (result, truth(result), reference.run(result.files))
    return out


@pytest.fixture(scope="module")
def main(generated):
    return generated["15min"]


def truth(result: GenerationResult) -> list[dict]:
    with result.ground_truth.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fields_at(folder: Path, row: dict) -> list[str]:
    return reference.read_lines(folder / row["file"])[int(row["line"]) - 1].split(",")


def test_same_arguments_same_bytes(tmp_path):
    a = generate(tmp_path / "a", 30, 2, START, seed=4)
    b = generate(tmp_path / "b", 30, 2, START, seed=4)
    names = [p.name for p in a.files] + ["ground_truth.csv", "generation.json"]
    assert names[:-2] == [p.name for p in b.files]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_another_seed_other_readings(tmp_path):
    a = generate(tmp_path / "a", 30, 1, START, seed=1)
    b = generate(tmp_path / "b", 30, 1, START, seed=2)
    assert a.files[0].read_bytes() != b.files[0].read_bytes()


def test_sorted_names_are_the_landing_order(main):
    result, _, _ = main
    names = [p.name for p in result.files]
    assert names == sorted(names)
    parsed = [NAME.fullmatch(n) for n in names]
    assert all(parsed), names
    originals = [(m[1], m[2]) for m in parsed if not m[3]]
    days = sorted({day for day, _ in originals})
    assert days == [(START + dt.timedelta(days=k)).strftime("%Y%m%d") for k in range(5)]
    assert originals == [(day, f"{c:02d}") for day in days for c in range(1, 5)]
    for k, m in enumerate(parsed):
        if m[3]:  # a resend lands right after the original export of its collector and day
            assert NAME.fullmatch(names[k - 1]).group(1, 2, 3) == (m[1], m[2], None)


def test_exports_vary_like_a_head_end(main):
    result, _, _ = main
    raw = {p.name: p.read_bytes() for p in result.files}
    plain = {n: reference.read_lines(p) for n, p in zip(raw, result.files, strict=True)}
    assert any(n.endswith(".gz") for n in raw) and any(n.endswith(".csv") for n in raw)
    assert any(b.startswith(b"\xef\xbb\xbf") for b in raw.values())
    assert any(b"\r\n" in b for n, b in raw.items() if not n.endswith(".gz"))
    assert {lines[0] for lines in plain.values()} == {
        "meter_id,timestamp,energy_value,energy_unit",
        "Meter_ID,Timestamp,Energy_Value,Energy_Unit",
    }
    units = {
        line.split(",")[3] for lines in plain.values() for line in lines[1:] if line.count(",") == 3
    }
    assert {"kW", "kw", " KW ", "W"} <= units
    stamps = {line.split(",")[1][19:] for lines in plain.values() for line in lines[1:3]}
    assert stamps == {"Z", "", "+01:00"}


def test_meters_report_at_three_intervals_in_two_units(main):
    result, _, outcome = main
    spacing = {}
    for row in sorted(outcome.survivors.values(), key=lambda r: (r.meter, r.ts)):
        last = spacing.get(row.meter, (None, set()))
        if last[0] is not None:
            last[1].add(int((row.ts - last[0]).total_seconds() // 60))
        spacing[row.meter] = (row.ts, last[1])
    usual = {m: min(s) for m, (_, s) in spacing.items()}
    assert sorted(set(usual.values())) == [15, 30, 60]
    assert all(re.fullmatch(r"MTR\d{6}", m) for m in usual)


def test_offset_export_touches_two_utc_days(main):
    result, _, outcome = main
    offset = [p for p in result.files if reference.read_lines(p)[0].startswith("Meter_ID")]
    assert len(offset) == 5
    for path in offset:
        days = {r.ts.date() for r in outcome.survivors.values() if r.file == path.name}
        export_day = dt.datetime.strptime(NAME.fullmatch(path.name)[1], "%Y%m%d").date()
        assert days == {export_day - dt.timedelta(days=1), export_day}
    assert result.days[0] == START - dt.timedelta(days=1)


def kw(f: list[str]) -> float:
    return reference.number(f[2]) / (1000 if f[3].strip().upper() == "W" else 1)


# What the line a ground-truth row points at must look like, per defect class.
LINE_SHOWS = {
    d.TOO_MANY_FIELDS: lambda f: len(f) > 4,
    d.TOO_FEW_FIELDS: lambda f: len(f) < 4,
    d.EMPTY_METER_ID: lambda f: len(f) == 4 and f[0].strip() == "",
    d.BAD_TIMESTAMP: lambda f: reference.parse_timestamp(f[1]) is None,
    d.FAR_FUTURE: lambda f: reference.parse_timestamp(f[1]).year == 2099,
    d.BAD_VALUE: lambda f: reference.number(f[2]) is None and f[2] not in codes.MISSING_MARKERS,
    d.BAD_UNIT: lambda f: (
        reference.number(f[2]) is not None and f[3].strip().upper() not in ("W", "KW")
    ),
    d.NEGATIVE: lambda f: reference.number(f[2]) < 0,
    d.OVER_RANGE: lambda f: kw(f) > 10,
    d.SPIKE: lambda f: 0 <= kw(f) <= 9.5,
    d.NULL_VALUE: lambda f: f[2].strip() in codes.MISSING_MARKERS,
    d.NULL_RESEND: lambda f: f[2].strip() in codes.MISSING_MARKERS,
    d.REPEATED_ROW: lambda f: reference.number(f[2]) is not None,
    d.RESEND_DUPLICATE: lambda f: reference.number(f[2]) is not None,
    OFFSET_TIMESTAMP: lambda f: f[1].endswith("+01:00"),
}


@pytest.mark.parametrize("key", CONFIGS)
def test_each_ground_truth_line_shows_its_defect(generated, key):
    result, rows, _ = generated[key]
    folder = result.ground_truth.parent
    with_line = [r for r in rows if r["line"]]
    assert {r["defect"] for r in with_line} == set(LINE_SHOWS)
    for row in with_line:
        fields = fields_at(folder, row)
        assert LINE_SHOWS[row["defect"]](fields), (row, fields)
        if row["defect"] not in (d.TOO_FEW_FIELDS, d.EMPTY_METER_ID):
            assert fields[0] == row["meter_id"]


@pytest.mark.parametrize("key", CONFIGS)
def test_duplicates_name_their_survivor(generated, key):
    result, rows, _ = generated[key]
    folder = result.ground_truth.parent
    order = [p.name for p in result.files]
    for row in rows:
        if row["expected"] != codes.DUPLICATE:
            continue
        s_file, s_line = re.search(r"survivor=(\S+):(\d+)", row["detail"]).groups()
        mine, theirs = fields_at(folder, row), fields_at(folder, {"file": s_file, "line": s_line})
        assert mine[0] == theirs[0] == row["meter_id"]
        assert reference.parse_timestamp(mine[1]) == reference.parse_timestamp(theirs[1])
        if row["defect"] == d.REPEATED_ROW:
            assert (s_file, mine) == (row["file"], theirs) and int(s_line) > int(row["line"])
        if row["defect"] == d.RESEND_DUPLICATE:
            assert order.index(s_file) > order.index(row["file"]) and s_file.count("_resend")
        if row["defect"] == d.NULL_RESEND:
            assert order.index(s_file) < order.index(row["file"])
            assert reference.number(theirs[2]) is not None


@pytest.mark.parametrize("key", CONFIGS)
def test_ground_truth_is_what_the_rules_conclude(generated, key):
    result, rows, outcome = generated[key]
    quarantined = {(r["file"], int(r["line"])): r for r in rows if r["expected"] in codes.REASONS}
    for where, row in quarantined.items():
        assert outcome.quarantine[where] == row["expected"], row
        ts = reference.parse_timestamp(row["timestamp_utc"])
        expected_day = (
            outcome.first_day[row["file"]] if row["expected"] in reference.EARLY else ts.date()
        )
        assert row["day"] == expected_day.isoformat(), row
    # Nothing is quarantined that the ground truth does not name, but natural z-score outliers.
    unexplained = {w: r for w, r in outcome.quarantine.items() if w not in quarantined}
    assert set(unexplained.values()) <= {codes.OUTLIER_ZSCORE}
    intervals = [r for r in rows if r["expected"] in (codes.QUALITY_FILLED, codes.QUALITY_MISSING)]
    for row in intervals:
        key_ = (row["meter_id"], reference.parse_timestamp(row["timestamp_utc"]))
        assert outcome.quality[key_] == row["expected"], row
    for row in rows:  # a lost reading's interval is filled or missing as the detail says
        said = re.search(r"interval=(\w+)", row["detail"])
        if said:
            key_ = (row["meter_id"], reference.parse_timestamp(row["timestamp_utc"]))
            assert outcome.quality[key_] == said[1], row
    for row in rows:
        if row["expected"] == NORMALIZED:
            survivor = outcome.survivors[(row["file"], int(row["line"]))]
            assert survivor.ts == reference.parse_timestamp(row["timestamp_utc"])
            assert row["day"] == survivor.ts.date().isoformat()
    flags = {
        (r["meter_id"], r["expected"], dt.date.fromisoformat(r["day"]))
        for r in rows
        if r["expected"] in codes.FAULT_RULES
    }
    assert flags == outcome.flags


def test_spikes_clear_the_threshold_with_a_margin(main):
    _, rows, outcome = main
    spikes = [r for r in rows if r["defect"] == d.SPIKE]
    assert spikes
    for row in spikes:
        z, n = outcome.zscores[(row["file"], int(row["line"]))]
        assert z > 4 and n >= 12, row
        assert f"z={z:.2f};n={n};" in row["detail"]


def test_every_class_is_injected_and_faults_flag_the_right_days(main):
    result, rows, _ = main
    assert set(result.counts) == set(d.RATES) | {NEAR_ZERO_STRETCH, STUCK_AT_ZERO, OFFSET_TIMESTAMP}
    assert result.defects == len(rows) - result.counts[OFFSET_TIMESTAMP]
    stuck = sorted(
        (r["expected"], r["day"], r["detail"]) for r in rows if r["defect"] == STUCK_AT_ZERO
    )
    streak = [day for rule, day, _ in stuck if rule == codes.RULE_ZERO_DAILY_TOTAL]
    near = [day for rule, day, _ in stuck if rule == codes.RULE_NEAR_ZERO]
    # Stuck from 00:00 of its first day: near_zero from the 2nd day, zero_daily_total from the 4th.
    first = dt.date.fromisoformat(near[0]) - dt.timedelta(days=1)
    assert streak[0] == (first + dt.timedelta(days=3)).isoformat()
    assert near[-1] == streak[-1] and len(near) == len(streak) + 2


def test_without_defects_the_ground_truth_names_none(tmp_path):
    result = generate(tmp_path, 40, 2, START, seed=9, defects=False)
    rows = truth(result)
    assert result.defects == 0 and {r["defect"] for r in rows} == {OFFSET_TIMESTAMP}
    outcome = reference.run(result.files)
    assert set(outcome.quarantine.values()) <= {codes.OUTLIER_ZSCORE}
    assert not outcome.flags
    assert not any("_resend" in p.name for p in result.files)
    lost = {
        (r.meter, r.ts) for where, r in outcome.survivors.items() if where in outcome.quarantine
    }
    assert set(outcome.quality) == lost  # only natural outliers leave intervals to fill


@pytest.mark.parametrize(
    ("meters", "days", "interval", "message"),
    [
        (0, 1, 15, "meters"),
        (10, 0, 15, "days"),
        (10, 1, 7, "interval_minutes"),
        (10, 1, 45, "interval_minutes"),
    ],
)
def test_rejects_arguments_it_cannot_honour(tmp_path, meters, days, interval, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, meters, days, START, interval_minutes=interval)
