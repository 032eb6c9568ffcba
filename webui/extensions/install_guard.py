"""A guard on what extensions install: an extension's `install.py` (and `launch.run_pip`) must never replace a
package the web UI needs.

How: the distributions the web UI's locks name (`requirements.lock`, `requirements-cuda.lock`) that are installed
become pip constraints pinned to their installed versions (local labels such as `+cu128` included), handed to
every pip that install.py starts through `PIP_CONSTRAINT`. Distributions that would overwrite a locked one's
files (`opencv-python` over `opencv-python-headless`'s `cv2`) are constrained to nothing. An extension that needs
another version then makes pip's resolver fail before anything is installed; pip's report (read from its log,
`PIP_LOG`, so it is found even when install.py hides pip's output) names the package and both versions.

Belt and braces: the versions (and files) of the locked distributions are compared before and after install.py,
so an install.py that goes around pip's constraints (`pip uninstall`, `--isolated`, its own environment) is
caught, named, and repaired where pip can. pip 26.2 and later keep these constraints out of isolated build
environments (only `--build-constraint` reaches those), so building an sdist is not affected.

Only the standard library is used: `launch` (imported by install.py in a bare subprocess) imports this module.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCK_FILES = (PROJECT_ROOT / "requirements.lock", PROJECT_ROOT / "requirements-cuda.lock")
ENV_MARKER = "WEBUI_INSTALL_GUARD"  # the constraints file of the guarded install this process runs in
FORBIDDEN = "<0"  # a constraint no version meets: pip installs nothing of that name
# pip before 26.2 applies PIP_CONSTRAINT inside isolated build environments too: build back-ends stay unpinned there
# (still watched by the before/after comparison) so that an sdist asking for another setuptools still builds.
BUILD_TOOLS = ("setuptools", "wheel")
PIP_SEPARATE_BUILD_CONSTRAINTS = (26, 2)
# Distributions that install the same import package: installing one overwrites the files of another.
SAME_FILES = (
    ("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python", "opencv-contrib-python-headless")),
    ("PIL", ("pillow", "pillow-simd")),
)

_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.,]+ ?")  # PIP_LOG's prefix on each line
_REQUIRER = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])? (?P<version>\S+) "
                       r"depends on (?P<dep>.+)$")
_REQUEST = re.compile(r"^The user requested (?P<constraint>\(constraint\) )?(?P<req>.+)$")
_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<spec>[^;]*?)\s*"
                  r"(?:;\s*(?P<marker>.*))?$")
_EXTRA_MARKER = re.compile(r"""\bextra\s*==\s*["']([^"']+)["']""")
# pip's other way of saying it (no candidate left once the constraints apply):
# "Could not find a version that satisfies the requirement transformers[torch]<5; extra == "magicprompt"
#  (from dynamicprompts[attentiongrabber,magicprompt]) (from versions: ...)"
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement (?P<req>.+?) \(from "
                         r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[(?P<extras>[^\]]*)\])?(?:[^)]*)\)")
# "Collecting dynamicprompts[attentiongrabber,magicprompt]~=0.31.0": the requirement as the extension gave it
_COLLECTING = re.compile(r"^Collecting (?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?(?P<spec>[^\s(]*)")


def canonical(name: str) -> str:
    """PEP 503's normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(lock_files: Iterable[Path] = LOCK_FILES) -> list[str]:
    """The distribution names pinned in the lock files that exist (pip-compile's format: `name==version \\`)."""
    names: list[str] = []
    for path in lock_files:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            if line[:1].isalnum():
                name = canonical(re.split(r"[=<>!~ ;\[@]", line, maxsplit=1)[0])
                if name not in names:
                    names.append(name)
    return names


