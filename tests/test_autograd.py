"""Every autograd op against central finite differences in float64, plus flash == plain attention
(values and gradients) and the attention memory difference at long context."""
import math

import numpy as np
import pytest

from trainer import attention as attn
from trainer import autograd as ag
from trainer.model import Model, ModelArch


def numeric_grad(f, x: np.ndarray, eps=1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def check_op(build, *arrays, rtol=1e-5, atol=1e-7, seed=0):
    """build(*Tensors) -> Tensor; compares d(sum(out * w))/d(inputs) to finite differences for a
    fixed random weighting w (so every output element matters with a different weight)."""
    rng = np.random.default_rng(seed)
    ts = [ag.Tensor(a, requires_grad=True) for a in arrays]
    out = build(*ts)
    w = rng.standard_normal(out.shape)

    def f():
        return float((build(*[ag.Tensor(a) for a in arrays]).data * w).sum())

    out.backward(w)
    for k, (t, a) in enumerate(zip(ts, arrays)):
        num = numeric_grad(f, a)
        assert t.grad is not None, f"input {k} got no gradient"
        np.testing.assert_allclose(t.grad, num, rtol=rtol, atol=atol, err_msg=f"input {k}")


def R(*shape, seed=0, scale=1.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


def test_add_with_broadcasting_gradients():
    check_op(ag.add, R(3, 4), R(4, seed=1))
    check_op(ag.add, R(2, 3, 4), R(1, 3, 1, seed=1))


def test_mul_gradients():
    check_op(ag.mul, R(3, 4), R(3, 4, seed=1))
    check_op(ag.mul, R(3, 4), R(1, 4, seed=1))


def test_sum_reshape_transpose_gradients():
    check_op(lambda a: ag.reshape(ag.sum(a), (1,)), R(3, 4))
    check_op(lambda a: ag.reshape(a, (6, 2)), R(3, 4))
    check_op(lambda a: ag.transpose(a, (2, 0, 1)), R(2, 3, 4))


def test_matmul_gradients_including_batched():
    check_op(ag.matmul, R(3, 5), R(5, 4, seed=1))
    check_op(ag.matmul, R(2, 3, 5), R(5, 4, seed=1))
    check_op(ag.matmul, R(2, 2, 3, 5), R(2, 2, 5, 4, seed=1))


def test_linear_gradients():
    check_op(ag.linear, R(2, 3, 5), R(4, 5, seed=1))


def test_linear_rejects_mismatched_features():
    with pytest.raises(ValueError, match="input has 5 features, weight expects 6"):
        ag.linear(ag.Tensor(R(2, 5)), ag.Tensor(R(4, 6)))


def test_embedding_gradient_accumulates_repeated_ids():
    ids = np.array([[0, 2, 2], [1, 0, 2]])
    check_op(lambda w: ag.embedding(w, ids), R(4, 3))


def test_embedding_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\), got \[0, 4\]"):
        ag.embedding(ag.Tensor(R(4, 3)), np.array([0, 4]))


def test_rmsnorm_gradients():
    check_op(lambda x, w: ag.rmsnorm(x, w, 1e-5), R(3, 6), R(6, seed=1))


def test_rope_gradient_and_norm_preservation():
    cos, sin = ag.rope_tables(5, 8, dtype=np.float64)
    check_op(lambda x: ag.rope(x, cos, sin), R(2, 5, 8))
    x = R(2, 5, 8)
    y = ag.rope(ag.Tensor(x), cos, sin).data
    # a rotation of each pair keeps the pair's length; position 0 is not rotated
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(y[:, 0], x[:, 0], rtol=1e-12)


def test_rope_matches_llama2c_convention():
    cos, sin = ag.rope_tables(4, 4, theta=10000.0, dtype=np.float64)
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    y = ag.rope(ag.Tensor(x), cos, sin).data
    pos, i = 3, 1  # pair (2, 3) of position 3 rotates by 3 * 10000^(-2/4)
    ang = pos * 10000.0 ** (-2 * i / 4)
    a, b = x[pos, 2], x[pos, 3]
    assert y[pos, 2] == pytest.approx(a * np.cos(ang) - b * np.sin(ang))
    assert y[pos, 3] == pytest.approx(a * np.sin(ang) + b * np.cos(ang))


def test_silu_relu_swiglu_gradients():
    check_op(ag.silu, R(3, 4))
    check_op(ag.relu, R(3, 4) + 0.05)  # keep clear of the kink at 0
    check_op(ag.swiglu, R(3, 8))


def test_cross_entropy_gradient_and_value():
    targets = np.array([1, 0, 3])
    check_op(lambda z: ag.reshape(ag.cross_entropy(z, targets), (1,)), R(3, 5))
    z = R(3, 5)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    expect = -np.log(p[np.arange(3), targets]).mean()
    assert float(ag.cross_entropy(ag.Tensor(z), targets).data) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("impl", ["plain", "flash"])
@pytest.mark.parametrize("kv", [2, 1])
def test_attention_gradients(impl, kv):
    # T=7 with block 3: ragged tiles, diagonal and off-diagonal tiles, grouped kv heads
    q, k, v = R(1, 2, 7, 4), R(1, kv, 7, 4, seed=1), R(1, kv, 7, 4, seed=2)
    check_op(lambda a, b, c: ag.attention(a, b, c, impl=impl, block=3), q, k, v)


def test_attention_is_causal():
    q, k, v = R(1, 2, 6, 4), R(1, 2, 6, 4, seed=1), R(1, 2, 6, 4, seed=2)
    out = ag.attention(ag.Tensor(q), ag.Tensor(k), ag.Tensor(v), impl="flash", block=4).data
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 4:] += 10.0
    v2[:, :, 4:] -= 10.0
    out2 = ag.attention(ag.Tensor(q), ag.Tensor(k2), ag.Tensor(v2), impl="flash", block=4).data
    np.testing.assert_allclose(out2[:, :, :4], out[:, :, :4], rtol=1e-12)  # the future did not leak back
    assert not np.allclose(out2[:, :, 4:], out[:, :, 4:])


