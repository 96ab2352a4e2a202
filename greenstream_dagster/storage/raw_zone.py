"""The immutable raw zone: every landed file byte for byte, named by its SHA-256, with a sidecar.

The sidecar (``<sha256>.json``) is written once, after the file is stored and read, and records
its original name, size, arrival time, the UTC days it touches and whether it was accepted. A
file counts as landed when its sidecar exists, so a crash between the two writes simply lands
the file again next time. Both are made read-only after writing.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import stat
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACCEPTED = "accepted"
REJECTED = "rejected"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Sidecar:
    """What the raw zone knows about one landed file."""

    source_file: str  # the SHA-256 of the bytes, also the file's name in the raw zone
    original_name: str
    size_bytes: int
    arrival_time: dt.datetime  # UTC
    status: str  # ACCEPTED or REJECTED
    days: list[dt.date] = field(default_factory=list)
    reason: str | None = None
    # The day the file's rows without a day of their own go to (``landing.Placement``); None
    # when every row has a day of its own. Recorded at landing so that loading the rows does
    # not look for it again; sidecars written before it was recorded lack it.
    first_day: dt.date | None = None
    first_day_recorded: bool = False  # not written: the key's presence in the JSON says it

    def to_json(self) -> str:
        data = asdict(self)
        data["arrival_time"] = self.arrival_time.isoformat()
        data["days"] = [d.isoformat() for d in self.days]
        del data["first_day"], data["first_day_recorded"]
        if self.first_day_recorded:
            data["first_day"] = self.first_day.isoformat() if self.first_day else None
        return json.dumps(data, indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Sidecar:
        data = json.loads(text)
        data["arrival_time"] = dt.datetime.fromisoformat(data["arrival_time"])
        data["days"] = [dt.date.fromisoformat(d) for d in data["days"]]
        if "first_day" in data:
            first = data["first_day"]
            data["first_day"] = dt.date.fromisoformat(first) if first else None
            data["first_day_recorded"] = True
        return cls(**data)


class RawZone:
    """The raw zone folder. Only this class writes into it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def data_path(self, sha: str) -> Path:
        return self.root / sha

    def sidecar_path(self, sha: str) -> Path:
        return self.root / f"{sha}.json"

    def is_landed(self, sha: str) -> bool:
        return self.sidecar_path(sha).exists()

    def store(self, src: Path, follow_symlinks: bool = True) -> str:
        """Copy ``src`` in under its SHA-256 (hashing while copying) and return the hash.

        Only a regular file is read (a FIFO would block the reader forever). With
        ``follow_symlinks=False`` a symbolic link is refused too: a file taken from the landing
        folder may have been swapped for a link to a file outside the data home after it was
        looked at, and the raw zone keeps every byte it reads.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_symlinks else os.O_NOFOLLOW)
        reader = os.fdopen(os.open(src, flags), "rb")
        tmp = self.root / f".incoming-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        try:
            if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(src))
            with reader, open(tmp, "wb") as writer:
                while chunk := reader.read(CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            sha = digest.hexdigest()
            target = self.data_path(sha)
            if target.exists():
                tmp.unlink()
            else:
                os.chmod(tmp, READ_ONLY)
                os.replace(tmp, target)
            return sha
        finally:
            reader.close()
            tmp.unlink(missing_ok=True)

    def write_sidecar(self, sidecar: Sidecar) -> None:
        """Record a landed file; an existing sidecar is never overwritten."""
        target = self.sidecar_path(sidecar.source_file)
        if target.exists():
            raise FileExistsError(f"{target} exists: the raw zone is immutable")
        tmp = self.root / f".sidecar-{uuid.uuid4().hex}"
        try:
            with open(tmp, "w", encoding="utf-8") as writer:
                writer.write(sidecar.to_json())
                writer.flush()
                # On disk before it is renamed into place: after a power cut, an empty sidecar
                # would mark the file landed and break every later read of the raw zone.
                os.fsync(writer.fileno())
            os.chmod(tmp, READ_ONLY)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def sidecar(self, sha: str) -> Sidecar:
        return Sidecar.from_json(self.sidecar_path(sha).read_text(encoding="utf-8"))

    def sidecars(self) -> list[Sidecar]:
        """Every landed file, oldest arrival first."""
        if not self.root.exists():
            return []
        found = [
            Sidecar.from_json(p.read_text(encoding="utf-8"))
            for p in self.root.glob("*.json")
            if not p.name.startswith(".")
        ]
        return sorted(found, key=lambda s: (s.arrival_time, s.source_file))
