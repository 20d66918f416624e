"""Helpers for the nn tests: run one cgrad module and the torch module with
the same weights on the same input, and compare outputs and gradients."""
import numpy as np

import cgrad
from oracle import assert_close


def flat_outputs(out):
    """Tensors of a (nested tuple) module output, in order."""
    if isinstance(out, (tuple, list)):
        res = []
        for o in out:
            res += flat_outputs(o)
        return res
    return [] if out is None else [out]


def copy_to_torch(ours, theirs, torch):
    """Load our state_dict into the torch module (keys must match)."""
    sd = {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(sd)


def _cg_dtype(torch_dtype, torch):
    return cgrad.float64 if torch_dtype == torch.float64 else cgrad.float32


def compare_module(ours, theirs, torch, inputs, *, dtype="float64", atol=1e-10, rtol=1e-8,
                   grad_inputs=None, call=None, seed=0):
    """inputs: numpy arrays (float ones get requires_grad unless
    grad_inputs says otherwise; int ones are indices). Compares forward
    outputs, input gradients and parameter gradients of sum(out_i * v_i)."""
    tdt = getattr(torch, dtype)
    cdt = _cg_dtype(tdt, torch)
    copy_to_torch(ours, theirs, torch)
    ours.to(cdt)
    theirs.to(tdt)
    if grad_inputs is None:
        grad_inputs = [np.issubdtype(np.asarray(a).dtype, np.floating) for a in inputs]
    cx, tx = [], []
    for a, g in zip(inputs, grad_inputs):
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating):
            cx.append(cgrad.tensor(a, dtype=cdt, requires_grad=g))
            tx.append(torch.tensor(a, dtype=tdt, requires_grad=g))
        else:
            cx.append(cgrad.tensor(a, dtype=cgrad.int64))
            tx.append(torch.tensor(a, dtype=torch.int64))
    call = call or (lambda m, *xs: m(*xs))
    couts = flat_outputs(call(ours, *cx))
    touts = flat_outputs(call(theirs, *tx))
    assert len(couts) == len(touts), f"{len(couts)} outputs vs torch's {len(touts)}"
    rng = np.random.default_rng(seed)
    vs = [rng.standard_normal(tuple(t.shape)) for t in touts]
    for i, (c, t) in enumerate(zip(couts, touts)):
        assert tuple(c.shape) == tuple(t.shape), f"output {i}: shape {c.shape} vs torch {tuple(t.shape)}"
        assert c.dtype == cdt, f"output {i}: dtype {c.dtype}, expected {cdt}"
        assert_close(f"output {i} vs torch", c.detach().numpy(), t.detach().numpy(), atol, rtol)
    closs = None
    tloss = None
    for c, t, v in zip(couts, touts, vs):
        if not c.requires_grad:
            continue
        term_c = (c * cgrad.tensor(v, dtype=cdt)).sum()
        term_t = (t * torch.tensor(v, dtype=tdt)).sum()
        closs = term_c if closs is None else closs + term_c
        tloss = term_t if tloss is None else tloss + term_t
    if closs is None:
        return couts, touts
    closs.backward()
    tloss.backward()
    for i, (c, t) in enumerate(zip(cx, tx)):
        if t.requires_grad:
            assert c.grad is not None, f"input {i} got no gradient"
            assert_close(f"gradient of input {i} vs torch", c.grad.numpy(), t.grad.numpy(), atol, rtol)
    tparams = dict(theirs.named_parameters())
    cparams = dict(ours.named_parameters())
    assert sorted(cparams) == sorted(tparams), f"{sorted(cparams)} vs torch {sorted(tparams)}"
    for name, p in cparams.items():
        tg = tparams[name].grad
        if tg is None:
            assert p.grad is None or not np.any(p.grad.numpy()), f"{name}: torch has no gradient"
            continue
        assert p.grad is not None, f"parameter {name} got no gradient"
        assert p.grad.dtype == cdt, f"gradient of {name} has dtype {p.grad.dtype}"
        assert_close(f"gradient of {name} vs torch", p.grad.numpy(), tg.numpy(), atol, rtol)
    return couts, touts