# --- what the target Python has installed (asked in a subprocess: it may not be this interpreter) ----------------
_PROBE = r"""
import json, sys
from importlib import metadata
ask = json.loads(sys.stdin.read())
def key(name):
    import re
    return re.sub(r"[-_.]+", "-", name or "").lower()
dists = {}
for dist in metadata.distributions():
    dists.setdefault(key(dist.metadata["Name"]), dist)  # the first one found is the one imports use
versions = {name: dist.version for name, dist in dists.items()}
clashes = []
before = ask.get("before")
if before is not None:
    locked = set(ask["locked"])
    def files(dist):
        # __init__.py left out: namespace packages (nvidia/, google/) share theirs legitimately
        return {str(f).replace("\\", "/") for f in (dist.files or [])
                if not str(f).startswith("..") and ".dist-info/" not in str(f).replace("\\", "/")
                and "__pycache__" not in str(f) and not str(f).endswith("__init__.py")}
    fresh = [n for n, v in versions.items() if n not in locked and before.get(n) != v]
    if fresh:
        owned = {}
        for name in locked:
            if name in dists:
                for path in files(dists[name]):
                    owned.setdefault(path, name)
        for name in fresh:
            for path in sorted(files(dists[name])):
                if path in owned:
                    clashes.append([name, versions[name], owned[path], path])
                    break
print(json.dumps({"versions": versions, "clashes": clashes}))
"""


