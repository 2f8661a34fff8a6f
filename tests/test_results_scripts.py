"""scripts/toy_results.py: the reproduction doc makes only the claims its statistics support."""

import subprocess
import sys
from itertools import product

import pytest
from conftest import REPO, TINY, make_cfg

from ganlab.train import run

CONTROL = "Unrolled k = 0 (control)"


def test_toy_results_doc_has_references_verdicts_lengths_and_no_bare_claims(tmp_path):
    root = tmp_path / "runs"
    # the VEEGAN setup's GAN over the rule's 10 seeds (a baseline the rule can decide), PacGAN's over 3 (undecided)
    for seed in range(10):
        run(make_cfg(*TINY, "experiment=veegan_ring_gan", f"seed={seed}"), root / "baselines_veegan" / f"ring_gan_s{seed}")
    presets = ["veegan_ring_veegan", "pacgan_ring_gan", "pacgan_ring_pac2"]
    for i, (preset, seed) in enumerate(product(presets, [0, 1, 2])):
        part = "veegan" if preset.startswith("veegan") else "pacgan"
        run(make_cfg(*TINY, f"experiment={preset}", f"seed={seed}"), root / part / f"{i}_{preset}_s{seed}")
    for k, seed in product((5, 0), (0, 1, 2)):  # Unrolled GAN and its k = 0 control
        run(make_cfg(*TINY, "experiment=veegan_ring_unrolled", f"remedy.unrolled.k={k}", f"seed={seed}"),
            root / "veegan" / f"unrolled_k{k}_s{seed}")
    for seed in (0, 1, 2):  # another loss in the setup (the losses part) is a row of its own, named by its loss
        run(make_cfg(*TINY, "experiment=veegan_setup", "dataset=ring", "loss=loss_sensitive", f"seed={seed}"),
            root / "losses" / f"{seed}_loss_sensitive_s{seed}", labels={"loss": "loss_sensitive"})
    for seed in (0, 1, 2):  # a conditional remedy: its rows say what their KL means, and their class fidelity
        run(make_cfg(*TINY, "experiment=veegan_setup", "dataset=ring", "remedy=acgan", f"seed={seed}"),
            root / "methods" / f"{seed}_acgan_s{seed}", labels={"remedy": "acgan"})
    for seed in (0, 1, 2):  # the local generator: its rows say what its modes mean, with its local metrics
        run(make_cfg(*TINY, "experiment=veegan_setup", "dataset=ring", "remedy=local_generator", f"seed={seed}"),
            root / "methods_local_ring" / f"{seed}_local_s{seed}", labels={"remedy": "local_generator"})
    (root / "veegan" / ".segments").write_text("120 20 2 0\n")
    doc, figures = tmp_path / "toy.md", tmp_path / "figures"
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "toy_results.py"), str(root), "--seeds", "0,1,2",
                          "--out", str(doc), "--figures", str(figures)], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr
    text = doc.read_text()
    for label in ("reference: untrained G", "reference: Gaussian fit", "reference: real data"):
        assert text.count(f"| {label} |") == 2  # under the VEEGAN and the PacGAN ring table
    # the rule is stated before the measurement it decides, and applied to each setup's GAN
    rule = text.index("> A setup's GAN is a **collapsing baseline** when, over 10 seeds")
    assert rule < text.index("| setup | dataset | seed | over training |") < text.index("The rule applied:")
    assert ("- veegan setup, ring: **a collapsing baseline**: ends below the real data's modes in 10 of 10 seeds, "
            "fully collapsed at some evaluation in 10 of 10.") in text
    assert "- pacgan setup, ring: **not decided yet**" in text and "fewer than the rule's 10 seeds" in text
    # 20 steps x 32 samples against the papers' lengths: never "reproduced"
    assert "shorter than the paper" in text and "reproduced (" not in text
    assert "(0.005 % of the paper's)" in text  # 640 of the notebook's 12.8M samples
    # PacGAN's length counts packs: 20 steps x 16 packs of 2 = 320 of 40M packs
    assert "| PacGAN2 |" in text and "20 × 16 packs of 2 (0.0008 % of the paper's)" in text
    # every table row has as many cells as its header
    for table in text.split("\n\n"):
        rows = [line for line in table.splitlines() if line.startswith("|")]
        assert len({len(line.strip().strip("|").split("|")) for line in rows}) <= 1, table
    # verdicts: permutation test, BH q over the table, the interval; never Welch's words
    assert " holds " not in text and "no difference" not in text and "Welch" not in text
    veegan_ring = text.split("## VEEGAN Table 1 rows")[1].split("## PacGAN Table 1 rows")[0]
    assert "Verdicts (veegan setup, ring; Benjamini-Hochberg over this table's 20 comparisons)" in veegan_ring
    assert "| VEEGAN vs GAN | modes |" in veegan_ring and "| loss_sensitive vs GAN | KL |" in veegan_ring
    assert f"| Unrolled GAN vs {CONTROL} | modes |" in veegan_ring and f"| {CONTROL} |" in veegan_ring
    assert "GFLOP/step" in veegan_ring
    pacgan_ring = text.split("## PacGAN Table 1 rows")[1].split("\n## ")[0]
    assert "No verdicts: the GAN here is not decided yet" in pacgan_ring and "vs GAN" not in pacgan_ring
    # rows that use labels or anchors: their own sections, not in the tables, never compared with the GAN
    assert "| acgan |" not in text and "| local_generator |" not in text and "acgan vs GAN" not in text
    assert "## Local-generator rows (real anchors)" in text and "veegan setup, ring, local_generator: origin error " in text
    assert "## Conditional rows (class labels)" in text and "veegan setup, ring, acgan: class fidelity " in text
    assert text.count("| loss_sensitive |") == 1 and text.count("| GAN |") == 2  # the GAN rows stay the nsgan runs
    section = text.split("## Loss-Sensitive rows")[1].split("\n## ")[0]
    assert "veegan setup, ring, loss_sensitive: Jacobian sigma_min " in section and "veegan setup, ring, GAN: " in section
    assert "runs collapsed to a point (sigma_min < 1e-3): " in section and "pacgan setup" not in section
    assert "Machine time" in text and "1 recorded segment(s) of the script" in text
    assert "`pacgan34`: **not run yet**" in text
    assert (figures / "toy_convergence.png").read_bytes().startswith(b"\x89PNG")
    assert (figures / "toy_veegan_ring_gan_s0_mode_history.png").exists()


