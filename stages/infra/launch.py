"""Data-parallel training the torchrun way: a stage whose params ask for more than one process (params.yaml `scale`)
starts its workers through torch's own elastic launcher, and each worker runs the same stage command in a process
group. Plumbing: it changes no number (what the ranks compute together is stages/core/epochs.py's).

    scale 1 x 1        one process, no process group: nothing here runs
    nproc_per_node N   N workers on this machine; a c10d rendezvous on a free port of 127.0.0.1 (torchrun --standalone)
    nnodes M           the static rendezvous: every machine runs the same stage command with MASTER_ADDR and
                       MASTER_PORT (node 0's address and a free port there) and NODE_RANK (0 .. M-1) in its
                       environment; node 0 is the machine that runs `dvc repro` and owns the outputs

Each worker sees torchrun's environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); global rank 0
alone writes outputs and logs to MLflow. No restarts: a worker that dies or refuses ends the stage, every other
worker is stopped by the launcher, and the stage says what happened in one line.
"""
import datetime
import glob
import logging
import os
import sys
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

from stages.infra.errors import PipelineError, one_line

# How long a collective waits for a rank that neither answers nor dies (a dead one is noticed by the launcher
# within its monitor interval). Long enough for rank 0 to log a model to a team's MLflow server between two
# models while the other ranks wait at the next model's first collective.
TIMEOUT = datetime.timedelta(minutes=10)
MONITOR_SECONDS = 0.5  # how often the launcher looks at its workers (torch's default is 0.1 s)


def worker() -> bool:
    """True in a process started by the elastic launcher (or by torchrun itself)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def rank() -> int:
    """This process's global rank: 0 outside a process group."""
    return int(os.environ["RANK"]) if worker() else 0


def writer(scale) -> bool:
    """Whether this process writes outputs and logs to MLflow: the one process, global rank 0, or (before its
    workers start) node 0's stage command. Node 0 owns the outputs: the other nodes' commands write nothing."""
    if worker():
        return rank() == 0
    return scale.nnodes == 1 or os.environ.get("NODE_RANK") == "0"


def needs_workers(scale) -> bool:
    """A stage started by DVC (not a worker) whose scale asks for more than one process."""
    return scale.world_size > 1 and not worker()


