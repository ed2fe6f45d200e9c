"""An HTTP-level fake of the BigQuery REST endpoints the warehouse sink uses, for the real client library.

Endpoints: datasets.insert/get, tables.insert/get, tabledata.insertAll, jobs.insert/get and getQueryResults. It
validates rows against the stored table schema like BigQuery does (REQUIRED, types, REPEATED), de-duplicates on
insertId, honours skipInvalidRows, records every request, and can answer the next insertAll calls with given error
statuses (429, 503, …). Query jobs are recorded (``queries``) and always succeed; of their effects the fake applies
only what changes table metadata in the statements the warehouse migration issues: ``CREATE TABLE … (columns)
PARTITION BY DATE(col) CLUSTER BY … AS SELECT`` creates the table (empty: the fake runs no SQL) and
``ALTER TABLE … RENAME TO`` renames one with its rows.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/bigquery/v2/projects/"


class FakeBigQuery:
    """State and the server thread."""

    def __init__(self) -> None:
        self.datasets: dict[str, dict[str, Any]] = {}
        self.tables: dict[tuple[str, str], dict[str, Any]] = {}
        self.rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.queries: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.fail_next: list[int] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                status, body = fake.handle("GET", self.path.split("?")[0], None)
                self._reply(status, body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                status, body = fake.handle("POST", self.path.split("?")[0], payload)
                self._reply(status, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeBigQuery:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- behaviour -------------------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, body))
            rest = path.removeprefix(PREFIX)
            if m := re.fullmatch(r"([^/]+)/datasets", rest):
                dataset_id = body["datasetReference"]["datasetId"]
                if dataset_id in self.datasets:
                    return 409, {"error": {"code": 409, "message": "Already Exists", "status": "ALREADY_EXISTS"}}
                self.datasets[dataset_id] = body
                return 200, body
            if m := re.fullmatch(r"([^/]+)/datasets/([^/]+)", rest):
                found = self.datasets.get(m.group(2))
                return (200, found) if found else (404, {"error": {"code": 404, "message": "Not found"}})
            if m := re.fullmatch(r"([^/]+)/datasets/([^/]+)/tables", rest):
                key = (m.group(2), body["tableReference"]["tableId"])
                if key in self.tables:
                    return 409, {"error": {"code": 409, "message": "Already Exists", "status": "ALREADY_EXISTS"}}
                self.tables[key] = body
                self.rows[key] = {}
                return 200, body
            if m := re.fullmatch(r"([^/]+)/datasets/([^/]+)/tables/([^/]+)", rest):
                found = self.tables.get((m.group(2), m.group(3)))
                return (200, found) if found else (404, {"error": {"code": 404, "message": "Not found"}})
            if method == "POST" and (m := re.fullmatch(r"([^/]+)/jobs", rest)):
                return 200, self._run_job(m.group(1), body)
            if m := re.fullmatch(r"([^/]+)/(jobs|queries)/([^/]+)", rest):
                job = self.jobs.get(m.group(3))
                if job is None:
                    return 404, {"error": {"code": 404, "message": "no such job"}}
                if m.group(2) == "jobs":
                    return 200, job
                return 200, {"jobReference": job["jobReference"], "jobComplete": True, "totalRows": "0"}
            if m := re.fullmatch(r"([^/]+)/datasets/([^/]+)/tables/([^/]+)/insertAll", rest):
                if self.fail_next:
                    status = self.fail_next.pop(0)
                    return status, {"error": {"code": status, "message": "injected failure"}}
                return 200, self._insert_all((m.group(2), m.group(3)), body)
            return 404, {"error": {"code": 404, "message": f"no fake for {method} {path}"}}

    def _run_job(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        sql = body["configuration"]["query"]["query"]
        self.queries.append(sql)
        table = r"`[^.`]+\.([^.`]+)\.([^`]+)`"
        if m := re.match(rf"CREATE TABLE {table} \((.*?)\) PARTITION BY DATE\(`(\w+)`\) CLUSTER BY ([\w, ]+?) ", sql):
            dataset, name, columns, partition, cluster = m.groups()
            fields = []
            for col in re.findall(r"`(\w+)` ((?:ARRAY<)?\w+>?)( NOT NULL)?", columns):
                col_name, col_type, not_null = col
                repeated = col_type.startswith("ARRAY<")
                mode = "REPEATED" if repeated else ("REQUIRED" if not_null else "NULLABLE")
                fields.append({"name": col_name, "type": col_type.removeprefix("ARRAY<").rstrip(">"), "mode": mode})
            self.tables[(dataset, name)] = {
                "tableReference": {"projectId": project, "datasetId": dataset, "tableId": name},
                "schema": {"fields": fields},
                "timePartitioning": {"type": "DAY", "field": partition},
                "clustering": {"fields": [c.strip() for c in cluster.split(",")]},
            }
            self.rows[(dataset, name)] = {}
        elif m := re.fullmatch(rf"ALTER TABLE {table} RENAME TO `(\w+)`", sql):
            dataset, old, new = m.groups()
            table_body = self.tables.pop((dataset, old))
            table_body["tableReference"]["tableId"] = new
            self.tables[(dataset, new)] = table_body
            self.rows[(dataset, new)] = self.rows.pop((dataset, old), {})
        job_id = body.get("jobReference", {}).get("jobId") or f"job{len(self.jobs)}"
        job = {
            **body,
            "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
            "status": {"state": "DONE"},
            "statistics": {"query": {"statementType": "SCRIPT"}},
        }
        self.jobs[job_id] = job
        return job

    def _insert_all(self, key: tuple[str, str], body: dict[str, Any]) -> dict[str, Any]:
        table = self.tables.get(key)
        if table is None:
            return {"insertErrors": [{"index": 0, "errors": [{"reason": "notFound", "message": "no table"}]}]}
        fields = table["schema"]["fields"]
        errors, valid = [], []
        for index, row in enumerate(body["rows"]):
            problem = _row_error(fields, row["json"])
            if problem:
                errors.append({"index": index, "errors": [{"reason": "invalid", "message": problem}]})
            else:
                valid.append(row)
        if errors and not body.get("skipInvalidRows"):
            bad = {e["index"] for e in errors}
            errors += [
                {"index": i, "errors": [{"reason": "stopped", "message": ""}]}
                for i in range(len(body["rows"]))
                if i not in bad
            ]
            return {"insertErrors": errors}
        for row in valid:
            self.rows[key].setdefault(row["insertId"], row["json"])  # insertId de-duplication
        return {"insertErrors": errors} if errors else {}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "STRING":
        return isinstance(value, str)
    if kind in ("INT64", "INTEGER"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("FLOAT64", "FLOAT"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("BOOL", "BOOLEAN"):
        return isinstance(value, bool)
    if kind == "TIMESTAMP":
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            return False
        return True
    if kind == "JSON":
        try:
            json.loads(value) if isinstance(value, str) else json.dumps(value)
        except ValueError:
            return False
        return True
    return False


def _row_error(fields: list[dict[str, Any]], row: dict[str, Any]) -> str | None:
    for field in fields:
        name, mode = field["name"], field.get("mode", "NULLABLE")
        value = row.get(name)
        if value is None:
            if mode == "REQUIRED":
                return f"Missing required field: {name}."
            continue
        if mode == "REPEATED":
            if not isinstance(value, list) or not all(_type_ok(field["type"], v) for v in value):
                return f"Array specified for non-repeated field or bad element: {name}."
        elif not _type_ok(field["type"], value):
            return f"Cannot convert value to {field['type']}: {name}."
    unknown = set(row) - {f["name"] for f in fields}
    return f"no such field: {sorted(unknown)[0]}." if unknown else None
