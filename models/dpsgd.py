"""DP-SGD on in-memory tensors with Opacus, and the identical non-private loop.

Training data never leaves the process: the governed extraction hands over NumPy arrays
and this module turns them into tensors. Batches come from :class:`PoissonBatches`, a
vectorised Poisson sampler (each row joins each batch independently with probability
``q``), which is the sampling Opacus' accountants assume. It is duck-typed as a data
loader (``dataset`` and ``__len__``), so ``PrivacyEngine.make_private`` takes it as is
with ``poisson_sampling=False`` and reads ``q = 1 / len(loader)``. The non-private
baseline uses the same sampler, model and optimiser, so speed and utility comparisons
measure the cost of privacy and nothing else.

Per-sample gradients come from Opacus: ``grad_sample_mode="ew"`` (expanded weights; the
hub's default, the fastest in ``benchmarks/models.py``), ``"hooks"`` (Opacus' default)
or ``"ghost"`` (ghost clipping: the per-sample gradient norms without materialising
per-sample gradients).
"""

from __future__ import annotations

import math
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier

Loss = Literal["bce", "mse"]
GradSampleMode = Literal["hooks", "ew", "ghost"]


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 10
    batch_size: int = 512  # expected batch size; Poisson batches vary around it
    max_grad_norm: float = 1.0
    learning_rate: float = 0.5
    optimizer: Literal["sgd", "adam"] = "sgd"
    grad_sample_mode: GradSampleMode = "ew"
    seed: int = 0

    def steps_per_epoch(self, n: int) -> int:
        return max(1, round(n / self.batch_size))

    def sample_rate(self, n: int) -> float:
        """``1 / steps``: exactly the rate Opacus accounts for (it reads ``1 / len(loader)``)."""
        return 1.0 / self.steps_per_epoch(n)


@dataclass
class FitResult:
    model: torch.nn.Module
    private: bool
    epsilon: float  # math.inf when not private
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    epoch_seconds: list[float] = field(default_factory=list)


class PoissonBatches:
    """Poisson-sampled batches of in-memory tensors, one vectorised mask per step."""

    def __init__(
        self, tensors: tuple[torch.Tensor, ...], sample_rate: float, generator: torch.Generator
    ) -> None:
        self.dataset = torch.utils.data.TensorDataset(*tensors)
        self.tensors = tensors
        self.sample_rate = sample_rate
        self.generator = generator
        self.steps = max(1, round(1 / sample_rate))
        if abs(1 / self.steps - sample_rate) > 1e-12:
            raise ValueError("the sample rate must be 1 / steps (what the accountant assumes)")

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.dataset)
        for _ in range(self.steps):
            mask = torch.rand(n, generator=self.generator) < self.sample_rate
            yield tuple(t[mask] for t in self.tensors)


def default_delta(n: int) -> float:
    """δ well below 1/n: at most 1e-6 and at most 1/(10 n)."""
    return min(1e-6, 0.1 / max(n, 1))


def _loss_fn(loss: Loss) -> torch.nn.Module:
    return torch.nn.BCEWithLogitsLoss() if loss == "bce" else torch.nn.MSELoss()


