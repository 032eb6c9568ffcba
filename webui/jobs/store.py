"""The job history in SQLite: every job's request, state, timings, saved images and error, kept across restarts.

The queue writes as things happen: a row when a job is queued, its start, each image the moment it is saved, its
end. So a crash mid-batch loses no record of an image already on disk; at the next start `recover` marks the jobs
that were queued or running then as failed ("the server stopped"), with the images they had saved.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import EncodedPayload, decode_payload, encode_payload

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}',
    payload TEXT,
    payload_complete INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_id ON jobs (id);
CREATE TABLE IF NOT EXISTS job_inputs (
    seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    png BLOB NOT NULL,
    PRIMARY KEY (seq, n)
);
CREATE TABLE IF NOT EXISTS job_outputs (
    seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    path TEXT NOT NULL,
    infotext TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (seq, n)
);
"""

# what the history shows of a generation request without decoding it
_SUMMARY_FIELDS = ("mode", "prompt", "negative_prompt", "width", "height", "steps", "sampler_name", "scheduler",
                   "cfg_scale", "seed", "batch_size", "n_iter", "checkpoint")
STOPPED = "The server stopped before this job finished"
SQLITE_MAX_INT = 2 ** 63 - 1  # SQLite's INTEGER: a larger seq or offset cannot be bound (OverflowError)


@dataclass
class JobRecord:
    seq: int
    id: str
    kind: str
    source: str
    state: str
    summary: dict
    created: float
    started: float | None
    finished: float | None
    error: str | None
    result: dict
    payload_complete: bool
    outputs: list[dict] = field(default_factory=list)  # [{"path", "infotext"}], in the order they were saved

    @property
    def images(self) -> list[str]:
        return [output["path"] for output in self.outputs]

    def as_dict(self) -> dict:
        """The record as JSON can carry it (a stored NaN or infinity, say a settings change's, reads as null)."""
        return json_safe({"seq": self.seq, "id": self.id, "kind": self.kind, "source": self.source,
                          "state": self.state, "summary": self.summary, "created": self.created,
                          "started": self.started, "finished": self.finished, "error": self.error,
                          "result": self.result, "images": self.images, "rerunnable": self.payload_complete})


