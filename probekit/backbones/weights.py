"""Weights by name: which file a backbone name means, fetched once, cached and verified.

Each family module declares its published weights next to its sizes (timm's `pretrained_cfg` idea):

    register_weights(PublishedWeights(
        "eat-ft-as2m", ("hf:worstchan/EAT-base_epoch30_finetune_AS2M/model.safetensors",),
        license="MIT", finetuned_on=("as2m",), notes="...",
    ))

`weights=` (CLI `--weights`) then accepts:

| value                             | means                                                                |
|-----------------------------------|----------------------------------------------------------------------|
| `pretrained` (default for a name) | the name's registered weights (shipped file, Hub, or https source)   |
| `random`                          | seeded random init (`seed=`); records label such rows "random init" |
| a local path                      | that file or Hugging Face folder (`--checkpoint PATH` is an alias)   |
| `hf:owner/repo[@revision][/file]` | a file on the Hugging Face Hub (default file: model.safetensors)     |
| `https://...`                     | a plain download (resumable)                                         |

Hub files go through `huggingface_hub` (its cache, `HF_HOME`, `HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_TOKEN`
for gated repos); https files into `$PROBEKIT_WEIGHTS` (default: the platform cache dir + `/weights`).
Integrity: a registered sha256 is checked on every load; the Hub's LFS etag (the file's sha256, published
by the Hub) is checked too; where neither exists the first download's sha256 is pinned in
`pins.json` and every later load is checked against it. A mismatch is refused with both hashes.
Downloaded pickles are converted to safetensors once (same trust rules as local files: full unpickling
only with `trust_checkpoint`); the recorded sha256 stays the one of the file as published.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from probekit._io import atomic_write_json
from probekit.backbones.checkpoint_io import file_sha256
from probekit.errors import BackboneError, CheckpointError

__all__ = [
    "PublishedWeights",
    "ResolvedWeights",
    "list_weights",
    "published_weights",
    "register_converter",
    "register_no_weights",
    "register_weights",
    "resolve_weights",
    "safe_load_path",
    "weights_dir",
    "weights_key",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HF_SPEC = re.compile(r"^hf:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[^/]+))?(?:/(?P<file>.+))?$")
DEFAULT_HF_FILE = "model.safetensors"


@dataclass(frozen=True)
class PublishedWeights:
    """The official weights of one registered backbone name.

    sources: tried in order; each `hf:owner/repo[@rev]/file`, `https://...`, `package:relative/path`
        (a file shipped inside probekit) or `manual:FILE@PAGE` (published only behind a page that needs a
        browser, e.g. Google Drive: the user downloads FILE from PAGE and passes --weights PATH). sha256: the published hash, None where the source publishes none
        (then the Hub's LFS etag and the first download's pinned hash protect later loads).
    finetuned_on: datasets the weights were fine-tuned on (in-domain there; also on the card's training_data).
    """

    name: str
    sources: tuple[str, ...]
    license: str = ""
    sha256: str | None = None
    finetuned_on: tuple[str, ...] = ()
    notes: str = ""

    def __post_init__(self):
        if not self.sources:
            raise BackboneError(f"weights of {self.name!r}: no source")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise BackboneError(f"weights of {self.name!r}: sha256 must be 64 lowercase hex digits")


@dataclass(frozen=True)
class ResolvedWeights:
    """What `weights=` resolved to. kind: random | none | file | package | hub | url."""

    kind: str
    path: Path | None = None
    source: str = ""  # "hf:owner/repo/file", the URL, the package path or the local path
    revision: str | None = None  # the Hub commit the file came from
    sha256: str | None = None  # of the file as published (before any safetensors conversion)
    load_path: Path | None = None  # what the loader reads (a converted copy of a downloaded pickle)
    extra: dict = field(default_factory=dict)

    @property
    def remote(self) -> bool:
        return self.kind in ("hub", "url")

    def describe(self, seed: int | None = None) -> str:
        """One line for records and tables: names the weights exactly."""
        if self.kind == "random":
            return f"random init (seed {seed})"
        if self.kind == "none":
            return "no weights"
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.source}{rev} sha256:{self.sha256}"


_WEIGHTS: dict[str, PublishedWeights] = {}
_CONVERTERS: dict = {}  # family -> convert(src, dst, trust_checkpoint=...) writing safetensors
_LOCK = threading.Lock()


def register_converter(family: str, convert) -> None:
    """How a family turns a downloaded pickle into safetensors once (`safe_load_path`)."""
    _CONVERTERS[family] = convert


def converter(family: str | None):
    return _CONVERTERS.get(family or "")


def register_weights(entry: PublishedWeights) -> PublishedWeights:
    """Declare the official weights of a registered name (family modules call this on import)."""
    _WEIGHTS[entry.name] = entry
    return entry


_NO_WEIGHTS: set[str] = set()


def register_no_weights(name: str) -> None:
    """Declare a name that has no weights at all (the melpatch floor): any `weights=` but random is refused."""
    _NO_WEIGHTS.add(name)


def published_weights(name: str) -> PublishedWeights | None:
    return _WEIGHTS.get(name)


def list_weights() -> dict[str, PublishedWeights]:
    return dict(sorted(_WEIGHTS.items()))


def weights_dir() -> Path:
    """Where https downloads and the pin file live: `$PROBEKIT_WEIGHTS`, else the user cache dir."""
    env = os.environ.get("PROBEKIT_WEIGHTS")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("probekit")) / "weights"


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "PROBEKIT_OFFLINE"))


# ---------------------------------------------------------------------------------------------- pins
def _pins_path() -> Path:
    return weights_dir() / "pins.json"


def _read_pins() -> dict:
    try:
        d = json.loads(_pins_path().read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _verify(file: Path, source: str, *, expected: str | None, what: str, pin_key: str | None) -> str:
    """sha256 of `file`, checked against `expected` (published) or the pin of `pin_key` (first download)."""
    actual = file_sha256(file)
    if expected is None and pin_key is not None:
        with _LOCK:
            pins = _read_pins()
            expected, what = pins.get(pin_key), "the sha256 pinned at its first download"
            if expected is None:
                pins[pin_key] = actual
                try:
                    atomic_write_json(_pins_path(), pins)
                except OSError:
                    pass  # a read-only cache: nothing pinned, the file is still used
    if expected is not None and actual != expected:
        raise CheckpointError(
            f"{file} ({source}): sha256 {actual} does not match {what} {expected}; refusing changed weights",
            hint=f"delete {file} to download it again, or pass the file you trust with --weights PATH",
        )
    return actual


# ---------------------------------------------------------------------------------------------- Hub
def _hf_cache_dir() -> str | None:
    # read at call time (huggingface_hub reads its env once at import)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _hub_fetch(repo: str, revision: str | None, filename: str, *, expected: str | None) -> ResolvedWeights:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise BackboneError("hf: weights need huggingface_hub", hint="pip install huggingface_hub") from None
    source = f"hf:{repo}/{filename}"
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    page = f"{endpoint}/{repo}"
    offline = _offline()
    # huggingface_hub reads HF_HUB_OFFLINE once at import; follow the environment as it is now
    from huggingface_hub import constants as hf_constants

    hf_constants.HF_HUB_OFFLINE = offline
    try:
        path = Path(hf_hub_download(repo, filename, revision=revision, cache_dir=_hf_cache_dir(),
                                    endpoint=endpoint, local_files_only=offline))
    except hf_errors.GatedRepoError:
        raise CheckpointError(
            f"{source}: {page} is a gated repository and no token with access was sent",
            hint=f"accept its terms at {page}, then set HF_TOKEN (or run `hf auth login`)",
        ) from None
    except hf_errors.RevisionNotFoundError:
        raise CheckpointError(f"{source}: revision {revision!r} not found on {page}") from None
    except hf_errors.RepositoryNotFoundError:
        raise CheckpointError(f"{source}: repository {repo} not found (or private) on {endpoint}",
                              hint="check the name; private repos need HF_TOKEN") from None
    except hf_errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else f"{endpoint} cannot be reached"
        raise CheckpointError(
            f"{source}: not in the Hugging Face cache ({_hf_cache_dir() or 'HF_HOME/hub'}) and {why}",
            hint=f"on a connected machine run `hf download {repo} {filename}` and copy the HF cache, or download "
            f"{page}/resolve/{revision or 'main'}/{filename} and pass it with --weights PATH",
        ) from None
    except hf_errors.EntryNotFoundError:  # after LocalEntryNotFoundError, its subclass
        raise CheckpointError(f"{source}: {page} has no file {filename!r}",
                              hint=f"name the file: hf:{repo}/<file>") from None
    except hf_errors.HfHubHTTPError as e:
        raise CheckpointError(f"{source}: download failed ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise CheckpointError(f"{source}: download failed ({e})", hint="check the disk space and HF_HOME") from None
    commit = path.parent.name if path.parent.parent.name == "snapshots" else revision
    # the blob is named by its etag; for LFS files that is the sha256 the Hub publishes
    blob = path.resolve().name
    hub_sha = blob if _HEX64.fullmatch(blob) else None
    if expected is not None and hub_sha is not None and expected != hub_sha:
        raise CheckpointError(f"{source}@{commit}: the Hub publishes sha256 {hub_sha}, the registry expects {expected}",
                              hint="pass --weights hf:REPO@REVISION for the revision you want")
    want, what = (expected, "the registered sha256") if expected else (hub_sha, "the sha256 published by the Hub")
    sha = _verify(path, source, expected=want, what=what, pin_key=None if want else f"{source}@{commit}")
    return ResolvedWeights("hub", path, source, commit, sha)


# ---------------------------------------------------------------------------------------------- https
def _loopback(host: str | None) -> bool:
    return host in ("127.0.0.1", "localhost", "::1")


def _url_dest(url: str) -> Path:
    parsed = urllib.parse.urlparse(url)
    name = Path(urllib.parse.unquote(parsed.path)).name or "weights.bin"
    return weights_dir() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def _url_fetch(url: str, *, expected: str | None, progress: bool = True) -> ResolvedWeights:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "https" and not (parsed.scheme == "http" and _loopback(parsed.hostname)):
        raise BackboneError(f"weights URL {url!r}: only https downloads are allowed",
                            hint="use an https:// URL, or download the file and pass its path")
    dest = _url_dest(url)
    if not dest.is_file():
        if _offline():
            raise CheckpointError(f"{url}: not downloaded yet and offline mode is set",
                                  hint=f"place the file at {dest}, or pass it with --weights PATH")
        _download(url, dest, progress=progress)
    sha = _verify(dest, url, expected=expected, what="the registered sha256", pin_key=None if expected else url)
    return ResolvedWeights("url", dest, url, None, sha)


def _download(url: str, dest: Path, *, progress: bool) -> None:
    """Resumable download: bytes land in `dest.part`; a later call continues with an HTTP Range request."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "probekit", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        resp = urllib.request.urlopen(req, timeout=30)  # noqa: S310 - scheme checked by the caller
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds the whole file
            part.replace(dest)
            return
        raise CheckpointError(f"{url}: download failed (HTTP {e.code} {e.reason})",
                              hint=f"or download it yourself and place it at {dest}") from None
    except (urllib.error.URLError, OSError) as e:
        raise CheckpointError(f"{url}: cannot connect ({getattr(e, 'reason', e)})",
                              hint=f"on a machine without network place the file at {dest}") from None
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the Range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        mode = "ab" if have else "wb"
        bar = _progress_bar(dest.name, total, have) if progress else None
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        block = resp.read(1 << 20)
                    except (OSError, ValueError, http.client.HTTPException) as e:  # dropped: keep .part, resume
                        raise CheckpointError(
                            f"{url}: download interrupted after {part.stat().st_size} bytes ({e})",
                            hint="run the command again to resume",
                        ) from None
                    if not block:
                        break
                    f.write(block)
                    if bar:
                        bar[0].update(bar[1], advance=len(block))
                f.flush()
                os.fsync(f.fileno())
        finally:
            if bar:
                bar[0].stop()
    size = part.stat().st_size
    if total is not None and size != total:
        raise CheckpointError(f"{url}: download interrupted at {size} of {total} bytes",
                              hint="run the command again to resume")
    part.replace(dest)


def _progress_bar(name: str, total: int | None, done: int):
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   transient=True)
    task = bar.add_task(f"downloading {name}", total=total, completed=done)
    bar.start()
    return bar, task


