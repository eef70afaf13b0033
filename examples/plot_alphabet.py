"""
The alphabet, both ways
=======================

People complete "A, B, C, D, E, F ..." at once and stumble on "Z, Y, X, W, V ...". A small
character RNN learns both directions from runs of the alphabet (one run per line, each starting
at a random letter and going a random way), then completes every two-letter prompt.
This is the first half of ``rnnfast demo``.
"""

import matplotlib.pyplot as plt
import numpy as np

import rnnfast
from rnnfast import datasets

# %%
# The data: 2,000 runs of the alphabet, forward or backward, from a random start.
data = datasets.alphabet(2000, seed=0)
print(f"{len(data.text):,} characters, vocabulary {data.vocab!r}")
print(data.text[:80])

# %%
# Train a ``CharRNN`` with 64 hidden units by truncated BPTT (windows of 32 characters,
# 16 streams in parallel, Adam).
model = rnnfast.CharRNN(data.vocab, hidden_size=64, seed=0)
losses = model.fit(data.text, steps=600, bptt=32, batch_size=16, lr=1e-2)
floor = datasets.alphabet_loss_floor()
print(f"loss {losses[0]:.3f} -> {np.mean(losses[-50:]):.3f} nats per character")
print(f"best possible: {floor:.3f} (where a run starts and which way it goes are random)")

# %%
# Complete a few prompts greedily (temperature 0). A prompt starts after a line break, as a
# run does, so the model knows a run begins there.
for letters in ["ABCDEF", "ZYXWV", "HI", "RQ", "KJ"]:
    prompt = next(q for q in datasets.alphabet_prompts(len(letters)) if q.prompt[1:] == letters)
    got = model.sample(prompt.prompt, len(prompt.answer), temperature=0)
    verdict = "correct" if got == prompt.answer else f"expected {prompt.answer.strip()}"
    print(f"{letters:>7} -> {got.strip():<26} {verdict}")

# %%
# Every two-letter prompt, both directions: the share of letters completed right.
prompts = datasets.alphabet_prompts(2)
right = total = 0
for q in prompts:
    got = model.sample(q.prompt, len(q.answer), temperature=0)
    right += sum(a == b for a, b in zip(got, q.answer, strict=True))
    total += len(q.answer)
print(f"{right / total:.1%} of {total} letters right over {len(prompts)} prompts")

# %%
# The loss per step, against the best possible.
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.plot(losses, lw=0.8, alpha=0.5, label="loss per step")
smooth = np.convolve(losses, np.ones(25) / 25, mode="valid")
ax.plot(np.arange(24, len(losses)), smooth, label="mean of 25 steps")
ax.axhline(floor, color="gray", ls="--", label=f"best possible ({floor:.2f})")
ax.set_xlabel("step")
ax.set_ylabel("nats per character")
ax.set_title("The alphabet both ways")
ax.legend()
fig.tight_layout()
plt.show()