def probe(python: str, locked: Sequence[str], before: dict[str, str] | None = None) -> dict:
    """{"versions": {name: version}, "clashes": [[new dist, its version, locked dist, a shared file]]}."""
    done = subprocess.run([python, "-I", "-c", _PROBE], input=json.dumps({"locked": list(locked), "before": before}),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"could not list the packages installed for {python}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


# --- pip's resolver report -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conflict:
    """One requirement of the extension that the web UI's packages rule out."""

    package: str  # the web UI's distribution at stake (locked; for an overwriting one: the locked one it clashes with)
    web_ui_version: str
    wanted: str  # what the extension asks for ("numpy<2", "opencv-contrib-python")
    through: str = ""  # "mediapipe 0.10.15" (who needs it; "" when install.py asked for it directly)
    extra: str = ""  # set when only an optional extra of `through` needs it
    requirer: str = ""  # `through`'s distribution name
    requirer_extras: tuple[str, ...] = ()
    requirer_version: str = ""
    overwrites: str = ""  # the import package an overwriting distribution shares with `package` ("cv2")

    def describe(self) -> str:
        possessive = "'" if self.through.endswith("s") else "'s"
        how = f" (through {self.through}" + (f"{possessive} '{self.extra}' extra" if self.extra else "") + ")" \
            if self.through else ""
        if self.overwrites:
            return (f"needs {self.wanted}{how}, which would overwrite the {self.overwrites} module of the web UI's "
                    f"{self.package} {self.web_ui_version}")
        return f"needs {self.wanted}{how}; the web UI needs {self.package} {self.web_ui_version}"


def _clean(text: str) -> list[str]:
    return [_STAMP.sub("", line).rstrip() for line in (text or "").splitlines()]


def _split_requirement(text: str) -> tuple[str, tuple[str, ...], str, str]:
    """(canonical name, extras, version specifier, marker) of a requirement as pip prints it."""
    match = _REQ.match(text.strip())
    if not match:
        return canonical(text.strip()), (), "", ""
    extras = tuple(e.strip() for e in (match["extras"] or "").split(",") if e.strip())
    return canonical(match["name"]), extras, (match["spec"] or "").strip(), (match["marker"] or "").strip()


def _allows(spec: str, version: str) -> bool:
    """Whether the version specifier `spec` ("<2", ">=1,<3", "" for any) admits `version` (unknown: no)."""
    if not spec:
        return True
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # a bare Python: pip's own copy
        try:
            from pip._vendor.packaging.specifiers import InvalidSpecifier, SpecifierSet
        except ImportError:
            return False
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except (InvalidSpecifier, ValueError):
        return False


def parse_conflicts(text: str, pins: dict[str, str], aliases: dict[str, tuple[str, str]]) -> list[Conflict]:
    """The conflicts with the web UI's packages in pip's "ResolutionImpossible" reports within `text`.
    `pins`: {locked name: installed version}; `aliases`: {overwriting name: (locked name, import package)}."""
    found: list[Conflict] = []
    block = False
    for line in _clean(text):
        stripped = line.strip()
        if stripped == "The conflict is caused by:":
            block = True
            continue
        if not block:
            continue
        if not stripped or not line.startswith(" "):
            block = False
            continue
        requirer = _REQUIRER.match(stripped)
        if requirer:
            name, _extras, spec, marker = _split_requirement(requirer["dep"])
            extra = _EXTRA_MARKER.search(marker)
            through = requirer["name"] + (f"[{requirer['extras']}]" if requirer["extras"] else "")
            details = dict(through=f"{through} {requirer['version']}", extra=extra.group(1) if extra else "",
                           requirer=canonical(requirer["name"]),
                           requirer_extras=tuple(e.strip() for e in (requirer["extras"] or "").split(",") if e),
                           requirer_version=requirer["version"])
        else:
            request = _REQUEST.match(stripped)
            if not request or request["constraint"]:
                continue
            name, _extras, spec, _marker = _split_requirement(request["req"])
            details = {}
        wanted = re.sub(r"\s*\(Installed\)$", "", f"{name}{spec}")
        if name in pins and not _allows(spec, pins[name]):
            found.append(Conflict(name, pins[name], wanted, **details))
        elif name in aliases:
            locked, module = aliases[name]
            found.append(Conflict(locked, pins[locked], wanted, overwrites=module, **details))
    found += _no_version_conflicts(text, pins)
    unique: list[Conflict] = []
    for conflict in found:
        if conflict not in unique:
            unique.append(conflict)
    return unique


def _no_version_conflicts(text: str, pins: dict[str, str]) -> list[Conflict]:
    """Conflicts pip reports as "Could not find a version that satisfies the requirement X (from Y[extras])": X
    a locked package whose installed version X's specifier rules out. Y's version is not printed; the
    requirement the extension asked for ("Collecting Y~=0.31.0") stands in for it."""
    lines = _clean(text)
    asked = {}
    for line in lines:
        collecting = _COLLECTING.match(line.strip())
        if collecting:
            asked.setdefault(canonical(collecting["name"]), collecting["spec"])
    found = []
    for line in lines:
        match = _NO_VERSION.search(line)
        if not match:
            continue
        name, _extras, spec, marker = _split_requirement(match["req"])
        if name not in pins or _allows(spec, pins[name]):
            continue
        extra = _EXTRA_MARKER.search(marker)
        requirer = canonical(match["name"])
        extras = tuple(e.strip() for e in (match["extras"] or "").split(",") if e.strip())
        through = match["name"] + (f"[{match['extras']}]" if match["extras"] else "")
        found.append(Conflict(name, pins[name], f"{name}{spec}", through=through,
                              extra=extra.group(1) if extra else "", requirer=requirer, requirer_extras=extras,
                              requirer_version=asked.get(requirer, "")))
    return found


def _versions_phrase(versions: list[str]) -> str:
    """"0.10.14 or 0.10.13"; a long run of versions as its range ("8.3.119 to 8.4.190, 73 versions")."""
    if len(versions) <= 3:
        return " or ".join(versions)
    ordered = sorted(versions, key=_version_key)
    return f"{ordered[0]} to {ordered[-1]}, {len(versions)} versions"


def summarize(conflicts: Sequence[Conflict]) -> list[str]:
    """One phrase per conflict ("needs numpy<2 (through mediapipe 0.10.15); the web UI needs numpy 2.4.6"), the
    versions of one requirer that need the same thing merged ("through mediapipe 0.10.14 or 0.10.13")."""
    groups: dict[tuple, list[Conflict]] = {}
    for conflict in conflicts:
        if conflict.overwrites:  # any version of it would overwrite: one phrase, named without its versions
            conflict = Conflict(**{**conflict.__dict__, "wanted": _split_requirement(conflict.wanted)[0]})
        groups.setdefault((conflict.package, conflict.wanted, conflict.extra, conflict.overwrites,
                           conflict.through.rsplit(" ", 1)[0]), []).append(conflict)
    phrases = []
    for items in groups.values():
        first = items[0]
        if len(items) > 1 and first.through:
            versions = _versions_phrase(list(dict.fromkeys(c.requirer_version for c in items)))
            first = Conflict(**{**first.__dict__, "through": f"{first.through.rsplit(' ', 1)[0]} {versions}"})
        phrases.append(first.describe())
    return phrases


def extras_only(conflicts: Sequence[Conflict]) -> bool:
    """True when every conflict comes through an optional extra (so the requirement without it may install)."""
    return bool(conflicts) and all(c.extra and c.requirer and c.extra in c.requirer_extras for c in conflicts)


def fallback_requirements(conflicts: Sequence[Conflict]) -> dict[str, tuple[str, list[str]]]:
    """{requirement without the conflicting extras: (requirer, the extras dropped)} for `extras_only` conflicts;
    the requirer's highest version pip named (a version the extension's own requirement allowed)."""
    by_requirer: dict[str, list[Conflict]] = {}
    for conflict in conflicts:
        by_requirer.setdefault(conflict.requirer, []).append(conflict)
    result = {}
    for requirer, items in by_requirer.items():
        dropped = sorted({c.extra for c in items})
        kept = [e for e in items[0].requirer_extras if e not in dropped]
        version = max((c.requirer_version for c in items), key=_version_key)
        pin = f"=={version}" if version[:1].isdigit() else version  # a specifier when pip named no version
        requirement = requirer + (f"[{','.join(kept)}]" if kept else "") + pin
        result[requirement] = (requirer, dropped)
    return result


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


# --- one guarded install ------------------------------------------------------------------------------------------
@dataclass
class Change:
    """A locked distribution that install.py changed anyway."""

    package: str
    before: str
    after: str | None  # None: removed
    overwritten_by: tuple[str, str, str] | None = None  # (distribution, version, a file it overwrote)

    def describe(self) -> str:
        if self.overwritten_by:
            name, version, path = self.overwritten_by
            return f"{name} {version} overwrote files of {self.package} {self.before} ({path})"
        if self.after is None:
            return f"{self.package} {self.before} was uninstalled"
        return f"{self.package} changed from {self.before} to {self.after}"


@dataclass
class Verdict:
    conflicts: list[Conflict] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


class GuardedInstall:
    """The constraints and the "before" picture of one install; `env()` is what install.py runs with."""

    def __init__(self, python: str, lock_files: Sequence[Path] = LOCK_FILES):
        self.python = python
        self.locked = locked_names(lock_files)
        self.before = probe(python, self.locked)["versions"] if self.locked else {}
        self.folder = Path(tempfile.mkdtemp(prefix="webui-install-guard-"))
        self.constraints = self.folder / "constraints.txt"
        self.pip_log = self.folder / "pip.log"
        self.pins = {name: self.before[name] for name in self.locked if name in self.before}
        self.aliases: dict[str, tuple[str, str]] = {}
        for module, family in SAME_FILES:
            owner = next((n for n in family if n in self.pins), None)
            if owner:
                self.aliases.update({n: (owner, module) for n in family if n != owner and n not in self.pins})
        old_pip = _version_key(self.before.get("pip", "0"))[:2] < PIP_SEPARATE_BUILD_CONSTRAINTS
        lines = [f"{name}=={version}" for name, version in self.pins.items()
                 if not (old_pip and name in BUILD_TOOLS)]
        lines += [f"{name}{FORBIDDEN}" for name in self.aliases]
        self.constraints.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "GuardedInstall":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` plus the constraints (after any the user set) and pip's log for the resolver's report."""
        env = dict(base)
        if not self.pins and not self.aliases:
            return env
        # pip splits PIP_CONSTRAINT at whitespace: one file, named without spaces, which includes the user's own
        # constraint files (`-c <file>` lines inside a constraints file are read as such)
        own = str(self.constraints)
        user = [name for name in (env.get("PIP_CONSTRAINT") or "").split()
                if name != own and f"-c {Path(name).absolute()}" not in self.constraints.read_text(encoding="utf-8")]
        if user:
            with self.constraints.open("a", encoding="utf-8") as fh:
                fh.writelines(f"-c {Path(name).absolute()}\n" for name in user)
        if any(c.isspace() for c in str(self.constraints)):
            raise RuntimeError(f"the install guard's constraints file {self.constraints} has a space in its path, "
                               "which pip cannot read from PIP_CONSTRAINT: set TMPDIR to a folder without spaces")
        env["PIP_CONSTRAINT"] = str(self.constraints)
        env["PIP_LOG"] = str(self.pip_log)
        env[ENV_MARKER] = str(self.constraints)
        return env

    def pip_output(self) -> str:
        try:
            return self.pip_log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def check(self, output: str = "") -> Verdict:
        """What pip refused since the install began (its log, else `output`), and what changed anyway."""
        conflicts = parse_conflicts(self.pip_output() or output, self.pins, self.aliases)
        if not conflicts and output:
            conflicts = parse_conflicts(output, self.pins, self.aliases)
        changes: list[Change] = []
        if self.locked:
            after = probe(self.python, self.locked, self.before)
            versions = after["versions"]
            for name in self.pins:  # locked and installed (one the lock names but this install lacks may come)
                if self.before.get(name) != versions.get(name):
                    changes.append(Change(name, self.before.get(name), versions.get(name)))
            for new, version, owner, path in after["clashes"]:
                if owner in self.pins:
                    changes.append(Change(owner, self.pins[owner], versions.get(owner), (new, version, path)))
        return Verdict(conflicts, changes)

    def pip(self, *arguments: str, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """`python -m pip ...` under the constraints."""
        return subprocess.run([self.python, "-m", "pip", *arguments], env=self.env(dict(os.environ)),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout)

    def repair(self, changes: Sequence[Change], timeout: float = 600.0) -> tuple[bool, str]:
        """Put the locked distributions back: uninstall what overwrote their files, reinstall their versions
        (without dependencies). (worked, the commands for the user when it did not)."""
        intruders = sorted({c.overwritten_by[0] for c in changes if c.overwritten_by})
        restore = sorted({f"{c.package}=={c.before}" for c in changes if c.before})
        commands = []
        if intruders:
            commands.append(["uninstall", "-y", *intruders])
        if restore:
            commands.append(["install", "--no-deps", "--force-reinstall", *restore])
        worked = True
        for arguments in commands:
            try:
                done = self.pip(*arguments, timeout=timeout)
                worked = worked and done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                worked = False
        if worked:
            worked = not self.check().changes
        shown = " && ".join(shlex.join([self.python, "-m", "pip", *a]) for a in commands)
        return worked, shown


def explain_pip_failure(output: str, python: str = sys.executable, lock_files: Sequence[Path] = LOCK_FILES) -> str:
    """For `launch.run_pip`: a line naming the web UI's packages that pip's failure report says are in the way,
    or "" when the failure is something else."""
    if "The conflict is caused by:" not in (output or ""):
        return ""
    versions = probe(python, locked_names(lock_files))["versions"]
    pins = {name: versions[name] for name in locked_names(lock_files) if name in versions}
    aliases = {n: (owner, module) for module, family in SAME_FILES
               for owner in [next((m for m in family if m in pins), None)] if owner
               for n in family if n != owner and n not in pins}
    conflicts = parse_conflicts(output, pins, aliases)
    if not conflicts:
        return ""
    return "it " + "; it ".join(summarize(conflicts))