# ---------------------------------------------------------------------------------------------- resolve
def _package_file(rel: str) -> Path:
    return Path(__file__).resolve().parents[1] / rel


def _fetch_source(src: str, *, expected: str | None, progress: bool) -> ResolvedWeights:
    if src.startswith("package:"):
        path = _package_file(src[len("package:"):])
        if not path.is_file():
            raise CheckpointError(f"{path}: the weights shipped with probekit are missing",
                                  hint="reinstall probekit from a full source checkout (`pip install -e .`)")
        sha = _verify(path, src, expected=expected, what="the registered sha256", pin_key=None)
        return ResolvedWeights("package", path, src, None, sha)
    if src.startswith("hf:"):
        m = _HF_SPEC.match(src)
        if not m:
            raise BackboneError(f"weights {src!r}: expected hf:owner/repo, hf:owner/repo/file or hf:owner/repo@revision/file")
        return _hub_fetch(m["repo"], m["rev"], m["file"] or DEFAULT_HF_FILE, expected=expected)
    if src.startswith(("https://", "http://")):
        return _url_fetch(src, expected=expected, progress=progress)
    if src.startswith("manual:"):
        file, _, page = src[len("manual:"):].partition("@")
        raise CheckpointError(f"the official weights ({file}) are published only at {page}, which needs a browser",
                              hint=f"download {file} from that page, then pass --weights /path/to/{file} "
                                   "(or --weights random for the random-init floor)")
    raise BackboneError(f"weights source {src!r}: unknown scheme", hint="use hf:, https://, package: or manual:")