def fit(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    loss: Loss,
    config: FitConfig,
    epsilon: float | None,
    delta: float | None = None,
    on_step: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``(x, y)``: DP-SGD at (ε, δ) when ``epsilon`` is given.

    The noise multiplier is the smallest that keeps Opacus' RDP accountant within
    ``epsilon`` for exactly the steps this loop takes (``epochs × round(n / batch)``); the
    returned ``epsilon`` is what the accountant reports after them.

    ``config.seed`` fixes the initial weights (and, for non-private baselines, the
    batches). A private run draws its batches and its noise from generators seeded by
    the operating system's entropy: a seed written in a spec or on a card must never let
    anyone replay the noise.
    """
    n = len(y)
    delta = delta if delta is not None else default_delta(n)
    torch.manual_seed(config.seed)
    private = epsilon is not None and math.isfinite(epsilon)
    sampler_seed = secrets.randbits(63) if private else config.seed
    generator = torch.Generator().manual_seed(sampler_seed)
    q = config.sample_rate(n)
    features = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    targets = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    loader = PoissonBatches((features, targets), q, generator)
    optimizer: torch.optim.Optimizer
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
    criterion = _loss_fn(loss)
    engine: PrivacyEngine | None = None
    noise = 0.0
    planned_steps = config.epochs * loader.steps
    if private:
        assert epsilon is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # secure_mode (torchcsprng) is off: see README
            noise = float(
                get_noise_multiplier(
                    target_epsilon=epsilon, target_delta=delta, sample_rate=q,
                    steps=planned_steps, accountant="rdp",
                )
            )  # fmt: skip
            engine = PrivacyEngine(accountant="rdp")
            prepared = engine.make_private(
                module=model, optimizer=optimizer, data_loader=loader, criterion=criterion,
                noise_multiplier=noise, max_grad_norm=config.max_grad_norm,
                poisson_sampling=False, grad_sample_mode=config.grad_sample_mode,
                noise_generator=torch.Generator().manual_seed(secrets.randbits(63)),
            )  # fmt: skip
        if config.grad_sample_mode == "ghost":
            model, optimizer, criterion, _ = prepared
        else:
            model, optimizer, _ = prepared
    result = FitResult(
        model=model, private=private, epsilon=math.inf, delta=delta if private else 0.0,
        noise_multiplier=noise, sample_rate=q, steps=0, accountant="rdp" if private else "none",
    )  # fmt: skip
    model.train()
    with warnings.catch_warnings():
        # torch notes that Opacus' hooks fire on outputs when inputs need no grad
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(config.epochs):
            started = time.perf_counter()
            for xb, yb in loader:
                if len(xb) == 0:
                    # An empty Poisson batch (probability (1-q)^n, negligible at the batch
                    # sizes allowed) leaves the model as it is but is still counted.
                    if engine is not None:
                        engine.accountant.step(noise_multiplier=noise, sample_rate=q)
                    result.steps += 1
                    continue
                optimizer.zero_grad()
                out = criterion(model(xb).squeeze(-1), yb)
                out.backward()
                optimizer.step()
                result.steps += 1
                if on_step is not None:
                    on_step(1)
            result.epoch_seconds.append(time.perf_counter() - started)
    model.eval()
    if engine is not None:
        with warnings.catch_warnings():
            # at small ε the best RDP order is the largest Opacus tries: the bound is
            # still valid, only not as tight as it could be
            warnings.simplefilter("ignore", UserWarning)
            result.epsilon = float(engine.get_epsilon(delta))
        assert epsilon is not None
        if result.steps != planned_steps or result.epsilon > epsilon * (1 + 1e-9):
            # never expected: the noise was calibrated for exactly these steps
            raise RuntimeError(
                f"accounting mismatch: {result.steps} steps (planned {planned_steps}), "
                f"ε {result.epsilon:.6g} (target {epsilon:.6g})"
            )
    return result


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside Opacus' wrapper (for saving and inference)."""
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def predict(model: torch.nn.Module, x: np.ndarray, *, loss: Loss) -> np.ndarray:
    """Probabilities for a ``bce`` model, values for an ``mse`` one."""
    module = unwrap(model)
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).squeeze(-1)
        if loss == "bce":
            out = torch.sigmoid(out)
    return np.asarray(out.numpy(), dtype=np.float64)


def per_sample_loss(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, loss: Loss
) -> np.ndarray:
    """Each row's loss under ``model`` (what a membership-inference attacker observes)."""
    module = unwrap(model)
    fn = (
        torch.nn.BCEWithLogitsLoss(reduction="none")
        if loss == "bce"
        else torch.nn.MSELoss(reduction="none")
    )
    with torch.no_grad():
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
        return np.asarray(fn(module(xt).squeeze(-1), yt).numpy(), dtype=np.float64)


def build(kind: Literal["logistic", "mlp"], inputs: int, *, hidden: int = 32) -> torch.nn.Module:
    """A fresh model: logistic (one linear layer) or a one-hidden-layer tanh MLP.

    Tanh (a bounded, smooth activation) keeps gradients small under clipping, which
    suits DP-SGD better than ReLU (Papernot et al., "Tempered Sigmoid Activations").
    """
    if kind == "logistic":
        return torch.nn.Linear(inputs, 1)
    return torch.nn.Sequential(
        torch.nn.Linear(inputs, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
