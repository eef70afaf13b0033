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
# Above, the last 100 held-out steps: the naive forecast is the actual curve shifted one step
# right. Below, each forecast's absolute error over all 800 held-out steps, smoothed over 25.
window = t[-100:]
rnn_error = np.abs(pred[t] - series[t + 1])
naive_error = np.abs(naive[t] - series[t + 1])
smooth = np.ones(25) / 25

fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), height_ratios=(3, 2))
top.plot(window + 1, series[window + 1], "k.-", lw=1, label="actual")
top.plot(window + 1, pred[window], color="tab:orange", label="RNN")
top.plot(window + 1, naive[window], color="tab:gray", ls="--", label="last value")
top.set_ylabel("price")
top.legend(ncols=3)
bottom.plot(t[12:-12] + 1, np.convolve(rnn_error, smooth, "valid"), color="tab:orange", label="RNN")
bottom.plot(
    t[12:-12] + 1, np.convolve(naive_error, smooth, "valid"), color="tab:gray", label="last value"
)
bottom.set_xlabel("step")
bottom.set_ylabel("|error|, mean of 25")
bottom.legend(ncols=2)
for ax in (top, bottom):
    ax.grid(True, alpha=0.3)
fig.tight_layout()
plt.show()