def json_safe(value: Any) -> Any:
    """`value` with every float that JSON (RFC 8259) has no number for, NaN and the infinities, as None: what a
    JSON response may hold. Stored records keep what the job was given, however odd; rendering them never fails."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _storable(seq: Any) -> bool:
    """Whether `seq` is a number SQLite can look up (any other names no job)."""
    return -SQLITE_MAX_INT - 1 <= int(seq) <= SQLITE_MAX_INT


def summarize_payload(payload: Any) -> dict:
    if isinstance(payload, (str, int, float)) or payload is None:
        return {"value": payload}
    if isinstance(payload, dict):
        return {key: value for key, value in payload.items() if isinstance(value, (str, int, float, bool))}
    return {name: getattr(payload, name) for name in _SUMMARY_FIELDS
            if isinstance(getattr(payload, name, None), (str, int, float, bool))}


def summarize_result(result: Any) -> dict:
    """What the history keeps of a result: for generations the seeds, infotexts, warnings (the images are files)."""
    if result is None:
        return {}
    if hasattr(result, "infotexts"):
        keep = ("seeds", "subseeds", "prompts", "infotexts", "saved_paths", "warnings", "interrupted", "elapsed",
                "model_name")
        summary = {name: getattr(result, name) for name in keep if hasattr(result, name)}
        summary["images"] = len(getattr(result, "images", []) or [])
        return json.loads(json.dumps(summary, default=str))
    try:
        return {"value": json.loads(json.dumps(result))}
    except (TypeError, ValueError):
        return {"value": str(result)}


def _where(kinds: tuple[str, ...] | None, states: tuple[str, ...] | None) -> tuple[str, list]:
    where, args = [], []
    for column, values in (("kind", kinds), ("state", states)):
        if values:
            where.append(f"{column} IN ({', '.join('?' * len(values))})")
            args.extend(values)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


class JobStore:
    """Thread-safe: the queue's worker and the request threads share one connection under a lock."""

    def __init__(self, path: Path | str, keep: int = 2000, keep_inputs: int = 100):
        """`keep`: jobs kept; `keep_inputs`: the newest jobs whose input images (init images, masks, ControlNet
        images) are kept, so that they can be re-run; older ones keep their record and outputs only."""
        self.path = Path(path)
        self.keep, self.keep_inputs = keep, keep_inputs
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writes (the queue) -------------------------------------------------------------------------------------
    def add(self, job_id: str, kind: str, payload: Any, source: str = "", state: str = "queued",
            created: float | None = None, encoded: EncodedPayload | None = None) -> int:
        """A new row for a queued job; returns its sequence number (ids given by clients may repeat).
        `encoded`: the payload already encoded (`records.encode_payload`), so a caller can do that slow part
        outside its own locks."""
        if encoded is None:
            try:
                encoded = encode_payload(payload)
            except Exception as exc:  # noqa: BLE001 - a payload we cannot store never stops the job itself
                log.warning("job %s: its request could not be stored (%s)", job_id, exc)
                encoded = EncodedPayload("null", [], complete=False)
        with self._lock, self._db:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO jobs (id, kind, source, state, summary, payload, payload_complete, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, source, state, json.dumps(summarize_payload(payload), default=str), encoded.json,
                 int(encoded.complete), created or time.time()))
            seq = cursor.lastrowid
            self._db.executemany("INSERT INTO job_inputs (seq, n, png) VALUES (?, ?, ?)",
                                 [(seq, n, data) for n, data in enumerate(encoded.images)])
        return seq

    def started(self, seq: int, at: float) -> None:
        self._execute("UPDATE jobs SET state = 'running', started = ? WHERE seq = ?", (at, seq))

    def add_output(self, seq: int, path: str, infotext: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT INTO job_outputs (seq, n, path, infotext) VALUES "
                             "(?, (SELECT COUNT(*) FROM job_outputs WHERE seq = ?), ?, ?)",
                             (seq, seq, str(path), infotext or ""))

    def finished(self, seq: int, state: str, at: float, error: str | None = None, result: Any = None) -> None:
        self._execute("UPDATE jobs SET state = ?, finished = ?, error = ?, result = ? WHERE seq = ?",
                      (state, at, error, json.dumps(summarize_result(result)), seq))
        self._trim()

    def recover(self) -> int:
        """Jobs left queued or running by a previous process (a crash, a kill) are marked failed; returns how many."""
        with self._lock:
            rows = self._db.execute("SELECT seq, (SELECT COUNT(*) FROM job_outputs o WHERE o.seq = jobs.seq) AS saved "
                                    "FROM jobs WHERE state IN ('queued', 'running')").fetchall()
            for row in rows:
                saved = row["saved"]
                note = f"{STOPPED} ({saved} image{'s' if saved != 1 else ''} had been saved)" if saved else STOPPED
                self._db.execute("UPDATE jobs SET state = 'failed', error = ?, finished = COALESCE(finished, ?) "
                                 "WHERE seq = ?", (note, time.time(), row["seq"]))
        return len(rows)

    def delete(self, seq: int) -> bool:
        if not _storable(seq):
            return False
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE seq = ? AND state NOT IN ('queued', 'running')",
                                    (seq,)).rowcount > 0

    # --- reads (history views) ----------------------------------------------------------------------------------
    def list(self, limit: int = 50, offset: int = 0, kinds: tuple[str, ...] | None = None,
             states: tuple[str, ...] | None = None) -> list[JobRecord]:
        """Newest first. `limit` and `offset` beyond SQLite's integers are read as its largest (no more rows)."""
        clause, args = _where(kinds, states)
        limit, offset = (min(int(value), SQLITE_MAX_INT) for value in (limit, offset))
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs {clause} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
            return [self._record(row) for row in rows]

    def count(self, kinds: tuple[str, ...] | None = None) -> int:
        clause, args = _where(kinds, None)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM jobs {clause}", args).fetchone()[0]

    def get(self, job_id: str) -> JobRecord | None:
        """The latest job with this id."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ? ORDER BY seq DESC LIMIT 1", (job_id,)).fetchone()
            return self._record(row) if row is not None else None

    def get_seq(self, seq: int) -> JobRecord | None:
        if not _storable(seq):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE seq = ?", (int(seq),)).fetchone()
            return self._record(row) if row is not None else None

    def payload(self, seq: int) -> Any:
        """The job's request rebuilt (PayloadError if it cannot be)."""
        if not _storable(seq):
            raise KeyError(f"no job #{seq} in the history")
        with self._lock:
            row = self._db.execute("SELECT payload FROM jobs WHERE seq = ?", (int(seq),)).fetchone()
            images = [r["png"] for r in self._db.execute("SELECT png FROM job_inputs WHERE seq = ? ORDER BY n",
                                                         (int(seq),))]
        if row is None:
            raise KeyError(f"no job #{seq} in the history")
        return decode_payload(row["payload"] or "null", images)

    # --- internals ----------------------------------------------------------------------------------------------
    def _record(self, row: sqlite3.Row) -> JobRecord:
        outputs = [{"path": r["path"], "infotext": r["infotext"]} for r in
                   self._db.execute("SELECT path, infotext FROM job_outputs WHERE seq = ? ORDER BY n", (row["seq"],))]
        return JobRecord(seq=row["seq"], id=row["id"], kind=row["kind"], source=row["source"], state=row["state"],
                         summary=json.loads(row["summary"] or "{}"), created=row["created"], started=row["started"],
                         finished=row["finished"], error=row["error"], result=json.loads(row["result"] or "{}"),
                         payload_complete=bool(row["payload_complete"]), outputs=outputs)

    def _execute(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def _trim(self) -> None:
        """Forget the oldest finished jobs beyond `keep` (their image files stay where they were saved)."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE state NOT IN "
                             "('queued', 'running') ORDER BY seq DESC LIMIT -1 OFFSET ?)", (self.keep,))
            old_inputs = "SELECT seq FROM jobs ORDER BY seq DESC LIMIT -1 OFFSET ?"
            if self._db.execute(f"SELECT 1 FROM job_inputs WHERE seq IN ({old_inputs}) LIMIT 1",
                                (self.keep_inputs,)).fetchone():
                self._db.execute(f"UPDATE jobs SET payload_complete = 0 WHERE seq IN ({old_inputs}) AND seq IN "
                                 "(SELECT seq FROM job_inputs)", (self.keep_inputs,))
                self._db.execute(f"DELETE FROM job_inputs WHERE seq IN ({old_inputs})", (self.keep_inputs,))
