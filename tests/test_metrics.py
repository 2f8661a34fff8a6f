"""The toy protocol's metrics on samples whose answer is known (docs/cli.md, Metrics)."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import ganlab
from ganlab.data.toy import grid, ring
from ganlab.metrics.modes import mode_coverage
from ganlab.metrics.wasserstein import empirical_wasserstein

HQ_EXPECTED = 100 * (1 - math.exp(-4.5))  # P(r <= 3 sigma) in 2-D: 98.89 %


@pytest.mark.parametrize("make, modes", [(ring, 8), (grid, 25)])
def test_true_mixture_samples_cover_every_mode(make, modes):
    torch.manual_seed(0)
    data = make()
    m = mode_coverage(data.sample(2500), data.centers, data.std)
    assert m["modes_captured"] == modes
    assert m["high_quality_pct"] == pytest.approx(HQ_EXPECTED, abs=0.7)  # binomial s.e. is 0.2 %
    assert 0 <= m["reverse_kl"] < 0.02
    assert sum(m["mode_counts"]) == 2500


def test_collapsed_samples_give_one_mode_and_log_k():
    data = ring()
    torch.manual_seed(0)
    collapsed = data.centers[3] + data.std * torch.randn(2500, 2)
    m = mode_coverage(collapsed, data.centers, data.std)
    assert m["modes_captured"] == 1
    assert m["reverse_kl"] == pytest.approx(math.log(8), rel=1e-9)
    assert m["mode_counts"][3] == 2500


def test_samples_between_modes_are_counted_but_not_captured():
    data = ring()
    between = (data.centers[0] + data.centers[1]) / 2 * torch.ones(100, 1)
    m = mode_coverage(between, data.centers, data.std)
    assert m["modes_captured"] == 0 and m["high_quality_pct"] == 0.0
    assert m["reverse_kl"] == pytest.approx(math.log(8))  # all nearest to one mode


def test_wasserstein_of_a_translation_is_its_length():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 2))
    w = empirical_wasserstein(x, x + np.array([3.0, 4.0]))
    # For a translation by c, W1 = W2 = |c| (the identity matching is optimal).
    assert w["wasserstein1"] == pytest.approx(5.0) and w["wasserstein2"] == pytest.approx(5.0)


def test_wasserstein_matches_brute_force_on_tiny_sets():
    from itertools import permutations

    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    cost = np.linalg.norm(x[:, None] - y[None], axis=2)
    best = min(cost[range(6), list(p)].mean() for p in permutations(range(6)))
    assert empirical_wasserstein(x, y)["wasserstein1"] == pytest.approx(best)
    assert empirical_wasserstein(x, x)["wasserstein1"] == pytest.approx(0.0, abs=1e-12)
    best_w2 = min((cost[range(6), list(p)] ** 2).mean() for p in permutations(range(6))) ** 0.5
    assert empirical_wasserstein(x, y)["wasserstein2"] == pytest.approx(best_w2)


def test_smallest_singular_value_of_dg_dz_is_exact_for_linear_and_pointwise_generators():
    from ganlab.metrics.jacobian import jacobian_products, smallest_singular_value

    A = torch.tensor([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]])  # out 3, latent 2
    z = torch.randn(7, 2)
    expected = torch.linalg.svdvals(A).min()
    assert torch.allclose(smallest_singular_value(lambda z: z @ A.T, z), expected.expand(7), atol=1e-6)
    # A pointwise map: J = diag(cos z), so sigma_min = min |cos z_j| per point.
    got = smallest_singular_value(torch.sin, z)
    assert torch.allclose(got, z.cos().abs().amin(dim=1), atol=1e-6)
    # Products with per-point directions: J(z_i) v_i.
    v = torch.randn(3, 7, 2)
    assert torch.allclose(jacobian_products(torch.sin, z, v), (z.cos() * v).permute(1, 2, 0), atol=1e-6)


def test_every_registered_metric_names_a_function_that_exists_and_every_reported_key_is_registered():
    """The registry (ganlab/metrics/__init__.py) is the one list: the report and the verdicts read it, and
    each evaluator's metric columns are registered metrics, each with the function that computes it."""
    from ganlab.metrics import BETTER, REGISTRY, TOY_METRICS, FunctionRef, protocol_metrics

    evaluators = "".join(p.read_text() for p in (Path(ganlab.__file__).parent / "evaluation").glob("*.py"))
    for metric in REGISTRY.values():
        assert metric.better in ("higher", "lower", None) and set(metric.protocols) <= {"toy", "image"}
        assert metric.meaning and "\n" not in metric.meaning
        for protocol, computed in metric.computed.items():
            if computed.function is None:  # measured by the evaluator itself
                assert metric.name == "eval_seconds"
                continue
            assert isinstance(computed.function, FunctionRef), metric.name
            assert callable(computed.function.resolve()), computed.function
            if not computed.on_samples:  # the evaluators call it by name (the worker's jobs.py included)
                name = str(computed.function).rsplit(".", 1)[1]
                assert f"{name}(" in evaluators, f"{metric.name}: no evaluator calls {name}"
    assert TOY_METRICS == protocol_metrics("toy") and TOY_METRICS[:3] == ("modes_captured", "high_quality_pct", "reverse_kl")
    assert set(BETTER) <= set(REGISTRY) and BETTER["reverse_kl"] == "lower" and "critic_gap" not in BETTER
    # ImageEvaluator refuses a metric column that is not registered (its constructor checks).


