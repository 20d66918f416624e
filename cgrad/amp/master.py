"""float32 master weights for a float16 model (mixed precision, "O2").

The model keeps float16 parameters (half the memory and bandwidth in
forward and backward on the GPU); the optimizer updates float32 copies, so
small updates are not rounded away, and each step writes the result back to
the float16 parameters. With a GradScaler the float16 gradients are copied
into float32 before they are unscaled and checked for inf/NaN, so unscaling
does not underflow in float16::

    model.to("cuda").half()
    opt = cgrad.amp.MasterWeights(cgrad.optim.AdamW(model.parameters(), lr=1e-3))
    scaler = cgrad.amp.GradScaler(device="cuda")
    for x, y in data:
        opt.zero_grad()
        scaler.scale(loss_fn(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
"""
from cgrad import _core
from cgrad._grad_mode import no_grad


class MasterWeights:
    """Wraps an optimizer built on float16 parameters: its param_groups are
    switched to float32 masters (same device, requires grad), and step()
    copies gradients in, steps, and copies the weights back. Anything else
    (param_groups, state, state_dict, lr schedulers, StepReport) is the
    wrapped optimizer's."""

    def __init__(self, optimizer, master_dtype=None):
        if getattr(optimizer, "state", None) and len(optimizer.state):
            raise ValueError("MasterWeights: wrap the optimizer before its first step (it already has state)")
        self.optimizer = optimizer
        self.master_dtype = _core.float32 if master_dtype is None else master_dtype
        self._pairs = []  # (float16 model parameter, its float32 master)
        for group in optimizer.param_groups:
            params = []
            for p in group["params"]:
                if p.dtype is _core.float16:
                    m = p.detach().to(self.master_dtype, copy=True)
                    m.requires_grad_(True)
                    self._pairs.append((p, m))
                    params.append(m)
                else:
                    params.append(p)
            group["params"] = params
        if not self._pairs:
            raise ValueError("MasterWeights: the optimizer has no float16 parameters")
        self._prepared = False

    def __getattr__(self, name):  # param_groups, state, _report_extra, _skip_step, ...
        return getattr(self.optimizer, name)

    @property
    def masters(self):
        """The float32 master of each float16 parameter, in order."""
        return [m for _, m in self._pairs]

    def _prepare_grads(self):
        """Master grads = the model's float16 grads in float32 (once per step;
        GradScaler calls this before it unscales)."""
        if self._prepared:
            return
        for p, m in self._pairs:
            m.grad = None if p.grad is None else p.grad.detach().to(m.dtype)
        self._prepared = True

    def zero_grad(self, set_to_none=True):
        for p, m in self._pairs:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                with no_grad():
                    p.grad.zero_()
            m.grad = None
        self.optimizer.zero_grad(set_to_none=set_to_none)
        self._prepared = False

    def step(self, closure=None):
        self._prepare_grads()
        result = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        with no_grad():
            for p, m in self._pairs:
                p.copy_(m)  # rounded to float16
        self._prepared = False
        return result

    def _skip_step(self, *args, **kwargs):
        self._prepared = False
        skip = getattr(self.optimizer, "_skip_step", None)
        if skip is not None:
            return skip(*args, **kwargs)
        return None

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(),
                "masters": [m.detach().cpu() for m in self.masters]}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        with no_grad():
            for (p, m), saved in zip(self._pairs, state["masters"]):
                m.copy_(saved)
                p.copy_(m)
