"""
Vanishing and exploding gradients
=================================

Backpropagation through time multiplies the gradient, at each step back, by the recurrent
weights and by the activation's slope. Over k steps it scales roughly like
(spectral radius x mean slope)^k: it vanishes geometrically below 1 and explodes above.
:mod:`rnnfast.diagnostics` measures this with the same kernels training uses; this is
``rnnfast diagnose``.
"""

import matplotlib.pyplot as plt
import numpy as np

import rnnfast
from rnnfast import diagnostics

# %%
# Random RNNs whose recurrent weights are a random orthogonal matrix times 0.5, 1 and 2 (so
# their spectral radius is exactly that), driven by weak random inputs. A gradient of norm 1
# enters the last state; its norm is measured at every step back.
rows = diagnostics.scale_sweep(hidden=64, seq_len=100, scales=(0.5, 1.0, 2.0), seed=0)
print(f"{'activation':<11}{'weights':<11}{'radius':>7}{'per step':>10}{'norm 100 back':>15}")
for r in rows:
    print(
        f"{r.nonlinearity:<11}{r.label:<11}{r.spectral_radius:>7.3f}{r.decay_rate:>10.4f}"
        f"{r.norms.norm[-1]:>15.3g}"
    )

# %%
# On a log scale the curves are straight lines: a constant factor per step. tanh balances near
# a radius of 1; ReLU passes the gradient through only its active units, about half of them,
# so it balances nearer sqrt(2).
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, nl in zip(axes, ("tanh", "relu"), strict=True):
    for r in (r for r in rows if r.nonlinearity == nl):
        ax.plot(r.norms.distance, r.norms.norm, label=f"{r.label}: x{r.decay_rate:.3g} a step")
    ax.set_yscale("log")
    ax.set_xlabel("steps back from the loss")
    ax.set_title(nl)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
axes[0].set_ylabel("gradient norm")
fig.tight_layout()
plt.show()

# %%
# The same measurement on any weights: :func:`~rnnfast.diagnostics.gradient_norms` takes the
# arrays of :func:`rnnfast.rnn_forward`. Here, the first layer of a fresh ``rnnfast.RNN``
# (PyTorch's initialization): its gradient vanishes within a few dozen steps.
rnn = rnnfast.RNN(32, 64, seed=0, dtype=np.float64)
p = rnn.parameters()
x = np.random.default_rng(1).standard_normal((100, 8, 32))
norms = diagnostics.gradient_norms(
    x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]
)
print(f"spectral radius {diagnostics.spectral_radius(p['weight_hh_l0']):.3f}")
print(f"per-step factor {diagnostics.decay_rate(norms):.3f}")
print(f"saturated units {diagnostics.saturation(norms.states, 'tanh'):.1%}")
