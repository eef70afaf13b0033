"""
Forecasting a series
====================

A synthetic price (trend + seasonality + mildly autocorrelated noise). A
``SequenceRegressor`` learns from the first 80% and forecasts each next value of the rest,
against the naive forecast "tomorrow equals today", which lags every seasonal move. This is
the second half of ``rnnfast demo``.
"""

import matplotlib.pyplot as plt
import numpy as np

import rnnfast
from rnnfast import datasets

series = datasets.synthetic_series(4000, seed=0)
n_train = int(0.8 * len(series))

# %%
# Train by truncated BPTT on the first 3,200 steps: a larger learning rate first, then a
# smaller one to settle.
model = rnnfast.SequenceRegressor(hidden_size=64, seed=0)
losses = model.fit(series[:n_train], steps=600, bptt=50, batch_size=16, lr=5e-3)
losses += model.fit(series[:n_train], steps=300, bptt=50, batch_size=16, lr=1e-3)
print(f"training loss {np.mean(losses[:20]):.4f} -> {np.mean(losses[-20:]):.4f}")

# %%
# ``predict`` runs the whole series; ``pred[t]`` forecasts ``series[t + 1]``. Score the
# held-out steps only.
pred = model.predict(series)
naive = rnnfast.SequenceRegressor.last_value_baseline(series)
t = np.arange(n_train - 1, len(series) - 1)
rnn_rmse = float(np.sqrt(np.mean((pred[t] - series[t + 1]) ** 2)))
naive_rmse = float(np.sqrt(np.mean((naive[t] - series[t + 1]) ** 2)))
print(f"held-out RMSE: RNN {rnn_rmse:.3f}, last value {naive_rmse:.3f}")
print(f"the RNN's error is {rnn_rmse / naive_rmse:.2f}x the naive forecast's")

# %%
# The last 200 held-out steps.
window = t[-200:]
fig, ax = plt.subplots(figsize=(8, 4))
ax.plot(window + 1, series[window + 1], color="black", lw=1.5, label="actual")
ax.plot(window + 1, pred[window], color="tab:orange", label=f"RNN (RMSE {rnn_rmse:.2f})")
ax.plot(
    window + 1,
    naive[window],
    color="tab:gray",
    ls="--",
    label=f"last value (RMSE {naive_rmse:.2f})",
)
ax.set_xlabel("step")
ax.set_ylabel("price")
ax.set_title("One-step-ahead forecasts")
ax.grid(True, alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()
