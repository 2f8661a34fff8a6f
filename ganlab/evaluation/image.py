"""The image protocol (docs/images.md): one evaluation of an image GAN, batched on the training device.

What it measures depends on what the dataset offers (ganlab.data.protocol.ImageData):
- A `mode_classifier` (MNIST-like and stacked data): the project's mode classifier labels every generated
  sample (each channel of a `stacked` sample), giving modes captured and KL(p_gen || uniform) over 10 classes
  or 1,000 triples; its penultimate features give the *domain* FID, KID, precision/recall,
  density/coverage and the sliced Wasserstein distance.
- With the Inception weights (metrics.inception): Inception FID, IS, and on the same pool3 features the
  Gaussian-kernel MMD, KID and precision/recall, density/coverage (inception_*). `auto` turns them on for
  `natural_images` (CIFAR-10) when the weights file is found (on the CPU they cost minutes per evaluation
  elsewhere).
- Data with neither (CIFAR-10 offline): the D gap, and the sliced Wasserstein distance on pixels.

The real side of every feature metric is a fixed reference sample of eval.samples images, drawn with
a fixed seed and without replacement (each training image at most once while n <= the set's size); its statistics are cached on disk under (dataset, extractor and its hash, n, seed).
Pictures (sample grids from fixed codes, mode occupancy, class histograms) are drawn by the
background worker from what `job` hands it (jobs.py).
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch
from torch import Tensor, nn

from ganlab.data.degrade import DEGRADATIONS, degrade
from ganlab.errors import ConfigError
from ganlab.evaluation.base import (
    MIN_IMAGE_SAMPLES,
    Evaluation,
    ModeHistory,
    critic_gap_protocol,
    eval_mode,
    scalars,
)
from ganlab.evaluation.jobs import ImageEvalJob
from ganlab.metrics import REGISTRY, protocol_metrics, sample_metrics
from ganlab.metrics.critic import critic_gap
from ganlab.metrics.jacobian import smallest_singular_value
from ganlab.remedies import Remedy

log = logging.getLogger(__name__)

REFERENCE_SEED = 20_170_101  # the real reference sample: the same images in every run and every evaluation
GRID_SEED = 0                # the codes of the sample grid: the same z in every evaluation and every run
JACOBIAN_SAMPLES = 16        # z points for sigma_min(dG/dz): latent_dim G passes each, so fewer than on 2-D
REMEDY_METRIC_SAMPLES = 1000  # remedies' own evaluation metrics (reconstruction, ...) on the first samples
SAVED_SAMPLES = 1000          # generated and real images kept in samples.npz (all 26k would be 61 MB per run)
KID_KEYS = ("kid", "kid_std")
PRDC_KEYS = ("precision", "recall", "density", "coverage")
INCEPTION_KEYS = ("fid", "inception_score", "inception_score_std", "inception_mmd", "inception_mmd_multiscale",
                  *(f"inception_{key}" for key in (*KID_KEYS, *PRDC_KEYS)))
REFERENCE_BLUR = "blur2"  # the real_blurred row's blur: the stronger of the validation's two (issue 26's table)


def _digest(x: Tensor) -> str:
    """SHA-256 of a tensor's values, shape and dtype (a cache key's stand-in for the images themselves: 0.17 s for
    26,000 stacked images here, median of 3, beside two runs)."""
    data = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(data.shape)} {data.dtype}".encode())
    h.update(memoryview(data.numpy()).cast("B"))
    return h.hexdigest()


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(size, n - start)


class ImageEvaluator:
    def __init__(self, data, latent_dim: int, eval_cfg, wasserstein_critic: bool, device: torch.device,
                 metrics_cfg=None):
        from ganlab.allocator import keep_freed_memory
        from ganlab.config import MetricsConfig

        keep_freed_memory()  # its large activations reuse freed heap (ganlab/allocator.py); once per process
        if eval_cfg.samples < MIN_IMAGE_SAMPLES:  # PRDC would fail at the first evaluation, minutes in
            raise ConfigError(f"eval.samples={eval_cfg.samples}: an image evaluation takes >= {MIN_IMAGE_SAMPLES} "
                              "samples (density/coverage compare each with its 5 nearest neighbours)")
        self.data, self.latent_dim, self.cfg, self.device = data, latent_dim, eval_cfg, device
        self.wasserstein_critic = wasserstein_critic
        self.history = ModeHistory()
        self.mcfg = metrics_cfg if metrics_cfg is not None else MetricsConfig()
        self.n_modes = data.n_modes
        self.classifier, self.classifier_info = self._load_classifier()
        self.inception = self._load_inception()
        self.z_grid = torch.randn(eval_cfg.grid, latent_dim, device=device,
                                  generator=torch.Generator(device).manual_seed(GRID_SEED))
        self._reference: dict | None = None  # real features and statistics, computed at the first evaluation
        keys = ["critic_gap", "jacobian_sigma_min", "eval_seconds"]
        if self.classifier is not None:
            keys += ["modes_captured", "reverse_kl", "modes_captured_real"]
            if self.classifier.confusion is not None:
                keys += ["modes_corrected", "reverse_kl_corrected", "modes_corrected_real"]
                if self._family() is not None:
                    keys += ["modes_corrected_low", "modes_corrected_high", "matched_blur", "matched_noise"]
            keys += ["domain_fid", *KID_KEYS, *PRDC_KEYS, "swd", "domain_mmd", "domain_mmd_multiscale"]
        else:
            keys += ["swd_pixels"]
        if self.inception is not None:
            keys += list(INCEPTION_KEYS)
        keys += [name for name, m in REGISTRY.items() if "image" in m.computed and m.computed["image"].on_samples]
        unregistered = set(keys) - set(protocol_metrics("image"))
        if unregistered:  # a programming error: every column is a registered metric (ganlab/metrics/__init__.py)
            raise ValueError(f"image metrics not in ganlab.metrics.REGISTRY: {sorted(unregistered)}")
        self.metric_keys = tuple(keys)

    # --- what is available -------------------------------------------------------------------------

    def _load_classifier(self):
        if self.data.mode_classifier is None:
            return None, None
        from ganlab.metrics.classifier_training import ensure_classifier

        model, info = ensure_classifier(self.data.mode_classifier, self.data.root, self.device)
        return model.eval(), info

    def _family(self):
        """The classifier's confusion matrices under blur and noise (None: its clean one alone, as in a classifier
        of one's own that has `confusion` only)."""
        return getattr(self.classifier, "confusion_family", None)

    def _load_inception(self):
        from ganlab.metrics import inception

        choice, weights = self.mcfg.inception, self.mcfg.fid.weights
        if choice is False:
            return None
        if choice == "auto":
            found = bool(weights) or inception.weights_cache_path().is_file()
            if not self.data.natural_images or not found:
                return None
        return inception.load_fid_inception(weights, self.device)

    # --- features ----------------------------------------------------------------------------------

    def _for_classifier(self, x: Tensor) -> Tensor:
        """28 x 28 inputs for the classifier: padded 32 x 32 data is cropped back."""
        return x[..., 2:30, 2:30] if x.shape[-1] == 32 else x

    @torch.no_grad()
    def _classify(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Labels ((n,) or (n, 3) for stacked data) and penultimate features ((n, 128) or (n, 384))."""
        labels, feats = [], []
        for start, size in _chunks(len(x), self.cfg.batch):
            chunk = self._for_classifier(x[start:start + size])
            c = chunk.shape[1]
            # Each channel is one digit; NHWC is the classifier's faster layout on the CPU.
            flat = chunk.reshape(-1, 1, *chunk.shape[2:]).contiguous(memory_format=torch.channels_last)
            hidden = self.classifier.penultimate(flat)  # once: the labels come from its head
            labels.append(self.classifier.head(hidden).argmax(dim=1).view(len(chunk), c))
            feats.append(hidden.reshape(len(chunk), -1))
        labels = torch.cat(labels)
        return (labels if self.data.stacked else labels[:, 0]), torch.cat(feats)

    @torch.no_grad()
    def _inception(self, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
        from ganlab.metrics import inception

        return inception.features(self.inception, inception.quantize(x), batch_size=min(self.cfg.batch, 200),
                                  return_logits=True)

    def _mode_metrics(self, labels: Tensor, images: Tensor) -> dict:
        """The mode counts of `images`, whose classifier labels are `labels`: with the classifier's confusion
        matrices (a classifier cached before they were recorded, whose test split could not be read, has none),
        the confusion-corrected counts too, corrected by the C of real images degraded to look like these."""
        from ganlab.metrics.classes import classifier_mode_metrics

        return classifier_mode_metrics(labels, self._for_classifier(images), self.classifier, bool(self.data.stacked),
                                       self.n_modes)

    def reference_sample(self, n: int) -> dict:
        """The real side: features and statistics of n reference images (cached on disk), and the MMD's
        bandwidth on each kind of features, from these real ones alone: one kernel for every evaluation
        and reference row (and every run with this reference sample)."""
        if self._reference is not None and self._reference["n"] == n:
            return self._reference
        from ganlab.metrics.feature_cache import cached_rows, cached_statistics
        from ganlab.metrics.mmd import MAX_POINTS, median_bandwidth

        rng = torch.Generator(self.device).manual_seed(REFERENCE_SEED)
        real = self.data.sample_unique(n, generator=rng)  # without replacement, as the FID protocol
        # The images by content too: other files under the dataset's name (another folder, a changed file) are
        # other statistics (identity() alone names the dataset, not its files).
        key = {**self.data.identity(), "n": n, "seed": REFERENCE_SEED, "draw": "without replacement",
               "images": _digest(real)}
        ref: dict = {"n": n, "pixels": real.flatten(1)}
        if self.classifier is not None:
            computed: list = []  # over 50,000 samples the cache keeps no features: the ones it computed, then
            ref["mu"], ref["sigma"], feats = cached_statistics(
                {**key, "extractor": f"classifier:{self.classifier_info['hash']}"},
                lambda: computed.append(self._classify(real)[1].double().cpu().numpy()) or computed[0])
            if feats is None:
                feats = computed[0] if computed else self._classify(real)[1].cpu().numpy()
            # float64 of the float32 features: the same numbers whether they came from the cache or the classifier
            ref["features"] = np.asarray(feats, np.float32).astype(np.float64)
            ref["domain_mmd_sigma"] = median_bandwidth(ref["features"])
            # The counts' ceiling from images the classifier did not train on, as its confusion matrix was
            # measured: training images, which it labels better than any other, would flatter the ceiling. Its
            # draw continues the reference sample's RNG.
            held_out, split = self.data.held_out_sample(n, generator=rng)
            ref["modes"] = cached_rows(self._rows_key("ceiling", held_out, real),
                                       lambda: self._mode_metrics(self._classify(held_out)[0], held_out))
            ref["ceiling_split"] = split
        if self.inception is not None:
            ref["inception_mu"], ref["inception_sigma"], feats = cached_statistics(
                {**key, "extractor": self.inception.extractor_id()}, lambda: self._inception(real)[0])
            if feats is None:  # a cache file without features (over 50,000 kept none; older files): the share the
                # feature metrics read, again (the MMD's first MAX_POINTS, PRDC's first prdc_samples, KID's subsets)
                feats = self._inception(real[:self._inception_share()])[0]
            # float32, as the cache keeps them, whichever way they came. KID and PRDC read these (KID's subsets are
            # drawn from all of them); the MMD the first MAX_POINTS, in float64.
            ref["inception_all"] = np.asarray(feats, np.float32)
            ref["inception_features"] = ref["inception_all"][:MAX_POINTS].astype(np.float64)
            ref["inception_mmd_sigma"] = median_bandwidth(ref["inception_features"])  # 0.6 s at 2,048 dimensions
        self._reference = ref
        return ref

    def _rows_key(self, what: str, images: Tensor, reference: Tensor, seed: int | None = None) -> dict:
        """What decides a cached real-data row (feature_cache.cached_rows): the images it scores and the reference
        sample they are scored against, by content (so the data's files, folder and split, n and the draw's device
        and seed are all in it), the seed of any noise drawn after them, the classifier (its weights' hash and every
        confusion matrix and signature the matched correction picks from), the Inception network, the metric
        settings, the device type, the code that computes it and the torch and numpy releases under it."""
        from dataclasses import asdict, is_dataclass

        from omegaconf import OmegaConf

        from ganlab.metrics.feature_cache import source_fingerprint

        confusion = hashlib.sha256()
        family = self._family()
        for t in (getattr(self.classifier, "confusion", None), getattr(self.classifier, "confusion_samples", None),
                  *((family.sigma, family.noise, family.signatures, family.confusions, family.samples)
                    if family is not None else ())):
            if t is not None:
                confusion.update(t.detach().cpu().contiguous().numpy().tobytes())
        settings = (asdict(self.mcfg) if is_dataclass(self.mcfg)
                    else OmegaConf.to_container(self.mcfg, resolve=True))
        return {"row": what, "images": _digest(images), "reference": _digest(reference), "seed": seed,
                "classifier": self.classifier_info["hash"], "confusion": confusion.hexdigest()[:16],
                "inception": None if self.inception is None else self.inception.extractor_id(),
                "metrics": settings, "blur": REFERENCE_BLUR, "device": self.device.type,
                "torch": torch.__version__, "numpy": np.__version__,
                "code": source_fingerprint("metrics", "data", "evaluation/image.py", "evaluation/base.py")}

    def _inception_share(self) -> int:
        """How many real Inception features the feature metrics read when the cache holds none."""
        from ganlab.metrics.mmd import MAX_POINTS

        return max(MAX_POINTS, self.mcfg.prdc_samples, self.mcfg.kid_subset_size)

    # --- the evaluation ------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator,
                 n: int | None = None, step: int | None = None) -> Evaluation:
        ev = self._evaluate(G, D, remedy, generator, n or self.cfg.samples)
        if step is not None:
            self.history.record(step, ev)
        return ev

    def _evaluate(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator, n: int) -> Evaluation:
        start = time.perf_counter()
        ref = self.reference_sample(n)
        with eval_mode([G, D, *(module for module, _ in remedy.extra_networks().values())]):
            remedy.before_eval(G, D, self.data, generator)
            z = torch.randn(n, self.latent_dim, device=self.device, generator=generator)
            fake = torch.cat([remedy.sample(G, D, z[s:s + size], generator) for s, size in _chunks(n, self.cfg.batch)])
            real = self.data.sample(n, generator=generator)
            d_real = torch.cat([D(real[s:s + size]) for s, size in _chunks(n, self.cfg.batch)])
            d_fake = torch.cat([D(fake[s:s + size]) for s, size in _chunks(n, self.cfg.batch)])
            metrics: dict = {"critic_gap": critic_gap(d_real, d_fake)}
            metrics["jacobian_sigma_min"] = float(smallest_singular_value(G, z[:JACOBIAN_SAMPLES]).mean())
            k = min(n, REMEDY_METRIC_SAMPLES)
            metrics.update(sample_metrics("image", fake, real, self.data))  # registered metrics of the samples
            metrics.update(remedy.eval_metrics(G, D, self.data, z[:k], fake[:k], real[:k]))
            grid = G(self.z_grid)  # G itself at fixed codes (a sampler's choices would change the picture)
            source = remedy.sample_sources(G, self.z_grid)
        fake = fake.float()
        metrics.update(self._sample_metrics(fake, ref))
        metrics["eval_seconds"] = time.perf_counter() - start
        log.info("evaluation of %d samples: %.1f s", n, metrics["eval_seconds"])
        # Only what samples.npz keeps leaves the device: the first SAVED_SAMPLES of each side, as uint8.
        return Evaluation(metrics, _to_uint8(fake[:SAVED_SAMPLES]), _to_uint8(real[:SAVED_SAMPLES]), None,
                          None if source is None else source.cpu().numpy(), grid=_to_uint8(grid.float()))

    @torch.no_grad()
    def references(self, G: nn.Module, D: nn.Module, remedy: Remedy, generator: torch.Generator,
                   offloader=None) -> dict:
        """The reference rows (docs/cli.md, Comparing runs): the untrained G (call before the first step),
        then the real-data rows (`data_references`). No Gaussian fit: a Gaussian in pixel space says
        nothing a reader could use. All measured here (the features need the device): `offloader` is
        not used."""
        untrained = scalars(self.evaluate(G, D, remedy, generator))
        untrained.pop("eval_seconds", None)
        return {"untrained": untrained, **self.data_references(generator)}

    @torch.no_grad()
    def data_references(self, generator: torch.Generator, n: int | None = None) -> dict:
        """The rows that need no G, drawn from a fresh generator seeded as `generator` was (its initial seed,
        whatever it has drawn since): `data`, real test-split images through the same classifier and features
        (the ceiling); with a mode classifier, `real_blurred` and `real_noised`, the same images degraded as
        generated ones are (what a blurry or a noisy G that covers every mode scores: such images are confused
        more than clean ones, which the matched confusion is for). A function of that seed, n and the data, so
        cached on disk (feature_cache.cached_rows): a sweep's runs of one seed measure them once (on one CPU
        thread, 26,000 stacked images: 6.6 minutes in one run before ganlab/allocator.py, about 6 beside other work
        after it)."""
        n = n or self.cfg.samples
        seed = generator.initial_seed()
        fresh = torch.Generator(self.device).manual_seed(seed)
        ref = self.reference_sample(n)
        real, _ = self.data.held_out_sample(n, fresh)

        def measure() -> dict:
            rows = {"data": real}
            if self.classifier is not None:
                rows["real_blurred"] = degrade(real, REFERENCE_BLUR)
                rows["real_noised"] = degrade(real, "noise", fresh)  # the draw after the images': the key's seed
            return {name: {k: v for k, v in self._sample_metrics(x, ref).items() if k != "mode_counts"}
                    for name, x in rows.items()}

        if self.classifier is None:  # pixel metrics only: cheap
            return measure()
        from ganlab.metrics.feature_cache import cached_rows

        return cached_rows(self._rows_key("data_references", real, ref["pixels"], seed), measure)

    @torch.no_grad()
    def evaluate_samples(self, fake: Tensor, generator: torch.Generator) -> Evaluation:
        """The metrics of images made elsewhere (`ganlab eval --samples FILE`), (n, C, H, W) in [-1, 1] on
        this device: all that needs no G or D (no critic gap, no dG/dz, no remedy metrics)."""
        start = time.perf_counter()
        n = len(fake)
        ref = self.reference_sample(n)
        real = self.data.sample(n, generator=generator)
        metrics = dict(sample_metrics("image", fake, real, self.data))
        metrics.update(self._sample_metrics(fake.float(), ref))
        metrics["eval_seconds"] = time.perf_counter() - start
        return Evaluation(metrics, _to_uint8(fake[:SAVED_SAMPLES]), _to_uint8(real[:SAVED_SAMPLES]), None)

    def _sample_metrics(self, x: Tensor, ref: dict) -> dict:
        """Every metric of a batch of images against the reference sample: classifier modes and feature
        metrics (or pixel SWD without a classifier), and Inception FID/IS when enabled."""
        out: dict = {}
        if self.classifier is not None:
            labels, feats = self._classify(x)
            out.update(self._mode_metrics(labels, x))
            # The ceiling beside each count: the reference sample (real, the same n) through the same
            # classifier, already classified for the feature metrics.
            out.update({f"{key}_real": ref["modes"][key] for key in ("modes_captured", "modes_corrected")
                        if key in ref["modes"]})
            out.update(self._feature_metrics(feats.double().cpu().numpy(), ref))
        else:
            from ganlab.metrics.sliced import sliced_wasserstein

            out["swd_pixels"] = sliced_wasserstein(x.flatten(1), ref["pixels"], self.mcfg.swd_projections)["sw1"]
        if self.inception is not None:
            from ganlab.metrics.feature_cache import fid_from_features
            from ganlab.metrics.inception_score import inception_score
            from ganlab.metrics.mmd import mmd_metrics

            feats, logits = self._inception(x)
            out["fid"] = fid_from_features(feats, ref["inception_mu"], ref["inception_sigma"])
            out["inception_score"], out["inception_score_std"] = inception_score(logits)
            out.update(mmd_metrics(feats, ref["inception_features"], prefix="inception_",
                                   sigma=ref["inception_mmd_sigma"]))
            out.update(self._kid_prdc(feats, ref["inception_all"], prefix="inception_"))  # the same features
        return out

    def _kid_prdc(self, fake: np.ndarray, real: np.ndarray, prefix: str = "") -> dict:
        """KID (subsets drawn from all of `real`) and precision/recall, density/coverage (the first prdc_samples
        per side) of generated features against real ones, named with `prefix`."""
        from ganlab.metrics.kid import kernel_inception_distance
        from ganlab.metrics.prdc import prdc

        out = dict(zip((prefix + key for key in KID_KEYS), kernel_inception_distance(
            fake, real, self.mcfg.kid_subsets, self.mcfg.kid_subset_size)))
        m = min(self.mcfg.prdc_samples, len(fake), len(real))
        out.update({prefix + key: value for key, value in prdc(real[:m], fake[:m], k_pr=3, k_dc=5).items()})
        return out

    def _feature_metrics(self, fake: np.ndarray, ref: dict) -> dict:
        from ganlab.metrics.feature_cache import fid_from_features
        from ganlab.metrics.mmd import mmd_metrics
        from ganlab.metrics.sliced import sliced_wasserstein

        real = np.asarray(ref["features"], np.float64)
        out = {"domain_fid": fid_from_features(fake, ref["mu"], ref["sigma"], what="domain FID")}
        out.update(self._kid_prdc(fake, real))
        out["swd"] = sliced_wasserstein(fake, real, self.mcfg.swd_projections)["sw1"]
        out.update(mmd_metrics(fake, real, prefix="domain_", sigma=ref["domain_mmd_sigma"]))
        return out

    # --- what the loop needs besides the numbers -----------------------------------------------------

    def protocol(self) -> dict:
        n = self.cfg.samples
        out = {
            "samples": n,
            "reference": f"{n} real {self.data.name} ({self.data.split} split) images drawn without replacement with "
                         f"seed {REFERENCE_SEED}, the same in every evaluation",
            "critic_gap": critic_gap_protocol(self.wasserstein_critic),
            "jacobian_sigma_min": f"mean over {JACOBIAN_SAMPLES} z of the smallest singular value of dG/dz",
            "remedy_metrics": f"on the first {REMEDY_METRIC_SAMPLES} evaluation samples",
            "references": "untrained: this run's G before its first step; data: real images of the same number "
                          "from the test split (images the mode classifier did not train on; a stacked sample: "
                          "three independent test images) through the same classifier and features (the ceiling)"
                          + ("; real_blurred, real_noised: those images " + DEGRADATIONS[REFERENCE_BLUR] + ", and "
                             + DEGRADATIONS["noise"] + ": what a blurry or noisy G that covers every mode scores"
                             if self.classifier is not None else ""),
        }
        if self.classifier is not None:
            from ganlab.metrics.classifier import describe

            unit = "each channel" if self.data.stacked else "each sample"
            out["classifier"] = describe(self.classifier_info)
            out["mode_metrics"] = (f"the classifier labels {unit}; modes_captured = distinct "
                                   + ("label triples out of 1000" if self.data.stacked else "classes out of 10")
                                   + "; reverse_kl = KL(p_gen(mode) || uniform), natural log, 0 log 0 = 0; "
                                   "modes_captured_real (modes_corrected_real) = modes_captured (modes_corrected) "
                                   f"of {n} real test-split images (seed {REFERENCE_SEED}) through the same "
                                   "classifier: the ceiling")
            out["corrected_modes"] = self._corrected_protocol()
            out["domain_features"] = ("the classifier's penultimate layer" + (", the three channels' features concatenated"
                                      if self.data.stacked else "") + ": domain_fid, kid, precision/recall, "
                                      "density/coverage and swd are on these features, NOT Inception features")
            out["kid"] = (f"unbiased MMD^2, cubic polynomial kernel, mean and std over {self.mcfg.kid_subsets} subsets "
                          f"of {self.mcfg.kid_subset_size}")
            out["prdc"] = f"precision/recall k=3, density/coverage k=5, on the first {min(n, self.mcfg.prdc_samples)} samples per side"
            out["swd"] = f"sliced W1 over {self.mcfg.swd_projections} random directions (seed 0)"
            from ganlab.metrics.mmd import PROTOCOL as MMD_PROTOCOL

            out["domain_mmd"] = f"on the classifier's features: {MMD_PROTOCOL}"
            if self._reference is not None and "modes" in self._reference:
                ref = self._reference["modes"]
                out["reference_modes"] = {k: ref[k] for k in ("modes_captured", "reverse_kl", "modes_corrected",
                                                              "reverse_kl_corrected") if k in ref}
                out["ceiling_split"] = self._reference["ceiling_split"]
        else:
            out["swd_pixels"] = f"sliced W1 on raw pixels over {self.mcfg.swd_projections} random directions (seed 0)"
        if self.inception is not None:
            out["fid"] = (f"Inception FID ({self.inception.extractor_id()}), pytorch-fid preprocessing, "
                          f"{n} generated vs {n} reference images")
            out["inception_score"] = "IS over 10 splits of the generated samples"
            from ganlab.metrics.feature_cache import MAX_CACHED_FEATURES
            from ganlab.metrics.mmd import PROTOCOL as MMD_PROTOCOL

            out["inception_mmd"] = f"on the Inception pool3 features: {MMD_PROTOCOL}"
            out["inception_kid"] = (f"on the Inception pool3 features FID reads: unbiased MMD^2, cubic polynomial kernel, "
                                    f"mean and std over {self.mcfg.kid_subsets} subsets of {self.mcfg.kid_subset_size}, "
                                    f"the real side drawn from the {n} reference images' features (where the "
                                    f"statistics cache holds none, for n over {MAX_CACHED_FEATURES} or a file written "
                                    f"before they were kept: from the first {self._inception_share()})")
            out["inception_prdc"] = (f"on the Inception pool3 features: precision/recall k=3, density/coverage k=5, "
                                     f"on the first {min(n, self.mcfg.prdc_samples)} samples per side")
        return out

    def _corrected_protocol(self) -> str:
        if self.classifier.confusion is None:
            return ("not measured: the classifier was cached before its confusion matrices were recorded, and the "
                    f"{self.data.mode_classifier} test split they are measured on could not be read (the run's log says why)")
        from ganlab.metrics.confusion import MIN_SHARE, Z

        unit, model = ("triple", "(C ⊗ C ⊗ C)ᵀ p, channels labelled independently") if self.data.stacked else \
            ("class", "Cᵀ p")
        family = self._family()
        which = ("measured on the confusion half of the test split "
                 f"({int(self.classifier.confusion_samples.sum())} {self.data.mode_classifier} images)")
        if family is not None:
            which += (", blurred and noised as the samples look: of the grid blur sigma x noise std (matched_blur, "
                      "matched_noise), the member whose radial power spectrum is nearest the samples'")
        return (f"modes_corrected, reverse_kl_corrected: the observed {unit} histogram deconvolved with the "
                f"classifier's confusion matrix C[i, j] = P(label j | class i), {which}: the true {unit} "
                f"distribution p is estimated by maximum likelihood (EM, i.e. Richardson-Lucy) under observed = {model}. "
                f"modes_corrected counts the {unit}s t with n p_t >= {MIN_SHARE:g} of the uniform share n/{self.n_modes} "
                f"whose samples labelled as themselves (n p_t times the product of C's diagonal entries) stand {Z:g} "
                "standard deviations above what the other modes leak into that label (Poisson, plus C's sampling "
                "error); its bounds modes_corrected_low (units above 50 % of the uniform share, 5 standard deviations, C's "
                "sampling error counted twice) and "
                "modes_corrected_high (every unit whose n p_t is not 2 Poisson standard errors below that floor); "
                "reverse_kl_corrected = KL(p || uniform) "
                f"of p refitted on those {unit}s alone. Validated on real sets with known modes, clean and degraded "
                "(docs/results/stacked_validation.md)")

    def job(self, step: int, ev: Evaluation, last: bool = False) -> ImageEvalJob:  # pictures only: nothing to split
        return ImageEvalJob(step, ev.grid, scalars(ev), ev.metrics.get("mode_counts"), self.n_modes,
                            bool(self.data.stacked), list(self.history.steps), list(self.history.counts), ev.source)

    def headline(self, metrics: dict) -> str:
        if "modes_captured" in metrics:
            return f"  modes {metrics['modes_captured']}/{self.n_modes}  KL {metrics['reverse_kl']:.2f}"
        if "fid" in metrics:
            return f"  FID {metrics['fid']:.1f}"
        return f"  SWD(px) {metrics['swd_pixels']:.3f}"

    def offline_metrics(self, ev: Evaluation) -> dict:
        return {}

    def saved_samples(self, ev: Evaluation) -> dict:
        """samples.npz: the first SAVED_SAMPLES generated and real images of the final evaluation, as
        uint8; `ganlab eval` draws any number again from the checkpoint."""
        return {"x": ev.fake, "real": ev.real}

    def state_dict(self) -> dict:
        return self.history.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.history.load_state_dict(state)


def _to_uint8(x: Tensor) -> np.ndarray:
    """[-1, 1] images -> uint8 levels, N x C x H x W: FID's quantization (what a PNG would hold)."""
    from ganlab.metrics.inception import quantize

    return (quantize(x) * 255).round().to(torch.uint8).cpu().numpy()
