"""Reason codes, flags and quality codes of DESIGN.md, named once.

Every other module imports these names instead of spelling the strings, so the contract and
the code cannot drift apart silently.
"""

# Section 1: the input columns every file must have (matched case-insensitively after trimming).
REQUIRED_COLUMNS = ("meter_id", "timestamp", "energy_value", "energy_unit")

# Section 1: text that means "no reading" in energy_value (compared after trimming).
MISSING_MARKERS = ("", "NULL", "null", "NaN", "NA", "None")

# Section 2, in rule order. The first rule that rejects a row gives its reason.
MALFORMED_ROW = "malformed_row"  # step 1
MISSING_METER_ID = "missing_meter_id"  # step 1
INVALID_TIMESTAMP = "invalid_timestamp"  # step 2
AMBIGUOUS_TIMESTAMP = "ambiguous_timestamp"  # step 2
FUTURE_TIMESTAMP = "future_timestamp"  # step 2
INVALID_VALUE = "invalid_value"  # step 3
UNKNOWN_UNIT = "unknown_unit"  # step 3
DUPLICATE = "duplicate"  # step 4
NEGATIVE_VALUE = "negative_value"  # step 6
ABOVE_MAX = "above_max"  # step 6
OUTLIER_ZSCORE = "outlier_zscore"  # step 7

REASONS = (
    MALFORMED_ROW,
    MISSING_METER_ID,
    INVALID_TIMESTAMP,
    AMBIGUOUS_TIMESTAMP,
    FUTURE_TIMESTAMP,
    INVALID_VALUE,
    UNKNOWN_UNIT,
    DUPLICATE,
    NEGATIVE_VALUE,
    ABOVE_MAX,
    OUTLIER_ZSCORE,
)

# Reasons of steps 1 to 3: the row never got a usable timestamp, value or unit.
EARLY_REASONS = REASONS[:7]
# Reasons of steps 5 to 7: the interval had a reading, but it was rejected, so it is "missing".
READING_REJECTED_REASONS = (NEGATIVE_VALUE, ABOVE_MAX, OUTLIER_ZSCORE)

# Section 2, step 8: quality of each clean row.
QUALITY_MEASURED = "measured"
QUALITY_FILLED = "filled"
QUALITY_MISSING = "missing"
QUALITIES = (QUALITY_MEASURED, QUALITY_FILLED, QUALITY_MISSING)

# Section 3: fault rules.
RULE_NEAR_ZERO = "near_zero"
RULE_ZERO_DAILY_TOTAL = "zero_daily_total"
FAULT_RULES = (RULE_NEAR_ZERO, RULE_ZERO_DAILY_TOTAL)

# Units accepted in step 3, upper-cased after trimming.
UNIT_WATT = "W"
UNIT_KILOWATT = "KW"
