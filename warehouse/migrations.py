"""Upgrading warehouse tables from one layout version to the next (``schema_versions`` records the current one).

``prediction_logs`` version 1 → 2 (event version 2: the decision record with the response's names). The table is
rebuilt, not altered: a new table with the version 2 layout (partitioning and clustering included) is filled from
the old one in one statement, then takes its name; the old table is kept as ``prediction_logs_v1`` (BigQuery) or
dropped in the same transaction (DuckDB). Renamed columns are mapped by ``schemas.warehouse.V1_RENAMES``; the new
``champion_model`` is NULL for old rows; old reason codes (codes only) become ``{"code", "field", "contribution"}``
objects with the field from the reason-code catalogue and no contribution.

DuckDB migrates by itself when the warehouse group starts. BigQuery refuses to start on a version 1 table and
``bnpl warehouse migrate`` runs the rebuild (``--dry-run`` prints the SQL first).
"""

from __future__ import annotations

from typing import Final, Literal

from schemas.reasons import field_of_code
from schemas.warehouse import PREDICTION_LOGS, V1_RENAMES

Dialect = Literal["duckdb", "bigquery"]
#: A column only version 1 has; its presence marks a version 1 table.
V1_MARKER: Final = "event_time"


def _code_to_field(value: str, codes: list[str]) -> str:
    cases = " ".join(f"WHEN '{code}' THEN '{field_of_code(code)}'" for code in codes)
    return f"CASE {value} {cases} ELSE '' END"


def v1_select(dialect: Dialect, source: str, known_codes: list[str]) -> str:
    """``SELECT`` of every version 2 column, in order, from version 1 table ``source``."""
    old_name = {new: old for old, new in V1_RENAMES.items()}
    exprs = []
    for column in PREDICTION_LOGS:
        name = column.name
        if name == "champion_model":
            exprs.append(
                "CAST(NULL AS STRING) AS champion_model" if dialect == "bigquery" else "NULL AS champion_model"
            )
        elif name == "reason_codes":
            field = _code_to_field("c", known_codes)
            if dialect == "duckdb":
                exprs.append(
                    "to_json(list_transform(reason_codes, lambda c: "
                    f"{{'code': c, 'field': {field}, 'contribution': NULL}})) AS reason_codes"
                )
            else:
                exprs.append(
                    f"TO_JSON(ARRAY(SELECT STRUCT(c AS code, {field} AS field, CAST(NULL AS FLOAT64) AS contribution) "  # noqa: S608
                    "FROM UNNEST(reason_codes) AS c)) AS reason_codes"
                )
        elif name in old_name:
            exprs.append(f"{_quote(dialect, old_name[name])} AS {_quote(dialect, name)}")
        else:
            exprs.append(_quote(dialect, name))
    return f"SELECT {', '.join(exprs)} FROM {source}"  # noqa: S608 - our own table and column names


def _quote(dialect: Dialect, name: str) -> str:
    return f"`{name}`" if dialect == "bigquery" else f'"{name}"'