@pytest.mark.parametrize("T,block", [(64, 16), (50, 16), (33, 64), (40, 1)])
def test_flash_equals_plain_values_and_gradients(T, block):
    rng = np.random.default_rng(3)
    q, k, v, do = (rng.standard_normal((2, 4, T, 8)) for _ in range(4))
    k, v = k[:, :2], v[:, :2]  # grouped heads: 4 query heads on 2 kv heads
    o_p, P = attn.attention_fwd(q, k, v, impl="plain")
    o_f, lse = attn.attention_fwd(q, k, v, impl="flash", block=block)
    np.testing.assert_allclose(o_f, o_p, rtol=1e-10, atol=1e-12)
    g_p = attn.attention_bwd(do, q, k, v, o_p, P, impl="plain")
    g_f = attn.attention_bwd(do, q, k, v, o_f, lse, impl="flash", block=block)
    for name, a, b in zip("qkv", g_f, g_p):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"d{name}")


def test_flash_attention_float32_close_to_float64():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((1, 2, 100, 16)) for _ in range(3))
    o64, _ = attn.attention_fwd(q, k, v, impl="flash", block=32)
    o32, _ = attn.attention_fwd(*(a.astype(np.float32) for a in (q, k, v)), impl="flash", block=32)
    assert o32.dtype == np.float32
    np.testing.assert_allclose(o32, o64, atol=2e-5)


def test_flash_attention_memory_grows_linearly_plain_quadratically():
    # forward + backward peak at two context lengths: doubling T should ~4x plain, ~2x flash
    p1, p2 = attn.peak_attention_memory("plain", 512), attn.peak_attention_memory("plain", 1024)
    f1, f2 = attn.peak_attention_memory("flash", 512), attn.peak_attention_memory("flash", 1024)
    assert p2 / p1 > 3.0, (p1, p2)
    assert f2 / f1 < 2.6, (f1, f2)
    assert p2 > 5 * f2, f"plain {p2} bytes vs flash {f2} bytes at T=1024"


@pytest.mark.parametrize("KV", [1, 2, 4])
@pytest.mark.parametrize("stored", [True, False])
def test_self_attention_fused_equals_composed_ops(KV, stored, monkeypatch):
    """Both ways of the fused op (P kept at short context, tiles beyond) against the composed
    ops, values and gradients, with grouped kv heads."""
    if not stored:
        monkeypatch.setattr(attn, "STORE_P_BYTES", 0)
    B, T, H, hd = 2, 5, 4, 6
    assert attn.stores_p("flash", B, H, T, 8) == stored
    cos, sin = ag.rope_tables(8, hd, dtype=np.float64)
    qkv = R(B * T, (H + 2 * KV) * hd)
    x4 = qkv.reshape(B, T, H + 2 * KV, hd).transpose(0, 2, 1, 3)
    q = ag.rope(ag.Tensor(x4[:, :H]), cos, sin)
    k = ag.rope(ag.Tensor(x4[:, H:H + KV]), cos, sin)
    o = ag.attention(q, k, ag.Tensor(x4[:, H + KV:]), impl="plain").data
    for impl in ("plain", "flash"):
        fused = ag.self_attention(ag.Tensor(qkv), cos, sin, B, T, H, KV, impl=impl, block=2).data
        np.testing.assert_allclose(fused, o.transpose(0, 2, 1, 3).reshape(B * T, H * hd), rtol=1e-12)
    check_op(lambda x: ag.self_attention(x, cos, sin, B, T, H, KV, impl="flash", block=2), qkv)


