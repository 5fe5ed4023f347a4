"""What keeps a long training run alive: checkpoints, resuming, the run log, stopping on a signal.

train_gpt2.py calls these from one line each. A checkpoint, LOG_DIR/model_NNNNN.pt, is the state
after NNNNN optimizer steps: the model, the optimizer, the loader's position, the RNG states and the
run's settings, all tensors, numbers, strings and containers, so that torch.load(weights_only=True)
reads it and loading one never runs code. One run at a time holds a log directory (a lock file).
"""

import fcntl
import os
import re
import shlex
import signal
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import storage

FORMAT, VERSION = "gpt2-reproduction-checkpoint", 1
KEYS = ("model_config", "model", "step", "optimizer", "loader", "rng", "train_config")
LOCK_FILE = ".train.lock"
EVALUATIONS = {"val": "val_loss", "hella": "hellaswag"}  # log.txt's kind: the checkpoint's key
# Settings that change what a resumed run computes, compared with the run it continues.
TRAJECTORY_SETTINGS = ("total_batch_size", "seq_len", "max_lr", "min_lr_ratio", "warmup_steps")
TRAJECTORY_SETTINGS += ("max_steps", "weight_decay", "beta1", "beta2", "eps", "grad_clip")
TRAJECTORY_SETTINGS += ("data_dir", "shuffle", "seed", "dtype")


class CheckpointError(ValueError):
    """A checkpoint or log directory that cannot be used; the message names it and what to do."""


def save(
    path: Path, step: int, model, optimizer, scaler, loader_state, train_config, run: dict[str, Any]
) -> None:
    """Write the state after `step` optimizer steps atomically: a crash never leaves half a file.
    run: RunLog.run(): the W&B run id, the last evaluations and the data source (for an export's
    model card), and the steps whose update fp16's loss scaling skipped."""
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": asdict(model.config),
        "model": model.state_dict(),  # wte and lm_head share one storage, which torch.save keeps
        "wandb_run_id": run["wandb_run_id"],  # a resumed run goes on in the same W&B run
        "step": step,
        "optimizer": optimizer.state_dict(),  # AdamW's moments: without them a resume is a restart
        "scaler": scaler.state_dict(),  # fp16's loss scale ({} for bf16 and fp32)
        "skipped_steps": run["skipped_steps"],
        "loader": loader_state,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        "train_config": asdict(train_config),
        "val_loss": run["val_loss"],  # the last evaluations, at or before `step`
        "hellaswag": run["hellaswag"],
        "data_source": run["data_source"],  # storage.data_source of the shards trained on
    }
    try:
        storage.atomic_write(path, lambda f: torch.save(checkpoint, f))
    except (OSError, RuntimeError) as e:
        # a full disk, a quota; torch.save reports a failed write as a RuntimeError caused by it
        failed = e if isinstance(e, OSError) else e.__context__
        if not isinstance(failed, OSError):
            raise
        kept = [p for p in candidates(str(path.parent), "auto") if p != path][:1]
        intact = f"{kept[0]} is intact" if kept else "there is no earlier checkpoint"
        intact += ": free space, then rerun the same command"
        raise CheckpointError(
            f"cannot write {path}: {failed.strerror or failed}; {intact}"
        ) from None


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by save(), read without running any code stored in it; CheckpointError,
    naming the file, for anything else. Everything lands on the CPU: RNG states must stay there, and
    load_state_dict moves weights and optimizer state to wherever the parameters are."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message suggests weights_only=False: never do that here
        damaged = "truncated, damaged, or not from train_gpt2.py"
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(e).__name__}): {damaged}"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint written by train_gpt2.py")
    if checkpoint.get("version") != VERSION:
        found = checkpoint.get("version")
        raise CheckpointError(f"{path} has checkpoint version {found}, expected {VERSION}")
    if missing := [key for key in KEYS if key not in checkpoint]:
        raise CheckpointError(f"{path} is an incomplete checkpoint (no {', '.join(missing)})")
    return checkpoint


