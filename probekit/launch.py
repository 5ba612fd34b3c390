"""Cluster launch: SLURM jobs through submitit, torchrun for data-parallel probes. No scheduler of our own.

* `probekit extract ... --slurm KEY=VALUE --jobs N`: a job array of N tasks, task i runs the same extract
  command with `--shard i/N` (shards i, i+N, ... of every split); the last task to finish finalises each store.
* `probekit tune ... --workers N --slurm ...`: N jobs, each a tuning worker on the same Optuna study (the
  storage of `--storage`, PostgreSQL across machines; see probekit.tune.storage) with `--seeds 0`; once they are
  done, the same command without --workers/--slurm retrains the best with seeds and writes the record (the
  study already holds its trials, so it starts none).
* `probekit probe ... --nodes N --gpus G`: N x G data-parallel ranks (probekit.distributed): with `--slurm`
  one job of N nodes x G tasks, each task one rank (submitit's TorchDistributedEnvironment gives RANK,
  WORLD_SIZE, MASTER_ADDR...); without it torchrun on this node (N > 1: run the same command on every node
  with `--rdzv-endpoint HOST:PORT`).

`--slurm` takes KEY=VALUE items (repeatable or comma-separated): submitit's own keys (timeout_min or time,
mem_gb, cpus_per_task, gpus_per_node, nodes, tasks_per_node, name), `folder=` for the logs (default
./slurm-logs/COMMAND), `wait=true` to wait for the jobs, and anything else goes to sbatch as `slurm_KEY`
(partition=gpu, account=..., qos=...). `--slurm local` runs the same jobs as processes on this machine
(submitit's local executor; it always waits).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from probekit.errors import ConfigError

__all__ = ["CliTask", "SlurmSpec", "launch_extract", "launch_probe", "launch_tune", "parse_slurm", "strip_options"]

_GENERIC = {"timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node", "name",
            "stderr_to_stdout"}
_ALIASES = {"time": "timeout_min", "mem": "mem_gb", "cpus": "cpus_per_task", "gpus": "gpus_per_node"}
CLUSTERS = ("slurm", "local")


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--slurm needs submitit, which is not installed",
                          hint="pip install 'probekit[cluster]'") from None
    return submitit


@dataclass
class SlurmSpec:
    """What `--slurm` said: the cluster (slurm, or local processes), the log folder, whether to wait, and
    submitit parameters."""

    cluster: str = "slurm"
    folder: Path | None = None
    wait: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def parse_slurm(items: Sequence[str] | None) -> SlurmSpec | None:
    """`--slurm` items -> SlurmSpec (None when no --slurm was given). ConfigError names a bad item."""
    if not items:
        return None
    from probekit.cli._parse import parse_set, split_set

    spec = SlurmSpec()
    for raw in items:
        for item in (x.strip() for x in str(raw).split(",")):
            if not item:
                continue
            if item in CLUSTERS:
                spec.cluster = item
                continue
            key, value = split_set(item, option="--slurm", example="--slurm partition=gpu,time=120 (or --slurm local)")
            key = _ALIASES.get(key, key)
            if key == "cluster":
                if value not in CLUSTERS:
                    raise ConfigError(f"--slurm cluster={value!r} is not one of {', '.join(CLUSTERS)}",
                                      hint="slurm submits with sbatch; local runs the jobs here")
                spec.cluster = value
            elif key == "folder":
                spec.folder = Path(value).expanduser()
            elif key == "wait":
                spec.wait = bool(parse_set(value, False, name=key, option="--slurm"))
            elif key in _GENERIC:
                like = 1.0 if key == "mem_gb" else (True if key == "stderr_to_stdout" else ("" if key == "name" else 1))
                spec.params[key] = parse_set(value, like, name=key, option="--slurm")
            else:  # partition, account, qos, constraint, exclude, array_parallelism, ...
                spec.params[key if key.startswith("slurm_") else f"slurm_{key}"] = parse_set(value, name=key)
    if spec.cluster == "local":
        spec.wait = True  # local jobs are this process's children: it waits for them
    return spec


def strip_options(argv: Sequence[str], with_value: set[str], flags: set[str] = frozenset()) -> list[str]:
    """`argv` without the launch options (`--opt VALUE`, `--opt=VALUE`, flags): what each job runs."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in with_value:
            skip = "=" not in a
            continue
        if a in flags:
            continue
        out.append(a)
    return out