def _small_model(dropout=0.0, dtype=np.float64):
    """A 2-layer model with larger weights than the init (so every path matters) and a batch."""
    arch = ModelArch(dim=8, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=12, vocab_size=11, max_seq_len=6)
    m = Model(arch, seed=1, dtype=dtype, attn_block=2, dropout=dropout)
    rng = np.random.default_rng(0)
    for t in m.params.values():
        t.data[...] = rng.standard_normal(t.shape) * 0.5
    ids = rng.integers(0, 11, size=(2, 6))
    return m, ids[:, :-1], ids[:, 1:]


def _gradient_matches_finite_differences(m, loss, seed):
    """m.flat_grad (left by loss().backward()) against central differences of loss() on 60
    parameter elements."""
    analytic = m.flat_grad.copy()
    f = lambda: float(loss().data)  # noqa: E731
    for i in np.random.default_rng(seed).choice(m.flat.size, size=60, replace=False):
        old = m.flat[i]
        m.flat[i] = old + 1e-6
        fp = f()
        m.flat[i] = old - 1e-6
        fm = f()
        m.flat[i] = old
        assert analytic[i] == pytest.approx((fp - fm) / 2e-6, rel=1e-5, abs=1e-8), f"parameter element {i}"


def test_whole_model_gradient_in_float64():
    m, x, y = _small_model()
    m.zero_grad()
    m.loss(x, y).backward()
    _gradient_matches_finite_differences(m, lambda: m.loss(x, y), seed=0)


def test_tied_embeddings_get_both_gradients():
    arch = ModelArch(dim=8, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=8, vocab_size=7, max_seq_len=4,
                     tied_embeddings=True)
    m = Model(arch, seed=0, dtype=np.float64)
    assert "output" not in m.params
    ids = np.array([[1, 2, 3, 4]])
    m.loss(ids[:, :-1], ids[:, 1:]).backward()
    g = m.params["tok_embd"].grad
    assert np.abs(g[5]).sum() > 0  # token 5 never appears as input: its gradient comes from the output side


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_loss_and_grad_row_groups_equal_one_pass(batch, monkeypatch):
    """The training step's row groups on worker threads: the gradient of the whole batch's mean
    loss (masked rows included), the same bits on every call and on one worker or two."""
    from trainer import cpu

    arch = ModelArch(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=24, vocab_size=31, max_seq_len=12)
    m = Model(arch, seed=1, dtype=np.float64, attn_block=4)
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, 31, size=(batch, 13))
    x, y = ids[:, :-1], ids[:, 1:].copy()
    y[0, :5] = -1  # agent rows: no loss on some targets, so the groups hold different counts
    m.zero_grad()
    ref = m.loss(x, y.reshape(-1))
    ref.backward()
    expect = m.flat_grad.copy()
    m.flat_grad[...] = np.nan  # loss_and_grad needs no zero_grad
    before = cpu.blas_thread_count()
    loss = m.loss_and_grad(x, y)
    assert cpu.blas_thread_count() == before
    assert loss == pytest.approx(float(ref.data), rel=1e-12)
    np.testing.assert_allclose(m.flat_grad, expect, rtol=1e-10, atol=1e-15)
    got = m.flat_grad.copy()
    assert m.loss_and_grad(x, y) == loss
    np.testing.assert_array_equal(m.flat_grad, got)
    monkeypatch.setattr(cpu, "workers", lambda: 1)
    assert m.loss_and_grad(x, y) == loss
    np.testing.assert_array_equal(m.flat_grad, got)


def test_row_groups_without_blas_control_run_one_after_another(monkeypatch):
    """Where the BLAS thread count cannot be set the groups run on the caller's thread, with
    the same bits; nll (evaluation) runs in the same groups."""
    from trainer import cpu

    arch = ModelArch(dim=16, n_layers=1, n_heads=2, n_kv_heads=2, hidden_dim=24, vocab_size=31, max_seq_len=12)
    m = Model(arch, seed=3, dtype=np.float32, attn_block=4)
    ids = np.random.default_rng(0).integers(0, 31, size=(4, 13))
    x, y = ids[:, :-1], ids[:, 1:]
    loss = m.loss_and_grad(x, y)
    grad = m.flat_grad.copy()
    nll = m.nll(x, y)
    assert nll.shape == (48,) and float(nll.mean()) == pytest.approx(loss, rel=1e-5)
    monkeypatch.setattr(cpu, "_blas", ())
    assert not cpu.blas_control() and m._workers(2) == 1
    assert m.loss_and_grad(x, y) == loss
    np.testing.assert_array_equal(m.flat_grad, grad)
    np.testing.assert_array_equal(m.nll(x, y), nll)


# ---------------------------------------------------------------------------------------------
# dropout
# ---------------------------------------------------------------------------------------------

