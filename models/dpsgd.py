"""DP-SGD on in-memory tensors with Opacus, and the identical non-private loop.

Training data never leaves the process: the governed extraction hands over NumPy arrays
and this module turns them into tensors. Batches come from :class:`PoissonBatches`, a
vectorised Poisson sampler (each row joins each batch independently with probability
``q``), which is the sampling Opacus' accountants assume. It is duck-typed as a data
loader (``dataset`` and ``__len__``), so ``PrivacyEngine.make_private`` takes it as is
with ``poisson_sampling=False`` and reads ``q = 1 / len(loader)``. The non-private
baseline uses the same sampler, model and optimiser, so speed and utility comparisons
measure the cost of privacy and nothing else.

**Secure randomness.** In a private run every random draw that the guarantee rests on
comes from the operating system's CSPRNG (``os.urandom``): the Poisson masks (53-bit
uniforms) and the Gaussian noise. Opacus' own ``secure_mode`` needs ``torchcsprng``,
which is archived and has no build for torch 2.13; OpenDP's exact Gaussian sampler
measured 47 µs per sample (33 ms a step for a 700-parameter MLP, far past the 2× budget).
So the noise follows Opacus' secure-mode construction (the sum of four Gaussians over 2,
which defeats the floating-point attacks of Mironov 2012 / Jin et al. 2022 on a single
Box-Muller draw) with every uniform drawn from the CSPRNG (:func:`secure_normal`). The
cost is measured in ``benchmarks/models.py``. Non-private baselines use a seeded torch
generator (reproducible; they protect nothing).

Per-sample gradients come from Opacus: ``grad_sample_mode="ew"`` (expanded weights; the
hub's default, the fastest in ``benchmarks/models.py``), ``"hooks"`` (Opacus' default)
or ``"ghost"`` (ghost clipping: the per-sample gradient norms without materialising
per-sample gradients).
"""

from __future__ import annotations

import math
import os
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

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
    # the rows the sample rate is planned for (never the cohort's own size: the steps and
    # noise multiplier on a card must not reveal it); None: the rows given to ``fit``
    planned_rows: int | None = None

    def steps_per_epoch(self, n: int) -> int:
        rows = self.planned_rows if self.planned_rows is not None else n
        return max(1, round(rows / self.batch_size))

    def sample_rate(self, n: int) -> float:
        """``1 / steps``: exactly the rate Opacus accounts for (it reads ``1 / len(loader)``)."""
        return 1.0 / self.steps_per_epoch(n)

    def expected_batch(self, n: int) -> float:
        """What a step's noisy gradient sum is divided by: the planned rows per step
        (about ``batch_size``). Opacus divides by ``int(len(dataset) * q)``, the
        cohort's own size times ``q``: 0 below one person per step (the weights became
        NaN exactly then) and otherwise a step size that counts the cohort."""
        rows = self.planned_rows if self.planned_rows is not None else n
        return max(1.0, rows / self.steps_per_epoch(n))


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
    method: str = "dp-sgd"  # or "adassp" (models.adassp)
    # the mechanism's own record for the card (AdaSSP: ρ, σ and Δ of each release)
    mechanism: dict[str, Any] = field(default_factory=dict)


class PoissonBatches:
    """Poisson-sampled batches of in-memory tensors, one vectorised mask per step."""

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        sample_rate: float,
        generator: torch.Generator | None,
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
            if self.generator is None:  # private: the CSPRNG
                picked = secure_poisson_indices(n, self.sample_rate)
            else:
                picked = torch.nonzero(
                    torch.rand(n, generator=self.generator) < self.sample_rate
                ).numpy()[:, 0]
            # index_select on the few picked rows is much cheaper than a boolean mask
            # over every row of every tensor
            index = torch.from_numpy(np.ascontiguousarray(picked, dtype=np.int64))
            yield tuple(t.index_select(0, index) for t in self.tensors)


def secure_poisson_indices(n: int, q: float) -> np.ndarray:
    """The rows of a Poisson sample of ``range(n)`` (each row in independently with
    probability ``q``), in order, from the OS CSPRNG.

    Rather than one uniform per row, it draws the gaps between picked rows, which are
    geometric with success probability ``q`` (``floor(log u / log(1 - q)) + 1`` for ``u``
    uniform on (0, 1]): the same law, with about ``n q`` random draws instead of ``n``.

    >>> secure_poisson_indices(5, 1.0).tolist()
    [0, 1, 2, 3, 4]
    >>> len(secure_poisson_indices(1000, 0.0))
    0
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be a probability")
    if q == 0.0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if q == 1.0:
        return np.arange(n, dtype=np.int64)
    scale = math.log1p(-q)
    chunks = []
    last = -1
    while True:
        m = int(n * q * 1.1) + 32  # one draw almost always reaches past the end
        u = 1.0 - secure_uniform(m)  # (0, 1]: log is finite
        # a gap past the end is as good as any longer one (and a tiny q makes it inf)
        gaps = np.minimum(np.floor(np.log(u) / scale) + 1, n + 1).astype(np.int64)
        rows = last + np.cumsum(gaps)
        inside = rows[rows < n]
        chunks.append(inside)
        if len(inside) < m:
            return np.concatenate(chunks)
        last = int(rows[-1])


def secure_uniform(n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) with 53 random bits each, from the OS CSPRNG."""
    bits = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    return bits.astype(np.float64) / float(2**53)