class CliTask:
    """One job's work: `probekit ARGV` in the job's process (picklable for submitit). With `distributed`,
    the task first exports its rank of the job (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."""

    def __init__(self, argv: Sequence[str], *, distributed: bool = False, env: dict[str, str] | None = None):
        self.argv, self.distributed, self.env = list(argv), distributed, dict(env or {})

    def __call__(self) -> int:
        os.environ.update(self.env)
        if self.distributed:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        from probekit.cli import main

        rc = main(self.argv)
        if rc:
            raise RuntimeError(f"`probekit {shlex.join(self.argv)}` exited with code {rc} "
                               f"(rank {os.environ.get('RANK', 0)})")
        return rc

    def __repr__(self) -> str:
        return f"probekit {shlex.join(self.argv)}"


def _executor(spec: SlurmSpec, command: str, **params):
    submitit = _submitit()
    if spec.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--slurm: no sbatch on this machine's PATH",
                          hint="run it on a SLURM login node, or use --slurm local to run the jobs here")
    folder = spec.folder or Path("slurm-logs") / command
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ex = submitit.AutoExecutor(folder=folder, cluster=spec.cluster)
    merged = {"name": f"probekit-{command}", "timeout_min": 24 * 60, **params, **spec.params}
    if spec.cluster == "local":  # sbatch-only keys mean nothing to local processes
        merged = {k: v for k, v in merged.items() if not k.startswith("slurm_")}
    try:
        ex.update_parameters(**merged)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--slurm: {e}", hint="submitit's keys: " + ", ".join(sorted(_GENERIC))
                          + "; anything else goes to sbatch (partition=..., account=...)") from None
    return ex, folder


def _say_jobs(say, jobs, folder: Path, what: str, spec: SlurmSpec) -> None:
    ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
    where = "on this machine (submitit local executor)" if spec.cluster == "local" else "on SLURM"
    say(f"submitted {what} {where}: job {', '.join(ids)}")
    first = jobs[0]
    say(f"  logs: {folder}/ (JOB_TASK_log.out and .err per task, e.g. {first.paths.stderr.name})")
    if spec.cluster == "slurm":
        say(f"  follow: squeue -j {','.join(ids)}; tail -f {first.paths.stderr}")
    else:
        say(f"  follow: tail -f {first.paths.stderr}")


def _wait(jobs, say, what: str) -> None:
    failed = []
    for j in jobs:
        try:
            j.results()  # one per task (a data-parallel job has several)
        except Exception as e:  # noqa: BLE001 - every failed task is reported, not just the first
            failed.append((j, e))
    if failed:
        j, e = failed[0]
        raise ConfigError(f"{len(failed)} of {len(jobs)} {what} job(s) failed; first: job {j.job_id}: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}",
                          hint=f"its log: {j.paths.stderr}")
    say(f"{what}: {len(jobs)} job(s) done")


