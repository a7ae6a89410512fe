"""What a worker without the driver's file system needs to run one experiment, and how it comes back.

Out (driver -> worker): a `Bundle` holds the suite's `default_training_params.json`, the files of
the experiment folder, and, for each data or model field of the resolved config that names a
local path (runkey.SOURCE_FIELDS), a content-addressed copy: a tar of the file or folder
(normalised: sorted, mtime 0, no owner) named by its sha256. The worker unpacks the experiment
into a scratch suite and each source once into its cache (`<cache>/ray-sources/<sha256>/<name>`,
cache = $PEFTBENCH_CACHE or ~/.cache/peftbench), and runs with `--set FIELD=<that copy>`. File
names are kept, and the run key hashes local data and models by content, so the worker's key
equals the driver's when the code and libraries are the same.

Back (worker -> driver): the result JSON and its predictions file as bytes. `write_returned`
places them in the suite's folders by the suite's git state, atomically, through the same
naming functions a local run uses (suite.checked_result_path, results.predictions_path_for), and puts
back what only the driver knows: its git state, the suite's label and the local paths the
config named.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.experiment import suite as S
from peftbench.experiment.config import DEFAULTS_FILE, EXPERIMENTS_DIR
from peftbench.fs import atomic_write_bytes, atomic_write_json
from peftbench.record import results as R


@dataclass
class Source:
    """A local file or folder a config field names, packed once per content."""

    sha256: str
    name: str  # the file or folder name, kept on the worker (data loaders look at suffixes)
    original: str  # the value of the field on the driver, put back into the returned result


@dataclass
class Bundle:
    method: str
    name: str
    defaults: bytes  # the suite's default_training_params.json, as on disk
    experiment_files: dict[str, bytes]  # path relative to the experiment folder -> content
    sources: dict[str, Source] = field(default_factory=dict)  # config field -> its local source


def pack_tree(path: Path) -> bytes:
    """A deterministic tar of a file or folder: the same content gives the same bytes anywhere."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = [path] if path.is_file() else [path, *sorted(p for p in path.rglob("*") if "__pycache__" not in p.parts)]
        for member in members:
            rel = member.relative_to(path)
            info = tar.gettarinfo(str(member), arcname=path.name if rel == Path(".") else f"{path.name}/{rel.as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if member.is_file():
                with open(member, "rb") as f:
                    tar.addfile(info, f)
            elif member.is_dir():
                tar.addfile(info)
    return buf.getvalue()


def bundle(exp, source_fields: tuple[str, ...]) -> tuple[Bundle, dict[str, bytes]]:
    """The bundle of a loaded experiment and the packed sources it names, by sha256."""
    files = {p.relative_to(exp.path).as_posix(): p.read_bytes()
             for p in sorted(exp.path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    out = Bundle(exp.method, exp.name, (exp.suite_dir / DEFAULTS_FILE).read_bytes(), files)
    packed: dict[str, bytes] = {}
    cfg = exp.train_config.to_dict()
    for name in source_fields:
        value = cfg.get(name)
        if not isinstance(value, str):
            continue
        path = Path(os.path.expanduser(value))
        if not path.exists():
            continue  # a hub id, a packaged model or built-in data: the worker resolves it itself
        data = pack_tree(path.resolve())
        sha = hashlib.sha256(data).hexdigest()
        packed[sha] = data
        out.sources[name] = Source(sha, path.resolve().name, value)
    return out, packed


# ----------------------------------------------------------------------------------------------
# on the worker


def unpack_source(cache: Path, source: Source, data: bytes) -> Path:
    """The worker's copy of a source, unpacked once per content (concurrent runs on one node
    race harmlessly: each unpacks into a folder of its own and one rename wins)."""
    final = cache / "ray-sources" / source.sha256
    if not final.exists():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{source.sha256[:12]}-", dir=final.parent))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            # Our own tar; the "data" filter (Python >= 3.11.4) also refuses links out of the folder.
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        try:
            os.rename(tmp, final)
        except OSError:  # another run on this node unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    return final / source.name


def write_experiment(root: Path, b: Bundle) -> Path:
    """A scratch suite under `root` holding the bundle's defaults and experiment; its folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / DEFAULTS_FILE).write_bytes(b.defaults)
    exp_dir = root / EXPERIMENTS_DIR / b.method / b.name
    for rel, data in b.experiment_files.items():
        target = exp_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    exp_dir.mkdir(parents=True, exist_ok=True)
    return exp_dir


# ----------------------------------------------------------------------------------------------
# back on the driver


def write_returned(suite: Path, stem: str, result_bytes: bytes, predictions: bytes | None, b: Bundle,
                   staged: dict[str, str], git) -> Path:
    """Write a result that came back from a worker into `suite`'s folders, as a local run would:
    the folder by status and the suite's git state (`git`: provenance.GitState), predictions
    first, both atomically. `staged` maps each config field to the worker's path of its source."""
    result: dict[str, Any] = json.loads(result_bytes)
    info = result["run_info"]
    info.update(git=git.to_dict(), peft_branch=git.branch, suite=S.suite_label(suite, git.root))
    for name, src in b.sources.items():
        if name in staged:
            back = {staged[name]: src.original, str(Path(staged[name]).resolve()): str(Path(src.original).resolve())}
            info["train_config"] = _put_back(info.get("train_config"), back)
            result["meta_info"] = _put_back(result.get("meta_info"), back)
    status = R.Status(result["train_info"]["status"])
    # never replaces another experiment's main result; moves an unreadable one aside
    to_results = S.why_not_results(git, info.get(R.RI_OVERRIDES)) is None
    path = S.checked_result_path(suite, stem, status, to_results, S.timestamp(), info.get(R.RI_EXPERIMENT_NAME),
                                 lambda message: print(message, file=sys.stderr, flush=True))
    if predictions is not None and info.get("predictions"):
        pred_path = R.predictions_path_for(path)
        atomic_write_bytes(pred_path, predictions)
        info["predictions"]["file"] = pred_path.name
    atomic_write_json(path, result)
    return path


def _put_back(value: Any, back: dict[str, str]) -> Any:
    """`value` with every string that is, or lies below, a worker's path of a source rewritten
    to the driver's path (the config's fields, model and data identities)."""
    if isinstance(value, dict):
        return {k: _put_back(v, back) for k, v in value.items()}
    if isinstance(value, list):
        return [_put_back(v, back) for v in value]
    if isinstance(value, str):
        for worker, driver in back.items():
            if value == worker or value.startswith(worker + "/"):
                return driver + value[len(worker):]
    return value