def logged(scale, batch_size: int) -> dict:
    """What MLflow records of the scale: world size, nodes and the per-rank batch (the global batch is the param's);
    nothing at 1 x 1, whose runs log what they always did."""
    if scale.world_size == 1:
        return {}
    return {"world_size": scale.world_size, "nnodes": scale.nnodes, "nproc_per_node": scale.nproc_per_node,
            "rank_batch_size": -(-batch_size // scale.world_size)}


def rendezvous(scale) -> dict:
    """LaunchConfig's rendezvous settings: torchrun --standalone's on one machine, the static one across several."""
    if scale.nnodes == 1:
        return {"rdzv_backend": "c10d", "rdzv_endpoint": "127.0.0.1:0", "local_addr": "127.0.0.1"}
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK") if not os.environ.get(v)]
    if missing:
        raise PipelineError(f"params.yaml: scale.nnodes is {scale.nnodes}, so every node needs MASTER_ADDR, "
                            f"MASTER_PORT and NODE_RANK in its environment; missing: {', '.join(missing)}")
    node = int(os.environ["NODE_RANK"])
    if not 0 <= node < scale.nnodes:
        raise PipelineError(f"NODE_RANK must be in 0..{scale.nnodes - 1} (scale.nnodes), got {node}")
    return {"rdzv_backend": "static", "rdzv_endpoint": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
            "rdzv_configs": {"rank": node, "timeout": int(TIMEOUT.total_seconds())}}


def run_workers(scale, module: str, args: list[str], stage: str, device_type: str = "cpu") -> None:
    """Run `python -m <module> <args>` (a stage: stages.train, named `stage` in messages: train@passengers) as this
    node's scale.nproc_per_node workers and wait for them all; the stage's first line says so (and, on CUDA, that
    the step runs eagerly).
    Local rank 0's output shows here; every worker's stderr goes to a log file, so that a failure is one line."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is ours to give
    threads = max(1, (os.cpu_count() or 1) // scale.nproc_per_node)  # CPU ranks share the cores (torchrun sets 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    logs = Path(tempfile.mkdtemp(prefix=f"{stage}-workers-".replace("@", "-")))
    quiet = {r: Std.ALL if r else Std.ERR for r in range(scale.nproc_per_node)}  # local rank 0's stdout stays here
    config = LaunchConfig(min_nodes=scale.nnodes, max_nodes=scale.nnodes, nproc_per_node=scale.nproc_per_node,
                          run_id=uuid.uuid4().hex[:12] if scale.nnodes == 1 else f"{stage}-{'-'.join(args)}",
                          max_restarts=0, monitor_interval=MONITOR_SECONDS, start_method="spawn",
                          logs_specs=DefaultLogsSpecs(log_dir=str(logs), redirects=quiet), **rendezvous(scale))
    eager = "; CUDA graphs off under DDP: the step runs eagerly" if device_type == "cuda" else ""
    print(f"{stage}: {scale.world_size} workers (scale {scale.nproc_per_node} x {scale.nnodes}), launched by "
          f"torch.distributed's elastic launcher{eager}", flush=True)
    try:
        elastic_launch(config, sys.executable)("-m", module, *args)
    except ChildFailedError as failed:
        raise PipelineError(failure_line(failed, logs, scale, stage)) from None
    except (RendezvousError, RuntimeError, OSError) as err:  # the rendezvous itself (another node that never came, a port in use)
        raise PipelineError(f"{stage}: the workers did not start ({one_line(err)})") from None
    for path in sorted(glob.glob(str(logs / "*" / "attempt_0" / "0" / "stderr.log"))):
        sys.stderr.write(Path(path).read_text())  # local rank 0's warnings, after it finished


def failure_line(failed, logs: Path, scale, stage: str) -> str:
    """One line for a failed worker group: a worker's own refusal (its `error: ...` line) if one gave one, else the
    rank that died and how, else the first failure's last line of output."""
    failures = sorted(failed.failures.items())  # global rank -> ProcessFailure
    said = {}
    for global_rank, failure in failures:
        paths = glob.glob(str(logs / "*" / "attempt_0" / str(failure.local_rank) / "stderr.log"))
        said[global_rank] = Path(paths[0]).read_text().splitlines() if paths else []
    for lines in said.values():
        refusals = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
        if refusals:
            return refusals[-1]
    world = f"of {scale.world_size} (scale {scale.nproc_per_node} x {scale.nnodes})"
    # the launcher stops the others with SIGTERM: a rank killed by another signal is the one that died first
    for global_rank, failure in sorted(failures, key=lambda f: f[1].signal_name() == "SIGTERM"):
        if failure.exitcode < 0:
            return f"{stage}: rank {global_rank} {world} was killed by {failure.signal_name()}; the others were stopped"
    global_rank, failure = failures[0]
    last = next((line for line in reversed(said[global_rank]) if line.strip()), "no output")
    return f"{stage}: rank {global_rank} {world} exited with code {failure.exitcode}: {one_line(last)}"


@contextmanager
def process_group(device_type: str):
    """In a worker: join the process group (NCCL on CUDA, gloo on CPU) for the `with` block, then leave it after a
    barrier (rank 0 may still be writing). Outside a worker: nothing."""
    if not worker():
        yield
        return
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def local_device(device):
    """A worker's own GPU (cuda:LOCAL_RANK); CPU workers share the CPU."""
    import torch

    if device.type != "cuda" or not worker():
        return device
    local = int(os.environ["LOCAL_RANK"])
    if local >= torch.cuda.device_count():
        raise PipelineError(f"params.yaml: scale.nproc_per_node asks for GPU {local} of {torch.cuda.device_count()}")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)
