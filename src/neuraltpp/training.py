"""Training loop for neural TPPs: dev-set selection, atomic per-epoch checkpoints, exact resume."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object
from tqdm import tqdm

from commonio.atomic import atomic_write
from neuraltpp.data.batching import batch_indices, pad_sequences
from neuraltpp.data.containers import EventDataset
from neuraltpp.likelihood import (
    LikelihoodOptions,
    check_scored,
    dataset_log_likelihood,
    log_likelihood,
)
from neuraltpp.metrics import write_json
from neuraltpp.models import TPPModel, build_model

CHECKPOINT_VERSION = 1
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
RESULT_FILE = "train_result.json"


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss, parameters or dev log-likelihood; names the epoch
    and the step (batch) where it happened."""

    def __init__(self, epoch: int, step: int | None, what: str) -> None:
        at = f"epoch {epoch}" if step is None else f"epoch {epoch}, step {step}"
        super().__init__(
            f"training diverged at {at}: {what} (a lower learning rate or gradient clip may help)"
        )
        self.epoch = epoch
        self.step = step


@dataclass
class TrainConfig:
    """Everything that determines a training run; two runs with equal configs give equal models.

    The loss per batch is ``-LL / n_scored + type_loss_weight * CE + gap_loss_weight * MSE``: the
    likelihood per scored event plus the heads' losses averaged over events 1..n-1 (predicted
    from the state after the previous event). Default: NLL plus type cross-entropy (so the type
    head is usable for prediction); the gap head is trained only when ``gap_loss_weight > 0``.
    """

    model: str = "mhp"
    model_config: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 16
    seed: int = 0
    likelihood: LikelihoodOptions = field(default_factory=LikelihoodOptions)
    type_loss_weight: float = 1.0
    gap_loss_weight: float = 0.0
    grad_clip: float | None = 1.0
    patience: int | None = None
    eval_batch_size: int = 64
    sort_by_length: bool = True  # batch sequences of similar length (less padding)

    def __post_init__(self) -> None:
        if isinstance(self.likelihood, dict):
            self.likelihood = LikelihoodOptions(**self.likelihood)
        checks = {
            "lr": self.lr > 0,
            "epochs": self.epochs >= 0,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "weight_decay": self.weight_decay >= 0,
            "type_loss_weight": self.type_loss_weight >= 0,
            "gap_loss_weight": self.gap_loss_weight >= 0,
            "grad_clip": self.grad_clip is None or self.grad_clip > 0,
            "patience": self.patience is None or self.patience >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name}: invalid value {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (inverse of ``TrainConfig.from_dict``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Rebuild a config saved with ``to_dict``."""
        return cls(**d)


@dataclass
class EpochRecord:
    """Per-epoch summary: mean training loss, dev log-likelihood per event, and the epoch's
    wall and process CPU seconds (training pass, dev pass and best.pt; epoch 0: the dev pass;
    not last.pt, which holds the record). Times are measurements, not results: records
    compare equal without them."""

    epoch: int
    train_loss: float | None  # None for epoch 0 (the untrained model)
    train_ll_per_event: float | None
    dev_ll_per_event: float
    dev_n_events: int
    seconds: float | None = field(default=None, compare=False)  # None: not recorded (old runs)
    cpu_seconds: float | None = field(default=None, compare=False)


@dataclass
class TrainResult:
    """Outcome of ``train``: the selected model, where it was saved, and the epoch history."""

    model: TPPModel
    best_epoch: int
    best_dev_ll_per_event: float
    history: list[EpochRecord]
    out_dir: Path
    best_checkpoint: Path
    stopped_early: bool
    likelihood_mode: str


@dataclass
class TrainState:
    """Mutable loop state saved in ``last.pt``: epochs done, selection and early stopping."""

    epoch: int = 0
    best_epoch: int = 0
    best_dev_ll_per_event: float = -math.inf
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[EpochRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain form for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        """Inverse of ``to_dict``."""
        d = dict(d)
        d["history"] = [EpochRecord(**r) for r in d["history"]]
        return cls(**d)


def data_fingerprint(*datasets: EventDataset) -> str:
    """sha256 over the times, types and windows of every sequence (resume checks the data)."""
    digest = hashlib.sha256()
    for ds in datasets:
        digest.update(f"{ds.num_types}/{ds.time_scale}/{len(ds)}|".encode())
        for seq in ds.sequences:
            digest.update(seq.times.tobytes() + seq.types.tobytes())
            digest.update(f"{seq.window_start}/{seq.window_end}|".encode())
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so a CPU run is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_model(config: TrainConfig, num_types: int) -> TPPModel:
    """Build the model named in ``config`` with deterministic initial weights."""
    seed_everything(config.seed)
    return build_model(config.model, num_types, config.model_config)


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam(W) over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


class _Clock:
    """Wall and process CPU seconds since it was made (one epoch's time in the history)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def __call__(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def epoch_batch_seed(seed: int, epoch: int) -> int:
    """Shuffling seed for one epoch: a function of (seed, epoch) only, so resumed runs match."""
    return (seed * 1_000_003 + epoch) % 2**31


def loss_sums(
    model: TPPModel, batch: Any, config: TrainConfig, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums a batch's loss is made of: ([LL, type cross-entropy, squared gap error],
    [scored events, predicted events]). Sums rather than means, so that processes holding
    parts of one batch can be normalised by the whole batch's counts (`combine_loss`).

    ``seed`` seeds the Monte Carlo compensator points (unused with Gauss-Legendre). The heads'
    terms are over events 1..n-1, predicted from the state after the previous event.
    """
    h = model.hidden(batch)
    ll = log_likelihood(model, batch, config.likelihood, seed=seed, h=h)
    zero = ll.total.new_zeros(())
    ce, se = zero, zero
    target_mask = batch.mask[:, 1:]
    if config.type_loss_weight > 0:
        logits = model.type_logits(h[:, :-1])
        ce = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), batch.types[:, 1:], reduction="none"
        )
        ce = (ce * target_mask).sum().to(zero.dtype)
    if config.gap_loss_weight > 0:
        gaps = (batch.times[:, 1:] - batch.times[:, :-1]).to(h.dtype)
        se = (((model.gap(h[:, :-1]) - gaps) ** 2) * target_mask).sum().to(zero.dtype)
    counts = torch.tensor([ll.n_events, int(target_mask.sum())], dtype=torch.float64)
    return torch.stack([ll.total, ce, se]), counts


def combine_loss(sums: torch.Tensor, counts: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """``-LL / n_scored + type_loss_weight * CE + gap_loss_weight * MSE`` from `loss_sums`
    (the heads' terms averaged over the predicted events)."""
    n_scored, n_predicted = (max(float(c), 1.0) for c in counts)
    return (
        -sums[0] / n_scored
        + config.type_loss_weight * sums[1] / n_predicted
        + config.gap_loss_weight * sums[2] / n_predicted
    )


def batch_loss(
    model: TPPModel, batch: Any, config: TrainConfig, *, seed: int = 0
) -> tuple[torch.Tensor, float, int]:
    """Loss of one batch; returns (loss, summed log-likelihood, number of scored events)."""
    sums, counts = loss_sums(model, batch, config, seed=seed)
    return combine_loss(sums, counts, config), float(sums[0].detach()), int(counts[0])


class _LossSums(torch.nn.Module):
    """`loss_sums` as a module's forward, so that accelerate's DistributedDataParallel wrapper
    sees the forward pass and averages the gradients over processes in the backward pass."""

    def __init__(self, model: TPPModel, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, batch: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return loss_sums(self.model, batch, self.config, seed=seed)


def accelerator() -> Accelerator:
    """The process group of an ``accelerate launch`` / ``torchrun`` run (CPU, gloo); a single
    process otherwise. Unused parameters are allowed (a head whose loss weight is 0)."""
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=True, kwargs_handlers=[ddp])


def _shard(ds: EventDataset, chunk: np.ndarray, acc: Accelerator) -> tuple[Any, float]:
    """This process's part of one global batch (every num_processes-th sequence) and its
    weight: 0 when it has no sequence of its own (it then runs one sequence, unweighted, so
    every process takes part in the gradient average)."""
    own = chunk[acc.process_index :: acc.num_processes]
    weight = 1.0 if len(own) else 0.0
    return pad_sequences([ds.sequences[i] for i in (own if len(own) else chunk[:1])]), weight


def train_epoch(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_ds: EventDataset,
    config: TrainConfig,
    epoch: int,
    acc: Accelerator,
    *,
    progress: bool = True,
) -> tuple[float, float]:
    """One pass over ``train_ds`` with ``module``, the `_LossSums` of the model as ``acc``
    prepared it; returns (mean loss per batch, LL per event).

    Data parallel under several processes: every process draws the same global batches (of
    ``batch_size`` sequences) and computes the loss sums of its share; the counts are summed
    over processes first, so each share is normalised by the whole batch and the averaged
    gradient equals the single-process one (up to float rounding).
    """
    module.train()
    chunks = batch_indices(
        train_ds,
        config.batch_size,
        shuffle=True,
        seed=epoch_batch_seed(config.seed, epoch),
        sort_by_length=config.sort_by_length,
    )
    bar = tqdm(chunks, desc=f"epoch {epoch}", disable=not progress, leave=False)
    totals = torch.zeros(3, dtype=torch.float64)  # loss, LL, scored events (this process)
    for step, chunk in enumerate(bar, start=1):
        optimizer.zero_grad(set_to_none=True)
        batch, weight = _shard(train_ds, chunk, acc)
        seed = (epoch_batch_seed(config.seed, epoch) + step - 1) % 2**31
        sums, counts = module(batch, seed)
        sums, counts = sums * weight, counts * weight
        finite = torch.isfinite(sums.detach()).all()
        shared = acc.reduce(torch.cat([counts, (~finite).double().reshape(1)]), "sum")
        if shared[2] > 0:
            raise TrainingDiverged(epoch, step, "non-finite training loss")
        loss = combine_loss(sums, shared[:2], config)
        acc.backward(loss * acc.num_processes)  # DDP averages: the sum of the shares' grads
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in module.parameters()):
            raise TrainingDiverged(epoch, step, "non-finite parameters after the update")
        totals += torch.stack([loss.detach().double(), sums[0].detach().double(), counts[0]])
        bar.set_postfix(loss=f"{float(totals[0]) / step:.4f}")
    loss_sum, ll_sum, n_events = acc.reduce(totals, "sum").tolist()
    return loss_sum / max(len(chunks), 1), ll_sum / max(n_events, 1)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same directory, then ``os.replace``. Saved
    through a file object, so the archive's inner folder name is torch's fixed default rather
    than the random temporary name: the same checkpoint gives the same bytes."""

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            torch.save(obj, f)

    atomic_write(path, save)


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _resume_key(config: TrainConfig) -> dict[str, Any]:
    """The part of the config a checkpoint must agree on to be resumed (all but ``epochs``)."""
    d = config.to_dict()
    d.pop("epochs")
    return d


def _model_payload(model: TPPModel, config: TrainConfig, num_types: int) -> dict[str, Any]:
    return {
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "num_types": num_types,
        "model_state": model.state_dict(),
    }


def _save_best(
    path: Path, model: TPPModel, config: TrainConfig, num_types: int, state: TrainState
) -> None:
    payload = _model_payload(model, config, num_types)
    payload.update(epoch=state.epoch, dev_ll_per_event=state.best_dev_ll_per_event)
    atomic_torch_save(payload, path)


def _save_last(
    path: Path,
    model: TPPModel,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    num_types: int,
    state: TrainState,
    fingerprint: str,
    acc: Accelerator,
) -> None:
    """Every process's RNG state (collective: all processes call it), written by the main one."""
    rng = gather_object([_rng_state()])
    if not acc.is_main_process:
        return
    payload = _model_payload(model, config, num_types)
    payload.update(
        optimizer_state=optimizer.state_dict(),
        rng=rng,
        state=state.to_dict(),
        data=fingerprint,
    )
    atomic_torch_save(payload, path)


def _rng_states(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-process RNG states of a ``last.pt`` (one dict in files of a single process)."""
    rng = payload["rng"]
    return [rng] if isinstance(rng, dict) else rng


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a neuraltpp checkpoint file; ValueError naming the file if it is missing or foreign."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises several unrelated types on corrupt files
        raise ValueError(f"checkpoint {path}: cannot be read ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path}: not a neuraltpp checkpoint (version mismatch)")
    return payload


def check_inputs(
    config: TrainConfig,
    train_ds: EventDataset,
    dev_ds: EventDataset,
    out_dir: str | Path,
    resume: bool,
) -> dict[str, Any] | None:
    """What `train` would reject, checked before anything is written: splits with different
    types or no event to score, a resumed checkpoint of another config or data. Returns the
    payload of ``last.pt`` to resume from (None when the run starts afresh)."""
    if train_ds.num_types != dev_ds.num_types:
        raise ValueError(
            f"train data has {train_ds.num_types} types but dev data has {dev_ds.num_types}"
        )
    for ds in (train_ds, dev_ds):
        check_scored(ds, config.likelihood)
    path = Path(out_dir) / LAST_CHECKPOINT
    if not (resume and path.is_file()):
        return None
    payload = read_checkpoint(path)
    if _resume_key(TrainConfig.from_dict(payload["config"])) != _resume_key(config):
        raise ValueError(
            f"checkpoint {path} was written with a different configuration; use another output "
            "directory, or train without resuming"
        )
    if payload["data"] != data_fingerprint(train_ds, dev_ds):
        raise ValueError(
            f"checkpoint {path} was written for different train/dev data; use another output "
            "directory, or train without resuming"
        )
    writers, processes = len(_rng_states(payload)), accelerator().num_processes
    if writers != processes:
        raise ValueError(
            f"checkpoint {path} was written by {writers} process(es) and this run has "
            f"{processes}; resume it with as many (the batch shares and RNG states are per "
            "process)"
        )
    return payload


def _restore(
    payload: dict[str, Any], model: TPPModel, optimizer: torch.optim.Optimizer, rank: int
) -> TrainState:
    """Model, optimizer and this process's RNG states from a checked ``last.pt`` payload; its
    loop state."""
    model.load_state_dict(payload["model_state"])
    optimizer.load_state_dict(payload["optimizer_state"])
    _set_rng_state(_rng_states(payload)[rank])
    return TrainState.from_dict(payload["state"])


def load_checkpoint(path: str | Path) -> tuple[TPPModel, TrainConfig, dict[str, Any]]:
    """Load a ``best.pt``/``last.pt`` checkpoint; returns (model in eval mode, config, payload)."""
    payload = read_checkpoint(Path(path))
    config = TrainConfig.from_dict(payload["config"])
    model = build_model(config.model, payload["num_types"], config.model_config)
    model.load_state_dict(payload["model_state"])
    model.eval()
    return model, config, payload


def train(
    config: TrainConfig,
    train_ds: EventDataset,
    dev_ds: EventDataset,
    out_dir: str | Path,
    resume: bool = True,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train with dev-set selection; checkpoint every epoch; continue from ``last.pt`` if resuming.

    Epoch 0 is the untrained model (scored on dev, a candidate for selection). A resumed run
    (same config, any ``epochs``) ends with the same parameters as an uninterrupted one: the
    batch order depends only on (seed, epoch) and all RNG states are restored. The inputs are
    checked (`check_inputs`) before anything is written; a non-finite loss, parameter or dev
    LL raises `TrainingDiverged`, with ``last.pt`` still holding the last finite epoch.

    Under ``accelerate launch`` (or ``torchrun``) the processes share every batch
    (`train_epoch`), each scores the whole dev set, and only the main process writes.
    """
    out_dir = Path(out_dir)
    acc = accelerator()
    resumed = check_inputs(config, train_ds, dev_ds, out_dir, resume)
    acc.wait_for_everyone()  # every process has read last.pt before the main one rewrites it
    main = acc.is_main_process
    num_types = train_ds.num_types
    model = make_model(config, num_types)
    optimizer = make_optimizer(config, model)
    module = acc.prepare_model(_LossSums(model, config))
    state = TrainState()
    fingerprint = data_fingerprint(train_ds, dev_ds)
    last_path, best_path = out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT
    best_state: dict[str, torch.Tensor] | None = None  # None: the best epoch is in best.pt

    def keep_best() -> dict[str, torch.Tensor]:
        if main:
            _save_best(best_path, model, config, num_types, state)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    if resumed is not None:
        state = _restore(resumed, model, optimizer, acc.process_index)
    else:
        seed_everything(config.seed)
        clock = _Clock()
        dev = dataset_log_likelihood(model, dev_ds, config.likelihood, config.eval_batch_size)
        state.best_dev_ll_per_event = dev.ll_per_event
        best_state = keep_best()
        state.history.append(EpochRecord(0, None, None, dev.ll_per_event, dev.n_events, *clock()))
        _save_last(last_path, model, optimizer, config, num_types, state, fingerprint, acc)

    bar = tqdm(
        total=config.epochs,
        initial=min(state.epoch, config.epochs),
        desc=f"train {config.model}",
        disable=not (progress and main),
    )
    while state.epoch < config.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        clock = _Clock()
        loss, train_ll = train_epoch(
            module, optimizer, train_ds, config, epoch, acc, progress=progress and main
        )
        dev = dataset_log_likelihood(model, dev_ds, config.likelihood, config.eval_batch_size)
        if not math.isfinite(dev.ll_per_event):
            raise TrainingDiverged(epoch, None, f"dev log-likelihood {dev.ll_per_event}")
        state.epoch = epoch
        if dev.ll_per_event > state.best_dev_ll_per_event:
            state.best_epoch, state.best_dev_ll_per_event = epoch, dev.ll_per_event
            state.bad_epochs = 0
            best_state = keep_best()
        else:
            state.bad_epochs += 1
            state.stopped_early = (
                config.patience is not None and state.bad_epochs >= config.patience
            )
        state.history.append(
            EpochRecord(epoch, loss, train_ll, dev.ll_per_event, dev.n_events, *clock())
        )
        _save_last(last_path, model, optimizer, config, num_types, state, fingerprint, acc)
        bar.update(1)
        bar.set_postfix(
            dev_ll=f"{dev.ll_per_event:.4f}",
            best=f"{state.best_dev_ll_per_event:.4f}@{state.best_epoch}",
        )
    bar.close()

    if best_state is None:
        best_model, _, _ = load_checkpoint(best_path)
    else:
        best_model = build_model(config.model, num_types, config.model_config)
        best_model.load_state_dict(best_state)
        best_model.eval()
    result = TrainResult(
        model=best_model,
        best_epoch=state.best_epoch,
        best_dev_ll_per_event=state.best_dev_ll_per_event,
        history=state.history,
        out_dir=out_dir,
        best_checkpoint=best_path,
        stopped_early=state.stopped_early,
        likelihood_mode=config.likelihood.mode,
    )
    if main:
        write_json(result_summary(result, config), out_dir / RESULT_FILE)
    return result


def result_summary(result: TrainResult, config: TrainConfig) -> dict[str, Any]:
    """JSON-ready summary of a training run (config, selection, per-epoch history)."""
    return {
        "config": config.to_dict(),
        "likelihood_mode": result.likelihood_mode,
        "best_epoch": result.best_epoch,
        "best_dev_ll_per_event": result.best_dev_ll_per_event,
        "stopped_early": result.stopped_early,
        "best_checkpoint": result.best_checkpoint.name,  # in the run directory, wherever it is
        "history": [dataclasses.asdict(r) for r in result.history],
    }
