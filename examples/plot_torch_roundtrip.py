"""
A PyTorch round trip
====================

:class:`rnnfast.RNN` has ``torch.nn.RNN``'s parameter names, shapes and layout, so a state
dict moves between them as it is. This example loads a PyTorch RNN's weights into rnnfast,
compares the outputs and the gradients, trains a few steps in rnnfast and sends the weights
back.

PyTorch is not a dependency of rnnfast (nor of its documentation). Without it, the example
makes the same round trip against PyTorch's documented equations written out in NumPy
(``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``, per layer), which is what the
state dict means to PyTorch.
"""

import matplotlib.pyplot as plt
import numpy as np

import rnnfast

try:
    import torch
except ImportError:
    torch = None
print("torch", torch.__version__ if torch is not None else "is not installed: NumPy stand-in")

T, B, D, H, L = 40, 4, 8, 16, 2
x = np.random.default_rng(0).standard_normal((T, B, D)).astype(np.float64)


def torch_style_forward(state, x):
    """PyTorch's nn.RNN equations on a state dict (float64 NumPy): output and h_n."""
    inp, h_n = x, []
    for k in range(L):
        w_ih, w_hh = state[f"weight_ih_l{k}"], state[f"weight_hh_l{k}"]
        b = state[f"bias_ih_l{k}"] + state[f"bias_hh_l{k}"]
        h = np.zeros((x.shape[1], H))
        out = []
        for t in range(x.shape[0]):
            h = np.tanh(inp[t] @ w_ih.T + h @ w_hh.T + b)
            out.append(h)
        inp = np.stack(out)
        h_n.append(h)
    return inp, np.stack(h_n)


# %%
# The source: a PyTorch RNN (or its state dict, drawn as PyTorch initializes one).
if torch is not None:
    torch.manual_seed(0)
    source = torch.nn.RNN(D, H, num_layers=L).double()
    state = source.state_dict()

    def reference(state, x):
        source.load_state_dict(state)
        out, h_n = source(torch.from_numpy(x))
        return out.detach().numpy(), h_n.detach().numpy()
else:
    state = rnnfast.RNN(D, H, num_layers=L, dtype=np.float64, seed=42).state_dict()
    reference = torch_style_forward

print({k: tuple(v.shape) for k, v in state.items()})

# %%
# Into rnnfast: every key and shape is checked before anything is copied.
rnn = rnnfast.RNN(D, H, num_layers=L, dtype=np.float64, seed=1)
print(rnn.load_state_dict(state))
out, h_n = rnn(x)
ref_out, ref_h_n = reference(state, x)
print(f"max |output - reference| = {np.abs(out - ref_out).max():.2e}")
print(f"max |h_n - reference|    = {np.abs(h_n - ref_h_n).max():.2e}")

# %%
# Gradients: with PyTorch, compare rnnfast's explicit backward with autograd.
d_out = np.random.default_rng(2).standard_normal(out.shape)
rnn.zero_grad()
dx, dh0 = rnn.backward(d_out)
if torch is not None:
    xt = torch.from_numpy(x).requires_grad_()
    source.load_state_dict(state)
    source.zero_grad()
    out_t, _ = source(xt)
    out_t.backward(torch.from_numpy(d_out))
    print(f"max |dx - autograd| = {np.abs(dx - xt.grad.numpy()).max():.2e}")
    for name, p in source.named_parameters():
        err = np.abs(rnn.grads[name] - p.grad.numpy()).max()
        print(f"max |grad {name} - autograd| = {err:.2e}")
else:
    print(f"dx {dx.shape}, dh0 {dh0.shape}; parameter gradients: {sorted(rnn.grads)}")

# %%
# Train a few steps in rnnfast (make the last layer's mean output follow a sine), then send the
# weights back and check that the reference now computes what rnnfast computes.
target = np.sin(np.linspace(0, 4 * np.pi, T))[:, None, None] * np.ones((1, B, 1))
opt = rnnfast.Adam(rnn.parameters(), rnn.grads, lr=1e-2)
losses = []
for _ in range(150):
    rnn.zero_grad()
    out, _ = rnn(x)
    pred = out.mean(axis=2, keepdims=True)
    loss, d_pred = rnnfast.mse(pred, target)
    rnn.backward(np.repeat(d_pred / H, H, axis=2))
    opt.step()
    losses.append(loss)
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")

trained = rnn.state_dict()  # NumPy arrays, PyTorch's names
if torch is not None:
    trained = {k: torch.from_numpy(v) for k, v in trained.items()}
back_out, _ = reference(trained, x)
out, _ = rnn(x)
print(f"after the trip back: max |output - reference| = {np.abs(out - back_out).max():.2e}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
ax.plot(target[:, 0, 0], color="black", label="target")
ax.plot(back_out.mean(axis=2)[:, 0], ls="--", label="reference, trained weights")
ax.plot(out.mean(axis=2)[:, 0], ls=":", lw=2, label="rnnfast")
ax.set_xlabel("step")
ax.set_title("The weights trained in rnnfast, run by the reference")
ax.legend()
fig.tight_layout()
plt.show()
