"""Training epochs on CUDA: the shared train step (stages/core/epochs.py) captured once as a CUDA graph and replayed.

No host sync inside an epoch and one launch per step. Batches have one fixed size, min(batch_size, examples):
each epoch draws a new order and trains on its first steps * batch examples, dropping the ragged rest (fewer than
one batch; a different rest every epoch, as DataLoader(drop_last=True) does). The step reads its batch from a
device-side order and step counter and draws augmentation numbers from a CUDA generator seeded with `seed`.
"""
import time
from contextlib import contextmanager

import torch
from torch import nn

from stages.core.epochs import prepare, train_step
from stages.infra.errors import one_line


class CudaEpochs:
    """The epoch runner for CUDA (interface in stages/core/epochs.py).

    The step is captured after a few warm-up steps (cuDNN autotuning, Adam's state), whose effect on weights, Adam's
    state and random streams is undone; each step is then one graph replay. With capture=False, or if capture
    fails, the same step runs eagerly (still sync-free) and `describe()` says why; that eager path runs on any
    device, so a CPU test can hold it against the eager loop. The learning rate lives in a device tensor that the
    graph reads, refilled from the optimiser's param groups before each epoch, so LR schedulers keep working.
    """

    WARMUP_STEPS = 3

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, batch_size: int,
                 seed: int, augment=None, capture: bool = True):
        if x.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
        prepare(model, x)
        self.model, self.x, self.y, self.loss_fn, self.optimizer, self.augment = model, x, y, loss_fn, optimizer, augment
        self.device = device = x.device
        self.batch = max(1, min(batch_size, len(x)))
        self.steps, self.dropped = divmod(len(x), self.batch)
        self.eval_batch = max(batch_size, 256)  # validation: eagerly, in large batches
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.order = torch.zeros(self.steps, self.batch, dtype=torch.long, device=device)
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.total = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.lrs = [torch.full((), float(g["lr"]), device=device) for g in optimizer.param_groups]
        self.graph, self.why_eager = None, "capture off"
        started = time.perf_counter()
        if capture:
            self._warm_up()
            self._capture()
            torch.cuda.synchronize(device)
        self.warmup_seconds = time.perf_counter() - started

    def describe(self) -> str:
        how = "CUDA graph, one replay per step" if self.graph is not None else f"eager ({self.why_eager})"
        return (f"{self.device.type}: {how}; batch {self.batch} x {self.steps} steps an epoch, {self.dropped} examples "
                f"of each shuffled epoch dropped; warm-up and capture {self.warmup_seconds:.2f}s (not in epoch times)")

    def _step(self) -> None:
        index = self.order.index_select(0, self.counter).view(-1)  # this step's row of the epoch's order
        self.counter += 1
        train_step(self.model, self.x, self.y, index, self.loss_fn, self.optimizer, (self.total, self.correct),
                   self.augment, self.generator)

    @contextmanager
    def _tensor_lr(self):
        """The param groups read their lr from self.lrs (what a captured step must do), then get their floats back."""
        groups = self.optimizer.param_groups
        floats = [g["lr"] for g in groups]
        for group, lr in zip(groups, self.lrs):
            lr.fill_(float(group["lr"]))
            group["lr"] = lr
        try:
            yield
        finally:
            for group, value in zip(groups, floats):
                group["lr"] = value

    def _warm_up(self) -> None:
        """A few real steps on a side stream (cuDNN picks its kernels, Adam makes its state), then undone."""
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        streams = self.generator.get_state(), torch.cuda.get_rng_state(self.device)
        self.order.copy_(torch.arange(self.steps * self.batch, device=self.device).view(self.steps, self.batch))
        self.model.train()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), self._tensor_lr():
            for _ in range(self.WARMUP_STEPS):
                self.counter.zero_()
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore(weights, streams)

    def _restore(self, weights: dict, streams: tuple) -> None:
        with torch.no_grad():
            for key, value in self.model.state_dict().items():  # in place: a captured graph holds these addresses
                value.copy_(weights[key])
            for state in self.optimizer.state.values():  # as if Adam had never stepped
                for value in state.values():
                    if torch.is_tensor(value):
                        value.zero_()
        self.generator.set_state(streams[0])
        torch.cuda.set_rng_state(streams[1], self.device)

    def _capture(self) -> None:
        graph, stream = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.device)
        if hasattr(graph, "register_generator_state"):
            graph.register_generator_state(self.generator)  # replays draw fresh numbers from it
        else:  # older torch: augmentation draws from the default CUDA generator, which every graph tracks
            self.generator = torch.cuda.default_generators[self.device.index or torch.cuda.current_device()]
        streams = self.generator.get_state(), torch.cuda.get_rng_state(self.device)
        try:
            with self._tensor_lr(), torch.cuda.graph(graph):
                self._step()
            self.graph = graph
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to the same step, eagerly
            self.graph, self.why_eager = None, f"CUDA graph capture failed: {one_line(err)[:300]}"
            torch.cuda.set_stream(stream)  # a failed capture can leave its side stream current
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(self.device)
        finally:
            self.generator.set_state(streams[0])
            torch.cuda.set_rng_state(streams[1], self.device)

    def epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One epoch in a new random order; (mean loss, accuracy) as device tensors, so the caller decides when to
        sync. Nothing here waits for the GPU."""
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(float(group["lr"]))
        order = torch.randperm(len(self.x), generator=self.generator, device=self.device)
        self.order.copy_(order[: self.steps * self.batch].view(self.steps, self.batch))
        self.counter.zero_()
        self.total.zero_()
        self.correct.zero_()
        self.model.train()
        for _ in range(self.steps):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        used = self.steps * self.batch
        return self.total / used, self.correct / used

    def stats(self) -> tuple[float, float | None]:
        """One epoch; its mean loss (and accuracy for class ids) as floats: one host sync, at the end."""
        loss, accuracy = self.epoch()
        return loss.item(), accuracy.item() if self.y.dtype == torch.long else None
