"""Encoders are causal, time-shift behaviour matches each model, heads follow their formula,
and one short training run lowers the NLL of every model."""

import math
from collections.abc import Callable

import pytest
import torch

from neuraltpp.data import Batch
from neuraltpp.likelihood import LikelihoodOptions, log_likelihood
from neuraltpp.models import MODEL_NAMES, ModelConfig, TPPModel, build_model
from neuraltpp.models.mhp import GapStep


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_encoders_are_causal(
    name: str, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model = make_model(name)
    batch = make_batch()
    h = model.hidden(batch)
    for j in (0, 4, 9):
        times, types = batch.times.clone(), batch.types.clone()
        times[:, j + 1 :] += 0.7  # move event j+1 (and keep later ones ordered)
        types[:, j + 1] = (types[:, j + 1] + 1) % 3
        h2 = model.hidden(batch._replace(times=times, types=types))
        torch.testing.assert_close(h2[:, : j + 1], h[:, : j + 1], rtol=0, atol=1e-6)
        assert (h2[0, j + 1] - h[0, j + 1]).abs().max() > 1e-4  # the change is seen from j+1 on


@pytest.mark.parametrize("name", ["rothp", "mhp", "mhpe"])
@pytest.mark.parametrize("shift", [10.0, 1e3, 1e6])
def test_time_difference_encoders_are_shift_invariant(
    name: str, shift: float, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model = make_model(name)
    h = model.hidden(make_batch())
    torch.testing.assert_close(model.hidden(make_batch(shift=shift)), h, rtol=0, atol=1e-5)


def test_thp_uses_absolute_time(
    make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model = make_model("thp")
    h = model.hidden(make_batch())
    assert (model.hidden(make_batch(shift=10.0)) - h).abs().max() > 1e-2


def test_intensity_head_formula(make_model: Callable[..., TPPModel]) -> None:
    model = make_model("rothp", k=2)
    heads = model.heads
    with torch.no_grad():
        heads.alpha.copy_(torch.tensor([0.5, -2.0]))
        heads.log_beta.copy_(torch.log(torch.tensor([1.0, 3.0])))
    h = torch.randn(4, 16)
    dt = torch.rand(4, 5, dtype=torch.float64)
    lam = model.intensity(h, dt)
    assert lam.shape == (4, 5, 2)
    x = (h @ heads.intensity_proj.weight.T + heads.intensity_proj.bias)[:, None, :]
    x = x + heads.alpha * dt.float()[..., None]
    beta = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(lam, torch.log1p(torch.exp(beta * x)) / beta)
    assert model.type_logits(h).shape == (4, 2)
    assert (model.gap(h) > 0).all() and model.gap(h).shape == (4,)


def test_gap_step_functions() -> None:
    gaps = torch.tensor([0.0, 0.3, 0.6, 5.0, 50.0], dtype=torch.float64)
    authors = GapStep("authors")(gaps)
    assert authors[2] == authors[3] == authors[4] == 1.0  # saturated above log(e - 1) ~ 0.54
    assert authors[0] == pytest.approx(math.log(2.0))
    affine = GapStep("affine-softplus")(gaps).detach()
    assert (affine.diff() > 0).all() and affine[0] > 0 and affine[-1] == pytest.approx(50.0)
    raw = GapStep("raw")(gaps)
    assert raw[0] == 1e-6 and torch.equal(raw[1:], gaps[1:])
    with pytest.raises(ValueError, match="dt_fn"):
        GapStep("linear")


def test_build_model_validates(make_batch: Callable[..., Batch]) -> None:
    model = build_model("mhp", 3, ModelConfig(d_model=16, n_heads=2))
    assert type(model.encoder).__name__ == "MHPEncoder"
    assert model.hidden(make_batch(k=3)).shape == (3, 12, 16)  # config honoured: d_model 16
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nhp", 2)
    with pytest.raises(ValueError, match="unknown model config keys"):
        build_model("thp", 2, {"width": 3})
    with pytest.raises(ValueError, match="dt_fn"):
        build_model("mhp", 2, {"dt_fn": "exp"})
    with pytest.raises(ValueError, match="scan_write"):
        build_model("mhp", 2, {"scan_write": "held"})


def test_mhp_exact_is_mhp_with_its_fixed_fields() -> None:
    model = build_model("mhp-exact", 3, {"d_model": 16, "n_heads": 2, "decoder": "decay"})
    encoder = model.encoder
    assert type(encoder).__name__ == "MHPEncoder" and encoder.step.kind == "raw"
    assert all(b.write == "impulse" and b.conv.kernel_size == (1,) for b in encoder.layers)
    assert type(model.heads).__name__ == "DecayHeads"  # the other fields are the caller's
    plain = build_model("mhp", 3, {"d_model": 16, "n_heads": 2}).encoder
    assert plain.step.kind == "affine-softplus" and plain.layers[0].conv.kernel_size == (4,)
    with pytest.raises(ValueError, match="fixes"):
        build_model("mhp-exact", 3, {"d_conv": 4, "dt_fn": "raw"})  # explicit, if the default
    with pytest.raises(ValueError, match="fixes"):
        build_model("mhp-exact", 3, ModelConfig(scan_write="zoh", dt_fn="authors"))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_steps_reduce_nll(
    name: str, make_model: Callable[..., TPPModel], make_batch: Callable[..., Batch]
) -> None:
    model = make_model(name, dropout=0.0).train()
    batch = make_batch(seed=1, b=4, n=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def nll() -> torch.Tensor:
        ll = log_likelihood(model, batch, LikelihoodOptions(first_event="start-state"))
        return -ll.total / ll.n_events

    before = float(nll().detach())
    for _ in range(25):
        opt.zero_grad()
        loss = nll()
        loss.backward()
        heads_only = ("heads.type_proj", "heads.gap_proj")  # trained by the auxiliary losses
        for pname, p in model.named_parameters():
            assert pname.startswith(heads_only) or p.grad is not None, pname
        opt.step()
    assert float(nll().detach()) < before - 0.1
