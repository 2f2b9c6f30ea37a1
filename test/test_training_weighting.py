"""DB-MTL and STCH on a toy two-task problem with very different loss scales."""
import pytest
import torch

from endoarss_ros.training.weighting import DBMTL, STCH, EqualWeighting, build_weighting


class Toy(torch.nn.Module):
    """Shared vector w, one head scalar per task; task losses of very different scale."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.5, -0.3, 0.8]))
        self.h1 = torch.nn.Parameter(torch.tensor(1.5))
        self.h2 = torch.nn.Parameter(torch.tensor(-0.7))

    def losses(self, scale1=1000.0, scale2=0.01):
        l1 = scale1 * ((self.h1 * self.w[0] - 2.0) ** 2 + (self.w[1] - 1.0) ** 2) + 0.1
        l2 = scale2 * ((self.h2 * self.w[2] + 1.0) ** 2 + 0.5 * (self.w[0] + self.w[1]) ** 2) + 0.01
        return [l1, l2]


def close(a, b, rtol=1e-5, atol=1e-7):
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    return torch.allclose(a, b, rtol=rtol, atol=atol)


def _grads(loss, params):
    return [g.detach() for g in torch.autograd.grad(loss, params, retain_graph=True)]


def test_dbmtl_rescales_each_task_shared_gradient_to_the_largest_norm():
    toy = Toy()
    shared, task = [toy.w], [toy.h1, toy.h2]
    db = DBMTL(beta=0.9)
    buf = torch.zeros(2, 3)
    for _step in range(3):
        for p in toy.parameters():
            p.grad = None
        losses = toy.losses()
        g = torch.stack([_grads(torch.log(l + 1e-8), [toy.w])[0] for l in losses])
        head1 = _grads(torch.log(losses[0] + 1e-8), [toy.h1])[0]
        head2 = _grads(torch.log(losses[1] + 1e-8), [toy.h2])[0]
        db.backward(losses, shared, task)
        buf = 0.9 * buf + 0.1 * g  # EMA from zero
        norms = buf.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        assert db.last_alpha == pytest.approx(alpha.tolist(), rel=1e-5)
        # after rescaling both tasks' shared gradients have the largest norm
        assert db.last_norms[0] == pytest.approx(db.last_norms[1], rel=1e-5)
        assert db.last_norms[0] == pytest.approx(float(norms.max()), rel=1e-5)
        assert close(toy.w.grad, (alpha[:, None] * buf).sum(0))
        # heads: plain log-loss gradients
        assert close(toy.h1.grad, head1)
        assert close(toy.h2.grad, head2)
        with torch.no_grad():
            toy.w -= 0.01 * toy.w.grad


def test_dbmtl_is_invariant_to_loss_scale():
    def shared_grad(scale1, scale2):
        toy = Toy()
        DBMTL().backward(toy.losses(scale1, scale2), [toy.w], [toy.h1, toy.h2])
        return toy.w.grad.clone()

    # the constant offsets aside, log-loss gradients barely depend on the scale; rescaling equalises norms
    a, b = shared_grad(1.0, 1.0), shared_grad(1000.0, 0.01)
    eq = Toy()
    EqualWeighting().backward(eq.losses(1000.0, 0.01), [eq.w], [eq.h1, eq.h2])
    # equal weighting is dominated by the large task: its w[2] component (task 2 only) is tiny relative
    assert abs(eq.w.grad[2]) / eq.w.grad.norm() < 1e-4
    assert abs(b[2]) / b.norm() > 0.05
    assert torch.allclose(a / a.norm(), b / b.norm(), atol=0.05)


def test_stch_warmup_then_nadir_then_smooth_tchebycheff():
    toy = Toy()
    st = STCH(mu=1.0, warmup_epochs=2)
    params = [toy.w, toy.h1, toy.h2]
    seen = []
    for epoch in range(2):  # warm-up: sum of log losses
        st.start_epoch(epoch)
        for _ in range(3):
            for p in params:
                p.grad = None
            losses = toy.losses()
            expected = _grads(sum(torch.log(l + 1e-8) for l in losses), params)
            st.backward(losses, [toy.w], [toy.h1, toy.h2])
            for p, e in zip(params, expected):
                assert close(p.grad, e)
            if epoch == 1:
                seen.append(torch.stack([l.detach() for l in losses]))
            with torch.no_grad():
                for p in params:
                    p -= 1e-4 * p.grad
        assert st.phase == "warmup"
        st.end_epoch(epoch)
    nadir = torch.stack(seen).mean(0)  # mean losses of the warm-up's last epoch
    assert st.phase == "tchebycheff"
    assert close(st.nadir, nadir, rtol=1e-6)

    st.start_epoch(2)
    for p in params:
        p.grad = None
    losses = toy.losses()
    u = torch.stack([torch.log(l + 1e-8) for l in losses]) - torch.log(nadir + 1e-8)
    expected = _grads(2 * 1.0 * torch.logsumexp(u / 1.0, 0), params)
    st.backward(losses, [toy.w], [toy.h1, toy.h2])
    for p, e in zip(params, expected):
        assert close(p.grad, e, rtol=1e-4)


def test_stch_weights_the_task_furthest_above_its_nadir():
    toy = Toy()
    st = STCH(mu=0.1, warmup_epochs=0)
    base = toy.losses()
    st.backward(base, [toy.w], [toy.h1, toy.h2])  # first batch sets the nadir
    assert st.nadir is not None
    for p in toy.parameters():
        p.grad = None
    l1, l2 = toy.losses()
    g1 = _grads(torch.log(l1), [toy.h1])[0]
    st.backward([l1 * 2.0, l2 * 1.01], [toy.w], [toy.h1, toy.h2])  # task 1 is twice its nadir
    # with small mu the objective is ~ T * log(L1 / z1): the gradient of head 2 nearly vanishes
    assert close(toy.h1.grad, 2 * g1, rtol=1e-2)
    assert abs(float(toy.h2.grad)) < 1e-2 * abs(float(toy.h1.grad))


def test_state_round_trip_and_factory():
    st = build_weighting("stch", stch_warmup_epochs=1)
    toy = Toy()
    st.backward(toy.losses(), [toy.w], [toy.h1, toy.h2])
    st.end_epoch(0)
    st2 = STCH()
    st2.load_state_dict(st.state_dict())
    assert close(st2.nadir, st.nadir)
    assert isinstance(build_weighting("dbmtl"), DBMTL) and isinstance(build_weighting("equal"), EqualWeighting)
    with pytest.raises(ValueError):
        build_weighting("uw")
