"""An HTTP-level fake of the BigQuery REST endpoints the warehouse sink uses, for the real client library.

Endpoints: datasets.insert/get, tables.insert/get/delete, tabledata.insertAll, jobs.insert/get, getQueryResults,
and load-job uploads (``/upload/bigquery/v2/projects/{p}/jobs``, multipart and resumable: initiation POST, then
PUT of the data with ``Content-Range``). It validates rows against the stored table schema like BigQuery does
(REQUIRED, types, REPEATED), de-duplicates insertAll on insertId within a minute of its ``clock`` (as BigQuery
does, best effort), honours skipInvalidRows, records every request
(``requests``; ``uploads`` the upload kinds, ``statuses`` what each request was answered) and can answer the next
insertAll calls with given error statuses (429, 503, …).

Jobs: a job id already used answers 409 (the client raises ``Conflict``); a job is PENDING when inserted and DONE
at its first ``jobs.get``. Load jobs (newline-delimited JSON only) check their configuration (format, write and
create dispositions, maxBadRecords), load into the destination (``WRITE_TRUNCATE`` replaces its rows), refuse rows
that do not fit the schema or whose prediction_id is in ``reject_ids`` as BigQuery does (``JSON parsing error in
row starting at position N``, the job failing when there are more than maxBadRecords), and the next
``fail_loads`` load jobs end with a backend error. Query jobs are recorded (``queries``); of their effects the
fake applies the warehouse sink's ``MERGE … WHEN NOT MATCHED THEN INSERT`` (the staged rows whose prediction_id is
not in the target within the ``ON`` clause's timestamp range are appended; ``merges`` records each) and what
changes table metadata in the statements the warehouse migration issues: ``CREATE TABLE … (columns) PARTITION BY
DATE(col) CLUSTER BY … AS SELECT`` creates the table (empty: the fake runs no other SQL) and ``ALTER TABLE … RENAME
TO`` renames one with its rows. Rows a load or a MERGE adds are keyed ``<job id>#<n>`` in ``rows`` (never merged
on a key), so a duplicate shows.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/bigquery/v2/projects/"
UPLOAD_PREFIX = "/upload/bigquery/v2/projects/"
#: insertAll de-duplicates on insertId for about a minute (best effort); the fake for exactly that long.
INSERT_ID_WINDOW_S = 60.0


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
        self.fail_loads = 0
        self.reject_ids: dict[str, str] = {}
        self.uploads: list[str] = []
        self.statuses: list[tuple[str, str, int]] = []
        self.merges: list[dict[str, Any]] = []
        self.violations: list[str] = []
        #: The fake's clock (insertId window); tests advance it (``fake.clock = lambda: time.time() + 600``).
        self.clock: Callable[[], float] = time.time
        self._insert_ids: dict[tuple[tuple[str, str], str], float] = {}
        #: Load job id → the prediction ids it loaded.
        self.loaded: dict[str, list[str]] = {}
        self._resumable: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                raw = self._body() if method in ("POST", "PUT") else b""
                headers: dict[str, str] | None = None
                try:
                    if url.path.startswith(UPLOAD_PREFIX):
                        query, sent = parse_qs(url.query), dict(self.headers)
                        status, body, headers = fake.upload(method, url.path, query, sent, raw)
                    else:
                        status, body = fake.handle(method, url.path, json.loads(raw or b"{}") if raw else None)
                except AssertionError as exc:  # a request BigQuery would refuse: recorded, answered 400
                    with fake.lock:
                        fake.violations.append(f"{method} {self.path}: {exc}")
                    status, body = 400, {"error": {"code": 400, "message": f"fake: {exc}", "status": "INVALID"}}
                with fake.lock:
                    fake.statuses.append((method, url.path, status))
                self._reply(status, body, headers)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

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
                key = (m.group(2), m.group(3))
                found = self.tables.get(key)
                if found is None:
                    return 404, {"error": {"code": 404, "message": "Not found", "status": "NOT_FOUND"}}
                if method == "DELETE":
                    del self.tables[key]
                    self.rows.pop(key, None)
                    return 204, None
                return 200, found
            if method == "POST" and (m := re.fullmatch(r"([^/]+)/jobs", rest)):
                job_id = (body.get("jobReference") or {}).get("jobId")
                if job_id in self.jobs:
                    return _conflict(job_id)
                return 200, self._run_job(m.group(1), body)
            if m := re.fullmatch(r"([^/]+)/(jobs|queries)/([^/]+)", rest):
                job = self.jobs.get(m.group(3))
                if job is None:
                    return 404, {"error": {"code": 404, "message": "no such job", "status": "NOT_FOUND"}}
                job["status"]["state"] = "DONE"  # PENDING when inserted, DONE once looked at
                if m.group(2) == "jobs":
                    return 200, {k: v for k, v in job.items() if k != "_result"}
                result = job.get("_result") or {"totalRows": "0"}
                return 200, {"jobReference": job["jobReference"], "jobComplete": True, **result}
            if m := re.fullmatch(r"([^/]+)/datasets/([^/]+)/tables/([^/]+)/insertAll", rest):
                if self.fail_next:
                    status = self.fail_next.pop(0)
                    return status, {"error": {"code": status, "message": "injected failure"}}
                return 200, self._insert_all((m.group(2), m.group(3)), body)
            return 404, {"error": {"code": 404, "message": f"no fake for {method} {path}"}}

    # --- load jobs -------------------------------------------------------------------------------------------------
    def upload(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], raw: bytes
    ) -> tuple[int, Any, dict[str, str] | None]:
        """A load job's upload: multipart (metadata and data in one request) or resumable (POST the metadata, PUT
        the data)."""
        with self.lock:
            self.requests.append((method, path, None))
            m = re.fullmatch(rf"{UPLOAD_PREFIX}([^/]+)/jobs", path)
            kind = (query.get("uploadType") or [""])[0]
            if m is None or kind not in ("multipart", "resumable"):
                return 400, {"error": {"code": 400, "message": f"bad upload {method} {path} {query}"}}, None
            project = m.group(1)
            if method == "POST" and kind == "multipart":
                self.uploads.append("multipart")
                ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
                boundary = re.search(r'boundary="?([^";]+)"?', ctype)
                assert ctype.startswith("multipart/related"), ctype
                assert boundary, ctype
                parts = raw.split(b"--" + boundary.group(1).encode())
                metadata, data = (p.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for p in parts[1:3])
                status, body = self._insert_load(project, json.loads(metadata), data)
                return status, body, None
            if method == "POST":  # resumable: initiation
                self.uploads.append("resumable")
                upload_id = f"u{next(self._ids)}"
                self._resumable[upload_id] = {"metadata": json.loads(raw), "data": b""}
                location = f"{self.endpoint}{path}?uploadType=resumable&upload_id={upload_id}"
                return 200, {}, {"Location": location}
            upload_id = (query.get("upload_id") or [""])[0]
            state = self._resumable.get(upload_id)
            if method != "PUT" or state is None:
                return 404, {"error": {"code": 404, "message": "no such upload"}}, None
            state["data"] += raw
            span = {k.lower(): v for k, v in headers.items()}.get("content-range", "")
            total = span.rsplit("/", 1)[-1]
            if total == "*" or len(state["data"]) < int(total):
                return 308, None, {"Range": f"bytes=0-{len(state['data']) - 1}"}
            del self._resumable[upload_id]
            status, body = self._insert_load(project, state["metadata"], state["data"])
            return status, body, None

    def _insert_load(self, project: str, metadata: dict[str, Any], data: bytes) -> tuple[int, Any]:
        job_id = metadata["jobReference"]["jobId"]
        if job_id in self.jobs:
            return _conflict(job_id)
        load = metadata["configuration"]["load"]
        assert load["sourceFormat"] == "NEWLINE_DELIMITED_JSON", load
        assert load["writeDisposition"] in ("WRITE_TRUNCATE", "WRITE_APPEND", "WRITE_EMPTY"), load
        assert load.get("createDisposition", "CREATE_IF_NEEDED") in ("CREATE_NEVER", "CREATE_IF_NEEDED"), load
        dest = load["destinationTable"]
        key = (dest["datasetId"], dest["tableId"])
        status: dict[str, Any] = {"state": "PENDING"}
        stats: dict[str, Any] = {"load": {"inputFileBytes": str(len(data)), "outputRows": "0", "badRecords": "0"}}
        if key not in self.tables:
            if load.get("createDisposition") == "CREATE_NEVER" or "schema" not in load:
                status["errorResult"] = {"reason": "notFound", "message": f"Not found: Table {key[1]}"}
            else:
                self.tables[key] = {
                    "tableReference": {"projectId": project, **dict(zip(("datasetId", "tableId"), key, strict=True))},
                    "schema": load["schema"],
                }
                self.rows[key] = {}
        if self.fail_loads and "errorResult" not in status:
            self.fail_loads -= 1
            status["errorResult"] = {"reason": "backendError", "message": "injected load failure"}
        if "errorResult" not in status:
            fields = self.tables[key]["schema"]["fields"]
            good, errors, position = [], [], 0
            for line in data.split(b"\n"):
                if line.strip():
                    row = json.loads(line)
                    problem = _row_error(fields, row) or self.reject_ids.get(str(row.get("prediction_id")))
                    if problem:
                        errors.append(
                            {
                                "reason": "invalid",
                                "message": "Error while reading data, error message: JSON parsing error in row "
                                f"starting at position {position}: {problem}",
                            }
                        )
                    else:
                        good.append(row)
                position += len(line) + 1
            if len(errors) > int(load.get("maxBadRecords", 0)):
                status["errorResult"] = {
                    "reason": "invalid",
                    "message": f"Error while reading data, error message: JSON table encountered too many errors, "
                    f"giving up. Rows: {len(good) + len(errors)}; errors: {len(errors)}.",
                }
                status["errors"] = [status["errorResult"], *errors]
            else:
                if load["writeDisposition"] == "WRITE_TRUNCATE":
                    self.rows[key] = {}
                elif load["writeDisposition"] == "WRITE_EMPTY" and self.rows[key]:
                    status["errorResult"] = {"reason": "duplicate", "message": "table not empty"}
                if "errorResult" not in status:
                    for n, row in enumerate(good):
                        self.rows[key][f"{job_id}#{n}"] = row
                    self.loaded[job_id] = [str(r.get("prediction_id")) for r in good]
                    stats["load"].update(outputRows=str(len(good)), badRecords=str(len(errors)))
                    if errors:
                        status["errors"] = errors
        job = {
            **metadata,
            "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
            "status": status,
            "statistics": stats,
        }
        self.jobs[job_id] = job
        return 200, job

    def _merge(self, sql: str) -> int:
        """Apply the sink's MERGE: append the staged rows whose prediction_id is not in the target's rows within
        the ``ON`` clause's range of the target's partition column. Returns the rows inserted."""
        table = r"`[^.`]+\.([^.`]+)\.([^`]+)`"
        m = re.fullmatch(
            rf"MERGE {table} T\nUSING {table} S\nON T\.prediction_id = S\.prediction_id\n"
            r"  AND T\.(\w+) >= TIMESTAMP '([\d-]+)' AND T\.(\w+) < TIMESTAMP '([\d-]+)'\n"
            r"WHEN NOT MATCHED THEN INSERT \(([^)]*)\) VALUES \(([^)]*)\)",
            sql,
        )
        assert m, f"the fake does not understand this MERGE:\n{sql}"
        t_ds, t_name, s_ds, s_name, col, lo, col2, hi, insert_cols, values = m.groups()
        target, staging = (t_ds, t_name), (s_ds, s_name)
        if staging not in self.tables:
            raise LookupError(f"Not found: Table {s_name}")
        partition = self.tables[target].get("timePartitioning", {}).get("field")
        assert col == col2 == partition, f"MERGE must filter the target's partition column {partition}, not {col}"
        names = [f["name"] for f in self.tables[target]["schema"]["fields"]]
        assert [c.strip("` ") for c in insert_cols.split(",")] == names == [c.strip("` ") for c in values.split(",")]
        start, end = datetime.fromisoformat(lo + "T00:00:00+00:00"), datetime.fromisoformat(hi + "T00:00:00+00:00")

        def in_range(row: dict[str, Any]) -> bool:
            ts = datetime.fromisoformat(str(row[col]).replace("Z", "+00:00"))
            return start <= ts < end

        present = {r["prediction_id"] for r in self.rows[target].values() if in_range(r)}
        added = 0
        merge_id = len(self.merges)
        for row in list(self.rows[staging].values()):
            if row["prediction_id"] not in present:
                self.rows[target][f"merge{merge_id}#{added}"] = row
                added += 1
        self.merges.append({"target": t_name, "staging": s_name, "from": lo, "to": hi, "inserted": added})
        return added

    def _run_job(self, project: str, body: dict[str, Any]) -> dict[str, Any]:
        sql = body["configuration"]["query"]["query"]
        self.queries.append(sql)
        statement, affected, error = "SCRIPT", None, None
        result: dict[str, Any] | None = None
        if sql.startswith("SELECT FORMAT_TIMESTAMP('%F', assessment_timestamp, 'UTC') AS day"):
            statement, result = "SELECT", self._daily_counts(sql, body["configuration"]["query"])
        elif sql.startswith("MERGE "):
            statement = "MERGE"
            try:
                affected = self._merge(sql)
            except LookupError as exc:
                error = {"reason": "notFound", "message": str(exc)}
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
        query_stats: dict[str, Any] = {"statementType": statement}
        if affected is not None:
            query_stats["numDmlAffectedRows"] = str(affected)
        job = {
            **body,
            **({"_result": result} if result is not None else {}),
            "jobReference": {"projectId": project, "jobId": job_id, "location": "US"},
            "status": {"state": "PENDING", **({"errorResult": error, "errors": [error]} if error else {})},
            "statistics": {"query": query_stats},
        }
        self.jobs[job_id] = job
        return job

    def _daily_counts(self, sql: str, query: dict[str, Any]) -> dict[str, Any]:
        """The reconcile query: rows and distinct prediction ids per (UTC day, api_instance) in [@start, @end)."""
        if "WHERE assessment_timestamp >= @start AND assessment_timestamp < @end" not in sql:
            self.violations.append(f"a count without the partition filter: {sql}")
        params = {p["name"]: p["parameterValue"]["value"] for p in query.get("queryParameters", [])}
        start, end = (datetime.fromisoformat(params[k].replace(" ", "T")) for k in ("start", "end"))
        m = re.search(r"FROM `[^.`]+\.([^.`]+)\.prediction_logs`", sql)
        assert m is not None, sql
        groups: dict[tuple[str, str], list[str]] = {}
        for row in self.rows.get((m.group(1), "prediction_logs"), {}).values():
            at = datetime.fromisoformat(str(row["assessment_timestamp"]).replace("Z", "+00:00"))
            if start <= at < end:
                key = (at.astimezone(start.tzinfo).strftime("%Y-%m-%d"), str(row["api_instance"]))
                groups.setdefault(key, []).append(row["prediction_id"])
        fields = [
            {"name": "day", "type": "STRING", "mode": "NULLABLE"},
            {"name": "api_instance", "type": "STRING", "mode": "NULLABLE"},
            {"name": "n", "type": "INTEGER", "mode": "NULLABLE"},
            {"name": "distinct_ids", "type": "INTEGER", "mode": "NULLABLE"},
        ]
        rows = [
            {"f": [{"v": day}, {"v": instance}, {"v": str(len(ids))}, {"v": str(len(set(ids)))}]}
            for (day, instance), ids in sorted(groups.items())
        ]
        return {"schema": {"fields": fields}, "rows": rows, "totalRows": str(len(rows))}

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
        now = self.clock()
        for row in valid:  # insertId de-duplication, within the window only
            seen = self._insert_ids.get((key, row["insertId"]))
            if seen is not None and now - seen < INSERT_ID_WINDOW_S:
                continue
            self._insert_ids[(key, row["insertId"])] = now
            rows = self.rows[key]
            rows[row["insertId"] if row["insertId"] not in rows else f"{row['insertId']}@{len(rows)}"] = row["json"]
        return {"insertErrors": errors} if errors else {}


def _conflict(job_id: str) -> tuple[int, Any]:
    return 409, {"error": {"code": 409, "message": f"Already Exists: Job {job_id}", "status": "ALREADY_EXISTS"}}


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
