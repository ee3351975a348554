
import pytest
import torch

from cifarlab import optim as O
from cifarlab.config import ConfigError, from_dict
from cifarlab.models import VGG


def test_piecewise_follows_keras_boundaries():
    # the study's step_decay: boundaries 1400, 2800, 10000; values 0.1 .. 0.0001
    b, v = [1400, 2800, 10000], [0.1, 0.01, 0.001, 0.0001]
    assert [O.piecewise(s, b, v) for s in (0, 1400, 1401, 2800, 2801, 10000, 10001, 10 ** 6)] == \
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001, 0.0001]


def test_cosine_values():
    assert O.cosine(0, 0.1, 100) == pytest.approx(0.1)
    assert O.cosine(50, 0.1, 100) == pytest.approx(0.05)
    assert O.cosine(100, 0.1, 100) == pytest.approx(0.0)
    assert O.cosine(500, 0.1, 100, alpha=0.1) == pytest.approx(0.01)


def test_cosine_restarts_periods_double():
    lr = lambda s: O.cosine_restarts(s, 1.0, 10, t_mul=2.0)  # noqa: E731
    assert lr(0) == pytest.approx(1.0)
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)  # restart
    assert lr(20) == pytest.approx(0.5)  # middle of the 20-step second period
    assert lr(30) == pytest.approx(1.0)  # next restart
    assert O.cosine_restarts(15, 1.0, 10, t_mul=1.0) == pytest.approx(0.5)


def test_warmup_then_decay():
    assert O.warmup_cosine(0, 0.4, 10, 110) == pytest.approx(0.04)
    assert O.warmup_cosine(9, 0.4, 10, 110) == pytest.approx(0.4)
    assert O.warmup_cosine(60, 0.4, 10, 110) == pytest.approx(0.2)
    assert O.warmup_cosine(110, 0.4, 10, 110) == pytest.approx(0.0)
    assert O.warmup_linear(60, 0.4, 10, 110) == pytest.approx(0.2)
    assert O.warmup_linear(110, 0.4, 10, 110, alpha=0.1) == pytest.approx(0.04)


def test_onecycle_peaks_then_anneals():
    total = 1000
    vals = [O.onecycle(s, 1.0, total, pct=0.3) for s in range(total)]
    assert vals[0] == pytest.approx(1 / 25)
    assert max(vals) == pytest.approx(1.0) and vals.index(max(vals)) == 300
    assert vals[-1] < 1e-3


def test_build_schedule_uses_epochs_for_piecewise():
    cfg = from_dict({"schedule": "piecewise", "boundaries": [2, 4], "values": [1.0, 0.5, 0.25],
                     "boundary_unit": "epochs", "epochs": 6})
    lr = O.build_schedule(cfg, steps_per_epoch=10)
    assert (lr(20), lr(21), lr(41)) == (1.0, 0.5, 0.25)


def test_l2_penalty_is_keras_sum_of_squares_on_kernels():
    net = VGG()
    expected = 0.001 * sum((k ** 2).sum() for k in net.kernels())
    assert O.l2_penalty(net, 0.001).item() == pytest.approx(expected.item(), rel=1e-6)
    # output layer and biases are not regularised
    assert all(k is not net.head[-1].weight for k in net.kernels())


def test_decoupled_decay_touches_only_chosen_parameters():
    net = VGG()
    cfg = from_dict({"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.5, "decay_on": "kernels", "momentum": 0.0})
    opt = O.build_optimizer(net, cfg)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    O.decoupled_decay(opt)
    opt.step()
    kernels = {id(k) for k in net.kernels()}
    for n, p in net.named_parameters():
        factor = 1 - 0.1 * 0.5 if id(p) in kernels else 1.0
        torch.testing.assert_close(p.detach(), before[n] * factor)


def test_adamw_groups_and_keras_defaults():
    net = VGG()
    cfg = from_dict({"optimizer": "adamw", "weight_decay": 0.004, "decay_on": "all"})
    opt = O.build_optimizer(net, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.004
    assert opt.param_groups[0]["eps"] == 1e-7
    cfg = from_dict({"optimizer": "adamw", "weight_decay": 0.004, "decay_on": "weights"})
    groups = {g["name"]: g for g in O.build_optimizer(net, cfg).param_groups}
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    assert all(p.ndim == 1 for p in groups["no_decay"]["params"])


@pytest.mark.parametrize("mult", [1.0, 1.2, 2.0, 3.0])
def test_every_restart_mult_the_config_accepts_gives_a_rate_at_every_step(mult):
    cfg = from_dict({"schedule": "cosine_restarts", "restart_mult": mult, "decay_epochs": 1, "epochs": 40,
                     "lr": 0.1, "min_lr_factor": 0.1})
    lr = O.build_schedule(cfg, steps_per_epoch=5)
    rates = [lr(s) for s in range(40 * 5 + 1)]
    assert all(0.01 - 1e-12 <= r <= 0.1 + 1e-12 for r in rates)
    assert rates[0] == pytest.approx(0.1) and rates[5] == pytest.approx(0.1)  # the first restart


def test_restart_mult_below_one_is_refused_where_the_schedule_would_fail():
    # periods of 10, 5, 2.5, ... steps end the schedule at step 20: beyond it there is no rate
    assert O.cosine_restarts(19, 1.0, 10, t_mul=0.5) >= 0
    with pytest.raises(ValueError, match="math domain"):
        O.cosine_restarts(21, 1.0, 10, t_mul=0.5)
    with pytest.raises(ConfigError, match=r"restart_mult=0\.5: must be a finite number at least 1"):
        from_dict({"schedule": "cosine_restarts", "restart_mult": 0.5})


def test_nesterov_without_momentum_is_refused_as_torch_would_refuse_it():
    net = VGG()
    with pytest.raises(ValueError, match="Nesterov"):  # what a run met after loading the data
        torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.0, nesterov=True)
    with pytest.raises(ConfigError, match="nesterov=true needs momentum above 0.*momentum=0.9.*nesterov=false"):
        from_dict({"optimizer": "sgd", "nesterov": True, "momentum": 0.0})
    # the settings either side of the line build their optimiser
    assert O.build_optimizer(net, from_dict({"nesterov": True, "momentum": 0.5})).param_groups[0]["nesterov"]
    assert not O.build_optimizer(net, from_dict({"nesterov": False, "momentum": 0.0})).param_groups[0]["nesterov"]
    # Adam and AdamW have no momentum setting of their own: nesterov is not theirs to refuse
    assert isinstance(O.build_optimizer(net, from_dict({"optimizer": "adam", "nesterov": True, "momentum": 0.0})),
                      torch.optim.Adam)