def summary(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint tells of its run, for a model card: steps, tokens, the last evaluations,
    the data source (None where unknown, as in checkpoints from before it was recorded)."""
    tokens = checkpoint["step"] * checkpoint["train_config"]["total_batch_size"]
    scores = {key: checkpoint.get(key) for key in EVALUATIONS.values()}
    source = checkpoint.get("data_source")
    return {"step": checkpoint["step"], "tokens": tokens, **scores, "data_source": source}


def candidates(log_dir: str, resume: str) -> list[Path]:
    """The checkpoints to try in turn, newest first; with --resume auto, log_dir's model_*.pt."""
    found = [
        path
        for path in Path(log_dir).glob("model_*.pt")
        if re.fullmatch(r"model_\d+\.pt", path.name)
    ]
    existing = sorted(found, key=lambda path: int(path.stem.removeprefix("model_")), reverse=True)
    if resume == "none" and existing:
        names = ", ".join(path.name for path in existing)
        raise CheckpointError(
            f"--resume none, but {log_dir} holds checkpoints ({names}): use another --log-dir"
        )
    if resume in ("auto", "none"):
        return existing
    if not Path(resume).is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file")
    return [Path(resume)]


def restore(
    paths: list[Path], model, optimizer, scaler, loader, train_config, print0
) -> dict[str, Any]:
    """Load the first readable checkpoint of paths into model, optimizer, loss scaler, loader and
    the RNGs, and return it ({} for none); with --resume auto an unreadable one is passed over with
    a warning. The micro-batch size may differ from the run's: the batches are the same tokens."""
    if not paths:
        return {}
    for path in paths:
        try:
            state = load(path)
            break
        except CheckpointError as e:
            if train_config.resume != "auto":
                raise CheckpointError(f"{e}; pass another --resume, or --resume auto") from None
            print0(f"warning: {e}; trying an older one")
    else:
        raise CheckpointError(
            f"no checkpoint in {paths[0].parent} is readable: move them away to start over"
        )
    if state["model_config"] != asdict(model.config):
        hint = "resume with its --model and --vocab-size, or start over in another --log-dir"
        raise CheckpointError(f"{path} holds a different model ({state['model_config']}); {hint}")
    if (trained_on := state["loader"]["epoch_tokens"]) != loader.epoch_tokens:
        counts = f"{trained_on:,} tokens, not {loader.epoch_tokens:,}"
        raise CheckpointError(f"{path} was trained on {counts}: resume on the same shards")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):  # fp16's loss scale; after bf16 or fp32, fp16 starts a new one
        scaler.load_state_dict(state["scaler"])
    loader.load_state_dict(state["loader"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] and len(state["rng"]["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    print0(f"resumed from {path} at step {state['step']}")
    if changed := changed_settings(state, train_config):
        print0(f"warning: settings changed since the run began: {', '.join(changed)}")
    return state


def changed_settings(checkpoint: dict[str, Any], train_config) -> list[str]:
    """The settings that differ from the checkpoint's run and change what the run computes."""
    old, new = checkpoint["train_config"], asdict(train_config)
    changed = [name for name in TRAJECTORY_SETTINGS if old.get(name) != new[name]]
    return [f"--{name.replace('_', '-')} {old.get(name)} -> {new[name]}" for name in changed]


def resume_command(script: str, argv: list[str], **changed: Any) -> str:
    """The command that continues this run from its newest checkpoint: the flags but --resume, and
    those in changed set anew (micro_batch_size=16: --micro-batch-size 16)."""
    dropped = ["--resume", *(f"--{name.replace('_', '-')}" for name in changed)]
    args = [
        a
        for i, a in enumerate(argv)
        if a.split("=")[0] not in dropped and argv[i - 1 : i] not in [[flag] for flag in dropped]
    ]
    for name, value in changed.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    command = shlex.join([os.path.relpath(script), *args])
    world, local_world = (
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
    )
    if world == 1:
        return f"python {command}"
    if world == local_world:
        return f"torchrun --standalone --nproc_per_node={local_world} {command}"
    nodes = f"--nnodes={world // local_world} --nproc_per_node={local_world}"
    return f"torchrun {nodes} <your rendezvous flags> {command}"


def kept(log_dir: str) -> str:
    """What a run stopped at once (a second Ctrl-C, out of memory) leaves in log_dir."""
    newest = candidates(log_dir, "auto")
    return (
        f"the newest checkpoint, {newest[0]}, is intact" if newest else "no checkpoint was written"
    )


def stopped(step: int, resume_command: str) -> str:
    """What a run stopped by SIGTERM or Ctrl-C says, having saved its state after step."""
    return f"stopped by a signal after step {step}; to resume, run:\n  {resume_command}"


def interrupted(log_dir: str, resume_command: str) -> str:
    """What a second Ctrl-C, which stops a run at once, leaves, and how to go on."""
    return f"\ninterrupted at once: {kept(log_dir)}; to resume, run:\n  {resume_command}"


def out_of_memory(error, log_dir: str, script: str, argv: list[str]) -> str:
    """One line: what ran out of memory (a runtime.OutOfMemory), the checkpoint it leaves intact,
    and the command that resumes from it at the smaller micro-batch size the error suggests."""
    if error.smaller is None:
        return f"error: {error}; {kept(log_dir)}"
    command = resume_command(script, argv, micro_batch_size=error.smaller)
    return f"error: {error}, or auto; {kept(log_dir)}; to resume, run: {command}"


def lock_log_dir(log_dir: str):
    """Create log_dir and lock it for as long as the returned file stays open, so that a second run
    (a double launch, a requeue while the old job still runs) is refused at once instead of mixing
    its log and checkpoints in. The kernel drops the lock when the process dies, even by SIGKILL."""
    try:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        lock = open(Path(log_dir) / LOCK_FILE, "a+")
    except (FileExistsError, NotADirectoryError):
        raise CheckpointError(
            f"--log-dir {log_dir} is a file, not a directory: choose another"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot write to --log-dir {log_dir}: {e.strerror or e}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        wait = "wait for it to end (or stop it), or use another --log-dir"
        raise CheckpointError(
            f"{log_dir} is in use by another training run ({holder}): {wait}"
        ) from None
    lock.truncate(0)
    lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    lock.flush()
    return lock  # the caller keeps it open: closing it releases the lock


class RunLog:
    """The run's numbers, from rank 0: printed as "step N | ...", appended to LOG_DIR/log.txt
    ("{step} {train|val|hella} {value}", as the reference writes it, and an evaluation's further
    figures on lines of their own, e.g. hella_acc) and sent to W&B. Resumed at
    step N, it drops what the stopped attempt wrote for steps N and later, and any line that does
    not start with a step number: the file reads like one uninterrupted run."""

    def __init__(self, train_config, enabled: bool, resumed: dict[str, Any], data_source):
        """resumed: the checkpoint the run resumes from, from restore() ({} for a new run);
        data_source: storage.data_source of the shards, which each checkpoint records."""
        self.path, self.enabled = Path(train_config.log_dir) / "log.txt", enabled
        self.data_source = data_source
        self.max_steps, self.first_step, self.wandb_run = train_config.max_steps, None, None
        # the last evaluations, which each checkpoint records for an export's model card
        self.last = {kind: resumed.get(key) for kind, key in EVALUATIONS.items()}
        self.skipped_steps = resumed.get("skipped_steps", 0)  # fp16 updates the scaler skipped
        resume_step = resumed.get("step", 0)
        if not enabled:
            return
        lines = self.path.read_text().splitlines(True) if resume_step and self.path.exists() else []
        kept = [
            line
            for line in lines
            if (step := re.match(r"\d+ ", line)) and int(step[0]) < resume_step
        ]
        storage.atomic_write(self.path, lambda f: f.write("".join(kept).encode()))
        if train_config.wandb_project:  # a resumed run goes on in the same W&B run
            import wandb

            project, name = train_config.wandb_project, train_config.wandb_run_name
            run_id, settings = resumed.get("wandb_run_id"), asdict(train_config)
            self.wandb_run = wandb.init(
                project=project, name=name, id=run_id, resume="allow", config=settings
            )

    def write(self, step: int, kind: str, value: float, text: str, **more: float | None) -> None:
        """Log value; text is what the printed line shows after "step N | ", and a train line ends
        with the estimated time left. more goes to W&B, and an evaluation's to log.txt too, one
        line each ("{step} {name} {value}"): a train line keeps the reference's format."""
        self.last[kind] = value
        if not self.enabled:
            return
        eta = f" | eta {self.time_left(step)}" if kind == "train" else ""
        print(f"step {step:5d} | {text}{eta}")
        digits = 6 if kind == "train" else 4
        lines = {kind: value} | ({} if kind == "train" else more)
        with self.path.open("a") as f:
            f.writelines(f"{step} {name} {number:.{digits}f}\n" for name, number in lines.items())
        if self.wandb_run is not None:
            self.wandb_run.log({kind: value, **more}, step=step)

    def time_left(self, step: int) -> str:
        """From the mean time per step since the end of this attempt's first step, which compiles:
        evaluations and checkpoints are in it as often as they come."""
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step = (step, now)
            return "-"
        first, then = self.first_step
        seconds = round((now - then) / (step - first) * (self.max_steps - 1 - step))
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"

    def run(self) -> dict[str, Any]:
        """What save() records of the run: its W&B id, last evaluations, data source and skipped
        steps."""
        wandb_run_id = None if self.wandb_run is None else self.wandb_run.id
        run = {
            "wandb_run_id": wandb_run_id,
            "data_source": self.data_source,
            "skipped_steps": self.skipped_steps,
        }
        return run | {EVALUATIONS[k]: self.last[k] for k in EVALUATIONS}

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a request to stop after the current step (a scheduler's
    preemption, Ctrl-C); a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = {
            sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)
        }

    def handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def requested_on_any_rank(self, runtime) -> bool:
        """All ranks must stop after the same step."""
        requested = torch.tensor([float(self.requested)], device=runtime.device)
        return runtime.all_reduce_sum(requested).item() > 0

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
