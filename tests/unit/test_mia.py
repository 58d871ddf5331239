"""The membership-inference audit tells a memorising model from a private one."""

from __future__ import annotations

import numpy as np

from models import dpsgd, mia


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 40), dtype=np.float32)
    y = (rng.random(n) < 0.5).astype(np.float32)  # labels are noise: only memory helps
    return x, y


def test_the_attack_separates_an_overfit_model_from_a_dp_one():
    xm, ym = _data(200, 1)
    xn, yn = _data(200, 2)
    config = dpsgd.FitConfig(
        epochs=120, batch_size=100, learning_rate=0.02, optimizer="adam", max_grad_norm=1.0, seed=0
    )

    def fresh():
        return dpsgd.build("mlp", 40, hidden=128)

    overfit = dpsgd.fit(fresh(), xm, ym, loss="bce", config=config, epsilon=None).model
    private = dpsgd.fit(fresh(), xm, ym, loss="bce", config=config, epsilon=1.0).model
    kwargs = {"members": (xm, ym), "non_members": (xn, yn), "loss": "bce", "config": config}
    leaky = mia.audit(overfit, fresh=fresh, **kwargs)
    safe = mia.audit(private, fresh=fresh, **kwargs)
    assert leaky.loss_threshold_auc > 0.7, leaky
    assert leaky.attack_auc > safe.attack_auc + 0.15
    assert safe.attack_auc < 0.6, safe
    assert safe.members == safe.non_members == 200 and safe.reference_models == 4


def test_the_canary_audit_catches_a_memorising_recipe_and_never_beats_a_dp_one():
    x, y = _data(400, 3)
    config = dpsgd.FitConfig(
        epochs=60, batch_size=100, learning_rate=0.02, optimizer="adam", max_grad_norm=1.0
    )

    def fresh():
        return dpsgd.build("mlp", 40, hidden=128)

    leaky = mia.canary_audit(
        fresh, x, y, loss="bce", config=config, epsilon=float("inf"), delta=1e-6
    )
    private = mia.canary_audit(fresh, x, y, loss="bce", config=config, epsilon=1.0, delta=1e-6)
    assert leaky.correct / leaky.guesses > 0.75 and leaky.epsilon_lower_bound > 0.3, leaky
    # an empirical lower bound above the accountant's ε would mean broken accounting
    assert private.epsilon_lower_bound <= private.accountant_epsilon <= 1.0, private