def _toy_results():
    import importlib.util

    spec = importlib.util.spec_from_file_location("toy_results", REPO / "scripts" / "toy_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_baseline_rule_by_hand(tmp_path):
    """8 of 10 seeds below the data's modes, and fully collapsed at some evaluation in 5: collapsing; in 4:
    mode-dropping; 7 below: not a baseline; 9 seeds: undecided."""
    import math

    from ganlab.report import Group, Run

    toy = _toy_results()
    log8 = math.log(8)

    def gan(final_modes, collapsed_seeds):
        runs = []
        for seed, modes in enumerate(final_modes):
            kls = [0.95 * log8 if seed in collapsed_seeds else 0.5 * log8, 0.1]  # 0.95 log K >= 0.9 log K: fully
            runs.append(Run(tmp_path, f"s{seed}", "completed", 100, seed, {}, {}, {"modes_captured": modes}, 8,
                            references={"data": {"modes_captured": 8}},
                            history={"steps": [50, 100], "metrics": {"reverse_kl": kls}}))
        return Group("GAN", [], runs)

    eight_below = [5, 6, 7, 4, 6, 7, 5, 6, 8, 8]
    assert toy.baseline_status(gan(eight_below, {0, 1, 2, 3, 4}))[0] == "collapsing"
    assert toy.baseline_status(gan(eight_below, {0, 1, 2, 3}))[0] == "mode-dropping"
    word, counts = toy.baseline_status(gan([5, 6, 7, 4, 6, 7, 5, 8, 8, 8], set(range(10))))
    assert word == "not a baseline" and counts.startswith("ends below the real data's modes in 7 of 10 seeds")
    assert toy.baseline_status(gan(eight_below[:9], set(range(9))))[0] == "undecided"
    # the boundary: exactly 0.9 log K counts as fully collapsed
    assert toy.collapsed_at(Run(tmp_path, "s", "completed", 100, 0, {}, {}, {}, 8,
                                history={"steps": [50], "metrics": {"reverse_kl": [0.9 * log8]}}), 8) == [50]


def _gan_summary(run_dir, seed, dataset, final_modes, kls):
    """A GAN run's summary.json of the VEEGAN-row setup, cut down to what toy_results reads."""
    import json

    n_modes = 8 if dataset == "ring" else 25
    config = {"seed": seed, "steps": 25000, "batch_size": 256, "model": {"g": {"width": 128}},
              "dataset": {"_target_": f"ganlab.data.toy.{dataset}"},
              "loss": {"_target_": "ganlab.losses.NonSaturatingGAN"},
              "remedy": {"none": {"_target_": "ganlab.remedies.none.NoRemedy"}}, "eval": {"every": 500}}
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({
        "status": "completed", "step": 25000, "seed": seed, "n_modes": n_modes, "config": config,
        "labels": {"dataset": dataset, "loss": "nsgan", "remedy": "none"},
        "metrics": {"modes_captured": final_modes, "reverse_kl": kls[-1]}, "wall_seconds": 60.0,
        "references": {"data": {"modes_captured": n_modes}},
        "history": {"steps": [500 * (i + 1) for i in range(len(kls))], "metrics": {"reverse_kl": kls}}}))


