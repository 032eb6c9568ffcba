"""Runs inside a run: one job made of several engine runs (a folder batch's files, a script's cells or loops)
reports one progress bar over all of them and obeys one Interrupt.

`SubRunControl` is the control each inner run sees: its progress placed within the whole job's (the bar never
jumps back), Interrupt passed through, and Skip ending this inner run rather than one of its batches (a Skip pressed
before it began is spent, not carried into it).
"""
from __future__ import annotations


class SubRunControl:
    def __init__(self, parent, first_job: int, job_count: int, label: str):
        """`first_job`: how many of the whole job's `job_count` batches (A1111's "jobs") came before this run."""
        self.parent, self.first_job, self.job_count, self.label = parent, first_job, job_count, label
        self.skipped = False
        # A Skip pressed between two inner runs (after the last one's sampling) is spent: only one pressed during
        # this run ends it. Dropped at the job's own control, so an enclosing inner run is not marked skipped.
        root = parent
        while isinstance(root, SubRunControl):
            root = root.parent
        root.take_skip()

    @property
    def progress(self):
        return self.parent.progress

    @property
    def interrupted(self) -> bool:
        return self.parent.interrupted or self.skipped

    def take_skip(self) -> bool:
        if not self.skipped and self.parent.take_skip():
            self.skipped = True
            return True
        return False

    @property
    def skip_requested(self) -> bool:
        return self.parent.skip_requested

    def interrupt(self) -> None:
        self.parent.interrupt()

    def skip(self) -> None:
        self.parent.skip()

    def report(self, **changes) -> None:
        changes.pop("started", None)  # the job's start time stands, so the ETA covers all of it
        if "job_count" in changes:
            changes["job_count"] = self.job_count
        if "job_no" in changes:
            changes["job_no"] = self.first_job + changes["job_no"]
        if changes.get("textinfo") and self.label:
            changes["textinfo"] = f"{self.label}: {changes['textinfo']}"
        self.parent.report(**changes)

    def __getattr__(self, name: str):  # anything else a run may ask of its control
        return getattr(self.parent, name)