def secure_normal(shape: tuple[int, ...], std: float) -> torch.Tensor:
    """Gaussian noise N(0, std²) from the OS CSPRNG, as Opacus' secure mode builds it:
    the sum of four Box-Muller draws over 2 (the same variance, robust to
    floating-point attacks on a single draw).

    >>> secure_normal((3,), 0.0).tolist()
    [0.0, 0.0, 0.0]
    """
    n = math.prod(shape)
    if std == 0 or n == 0:
        return torch.zeros(shape)
    # Box-Muller gives two normals per pair of uniforms: 4 in all, from one read
    u = secure_uniform(4 * n).reshape(2, 2, n)
    r = np.sqrt(-2.0 * np.log(1.0 - u[:, 0]))  # 1 - u in (0, 1]: log is finite
    angle = 2 * math.pi * u[:, 1]
    total = (r * np.cos(angle) + r * np.sin(angle)).sum(axis=0)
    return torch.from_numpy(total / 2.0 * std).reshape(shape)


def _secure_add_noise(self: Any) -> None:
    """Opacus' ``DPOptimizer.add_noise`` with the noise from :func:`secure_normal`, one
    draw for all parameters of the step."""
    std = self.noise_multiplier * self.max_grad_norm
    sizes = [p.summed_grad.numel() for p in self.params]
    noise = secure_normal((sum(sizes),), std)
    for p, part in zip(self.params, torch.split(noise, sizes), strict=True):
        _check_processed_flag(p.summed_grad)
        p.grad = (p.summed_grad + part.view_as(p.summed_grad).to(p.summed_grad.dtype)).view_as(p)
        _mark_as_processed(p.summed_grad)


def _finite_per_sample(optimizer: Any) -> None:
    """A per-sample gradient that is not finite counts as zero before clipping: a NaN
    survives Opacus' clipping (its norm is NaN) and turns every weight NaN, so one
    person's value would decide whether the model diverged."""
    for p in getattr(optimizer, "params", []):
        sample = getattr(p, "grad_sample", None)
        if isinstance(sample, torch.Tensor):
            torch.nan_to_num_(sample, nan=0.0, posinf=0.0, neginf=0.0)


def _noise_only_step(optimizer: Any) -> None:
    """The step of an empty Poisson batch in a private run: a zero gradient sum plus
    the step's noise, divided and applied as any step's. Skipping it left the weights
    untouched, so a cohort that nobody joined returned its seeded initial weights
    exactly, and every run told whether a batch had held anyone."""
    for p in optimizer.params:
        p.summed_grad = torch.zeros_like(p)
    optimizer.add_noise()
    if optimizer.loss_reduction == "mean":
        for p in optimizer.params:
            p.grad /= optimizer.expected_batch_size
    optimizer.original_optimizer.step()
    optimizer.zero_grad()


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
    batches). A private run draws its batches and its noise from the OS CSPRNG: a seed
    written in a spec or on a card must never let anyone replay the noise.
    """
    n = len(y)
    delta = delta if delta is not None else default_delta(n)
    torch.manual_seed(config.seed)
    private = epsilon is not None and math.isfinite(epsilon)
    generator = None if private else torch.Generator().manual_seed(config.seed)
    q = config.sample_rate(n)
    # inputs finite whatever the caller passed (the encoder already gives [0, 1])
    features = torch.nan_to_num(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), 0.0, 0.0, 0.0
    )
    targets = torch.nan_to_num(
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), 0.0, 0.0, 0.0
    )
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
            warnings.simplefilter("ignore")  # secure_mode warning: our own CSPRNG noise, above
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
            )  # fmt: skip
        if config.grad_sample_mode == "ghost":
            model, optimizer, criterion, _ = prepared
        else:
            model, optimizer, _ = prepared
        setattr(optimizer, "add_noise", types.MethodType(_secure_add_noise, optimizer))  # noqa: B010
        # the divisor is planned, never read from the cohort (``FitConfig.expected_batch``)
        optimizer.expected_batch_size = config.expected_batch(n)  # type: ignore[attr-defined]
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
                    # An empty Poisson batch is counted and reported like any other step
                    # (how many batches were empty depends on how many people the cohort
                    # holds, which no progress bar may show); in a private run it still
                    # adds its noise, so the weights never show that nobody was drawn
                    if engine is not None:
                        _noise_only_step(optimizer)
                        engine.accountant.step(noise_multiplier=noise, sample_rate=q)
                    result.steps += 1
                    if on_step is not None:
                        on_step(1)
                    continue
                optimizer.zero_grad()
                out = criterion(model(xb).squeeze(-1), yb)
                out.backward()
                _finite_per_sample(optimizer)
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
    values = np.asarray(out.numpy(), dtype=np.float64)
    # a diverged model (weights overflowed to inf or NaN) predicts a fixed value, so its
    # held-out metrics and audits are computed like any other model's, never an error
    return np.where(np.isfinite(values), values, 0.5 if loss == "bce" else 0.0)


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
