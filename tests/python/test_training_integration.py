"""The training toolkit working together: lr schedulers driving optimizers
(against torch), a full checkpoint resumed bit for bit, an MLP trained with
AdamW + warmup-cosine + clipping, and a user optimizer in ~15 lines."""
import math

import numpy as np
import pytest

import cgrad
from cgrad import nn
from cgrad.amp import GradScaler
from cgrad.nn import functional as F
from cgrad.nn.utils import clip_grad_norm_
from cgrad.optim import lr_scheduler as L
from cgrad.utils.data import DataLoader


# ------------------------------------------------ schedulers against torch
def _sched_cases():
    return {
        "step_sgd": (lambda M, o: M.StepLR(o, step_size=7, gamma=0.5),
                     "SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
        "multistep_rmsprop": (lambda M, o: M.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.3),
                              "RMSprop", dict(lr=0.01, momentum=0.5)),
        "exponential_adam": (lambda M, o: M.ExponentialLR(o, gamma=0.95), "Adam", dict(lr=0.05)),
        "cosine_adamw": (lambda M, o: M.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
                         "AdamW", dict(lr=0.05, weight_decay=0.1)),
        "warm_restarts_sgd": (lambda M, o: M.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2),
                              "SGD", dict(lr=0.1, momentum=0.8)),
        "one_cycle_sgd": (lambda M, o: M.OneCycleLR(o, max_lr=0.2, total_steps=40),
                          "SGD", dict(lr=0.1, momentum=0.9)),
        "one_cycle_adam": (lambda M, o: M.OneCycleLR(o, max_lr=0.05, total_steps=40,
                                                     anneal_strategy="linear"), "Adam", dict(lr=0.01)),
        "linear_adagrad": (lambda M, o: M.LinearLR(o, start_factor=0.1, total_iters=10),
                           "Adagrad", dict(lr=0.1)),
        "polynomial_sgd": (lambda M, o: M.PolynomialLR(o, total_iters=30, power=2.0), "SGD",
                           dict(lr=0.1)),
        "sequential_adamw": (lambda M, o: M.SequentialLR(
            o, [M.LinearLR(o, start_factor=0.2, total_iters=5), M.CosineAnnealingLR(o, T_max=30)],
            milestones=[5]), "AdamW", dict(lr=0.03)),
        "lambda_adam": (lambda M, o: M.LambdaLR(o, lambda e: 1.0 / (1 + 0.1 * e)), "Adam",
                        dict(lr=0.05)),
    }


CASES = _sched_cases()


def _models(torch, seed=0):
    cgrad.manual_seed(seed)
    ours = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_scheduler_drives_optimizer_like_torch(torch, case):
    make, opt_name, kwargs = CASES[case]
    ours, theirs = _models(torch)
    opt = getattr(cgrad.optim, opt_name)(ours.parameters(), **kwargs)
    topt = getattr(torch.optim, opt_name)(theirs.parameters(), foreach=False, **kwargs)
    sched, tsched = make(L, opt), make(torch.optim.lr_scheduler, topt)
    rng = np.random.default_rng(1)
    lrs, tlrs = [], []
    for _ in range(40):
        x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 2))
        used = opt.param_groups[0]["lr"]
        opt.zero_grad()
        F.mse_loss(ours(cgrad.tensor(x)), cgrad.tensor(y)).backward()
        opt.step()
        assert opt.last_report.lr[0] == used  # the report holds the lr the step used
        sched.step()
        topt.zero_grad()
        torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
        tsched.step()
        lrs.append(opt.param_groups[0]["lr"])
        tlrs.append(topt.param_groups[0]["lr"])
    # cgrad evaluates a chained cosine in closed form where torch recurses, so
    # near the end of SequentialLR's cosine torch has drifted by ~1e-14
    np.testing.assert_allclose(lrs, tlrs, rtol=1e-12, atol=0)
    assert len(set(lrs)) > 3  # the schedule did move
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_reduce_on_plateau_drives_sgd_like_torch(torch):
    ours, theirs = _models(torch)
    opt = cgrad.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, foreach=False)
    sched = L.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=1e-2)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, factor=0.5, patience=2, threshold=1e-2)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((32, 4)), rng.standard_normal((32, 2))
    lrs, tlrs = [], []
    for _ in range(60):
        opt.zero_grad()
        loss = F.mse_loss(ours(cgrad.tensor(x)), cgrad.tensor(y))
        loss.backward()
        opt.step()
        topt.zero_grad()
        tloss = torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(y))
        tloss.backward()
        topt.step()
        sched.step(loss.item())
        tsched.step(tloss.item())
        lrs.append(opt.param_groups[0]["lr"])
        tlrs.append(topt.param_groups[0]["lr"])
    assert lrs == tlrs and min(lrs) < 0.1
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), tp.detach().numpy(), rtol=1e-9, atol=1e-12)


# ------------------------------------------------------- full checkpoint
N, BATCH = 100, 16
SEED_DATA = 3