def launch_extract(argv: Sequence[str], jobs: int, spec: SlurmSpec, say: Callable[[str], None]) -> list:
    """The extract command `argv` (launch options already removed) as a job array of `jobs` shards."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs} must be at least 1", hint="e.g. --jobs 8")
    if any(a == "--shard" or a.startswith("--shard=") for a in argv):
        raise ConfigError("--shard and --slurm together: the job array gives each task its shard",
                          hint="drop --shard (each of the --jobs N tasks does shards i, i+N, ...)")
    ex, folder = _executor(spec, "extract")
    tasks = [CliTask([*argv, "--shard", f"{i}/{jobs}", "--no-progress"]) for i in range(jobs)]
    with ex.batch():
        submitted = [ex.submit(t) for t in tasks]
    _say_jobs(say, submitted, folder, f"extraction as {jobs} shard job(s)", spec)
    say("  results: the store(s) under --cache-dir (or $PROBEKIT_CACHE); the last task to finish completes each "
        "one; `probekit cache ls` shows them")
    if spec.wait:
        _wait(submitted, say, "extraction")
    return submitted


def launch_tune(argv: Sequence[str], workers: int, spec: SlurmSpec, say: Callable[[str], None]) -> list:
    """`workers` tuning workers on one study (argv: the tune command without launch options)."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be at least 1", hint="e.g. --workers 4")
    storage = next((a.split("=", 1)[1] if "=" in a else argv[i + 1] for i, a in enumerate(argv)
                    if a.split("=", 1)[0] == "--storage" and ("=" in a or i + 1 < len(argv))), None)
    if spec.cluster == "slurm" and (storage is None or storage.startswith("sqlite")):
        say("note: without --storage postgresql://... the workers share one SQLite file: fine on one machine, "
            "unsafe on network file systems")
    worker_argv = strip_options(argv, {"--seeds", "--json"}, {"--quiet", "-q"}) + ["--seeds", "0", "--quiet",
                                                                                  "--no-progress"]
    ex, folder = _executor(spec, "tune")
    with ex.batch():
        submitted = [ex.submit(CliTask(worker_argv)) for _ in range(workers)]
    _say_jobs(say, submitted, folder, f"{workers} tuning worker(s)", spec)
    say("  results: the study in " + (storage or "RESULTS/studies/STUDY.db") + "; `probekit tune --show STUDY` "
        "prints its trials")
    if spec.wait:
        _wait(submitted, say, "tuning")
    else:
        say(f"  then: probekit {shlex.join(argv)}  (no new trials: retrains the best with seeds, writes the record)")
    return submitted


def launch_probe(argv: Sequence[str], nodes: int, gpus: int, spec: SlurmSpec | None, say: Callable[[str], None],
                 *, rdzv_endpoint: str | None = None, results_dir: str | None = None, command: str = "probe") -> Any:
    """The probe command `argv` on nodes x gpus data-parallel ranks: a SLURM job (spec) or torchrun here.
    `command` names the job (probe, finetune) in the log folder and messages."""
    if nodes < 1 or gpus < 1:
        raise ConfigError(f"--nodes {nodes} --gpus {gpus}: both must be at least 1", hint="e.g. --nodes 1 --gpus 4")
    results = results_dir or os.environ.get("PROBEKIT_RESULTS", "results")
    world = nodes * gpus
    if spec is not None:
        import torch

        cuda = spec.cluster == "slurm" or torch.cuda.is_available()
        ex, folder = _executor(spec, command, nodes=nodes, tasks_per_node=gpus, gpus_per_node=gpus if cuda else 0)
        job = ex.submit(CliTask(argv, distributed=world > 1))
        _say_jobs(say, [job], folder, f"a {command} on {nodes} node(s) x {gpus} rank(s)", spec)
        say(f"  results: rank 0 writes the record under {results}; every rank's log is in the folder above")
        if spec.wait:
            _wait([job], say, command)
        return job
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={gpus}"]
    if nodes == 1:
        cmd.append("--standalone")
    elif not rdzv_endpoint:
        raise ConfigError(f"--nodes {nodes} without --slurm needs --rdzv-endpoint HOST:PORT",
                          hint="run the same command on every node with the same endpoint, or use --slurm")
    else:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
    cmd += ["-m", "probekit", *argv]
    say(f"torchrun: {world} rank(s) ({nodes} node(s) x {gpus}); rank 0 prints progress and writes the record "
        f"under {results}")
    say(f"  command: {shlex.join(cmd)}")
    t0 = time.perf_counter()
    rc = subprocess.call(cmd)
    if rc:
        raise ConfigError(f"torchrun exited with code {rc} after {time.perf_counter() - t0:.0f} s",
                          hint="each rank's error is printed above; fix it and rerun (checkpoints resume)")
    return rc