def test_the_docs_metric_lists_are_generated_from_the_registry():
    """One description per metric: docs/cli.md's and docs/images.md's lists are the registry's (`make docs`)."""
    from ganlab.metrics import REGISTRY
    from ganlab.metrics.docs import DOCS, FILES, metric_list, rewrite

    for protocol, name in FILES.items():
        text = (DOCS / name).read_text()
        assert rewrite(text, protocol) == text, f"docs/{name} is stale: run make docs"
        listed = metric_list(protocol)
        assert all(f"- `{m}` (" in listed for m, metric in REGISTRY.items() if protocol in metric.computed)
    assert "`modes.coverage_of_samples(fake, real, data)`" in metric_list("toy")


def test_the_built_in_on_samples_functions_give_exactly_their_registered_metrics():
    """The 2-D mode coverage goes through the path a metric of one's own takes (sample_metrics)."""
    from ganlab.metrics import REGISTRY, sample_metrics

    data = ring()
    fake, real = data.sample(500), data.sample(500)
    by_function: dict = {}
    for name, metric in REGISTRY.items():
        computed = metric.computed.get("toy")
        if computed is not None and computed.on_samples:
            by_function.setdefault(computed.function, set()).add(name)
    assert by_function, "no built-in metric goes through the on-samples path"
    for function, names in by_function.items():
        assert set(function(fake, real, data)) - {"mode_counts"} == names, function
    got = sample_metrics("toy", fake, real, data)
    assert got["modes_captured"] == 8 and got == mode_coverage(fake, data.centers, data.std)


def spread_of_samples(fake, real, data) -> dict:
    """A throw-away metric of one's own: the mean distance of the generated samples to their mean."""
    return {"sample_spread": float((fake - fake.mean(0)).norm(dim=1).mean())}


def test_a_new_metric_is_one_function_and_its_registration(tmp_path, monkeypatch):
    """Registered with on_samples=True, a metric is computed at every evaluation, logged, written to
    summary.json, shown in the HParams columns and given its better side in the report: no evaluator,
    loop or report code changes."""
    from conftest import make_cfg

    from ganlab.metrics import REGISTRY, Metric, on_samples, register
    from ganlab.report import build_report
    from ganlab.train import run

    monkeypatch.setitem(REGISTRY, "sample_spread", REGISTRY.get("sample_spread"))  # restored after the test
    register(Metric("sample_spread", "higher", "mean distance to the mean", {"toy": on_samples(spread_of_samples)}))
    summaries = [run(make_cfg("debug=tiny", f"seed={seed}"), tmp_path / f"s{seed}") for seed in (0, 1)]
    for summary in summaries:
        spread = summary["metrics"]["sample_spread"]
        assert spread > 0 and summary["history"]["metrics"]["sample_spread"][-1] == spread
    report = build_report(tmp_path, metrics=["sample_spread"])
    assert report.groups[0].stats["sample_spread"].n == 2