def test_reproduce_toy_trains_remedy_rows_only_where_the_gan_is_a_baseline(tmp_path):
    """The remedy parts read the baselines' status: rows in a setup whose GAN collapses, none where it does not,
    and a refusal (exit 2, one line) before a setup's baseline is measured."""
    import os

    out = tmp_path / "out"
    for seed in range(10):
        _gan_summary(out / "baselines_veegan" / f"ring_s{seed}", seed, "ring", 4, [2.0, 0.5])  # collapsing
        _gan_summary(out / "baselines_veegan" / f"grid_s{seed}", seed, "grid", 25, [0.5, 0.05])  # covers every mode
    calls = tmp_path / "calls"
    fake = tmp_path / "ganlab"
    fake.write_text(f"#!/bin/bash\necho \"$*\" >> {calls}\n")
    fake.chmod(0o755)
    env = {**os.environ, "OUT": str(out), "GANLAB": str(fake), "DOC": str(tmp_path / "toy.md"),
           "FIGURES": str(tmp_path / "figures")}  # never the repository's docs/figures
    script = str(REPO / "scripts" / "reproduce_toy.sh")
    done = subprocess.run([script, "veegan"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    trained = [line for line in calls.read_text().splitlines() if line.startswith("train")]
    assert len(trained) == 2  # the rows and the k = 0 control
    assert "experiment=veegan_ring_veegan,veegan_ring_unrolled " in trained[0] and "grid" not in trained[0]
    assert "experiment=veegan_ring_unrolled remedy.unrolled.k=0 " in trained[1]
    # before any baseline ran: the same one-line refusal, no traceback
    empty = subprocess.run([script, "veegan"], capture_output=True, text=True, check=False,
                           env={**env, "OUT": str(tmp_path / "fresh")})
    assert empty.returncode == 2 and empty.stderr.strip() == (
        "reproduce_toy: veegan_ring's GAN baseline is not measured over 10 seeds yet; run the baselines part first")
    refused = subprocess.run([script, "pacgan"], capture_output=True, text=True, env=env, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("reproduce_toy: pacgan_grid's GAN baseline is not measured over 10 seeds yet; "
                                      "run the baselines part first")
    assert (tmp_path / "figures" / "toy_convergence.png").exists()


def test_reproduce_stacked_refuses_an_out_of_other_seeds(tmp_path):
    """.complete records finished sweeps, not their seeds: an OUT made with other SEEDS or STEPS is refused in one
    line instead of skipping the new seeds as 'already complete'."""
    import os

    fake = tmp_path / "ganlab"
    fake.write_text("#!/bin/bash\nexit 0\n")
    fake.chmod(0o755)
    script = str(REPO / "scripts" / "reproduce_stacked.sh")
    for name, files in (("other", {".knobs": "seeds=0,1,2 steps=2000 dataset=stacked_fashion_mnist\n",
                                   ".complete": "100 2000 2 none\n"}),
                        ("legacy", {".complete": "100 2000 2 none,pacgan,unrolled,multiscale\n"})):
        out = tmp_path / name
        out.mkdir()
        for file, text in files.items():
            (out / file).write_text(text)
        env = {**os.environ, "OUT": str(out), "GANLAB": str(fake), "DOC": str(tmp_path / "stacked.md")}
        done = subprocess.run([script], capture_output=True, text=True, env=env, check=False)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "choose another OUT" in done.stderr and "Traceback" not in done.stderr


def test_reproduce_stacked_records_a_sweep_only_when_every_run_wrote_its_summary(tmp_path):
    """A command that dies before its jobs (exit 1, nothing written) must not be recorded in .complete: the next call
    would skip the sweep as 'already complete'. One that wrote every run's summary.json (a failed run's too) is."""
    import os

    fake = tmp_path / "ganlab"
    # `ganlab train -m ... hydra.sweep.dir=DIR` writes a summary.json per job when WRITE is set, then exits 1
    fake.write_text('#!/bin/bash\n[ "$1" = train ] || exit 0\n'
                    'for a in "$@"; do case $a in hydra.sweep.dir=*) dir=${a#hydra.sweep.dir=};; '
                    'seed=*) seeds=${a#seed=};; remedy=*) remedies=${a#remedy=};; esac; done\n'
                    'if [ -n "$WRITE" ]; then for r in ${remedies//,/ }; do for s in ${seeds//,/ }; do '
                    'mkdir -p "$dir/${r}_s$s" && echo {} > "$dir/${r}_s$s/summary.json"; done; done; fi\nexit 1\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GANLAB": str(fake), "DOC": str(tmp_path / "stacked.md"), "SEEDS": "0,1",
           "CONDITIONAL": "", "CONTROLS": ""}
    script = str(REPO / "scripts" / "reproduce_stacked.sh")
    died = subprocess.run([script], capture_output=True, text=True, env=env, check=False)
    assert died.returncode == 1 and not (out / ".complete").exists()
    assert "ended (exit 1) with 0 of its 8 runs' summary.json" in died.stderr
    wrote = subprocess.run([script], capture_output=True, text=True, env={**env, "WRITE": "1"}, check=False)
    assert "some jobs failed or diverged (exit 1)" in wrote.stdout, wrote.stderr
    assert (out / ".complete").read_text().split()[1:] == ["2000", "2", "none,pacgan,unrolled,multiscale"]


def _validate_stacked():
    import importlib.util

    spec = importlib.util.spec_from_file_location("validate_stacked_counts", REPO / "scripts" / "validate_stacked_counts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


class _TemplateClassifier:
    """Labels a grey image by the class template it correlates with most: exact on these synthetic digits, clean
    or blurred, so every count must equal the truth; `confusion` the identity (it makes no errors)."""

    def __init__(self, templates):
        import torch

        self.templates = templates.reshape(10, -1)
        self.confusion, self.confusion_samples = torch.eye(10, dtype=torch.float64), torch.full((10,), 100)

    def predict(self, x, batch_size=1024):
        return (x.reshape(len(x), -1) @ self.templates.T).argmax(1)


def test_validation_counts_known_modes_of_real_triples_built_as_the_script_builds_them():
    import math

    import torch

    validate = _validate_stacked()
    g = torch.Generator().manual_seed(0)
    templates = torch.randint(0, 2, (10, 28, 28), generator=g).float() * 2 - 1
    labels = torch.arange(10).repeat(20)  # 20 test images a class: its template, with pixel noise, as uint8
    images = ((templates[labels] + 0.3 * torch.randn(200, 28, 28, generator=g)).clamp(-1, 1) * 127.5 + 127.5).round()
    images = images.to(torch.uint8)
    classifier = _TemplateClassifier(templates)
    for case in validate.cases([100], ["uniform"], ["clean", "blur2"]):
        row = validate.measure(case, classifier, images, labels, n=5000, seed=1)
        assert row["true_modes"] == 100 and row["true_kl"] == pytest.approx(math.log(10))  # uniform on 100 of 1,000
        assert row["modes_captured"] == row["modes_above_share"] == row["modes_corrected"] == 100, case
        assert row["reverse_kl"] == pytest.approx(math.log(10), abs=0.02)
    # Zipf: the heaviest mode holds 1/H_100 of the mass; the truth's KL is that of the weights, not log 10
    p = validate.true_distribution(validate.Case(100, "zipf", "clean"), torch.Generator().manual_seed(0))
    weights = p[p > 0].sort(descending=True).values
    assert weights.sum() == pytest.approx(1.0) and weights[0] / weights[-1] == pytest.approx(100.0)
    assert validate.reverse_kl(p) > math.log(10)  # further from uniform than 100 equal modes
    # the degradations change the images as named, and the noise is the seed's
    x = validate.stacked_sample(images, labels, p, 8, torch.Generator().manual_seed(2))
    assert x.shape == (8, 3, 28, 28) and x.min() >= -1 and x.max() <= 1
    once, twice = (validate.degrade(x, how, torch.Generator()) for how in ("blur1", "blur2"))
    assert once.std() < x.std() and twice.std() < once.std()
    noisy = [validate.degrade(x, "noise", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*noisy) and not torch.equal(noisy[0], x)
    lines = validate.table([validate.measure(validate.Case(100, "uniform", "clean"), classifier, images, labels, 2000, 0)])
    assert lines[2].startswith("| 100 | uniform | clean | ") and "| 1.00 |" in lines[2]