def test_dropout_op_gradient_with_a_fixed_mask():
    mask = (np.random.default_rng(3).random((4, 5)) >= 0.3) / 0.7
    check_op(lambda x: ag.dropout(x, mask), R(4, 5))
    with pytest.raises(ValueError, match="mask shape"):
        ag.dropout(ag.Tensor(R(4, 5)), mask[:3])


def test_whole_model_gradient_with_dropout_in_float64():
    """With a drop key the masks are fixed: the model is a smooth function of its weights and
    its gradient matches finite differences; the dropped loss differs from the undropped one."""
    m, x, y = _small_model(0.3)
    key = (7, 3, 0)
    m.zero_grad()
    loss = m.loss(x, y, drop_key=key)
    loss.backward()
    assert float(loss.data) != pytest.approx(float(m.loss(x, y).data), rel=1e-3)
    _gradient_matches_finite_differences(m, lambda: m.loss(x, y, drop_key=key), seed=1)


def test_dropout_zero_is_the_undropped_step_bit_for_bit():
    """dropout 0 with a drop key is the step without one, bit for bit; and with dropout set,
    no key (evaluation, nll) drops nothing."""
    m0, x, y = _small_model(0.0, np.float32)
    m1, _, _ = _small_model(0.25, np.float32)
    plain = m0.loss_and_grad(x, y)
    g = m0.flat_grad.copy()
    assert m0.loss_and_grad(x, y, drop_key=(1, 2, 3)) == plain
    np.testing.assert_array_equal(m0.flat_grad, g)
    assert m1.loss_and_grad(x, y) == plain
    np.testing.assert_array_equal(m1.flat_grad, g)
    np.testing.assert_array_equal(m1.nll(x, y), m0.nll(x, y))
    assert m1.loss_and_grad(x, y, drop_key=(1, 2, 3)) != plain


def test_dropout_masks_keep_rate_and_seeding():
    m, _, _ = _small_model(0.2, np.float32)
    mask = m.dropout_mask((1337, 5, 0, 1), 3, Model.DROP_MLP, (512, 256))
    kept = mask > 0
    n = kept.size
    assert abs(kept.mean() - 0.8) < 4 * math.sqrt(0.16 / n)         # the keep rate, within 4 sigma
    assert set(np.unique(mask)) == {np.float32(0), np.float32(1 / 0.8)}  # kept elements scaled by 1/keep
    assert abs(float(mask.mean(dtype=np.float64)) - 1.0) < 0.01        # so the expectation is unchanged
    np.testing.assert_array_equal(mask, m.dropout_mask((1337, 5, 0, 1), 3, Model.DROP_MLP, (512, 256)))
    for key, layer, site in [((1337, 6, 0, 1), 3, Model.DROP_MLP), ((1337, 5, 1, 1), 3, Model.DROP_MLP),
                             ((1337, 5, 0, 0), 3, Model.DROP_MLP), ((1337, 5, 0, 1), 2, Model.DROP_MLP),
                             ((1337, 5, 0, 1), 3, Model.DROP_ATTN), ((1338, 5, 0, 1), 3, Model.DROP_MLP)]:
        other = m.dropout_mask(key, layer, site, (512, 256)) > 0
        assert 0.25 < (other != kept).mean() < 0.4, (key, layer, site)  # independent: 2 * 0.8 * 0.2 = 0.32
    m64, _, _ = _small_model(0.2, np.float64)                         # the same pattern in float64
    np.testing.assert_array_equal(m64.dropout_mask((1, 2), 0, 0, (64, 8)) > 0, m.dropout_mask((1, 2), 0, 0, (64, 8)) > 0)
    with pytest.raises(ValueError, match="dropout must lie in"):
        Model(m.arch, dropout=1.0)


def test_dropout_step_same_bits_on_one_worker_or_two(monkeypatch):
    """Each row group draws its own masks from (key, group): one worker or two, the same bits."""
    from trainer import cpu

    arch = ModelArch(dim=16, n_layers=2, n_heads=2, n_kv_heads=1, hidden_dim=24, vocab_size=31, max_seq_len=12)
    m = Model(arch, seed=1, attn_block=4, dropout=0.2)
    ids = np.random.default_rng(0).integers(0, 31, size=(4, 13))
    x, y = ids[:, :-1], ids[:, 1:]
    loss = m.loss_and_grad(x, y, drop_key=(7, 1, 0))
    got = m.flat_grad.copy()
    monkeypatch.setattr(cpu, "workers", lambda: 1)
    assert m.loss_and_grad(x, y, drop_key=(7, 1, 0)) == loss
    np.testing.assert_array_equal(m.flat_grad, got)
    assert m.loss_and_grad(x, y, drop_key=(7, 2, 0)) != loss            # the next step: other masks