# --- kernel MMD ---------------------------------------------------------------------------------------

def _mmd2_by_loops(x, y, sigma):
    """The unbiased estimator written out pair by pair."""
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma * sigma))
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd_matches_the_pairwise_sum_and_the_median_heuristic_by_hand():
    from ganlab.metrics.mmd import SCALES, median_bandwidth, mmd2_unbiased, mmd_metrics

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), rng.normal(0.5, 1.2, size=(9, 3))
    for sigma in (0.3, 1.0, 4.0):
        assert mmd2_unbiased(x, y, [sigma])[0] == pytest.approx(_mmd2_by_loops(x, y, sigma), rel=1e-10)
    # The bandwidth: the median of the 36 distances between the 9 real points, the generated ones left out.
    distances = [np.linalg.norm(y[i] - y[j]) for i in range(9) for j in range(i + 1, 9)]
    sigma = float(np.median(distances))
    assert median_bandwidth(y) == pytest.approx(sigma, rel=1e-12)
    m = mmd_metrics(x, y)
    assert m["mmd"] == pytest.approx(_mmd2_by_loops(x, y, sigma), rel=1e-10)
    assert m["mmd_multiscale"] == pytest.approx(np.mean([_mmd2_by_loops(x, y, s * sigma) for s in SCALES]), rel=1e-10)
    assert set(mmd_metrics(x, y, prefix="domain_")) == {"domain_mmd", "domain_mmd_multiscale"}
    assert mmd_metrics(x, y, sigma=0.3)["mmd"] == pytest.approx(_mmd2_by_loops(x, y, 0.3), rel=1e-10)  # a σ given


def test_the_mmd_bandwidth_does_not_depend_on_the_generated_samples():
    """Two very different generated sets, one real set: both MMDs at the real set's median. A pooled
    median (the rule before) would give the far, wide set a kernel 8 times as wide."""
    from scipy.spatial.distance import pdist

    from ganlab.metrics.mmd import SCALES, median_bandwidth, mmd_metrics

    rng = np.random.default_rng(4)
    real = rng.normal(size=(10, 2))
    near, far = rng.normal(0.2, 1.0, size=(8, 2)), rng.normal(20.0, 5.0, size=(11, 2))
    sigma = median_bandwidth(real)
    assert float(np.median(pdist(np.concatenate([far, real])))) > 8 * sigma
    for fake in (near, far):
        m = mmd_metrics(fake, real)
        assert m["mmd"] == pytest.approx(_mmd2_by_loops(fake, real, sigma), rel=1e-10)
        assert m["mmd_multiscale"] == pytest.approx(
            np.mean([_mmd2_by_loops(fake, real, s * sigma) for s in SCALES]), rel=1e-10)


def test_mmd_in_row_blocks_equals_the_whole_matrices():
    """The kernel sums go in blocks of rows (the symmetric ones over the upper triangle only): with
    several blocks and a short last one, the same MMD² as the whole-matrix formula."""
    from ganlab.metrics.mmd import BLOCK_ROWS, mmd2_unbiased

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2 * BLOCK_ROWS + 17, 5)), rng.normal(0.2, 1.1, size=(BLOCK_ROWS + 3, 5))

    def whole(sigma):
        kernel = lambda a, b: np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma * sigma))
        m, n = len(x), len(y)
        return ((kernel(x, x).sum() - m) / (m * (m - 1)) + (kernel(y, y).sum() - n) / (n * (n - 1))
                - 2 * kernel(x, y).mean())

    sigmas = [0.5, 2.0, 8.0]
    assert mmd2_unbiased(x, y, sigmas) == pytest.approx([whole(s) for s in sigmas], rel=1e-9, abs=1e-15)