def resolve_weights(name: str, weights=None, *, checkpoint=None, progress: bool = True) -> ResolvedWeights:
    """What `weights` (and the `checkpoint` alias) mean for backbone `name`; downloads and verifies.

    None: the name's published weights when it has some, else random init (test sizes, third-party names).
    """
    if checkpoint is not None:
        if weights is not None and str(weights) != str(checkpoint):
            raise BackboneError(f"backbone {name!r}: both checkpoint={checkpoint!s} and weights={weights!s} given",
                                hint="--checkpoint PATH is an alias of --weights PATH: pass one")
        weights = checkpoint
    if name in _NO_WEIGHTS:
        if weights not in (None, "random", "none"):
            raise BackboneError(f"{name} has no weights (got weights={weights!s})",
                                hint=f"drop --weights/--checkpoint for the {name} floor")
        return ResolvedWeights("none")
    entry = published_weights(name)
    if weights is None:
        weights = "pretrained" if entry is not None else "random"
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str) or not weights:
        raise BackboneError(f"backbone {name!r}: weights must be a string or a path, got {weights!r}")
    if weights == "random":
        return ResolvedWeights("random")
    if weights == "pretrained":
        if entry is None:
            known = ", ".join(sorted(_WEIGHTS)) or "none"
            raise BackboneError(f"backbone {name!r} has no published weights",
                                hint=f"pass --weights random, a file, hf:owner/repo or a URL (names with weights: {known})")
        errors = []
        for src in entry.sources:  # the first source that works
            try:
                return _fetch_source(src, expected=entry.sha256, progress=progress)
            except CheckpointError as e:
                if "does not match" in str(e) or "gated" in str(e):
                    raise  # a wrong file or missing access is not fixed by another mirror
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise CheckpointError(f"weights of {name!r}: every source failed: " + " | ".join(str(e) for e in errors),
                              hint=errors[-1].hint)
    if weights.startswith(("hf:", "https://", "http://")):
        expected = None
        if entry is not None:  # the registered hash still applies when the same source is named
            expected = next((entry.sha256 for s in entry.sources if s == weights), None)
        return _fetch_source(weights, expected=expected, progress=progress)
    path = Path(weights).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found",
                              hint="--weights takes pretrained, random, a path, hf:owner/repo(@rev)(/file) or an "
                              "https URL")
    return ResolvedWeights("file", path, str(path), None, None)