def _data():
    rng = np.random.default_rng(SEED_DATA)
    x = rng.standard_normal((N, 6)).astype(np.float32)
    y = (np.sin(x[:, :1] * 2) + x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    return x, y


def _build(seed):
    """A fresh run: model with dropout, AdamW, warmup-cosine, GradScaler, loader."""
    cgrad.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
    opt = cgrad.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    sched = L.WarmupCosineLR(opt, warmup_steps=5, total_steps=40, eta_min=1e-4)
    scaler = GradScaler(init_scale=2.0 ** 8, growth_interval=3)
    loader = DataLoader(_data(), batch_size=BATCH, shuffle=True, seed=11)
    return dict(model=model, opt=opt, sched=sched, scaler=scaler, loader=loader)


def _train(run, n_steps, pos, losses):
    """n_steps steps from pos = {loader state at the epoch's start, batch index}."""
    model, opt, sched, scaler, loader = (run[k] for k in ("model", "opt", "sched", "scaler", "loader"))
    done = 0
    while True:
        pos["loader"] = loader.state_dict()  # this epoch's order is a function of it
        for b, (xb, yb) in enumerate(loader):
            if b < pos["batch"]:
                continue
            if done == n_steps:
                return
            opt.zero_grad()
            loss = F.mse_loss(model(xb), yb)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(loss.item())
            pos["batch"] = b + 1
            done += 1
        pos["batch"] = 0


def test_checkpoint_resume_continues_the_loss_trajectory_exactly(tmp_path):
    straight = []
    run = _build(seed=0)
    _train(run, 30, {"batch": 0}, straight)

    resumed = []
    run = _build(seed=0)
    pos = {"batch": 0}
    _train(run, 17, pos, resumed)  # stops mid-epoch (7 batches per epoch)
    assert pos["batch"] == 3
    loader_state = dict(pos["loader"])
    cgrad.save({"model": run["model"].state_dict(), "optimizer": run["opt"].state_dict(),
                "scheduler": run["sched"].state_dict(), "scaler": run["scaler"].state_dict(),
                "rng": cgrad.get_rng_state(), "loader": loader_state, "batch": pos["batch"],
                "losses": resumed}, tmp_path / "ckpt.safetensors")
    del run

    fresh = _build(seed=123)  # other weights, other RNG stream
    ck = cgrad.load(tmp_path / "ckpt.safetensors")
    fresh["model"].load_state_dict(ck["model"])
    fresh["opt"].load_state_dict(ck["optimizer"])
    fresh["sched"].load_state_dict(ck["scheduler"])
    fresh["scaler"].load_state_dict(ck["scaler"])
    fresh["loader"].load_state_dict(ck["loader"])
    cgrad.set_rng_state(ck["rng"])
    resumed = list(ck["losses"])
    _train(fresh, 13, {"batch": ck["batch"]}, resumed)

    assert len(resumed) == 30
    assert resumed == straight  # bitwise: dropout masks, batches, lr, scale, moments
    assert fresh["scaler"].get_scale() > 2.0 ** 8  # the scale grew and was carried over


# ------------------------------------------------ MLP to a loss threshold
def test_mlp_adamw_warmup_cosine_clipping_reaches_threshold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((512, 8)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    cgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 1))
    opt = cgrad.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-2)
    epochs, loader = 40, DataLoader((x, y), batch_size=64, shuffle=True, seed=0)
    total = epochs * len(loader)
    sched = L.WarmupCosineLR(opt, warmup_steps=20, total_steps=total, eta_min=1e-5)
    xt, yt = cgrad.from_numpy(x), cgrad.from_numpy(y)
    with cgrad.no_grad():
        start = F.mse_loss(model(xt), yt).item()
    clipped = 0
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            F.mse_loss(model(xb), yb).backward()
            clip_grad_norm_(model.parameters(), max_norm=1.0)
            opt.step()
            sched.step()
            rep = opt.last_report
            assert rep.max_norm == 1.0 and rep.grad_norm_before_clip is not None
            clipped += rep.clipped
    with cgrad.no_grad():
        final = F.mse_loss(model(xt), yt).item()
    assert final < 0.02 < start / 10, (start, final)
    assert clipped > 0
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)


# ------------------------------------------- a user optimizer in 15 lines
class CosineSGD(cgrad.optim.Optimizer):
    """Plain SGD whose lr follows a cosine from lr to eta_min over T_max steps."""

    def __init__(self, params, lr=0.1, T_max=100, eta_min=0.0):
        super().__init__(params, dict(lr=lr, T_max=T_max, eta_min=eta_min))
        self.t = 0

    @cgrad.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else cgrad.enable_grad()(closure)()
        for g in self.param_groups:
            lr = g["eta_min"] + (g["lr"] - g["eta_min"]) * (1 + math.cos(math.pi * self.t / g["T_max"])) / 2
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        self.t += 1
        return loss


def test_user_cosine_sgd_matches_builtin_sgd_with_cosine_schedule(torch):
    rng = np.random.default_rng(4)
    batches = [(rng.standard_normal((16, 4)), rng.standard_normal((16, 2))) for _ in range(30)]
    runs = []
    for kind in ("user", "builtin"):
        model, theirs = _models(torch)
        if kind == "user":
            opt = CosineSGD(model.parameters(), lr=0.2, T_max=30, eta_min=0.01)
            sched = None
        else:
            opt = cgrad.optim.SGD(model.parameters(), lr=0.2)
            sched = L.CosineAnnealingLR(opt, T_max=30, eta_min=0.01)
        posts = []
        opt.register_step_post_hook(lambda o, a, k: posts.append(1))
        for x, y in batches:
            def closure():
                opt.zero_grad()
                loss = F.mse_loss(model(cgrad.tensor(x)), cgrad.tensor(y))
                loss.backward()
                return loss
            assert opt.step(closure) is not None
            if sched is not None:
                sched.step()
        assert len(posts) == 30 and opt.last_report.step == 29  # hooks and reports work
        runs.append([p.detach().numpy().copy() for p in model.parameters()])
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)

    # and torch's SGD + CosineAnnealingLR land in the same place
    _, theirs = _models(torch)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.2, foreach=False)
    tsched = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=30, eta_min=0.01)
    for x, y in batches:
        topt.zero_grad()
        torch.nn.functional.mse_loss(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
        tsched.step()
    for a, tp in zip(runs[0], theirs.parameters()):
        np.testing.assert_allclose(a, tp.detach().numpy(), rtol=1e-9, atol=1e-12)
