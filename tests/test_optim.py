"""gpuconv.optim: optimizer updates against hand-written formulas and torch.optim,
parameter groups, checkpoints, learning-rate schedules, gradient clipping, validation."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest

from gpuconv import optim
from gpuconv.optim import lr_scheduler


class Param:
    """The parameter contract the optimizers rely on: .data and .grad."""

    def __init__(self, data, grad=None):
        self.data = data
        self.grad = grad


W0 = np.array([[0.5, -1.5, 0.0], [2.0, -0.25, 1.0]])
# The third gradient is small, so that some second moments shrink (amsgrad then matters).
GRADS = [np.array([[0.3, -0.2, 0.1], [1.0, 0.0, -0.5]]),
         np.array([[0.2, 0.4, -0.3], [-0.6, 0.1, 0.7]]),
         np.array([[0.01, -0.02, 0.03], [0.05, -0.01, 0.02]])]


# ---------------------------------------------------------------------- hand-written updates
# Each takes w0 and the raw gradients and returns the weights after each step, written from
# the pseudo-code in torch.optim's documentation (l1 adds l1 * sign(w) to the gradient).

def hand_sgd(w, grads, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
             nesterov=False, l1=0.0):
    out, b = [], None
    for t, g in enumerate(grads, 1):
        g = g + weight_decay * w + l1 * np.sign(w)
        if momentum:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        w = w - lr * g
        out.append(w)
    return out


def hand_adagrad(w, grads, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, l1=0.0):
    out, s = [], np.full_like(w, initial_accumulator_value)
    for t, g in enumerate(grads, 1):
        g = g + weight_decay * w + l1 * np.sign(w)
        s = s + g ** 2
        w = w - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
        out.append(w)
    return out


def hand_adadelta(w, grads, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, l1=0.0):
    out, v, u = [], np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = g + weight_decay * w + l1 * np.sign(w)
        v = rho * v + (1 - rho) * g ** 2
        d = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * d ** 2
        w = w - lr * d
        out.append(w)
    return out


def hand_rmsprop(w, grads, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, l1=0.0):
    out, v, m, b = [], np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        g = g + weight_decay * w + l1 * np.sign(w)
        v = alpha * v + (1 - alpha) * g ** 2
        m = alpha * m + (1 - alpha) * g
        denom = np.sqrt(v - m ** 2 if centered else v) + eps
        if momentum:
            b = momentum * b + g / denom
            w = w - lr * b
        else:
            w = w - lr * g / denom
        out.append(w)
    return out


def hand_adam(w, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
              amsgrad=False, l1=0.0, decoupled=False):
    (b1, b2), out = betas, []
    m, v, v_max = np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        g = g + l1 * np.sign(w)
        if decoupled:
            w = w * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        v_max = np.maximum(v_max, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (v_max if amsgrad else v) / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


def hand_adamw(w, grads, weight_decay=1e-2, **kw):
    return hand_adam(w, grads, weight_decay=weight_decay, decoupled=True, **kw)


HAND = {"SGD": hand_sgd, "Adagrad": hand_adagrad, "Adadelta": hand_adadelta,
        "RMSprop": hand_rmsprop, "Adam": hand_adam, "AdamW": hand_adamw}

CASES = [
    ("SGD", {}),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.1, weight_decay=0.1, l1=0.05)),
    ("Adagrad", {}),
    ("Adagrad", dict(lr=0.1, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.5,
                     eps=1e-6)),
    ("Adagrad", dict(lr=0.1, l1=0.05)),
    ("Adadelta", {}),
    ("Adadelta", dict(lr=0.5, rho=0.5, eps=1e-4, weight_decay=0.1)),
    ("Adadelta", dict(l1=0.05)),
    ("RMSprop", {}),
    ("RMSprop", dict(alpha=0.9, centered=True)),
    ("RMSprop", dict(momentum=0.9, centered=True, weight_decay=0.1)),
    ("RMSprop", dict(momentum=0.5, eps=1e-3, l1=0.05)),
    ("Adam", {}),
    ("Adam", dict(lr=0.1, amsgrad=True)),
    ("Adam", dict(lr=0.1, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.1, l1=0.05)),
    ("AdamW", {}),
    ("AdamW", dict(lr=0.1, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.1, betas=(0.5, 0.6), l1=0.05)),
]
CASE_IDS = [f"{name}-" + ",".join(f"{k}={v}" for k, v in kw.items()) for name, kw in CASES]


def run_gpuconv(name, kw, w0=W0, grads=GRADS):
    p = Param(w0.copy())
    opt = getattr(optim, name)([p], **kw)
    out = []
    for g in grads:
        p.grad = g.copy()
        opt.step()
        out.append(p.data.copy())
    return out


def assert_trajectories_equal(out, ref, atol=1e-13):
    for t, (w, w_ref) in enumerate(zip(out, ref), 1):
        np.testing.assert_allclose(w, w_ref, rtol=0, atol=atol, err_msg=f"step {t}")


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_first_steps_match_hand_formulas(name, kw):
    assert_trajectories_equal(run_gpuconv(name, kw), HAND[name](W0, GRADS, **kw))


@pytest.mark.parametrize("name, kw", CASES, ids=CASE_IDS)
def test_first_steps_match_torch(name, kw):
    torch = pytest.importorskip("torch")
    kw = dict(kw)
    l1 = kw.pop("l1", 0.0)
    p = torch.nn.Parameter(torch.from_numpy(W0.copy()))
    opt = getattr(torch.optim, name)([p], **kw)
    ref = []
    for g in GRADS:
        w = p.detach().numpy()
        p.grad = torch.from_numpy(g + l1 * np.sign(w))
        opt.step()
        ref.append(p.detach().numpy().copy())
    assert_trajectories_equal(run_gpuconv(name, dict(kw, l1=l1)), ref)


@pytest.mark.parametrize("name", list(HAND))
def test_float32_parameters_stay_float32_and_track_float64(name):
    kw = {"lr": 0.1}
    out32 = run_gpuconv(name, kw, W0.astype(np.float32), [g.astype(np.float32) for g in GRADS])
    out64 = run_gpuconv(name, kw)
    assert out32[-1].dtype == np.float32
    np.testing.assert_allclose(out32[-1], out64[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(HAND))
def test_step_updates_the_data_array_in_place(name):
    p = Param(W0.copy(), GRADS[0].copy())
    data = p.data
    getattr(optim, name)([p], lr=0.1).step()
    assert p.data is data
    assert not np.array_equal(data, W0)


def test_step_leaves_the_gradient_untouched():
    p = Param(W0.copy(), GRADS[0].copy())
    optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, l1=0.1).step()
    np.testing.assert_array_equal(p.grad, GRADS[0])


# ---------------------------------------------------------------------- groups and grads

def test_zero_grad_sets_gradients_to_none():
    ps = [Param(W0.copy(), GRADS[0].copy()), Param(W0.copy(), GRADS[1].copy())]
    optim.SGD(ps).zero_grad()
    assert all(p.grad is None for p in ps)


def test_zero_grad_without_set_to_none_zeroes_in_place():
    p = Param(W0.copy(), GRADS[0].copy())
    grad = p.grad
    optim.SGD([p]).zero_grad(set_to_none=False)
    assert p.grad is grad
    np.testing.assert_array_equal(grad, np.zeros_like(W0))


def test_parameters_without_gradient_are_skipped():
    with_grad, without = Param(W0.copy(), GRADS[0].copy()), Param(W0.copy())
    opt = optim.Adam([without, with_grad], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(without.data, W0)
    assert not np.array_equal(with_grad.data, W0)
    assert list(opt.state) == [1]


def test_param_groups_use_their_own_lr_and_the_defaults_otherwise():
    a, b = Param(W0.copy(), GRADS[0].copy()), Param(W0.copy(), GRADS[1].copy())
    opt = optim.SGD([{"params": [a], "lr": 0.5}, {"params": [b]}], lr=0.1)
    opt.step()
    np.testing.assert_allclose(a.data, W0 - 0.5 * GRADS[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(b.data, W0 - 0.1 * GRADS[1], rtol=0, atol=1e-15)


def test_step_returns_the_closure_loss():
    p = Param(W0.copy(), GRADS[0].copy())
    assert optim.SGD([p]).step(lambda: 3.5) == 3.5


def test_gradient_of_another_shape_is_rejected():
    p = Param(W0.copy(), np.ones(3))
    with pytest.raises(ValueError, match="grad must have shape"):
        optim.SGD([p]).step()


def test_gradient_of_another_dtype_is_rejected():
    p = Param(W0.copy(), GRADS[0].astype(np.float32))
    with pytest.raises(TypeError, match="dtype"):
        optim.SGD([p]).step()


# ---------------------------------------------------------------------- checkpoints

STATEFUL = [("SGD", dict(momentum=0.9, nesterov=True)), ("Adagrad", dict(lr_decay=0.1)),
            ("Adadelta", {}), ("RMSprop", dict(momentum=0.9, centered=True)),
            ("Adam", dict(amsgrad=True)), ("AdamW", dict(weight_decay=0.1))]


def two_params():
    return [Param(W0.copy()), Param(W0[0].copy() * 2)]


def step_with(opt, params, t):
    for p in params:
        p.grad = GRADS[t].reshape(-1)[:p.data.size].reshape(p.data.shape).copy()
    opt.step()


def through_npz(opt_from, opt_to):
    buf = io.BytesIO()
    np.savez(buf, **opt_from.state_arrays("optim."))
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as arrays:
        opt_to.load_state_arrays(arrays, "optim.")


def through_dict(opt_from, opt_to):
    opt_to.load_state_dict(opt_from.state_dict())


@pytest.mark.parametrize("transfer", [through_dict, through_npz], ids=["dict", "npz"])
@pytest.mark.parametrize("name, kw", STATEFUL, ids=[n for n, _ in STATEFUL])
def test_restored_optimizer_continues_identically(name, kw, transfer):
    params_a = two_params()
    opt_a = getattr(optim, name)(params_a, lr=0.1, **kw)
    step_with(opt_a, params_a, 0)
    step_with(opt_a, params_a, 1)
    opt_a.param_groups[0]["lr"] = 0.05  # the lr travels with the state
    params_b = [Param(p.data.copy()) for p in params_a]
    opt_b = getattr(optim, name)(params_b, **kw)
    transfer(opt_a, opt_b)
    step_with(opt_a, params_a, 2)
    step_with(opt_b, params_b, 2)
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_state_dict_is_a_snapshot():
    params = two_params()
    opt = optim.Adam(params, lr=0.1)
    step_with(opt, params, 0)
    sd = opt.state_dict()
    saved = sd["state"][0]["exp_avg"].copy()
    step_with(opt, params, 1)
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)
    assert sd["state"][0]["step"] == 1


def test_load_state_dict_rejects_another_optimizers_state():
    params = two_params()
    adam = optim.Adam(params)
    step_with(adam, params, 0)
    with pytest.raises(ValueError, match="another kind of optimizer"):
        optim.SGD(two_params()).load_state_dict(adam.state_dict())


def test_load_state_dict_rejects_other_parameter_shapes():
    params = two_params()
    opt = optim.Adam(params)
    step_with(opt, params, 0)
    other = [Param(np.zeros(4)), Param(np.zeros(3))]
    with pytest.raises(ValueError, match="has shape"):
        optim.Adam(other).load_state_dict(opt.state_dict())


def test_load_state_dict_rejects_another_parameter_count():
    opt = optim.Adam(two_params())
    with pytest.raises(ValueError, match="parameters but this optimizer's has"):
        optim.Adam([Param(W0.copy())]).load_state_dict(opt.state_dict())


# ---------------------------------------------------------------------- learning-rate schedules

def sgd_with_groups(*lrs):
    return optim.SGD([{"params": [Param(W0.copy())], "lr": lr} for lr in lrs])


def lr_sequence(scheduler, steps, metrics=None):
    lrs = [scheduler.get_last_lr()]
    for t in range(steps):
        scheduler.step() if metrics is None else scheduler.step(metrics[t])
        lrs.append(scheduler.get_last_lr())
    return np.array(lrs)


def test_step_lr_sequence():
    sched = lr_scheduler.StepLR(sgd_with_groups(1.0, 0.1), step_size=2, gamma=0.5)
    factors = [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    np.testing.assert_allclose(lr_sequence(sched, 6), [[f, 0.1 * f] for f in factors], rtol=1e-15)


def test_cosine_annealing_lr_sequence():
    sched = lr_scheduler.CosineAnnealingLR(sgd_with_groups(1.0), T_max=4)
    values = [1, (2 + math.sqrt(2)) / 4, 0.5, (2 - math.sqrt(2)) / 4, 0,
              (2 - math.sqrt(2)) / 4, 0.5]
    np.testing.assert_allclose(lr_sequence(sched, 6)[:, 0], values, rtol=1e-14, atol=1e-16)


def test_cosine_annealing_lr_stops_at_eta_min():
    sched = lr_scheduler.CosineAnnealingLR(sgd_with_groups(1.0), T_max=2, eta_min=0.2)
    np.testing.assert_allclose(lr_sequence(sched, 2)[:, 0], [1.0, 0.6, 0.2], rtol=1e-15)


def test_linear_lr_warmup_sequence():
    sched = lr_scheduler.LinearLR(sgd_with_groups(2.0), start_factor=0.25, total_iters=3)
    np.testing.assert_allclose(lr_sequence(sched, 5)[:, 0], [0.5, 1.0, 1.5, 2.0, 2.0, 2.0],
                               rtol=1e-15)


PLATEAU_MIN = (dict(mode="min", factor=0.5, patience=1, threshold=0.1, threshold_mode="abs",
                    cooldown=1, min_lr=0.2),
               [10, 9.95, 9.9, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0],
               [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2])
PLATEAU_MAX = (dict(mode="max", factor=0.1, patience=0, threshold=0.1),
               [1.0, 1.05, 1.2, 1.1],
               [1, 1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("kw, metrics, expected", [PLATEAU_MIN, PLATEAU_MAX], ids=["min", "max"])
def test_reduce_lr_on_plateau_sequence(kw, metrics, expected):
    sched = lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), **kw)
    np.testing.assert_allclose(lr_sequence(sched, len(metrics), metrics)[:, 0], expected,
                               rtol=1e-15)


SCHEDULES = [("StepLR", dict(step_size=3, gamma=0.5)),
             ("CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
             ("LinearLR", dict(start_factor=0.25, total_iters=4)),
             ("LinearLR", dict(start_factor=1.0, end_factor=0.1, total_iters=3))]
SCHEDULE_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULES)]


@pytest.mark.parametrize("name, kw", SCHEDULES, ids=SCHEDULE_IDS)
def test_schedules_match_torch(name, kw):
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr}
                             for lr in (0.3, 0.02)])
    t_sched = getattr(torch.optim.lr_scheduler, name)(t_opt, **kw)
    expected = [t_sched.get_last_lr()]
    for _ in range(12):
        t_opt.step()
        t_sched.step()
        expected.append(t_sched.get_last_lr())
    sched = getattr(lr_scheduler, name)(sgd_with_groups(0.3, 0.02), **kw)
    np.testing.assert_allclose(lr_sequence(sched, 12), expected, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("kw, metrics, expected", [PLATEAU_MIN, PLATEAU_MAX], ids=["min", "max"])
def test_reduce_lr_on_plateau_matches_torch(kw, metrics, expected):
    torch = pytest.importorskip("torch")
    t_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    t_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kw)
    torch_lrs = [t_sched.get_last_lr()[0]]
    for m in metrics:
        t_sched.step(m)
        torch_lrs.append(t_sched.get_last_lr()[0])
    sched = lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), **kw)
    np.testing.assert_array_equal(lr_sequence(sched, len(metrics), metrics)[:, 0], torch_lrs)


RESTARTABLE = [lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
               lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=5),
               lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=4),
               lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=0, cooldown=1)]
METRICS = [3.0, 2.0, 2.5, 2.5, 2.5, 1.0, 1.5, 1.5]


def step_schedule(sched, t):
    if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
        sched.step(METRICS[t])
    else:
        sched.step()


@pytest.mark.parametrize("make", RESTARTABLE, ids=["step", "cosine", "linear", "plateau"])
def test_restored_scheduler_continues_identically(make):
    opt_a = sgd_with_groups(1.0, 0.1)
    sched_a = make(opt_a)
    for t in range(3):
        step_schedule(sched_a, t)
    opt_b = sgd_with_groups(1.0, 0.1)
    sched_b = make(opt_b)
    opt_b.load_state_dict(opt_a.state_dict())
    sched_b.load_state_dict({k: np.asarray(v) for k, v in sched_a.state_dict().items()})
    assert sched_b.get_last_lr() == sched_a.get_last_lr()
    for t in range(3, len(METRICS)):
        step_schedule(sched_a, t)
        step_schedule(sched_b, t)
        assert sched_b.get_last_lr() == sched_a.get_last_lr()


# ---------------------------------------------------------------------- gradient clipping

def clip_params():
    rng = np.random.default_rng(0)
    return [Param(np.zeros((2, 3)), rng.standard_normal((2, 3))), Param(np.zeros(3)),
            Param(np.zeros(4), rng.standard_normal(4))]


def all_grads(params):
    return np.concatenate([p.grad.ravel() for p in params if p.grad is not None])


@pytest.mark.parametrize("norm_type, norm", [(2.0, lambda g: np.sqrt(np.sum(g ** 2))),
                                             (1.0, lambda g: np.sum(np.abs(g))),
                                             (math.inf, lambda g: np.max(np.abs(g)))],
                         ids=["l2", "l1", "inf"])
def test_clip_grad_norm_returns_total_norm_and_scales_to_max_norm(norm_type, norm):
    params = clip_params()
    before = all_grads(params)
    total = optim.clip_grad_norm_(params, 0.5, norm_type=norm_type)
    assert total == pytest.approx(norm(before), rel=1e-14)
    np.testing.assert_allclose(all_grads(params), before * 0.5 / (total + 1e-6), rtol=1e-14)


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = clip_params()
    before = all_grads(params)
    optim.clip_grad_norm_(params, 100.0)
    np.testing.assert_array_equal(all_grads(params), before)


@pytest.mark.parametrize("scale, norm_type", [(1e20, 2.0), (1e30, 1.0), (1e-30, 3.0),
                                              (1e25, 2.5)])
def test_clip_grad_norm_of_float32_gradients_neither_overflows_nor_underflows(scale, norm_type):
    grads = [np.array([1.0, -2.0, 0.5]), np.array([[3.0, 0.0], [-1.0, 2.0]])]
    params = [Param(np.zeros(g.shape, np.float32), (g * scale).astype(np.float32))
              for g in grads]
    want = np.linalg.norm(np.concatenate([g.ravel() for g in grads]), norm_type) * scale
    total = optim.clip_grad_norm_(params, 1.0, norm_type=norm_type)
    assert total == pytest.approx(want, rel=1e-6)
    assert all(np.all(np.isfinite(p.grad)) for p in params)


def test_clip_grad_norm_without_gradients_is_zero():
    assert optim.clip_grad_norm_([Param(np.zeros(3))], 1.0) == 0.0


def test_clip_grad_norm_raises_on_nonfinite_norm_when_asked():
    params = clip_params()
    params[0].grad[0, 0] = np.inf
    with pytest.raises(ValueError, match="inf"):
        optim.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    params = clip_params()
    t_params = []
    for p in params:
        t = torch.zeros(p.data.shape, dtype=torch.float64, requires_grad=True)
        t.grad = None if p.grad is None else torch.from_numpy(p.grad.copy())
        t_params.append(t)
    t_total = torch.nn.utils.clip_grad_norm_(t_params, 0.7, norm_type=norm_type)
    total = optim.clip_grad_norm_(params, 0.7, norm_type=norm_type)
    assert total == pytest.approx(float(t_total), rel=1e-14)
    for p, t in zip(params, t_params):
        if p.grad is not None:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-14)


# ---------------------------------------------------------------------- validation

def one():
    return [Param(W0.copy())]


INVALID = [
    (lambda: optim.SGD(one(), lr=-0.1), ValueError, "lr must be >= 0"),
    (lambda: optim.SGD(one(), momentum=-0.5), ValueError, "momentum must be >= 0"),
    (lambda: optim.SGD(one(), weight_decay=-1), ValueError, "weight_decay must be >= 0"),
    (lambda: optim.SGD(one(), l1=-1), ValueError, "l1 must be >= 0"),
    (lambda: optim.SGD(one(), nesterov=True), ValueError, "nesterov=True requires momentum"),
    (lambda: optim.SGD(one(), momentum=0.9, dampening=0.1, nesterov=True), ValueError,
     "dampening == 0"),
    (lambda: optim.Adam(one(), betas=(1.0, 0.999)), ValueError, r"betas\[0\] must be < 1"),
    (lambda: optim.AdamW(one(), betas=(0.9, -0.1)), ValueError, r"betas\[1\] must be >= 0"),
    (lambda: optim.Adam(one(), eps=0.0), ValueError, "eps must be > 0"),
    (lambda: optim.Adagrad(one(), lr_decay=-1), ValueError, "lr_decay must be >= 0"),
    (lambda: optim.Adagrad(one(), initial_accumulator_value=-1), ValueError,
     "initial_accumulator_value must be >= 0"),
    (lambda: optim.Adadelta(one(), rho=1.5), ValueError, "rho must be <= 1"),
    (lambda: optim.RMSprop(one(), alpha=1.5), ValueError, "alpha must be <= 1"),
    (lambda: optim.RMSprop(one(), momentum=-1), ValueError, "momentum must be >= 0"),
    (lambda: optim.SGD([]), ValueError, "params is an empty list"),
    (lambda: optim.SGD(Param(W0.copy())), TypeError, "iterable"),
    (lambda: optim.SGD([{"params": one(), "learning_rate": 0.1}]), ValueError,
     "unknown hyperparameter"),
    (lambda: optim.SGD([{"params": one(), "lr": -1.0}]), ValueError, "lr must be >= 0"),
    (lambda: optim.SGD(one() * 2), ValueError, "more than once"),
    (lambda: optim.SGD([Param(np.arange(3))]), TypeError, "floating-point"),
    (lambda: lr_scheduler.StepLR(sgd_with_groups(1.0), step_size=0), ValueError, "step_size"),
    (lambda: lr_scheduler.CosineAnnealingLR(sgd_with_groups(1.0), T_max=0), ValueError, "T_max"),
    (lambda: lr_scheduler.LinearLR(sgd_with_groups(1.0), start_factor=0), ValueError,
     "start_factor must be > 0"),
    (lambda: lr_scheduler.LinearLR(sgd_with_groups(1.0), end_factor=1.5), ValueError,
     "end_factor must be <= 1"),
    (lambda: lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), mode="avg"), ValueError,
     "mode must be"),
    (lambda: lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), threshold_mode="x"),
     ValueError, "threshold_mode must be"),
    (lambda: lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), factor=1.0), ValueError,
     "factor must be < 1"),
    (lambda: lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), patience=-1), ValueError,
     "patience must be an int >= 0"),
    (lambda: lr_scheduler.ReduceLROnPlateau(sgd_with_groups(1.0), min_lr=[0.1, 0.2]),
     ValueError, "min_lr has 2 entries"),
    (lambda: lr_scheduler.StepLR(object(), step_size=1), TypeError, "must be a gpuconv.optim"),
    (lambda: optim.clip_grad_norm_(clip_params(), 1.0, norm_type=0), ValueError,
     "norm_type must be > 0"),
    (lambda: optim.clip_grad_norm_(clip_params(), -1.0), ValueError, "max_norm must be >= 0"),
]


@pytest.mark.parametrize("make, error, message", INVALID,
                         ids=[f"{i}-{m.split()[0]}" for i, (_, _, m) in enumerate(INVALID)])
def test_invalid_arguments_are_rejected(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("grad", [[1.0, 2.0, 3.0], 0.5, "g", np.array([1, 2, 3])],
                         ids=["list", "float", "str", "int_array"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad", "Adadelta"])
def test_a_gradient_that_is_not_a_float_array_is_a_type_error_naming_the_parameter(name, grad):
    params = [Param(np.zeros(2), np.zeros(2)), Param(np.zeros(3), grad)]
    opt = getattr(optim, name)(params, lr=0.1)
    with pytest.raises(TypeError, match=r"params\[1\]\.grad \(parameter of shape \(3,\)\)"):
        opt.step()
    assert 1 not in opt.state   # the rejected parameter gets no state entry