def safe_load_path(resolved: ResolvedWeights, *, trust_checkpoint: bool = False, convert=None) -> ResolvedWeights:
    """A downloaded pickle -> its safetensors conversion, made once next to the download.

    `convert(src, dst, trust_checkpoint=...)` is the family's converter (the audio ViT's
    `convert_checkpoint`); full unpickling still needs `trust_checkpoint`, as for local files.
    """
    from dataclasses import replace

    from probekit.backbones.checkpoint_io import _is_safetensors

    if not resolved.remote or resolved.path is None or convert is None or _is_safetensors(resolved.path):
        return resolved
    dst = weights_dir() / "converted" / f"{resolved.sha256}.safetensors"
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        convert(resolved.path, dst, trust_checkpoint=trust_checkpoint)
    return replace(resolved, load_path=dst)


def weights_key(resolved: ResolvedWeights | None, *, sha256: str | None, seed: int | None, use_ema: bool = False) -> dict:
    """The `weights` entry of a backbone's cache key.

    Local and shipped files keep the content key `{sha256, use_ema}` (same file, same cache); downloaded
    ones also name their source and revision; random init keys on the seed.
    """
    if not sha256:
        return {"random_init_seed": seed}
    out = {"sha256": sha256, "use_ema": use_ema}
    if resolved is not None and resolved.remote:
        out["source"] = resolved.source
        if resolved.revision:
            out["revision"] = resolved.revision
    return out