def test_mmd_of_two_gaussians_has_its_closed_form():
    """x ~ N(mu1, s²I), y ~ N(mu2, s²I) in d dimensions, kernel bandwidth σ:
    MMD² = 2 c (1 - exp(-|mu1 - mu2|² / (2(σ² + 2s²)))), c = (σ² / (σ² + 2s²))^(d/2)."""
    from ganlab.metrics.mmd import mmd2_unbiased

    rng = np.random.default_rng(1)
    d, s, sigma, shift = 2, 0.5, 1.0, np.array([1.0, 0.0])
    x, y = rng.normal(0, s, size=(2500, d)), rng.normal(0, s, size=(2500, d)) + shift
    c = (sigma ** 2 / (sigma ** 2 + 2 * s ** 2)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-float(shift @ shift) / (2 * (sigma ** 2 + 2 * s ** 2))))
    assert mmd2_unbiased(x, y, [sigma])[0] == pytest.approx(exact, abs=0.01)  # exact = 0.2212
    same = mmd2_unbiased(x, rng.normal(0, s, size=(2500, d)), [sigma])[0]
    assert abs(same) < 0.005  # one distribution: unbiased, near 0 (either sign)


def test_a_2d_run_reports_mmd_for_itself_and_its_references(tmp_path):
    from conftest import make_cfg

    from ganlab.train import run

    summary = run(make_cfg("debug=tiny"), tmp_path / "run")
    assert summary["metrics"]["mmd"] > summary["references"]["data"]["mmd"]
    assert summary["references"]["gaussian"]["mmd_multiscale"] > summary["references"]["data"]["mmd_multiscale"]
    assert "median heuristic" in summary["protocol"]["mmd"]


def test_every_evaluation_and_reference_row_of_a_2d_run_measures_at_one_bandwidth(tmp_path, monkeypatch):
    """A 2-D run takes the MMD's σ once, from a fixed data sample (ganlab/evaluation/toy.py): its three
    reference rows and both evaluations use it, though each evaluation draws fresh real samples and G
    moves (a σ recomputed per evaluation, from the pooled samples or from its real set alone, differs);
    it is mmd.median_bandwidth of that sample, and summary.json states it."""
    from conftest import TINY, make_cfg

    from ganlab.evaluation.toy import BANDWIDTH_SEED
    from ganlab.gan import build
    from ganlab.metrics import mmd
    from ganlab.train import run

    used = []  # (σ, generated, real) of every MMD the run computes
    original = mmd.mmd2_unbiased

    def spy(x, y, sigmas):
        used.append((sigmas[mmd.SCALES.index(1.0)], x, y))
        return original(x, y, sigmas)

    monkeypatch.setattr(mmd, "mmd2_unbiased", spy)
    cfg = make_cfg(*TINY)  # inline: the worker's MMD is computed in this process
    summary = run(cfg, tmp_path / "run")
    assert len(used) == 3 + 2  # untrained, gaussian, data; the evaluations at steps 10 and 20
    sigmas = {sigma for sigma, _, _ in used}
    assert len(sigmas) == 1, sigmas
    sigma = sigmas.pop()
    # What the per-evaluation rules would give: 5 kernels from the pooled samples; 3 from the real sets
    # alone (the reference rows share the untrained evaluation's).
    assert len({mmd.median_bandwidth(np.concatenate([x, y])) for _, x, y in used}) == 5
    assert len({mmd.median_bandwidth(y) for _, _, y in used}) == 3

    device = torch.device(summary["device"])  # the fixed sample is drawn on the run's device
    data = build(cfg, device).data
    fixed = data.sample(mmd.MEDIAN_POINTS, generator=torch.Generator(device).manual_seed(BANDWIDTH_SEED))
    assert sigma == pytest.approx(mmd.median_bandwidth(fixed.cpu().numpy()), rel=1e-12)
    assert summary["protocol"]["mmd"].endswith(f"σ = {sigma:.6g}")
