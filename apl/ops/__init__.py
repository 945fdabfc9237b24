"""The loss core behind `torch.ops.apl`, one job per module:

- `extension`: loads the compiled kernels (apl._C) and says what they hold;
- `compiled`: fake kernels and autograd of the compiled ops, thin callers;
- `reference`, `reference_rank`: the pure-PyTorch references of AP_Q and of the rank surrogates
  (autograd end to end);
- `core`: the loss on validated inputs with a backend already chosen;
- `dispatch`: which backend runs, and why the others cannot; the once-per-device self-check;
- `selftest`: the compiled kernels against the reference on each device;
- `validation`: argument checks of the public API; `variants`: variant names and constants;
- `health`: checks of a batch as the loss sees it (one big tie, queries without a positive);
- `notices`: warnings given once per process.

The public API on top is `apl.functional` and the loss modules; nothing here imports them.
"""
from . import compiled  # noqa: F401  (registers the fake kernels and autograd of torch.ops.apl)
