"""The engine's pictures equal A1111 1.10's: every sampler and schedule type, txt2img and img2img, the seed and
noise options (issue "Same infotext, same picture as A1111 1.10").

Each comparison runs one job (batch 2, 64x64) through the engine (a GenerationRequest to `services.engine.run`, the
settings set with `services.options`) and through `tests/a1111_reference.py` (A1111's processing written from its
behaviour over k-diffusion 0.0.16, independent of the engine's code), on the calm tiny SD1 checkpoint
(`tiny_calm_sd1`), and asserts max |delta| <= 1/255. It also asserts that the reference's own noise floor - how far
its pictures move when every initial noise value is nudged by 1e-6 - is <= 1/255, so that a pass means something.

The default matrix (~340 comparisons, `matrix_cases`): every sampler x every schedule type at 6 steps txt2img (the
timestep samplers ignore the schedule type, as in A1111); every sampler at its Automatic schedule at 4 steps txt2img
and 4 and 6 steps img2img (denoising 0.5); every schedule type at 4 steps txt2img (Euler) and 6 steps img2img (Euler,
DPM2, LCM). Then variation seeds, ENSD, eta, s_churn/s_noise, the RNG sources, batch-vs-single, prompts, clip skip,
schedule settings, Restart's restarts and UniPC's settings. About 1.5 minutes on 2 CPU cores.

    A1111_PARITY_FULL=1   the whole grid: every sampler x schedule type x {4, 6} steps x {txt2img, img2img}
    A1111_PARITY_TABLE=-  print the table "max |delta| per sampler x schedule (txt2img/img2img)" when the module
                          ends (=PATH: write it there as Markdown); with -s every comparison prints its line too
    python -m tests.test_a1111_parity [--full] [--table PATH]   the same table without pytest
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from tests.a1111_reference import (SAMPLERS, SCHEDULE_TYPES, A1111Reference, Job, Options, Philox, image_from_seed,
                                   noise_floor)
from webui.core.errors import RequestError

TOLERANCE = 1  # 1/255: float summation order differs between any two implementations
NUDGE = 1e-6
PROMPT, NEGATIVE = "a red fox in the snow", "blurry"
SIZE = 64
DENOISING = 0.5
FULL = os.environ.get("A1111_PARITY_FULL", "") not in ("", "0")
TABLE = os.environ.get("A1111_PARITY_TABLE", "")

SAMPLER_NAMES = list(SAMPLERS)
TIMESTEP_SAMPLERS = [name for name, s in SAMPLERS.items() if s.kind == "timesteps"]
MODES = ("txt2img", "img2img")
STEPS = (4, 6)


@dataclass(frozen=True)
class Case:
    """One comparison: a job as both sides run it."""
    sampler: str
    schedule: str = "Automatic"
    steps: int = 6
    mode: str = "txt2img"
    seed: int = 1234
    batch_size: int = 2
    subseed: int = 0
    subseed_strength: float = 0.0
    eta: float | None = None
    s_churn: float | None = None
    s_tmin: float | None = None
    s_tmax: float | None = None
    s_noise: float | None = None
    prompt: str = PROMPT
    negative_prompt: str = NEGATIVE
    options: Options = field(default_factory=Options)

    @property
    def id(self) -> str:
        parts = [self.mode, str(self.steps), self.sampler.replace(" ", "_"), self.schedule.replace(" ", "_")]
        if self.batch_size != 2 or self.seed != 1234:
            parts.append(f"b{self.batch_size}s{self.seed}")
        if self.subseed_strength:
            parts.append(f"var{self.subseed_strength}")
        for name in ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            if getattr(self, name) is not None:
                parts.append(f"{name}{getattr(self, name)}")
        if (self.prompt, self.negative_prompt) != (PROMPT, NEGATIVE):
            parts.append(f"prompt({self.prompt[:12]!r},{self.negative_prompt[:12]!r})")
        changed = {k: v for k, v in vars(self.options).items() if v != getattr(Options(), k)}
        parts += [f"{k}={v}" for k, v in changed.items()]
        return "-".join(parts)

    def refused_by_a1111(self) -> str | None:
        """Why A1111 1.10 itself cannot run this job (then there is nothing to compare), or None."""
        if self.sampler == "UniPC":
            runs = len(range(0, 1000, 1000 // (self.steps + self.options.always_discard_next_to_last_sigma)))
            if self.mode == "img2img":
                runs = int(min(DENOISING, 0.999) * self.steps)
            if runs < self.options.uni_pc_order:
                return f"A1111 refuses it too: UniPC order {self.options.uni_pc_order} needs >= that many steps " \
                       f"(this job has {runs})"
        return None


def matrix_cases(full: bool) -> list[Case]:
    """The comparisons of the sampler x schedule matrix. Default: every sampler x every schedule type at 6 steps
    txt2img; every sampler at its Automatic schedule at 4 steps txt2img and 4 and 6 steps img2img; every schedule
    type at 4 steps txt2img with Euler and at 6 steps img2img with Euler, DPM2 (discards the penultimate sigma) and
    LCM (its own denoiser). Full: every sampler x schedule type x {4, 6} steps x {txt2img, img2img}."""
    cases = []
    if full:
        for mode in MODES:
            for steps in STEPS:
                for sampler in SAMPLER_NAMES:
                    for schedule in SCHEDULE_TYPES:
                        cases.append(Case(sampler, schedule, steps, mode))
    else:
        for sampler in SAMPLER_NAMES:
            for schedule in SCHEDULE_TYPES:
                cases.append(Case(sampler, schedule, 6))
        for mode, steps in (("txt2img", 4), ("img2img", 4), ("img2img", 6)):
            for sampler in SAMPLER_NAMES:
                cases.append(Case(sampler, "Automatic", steps, mode))
        for schedule in SCHEDULE_TYPES[1:]:
            cases += [Case("Euler", schedule, 4)] + [Case(s, schedule, 6, "img2img") for s in ("Euler", "DPM2", "LCM")]
    return list(dict.fromkeys(cases))


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def max_difference(ours, theirs) -> int:
    assert len(ours) == len(theirs), f"{len(ours)} pictures vs {len(theirs)}"
    return max(int(np.abs(_pixels(a) - _pixels(b)).max()) for a, b in zip(ours, theirs))


class Parity:
    """Runs cases on both sides; shares reference runs and floors between tests; keeps results for the table."""

    def __init__(self, services):
        self.services = services
        _, model = services.models.get()
        self.reference = A1111Reference(model.unet, model.vae, model.text_encoders[0], model.tokenizers[0])
        self.init_image = image_from_seed(3, (SIZE, SIZE))
        self._pictures: dict = {}
        self._floors: dict = {}
        self.results: dict[Case, tuple[int | None, int | None, str]] = {}

    # the reference

    def job(self, case: Case) -> Job:
        timesteps = SAMPLERS[case.sampler].kind == "timesteps"
        return Job(prompt=case.prompt, negative_prompt=case.negative_prompt, sampler=case.sampler,
                   schedule="Automatic" if timesteps else case.schedule, steps=case.steps, cfg_scale=7.0,
                   width=SIZE, height=SIZE, seed=case.seed, batch_size=case.batch_size, subseed=case.subseed,
                   subseed_strength=case.subseed_strength, eta=case.eta, s_churn=case.s_churn, s_tmin=case.s_tmin,
                   s_tmax=case.s_tmax, s_noise=case.s_noise,
                   init_image=self.init_image if case.mode == "img2img" else None, denoising_strength=DENOISING,
                   options=case.options)

    @staticmethod
    def _key(job: Job):
        return tuple((k, v if k != "init_image" else v is not None) for k, v in vars(job).items())

    def reference_pictures(self, case: Case):
        job = self.job(case)
        key = self._key(job)
        if key not in self._pictures:
            self._pictures[key] = self.reference.run(job)
        return self._pictures[key]

    def floor(self, case: Case) -> int:
        job = self.job(case)
        key = self._key(job)
        if key not in self._floors:
            self._floors[key] = noise_floor(self.reference, job, self.reference_pictures(case), NUDGE)
        return self._floors[key]

    # the engine

    def engine_pictures(self, case: Case):
        from webui.core.request import GenerationRequest
        options = case.options
        self.services.options.update({
            "eta_ancestral": options.eta_ancestral, "eta_ddim": options.eta_ddim,
            "eta_noise_seed_delta": options.eta_noise_seed_delta, "randn_source": options.randn_source,
            "always_discard_next_to_last_sigma": options.always_discard_next_to_last_sigma,
            "sigma_min": options.sigma_min, "sigma_max": options.sigma_max, "rho": options.rho,
            "beta_dist_alpha": options.beta_dist_alpha, "beta_dist_beta": options.beta_dist_beta,
            "uni_pc_variant": options.uni_pc_variant, "uni_pc_skip_type": options.uni_pc_skip_type,
            "uni_pc_order": options.uni_pc_order, "uni_pc_lower_order_final": options.uni_pc_lower_order_final,
            "CLIP_stop_at_last_layers": options.clip_stop_at_last_layers, "s_churn": options.s_churn,
            "s_tmin": options.s_tmin, "s_tmax": options.s_tmax, "s_noise": options.s_noise,
        }, save=False)
        fields = dict(prompt=case.prompt, negative_prompt=case.negative_prompt, sampler_name=case.sampler,
                      scheduler=case.schedule, steps=case.steps, cfg_scale=7.0, seed=case.seed, width=SIZE, height=SIZE,
                      batch_size=case.batch_size, subseed=case.subseed, subseed_strength=case.subseed_strength,
                      clip_skip=options.clip_stop_at_last_layers, save_images=False)
        for name in ("eta", "s_churn", "s_tmin", "s_tmax", "s_noise"):
            if getattr(case, name) is not None:
                fields[name] = getattr(case, name)
        if case.mode == "img2img":
            fields.update(mode="img2img", init_images=[self.init_image], denoising_strength=DENOISING)
        result = self.services.engine.run(GenerationRequest(**fields))
        return result.images[result.index_of_first_image:]  # the batch's pictures, after its grid

    # both

    def compare(self, case: Case, echo=print) -> tuple[int, int]:
        """(max |delta| engine vs reference, the reference's noise floor), both in 1/255 steps; recorded."""
        reason = case.refused_by_a1111()
        if reason:  # nothing to compare: the engine must refuse it as clearly (a 422 naming the fix), not fail
            self.results[case] = (None, None, "refused")
            with pytest.raises(RequestError, match="UniPC of order .* needs at least"):
                self.engine_pictures(case)
            echo(f"{case.id}: refused by the engine as by A1111 ({reason})")
            return 0, 0
        theirs = self.reference_pictures(case)
        floor = self.floor(case)
        try:
            ours = self.engine_pictures(case)
        except Exception as exc:
            self.results[case] = (None, floor, f"engine: {type(exc).__name__}")
            echo(f"{case.id}: engine raised {type(exc).__name__}: {exc}; noise floor {floor}/255")
            raise
        delta = max_difference(ours, theirs)
        self.results[case] = (delta, floor, "")
        echo(f"{case.id}: max |delta| {delta}/255, noise floor {floor}/255")
        return delta, floor

    def check(self, case: Case) -> None:
        delta, floor = self.compare(case)
        assert floor <= TOLERANCE, f"{case.id}: the reference moves by {floor}/255 under a {NUDGE} nudge of its " \
                                   f"noise: this comparison cannot tell a match from a mismatch"
        assert delta <= TOLERANCE, f"{case.id}: the engine's pictures differ from A1111's by up to {delta}/255 " \
                                   f"(noise floor {floor}/255)"

    # the table

    def table(self) -> str:
        """Markdown: max |delta| per sampler x schedule as "txt2img/img2img" (the worst over the step counts run),
        then the noise floors the same way; "-" not run, "E" the engine raised, "n/a" A1111 refuses the job (and so does the engine, with a clear message)."""
        def cell(sampler, schedule, pick):
            parts = []
            for mode in MODES:
                found = [r for c, r in self.results.items() if c.sampler == sampler and c.schedule == schedule
                         and c.mode == mode and c == Case(sampler, schedule, c.steps, mode)]
                if not found:
                    parts.append("-")
                    continue
                values = [pick(r) for r in found]
                numbers = [v for v in values if isinstance(v, int)]
                if any(v == "E" for v in values):
                    parts.append("E")
                elif numbers:
                    parts.append(str(max(numbers)))
                else:
                    parts.append("n/a")
            return "/".join(parts)

        def grid(title, pick):
            header = "| sampler | " + " | ".join(SCHEDULE_TYPES) + " |"
            lines = [f"**{title}** (txt2img/img2img, 1/255 steps, worst of {', '.join(map(str, STEPS))} steps)", "",
                     header, "|" + "---|" * (len(SCHEDULE_TYPES) + 1)]
            for sampler in SAMPLER_NAMES:
                lines.append(f"| {sampler} | " + " | ".join(cell(sampler, s, pick) for s in SCHEDULE_TYPES) + " |")
            return "\n".join(lines)

        delta = grid("max |delta| engine vs A1111 reference",
                     lambda r: "E" if r[2].startswith("engine") else (r[0] if r[0] is not None else "n/a"))
        floor = grid("noise floor of the reference (1e-6 nudge)", lambda r: r[1] if r[1] is not None else "n/a")
        others = [f"- {c.id}: " + (f"{r[0]}/255 (floor {r[1]}/255)" if r[0] is not None else (r[2] or "n/a"))
                  for c, r in self.results.items() if c != Case(c.sampler, c.schedule, c.steps, c.mode)]
        return "\n\n".join([delta, floor] + (["**other comparisons**\n\n" + "\n".join(others)] if others else []))


@contextlib.contextmanager
def one_thread():
    """Torch on one thread for these many tiny runs: on a shared 2-core machine, two threads wait on each other
    for seconds per run whenever another process holds a core (1 thread: ~0.1 s a run)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parity(tmp_path_factory, tiny_calm_sd1):
    from tests.conftest import install_model
    from webui.services import build_services
    from webui.settings.flags import parse_flags
    data = tmp_path_factory.mktemp("a1111-parity")
    install_model(data, tiny_calm_sd1)
    with one_thread():
        services = build_services(parse_flags(["--data-dir", str(data)]))
        harness = Parity(services)
        yield harness
        services.stop()
    if TABLE:
        text = harness.table()
        if TABLE == "-":
            sys.__stdout__.write("\n" + text + "\n")
        else:
            Path(TABLE).write_text(text + "\n", encoding="utf-8")


# --- the reference itself -------------------------------------------------------------------------------------

def test_philox_gives_torch_cuda_numbers():
    """The NV source's generator: torch.randn((3, 4), device="cuda") after manual_seed(0), as A1111 documents it."""
    expected = np.array([[-0.92466259, -0.42534415, -2.6438457, 0.14518388],
                         [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
                         [-1.07454231, -0.36314407, -1.67105067, 2.26550497]], dtype=np.float32)
    generator = Philox(0)
    assert np.abs(generator.randn((3, 4)).numpy() - expected).max() < 1e-6
    assert not np.allclose(generator.randn((3, 4)).numpy(), expected)  # the next call draws new numbers


def test_reference_pictures_depend_on_what_they_should(parity):
    """The calm model still tells prompt, seed, sampler, schedule and noise options apart (else nothing is tested)."""
    base = Case("Euler a")
    pictures = parity.reference_pictures(base)
    reference = parity.reference
    for changed in (replace(base, seed=99), replace(base, sampler="Euler"), replace(base, schedule="Karras"),
                    replace(base, eta=0.5), replace(base, options=Options(eta_noise_seed_delta=31337)),
                    replace(base, options=Options(randn_source="NV")),
                    replace(base, subseed=77, subseed_strength=0.3)):
        assert max_difference(pictures, parity.reference_pictures(changed)) > 4 * TOLERANCE, changed.id
    other_prompt = reference.run(replace(parity.job(base), prompt="a blue house"))
    assert max_difference(pictures, other_prompt) > 4 * TOLERANCE


# --- the matrix -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", matrix_cases(FULL), ids=lambda c: c.id)
def test_matrix(parity, case):
    parity.check(case)


# --- seeds and noise ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    Case("Euler a", subseed=77, subseed_strength=0.3),
    Case("DPM++ SDE", subseed=77, subseed_strength=0.3),
    Case("Euler a", mode="img2img", subseed=77, subseed_strength=0.3),
], ids=lambda c: c.id)
def test_variation_seed(parity, case):
    """slerp(0.3) of each image's seed noise and its subseed's; every image keeps the one seed (its per-step noise
    and Brownian tree are the seed's)."""
    parity.check(case)


ENSD = Options(eta_noise_seed_delta=31337)


@pytest.mark.parametrize("case", [
    Case("Euler a", options=ENSD), Case("DPM++ 2S a", options=ENSD), Case("DPM2 a", options=ENSD),
    Case("DDIM", eta=0.5, options=ENSD), Case("Euler a", mode="img2img", options=ENSD),
    Case("DPM++ SDE", options=ENSD),  # Brownian trees are seeded by the seeds alone: ENSD changes nothing
], ids=lambda c: c.id)
def test_eta_noise_seed_delta(parity, case):
    parity.check(case)


@pytest.mark.parametrize("case", [
    Case("Euler a", eta=0.5), Case("DPM++ 2M SDE", eta=0.5), Case("DPM fast", eta=0.5), Case("DDIM", eta=0.5),
    Case("DDIM CFG++", eta=0.5), Case("Euler a", mode="img2img", eta=0.5),
    Case("Euler a", options=Options(eta_ancestral=0.5)), Case("DDIM", options=Options(eta_ddim=0.5)),
], ids=lambda c: c.id)
def test_eta(parity, case):
    parity.check(case)


@pytest.mark.parametrize("case", [
    Case("Euler a", options=Options(randn_source="GPU")), Case("DPM++ SDE", options=Options(randn_source="GPU")),
    Case("Euler a", options=Options(randn_source="NV")), Case("DPM++ SDE", options=Options(randn_source="NV")),
    Case("DPM++ 2M SDE", mode="img2img", options=Options(randn_source="NV")),
    Case("Euler a", subseed=77, subseed_strength=0.3, options=Options(randn_source="NV", eta_noise_seed_delta=31337)),
], ids=lambda c: c.id)
def test_rng_source(parity, case):
    """CPU and GPU (on this machine the same: A1111 draws on the CPU device without CUDA) and NV (NVIDIA's Philox,
    emulated on the CPU: initial noise, per-step noise and the Brownian trees' draws)."""
    parity.check(case)


def test_nv_is_not_cpu(parity):
    for sampler in ("Euler a", "DPM++ SDE"):
        cpu = parity.reference_pictures(Case(sampler))
        nv = parity.reference_pictures(Case(sampler, options=Options(randn_source="NV")))
        assert max_difference(cpu, nv) > 4 * TOLERANCE


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE", "DPM adaptive"])
def test_batch_image_equals_same_seed_alone(parity, sampler):
    """Image 2 of a batch (seed + 1) is the picture of seed + 1 run alone: per-image generators and Brownian trees
    (DPM adaptive's step sizes depend on the whole batch in A1111 as well: it is compared with the reference)."""
    alone = Case(sampler, seed=1235, batch_size=1)
    parity.check(alone)
    batch = parity.engine_pictures(Case(sampler))
    if sampler == "DPM adaptive":
        assert max_difference(batch, parity.reference_pictures(Case(sampler))) <= TOLERANCE
    else:
        assert max_difference(batch[1:], parity.engine_pictures(alone)) <= TOLERANCE


# --- settings -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    Case("Euler", options=Options(always_discard_next_to_last_sigma=True)),
    Case("DPM++ 2M", "Karras", 4, "img2img", options=Options(always_discard_next_to_last_sigma=True)),
    Case("DDIM", options=Options(always_discard_next_to_last_sigma=True)),
    Case("Euler", "Karras", options=Options(sigma_min=0.1, sigma_max=10.0, rho=5.0)),
    Case("Euler", "Polyexponential", options=Options(rho=2.0)),
    Case("Euler", "Beta", options=Options(beta_dist_alpha=0.5, beta_dist_beta=0.7)),
    Case("Euler", steps=4, options=Options(clip_stop_at_last_layers=2)),
    Case("UniPC", options=Options(uni_pc_variant="bh2")),
    Case("UniPC", options=Options(uni_pc_order=2, uni_pc_lower_order_final=False)),
    Case("Restart", steps=20),  # from 20 steps Restart restarts (and re-noises from the image noise)
], ids=lambda c: c.id)
def test_settings(parity, case):
    parity.check(case)


@pytest.mark.parametrize("case", [
    Case("Euler", s_churn=0.5, s_tmin=0.1, s_tmax=10.0),  # churn draws the image noise, between tmin and tmax
    Case("Heun", s_churn=1.0, s_noise=0.9),
    Case("DPM2", mode="img2img", s_churn=0.8),
    Case("DPM2 a", s_noise=0.8), Case("DPM++ SDE", s_noise=0.8), Case("DPM fast", s_noise=0.8),
    Case("Euler a", s_noise=0.8),  # A1111 1.10 passes Euler a no s_noise: no effect
    Case("Euler", s_churn=0.5, options=Options(s_churn=0.2)),  # a changed setting wins over the request
    Case("Euler", options=Options(s_churn=0.4, s_tmax=5.0)),
], ids=lambda c: c.id)
def test_sigma_parameters(parity, case):
    """The request's s_churn / s_tmin / s_tmax / s_noise, for the samplers A1111 gives them to."""
    parity.check(case)


@pytest.mark.parametrize("case", [
    Case("Euler", negative_prompt=""), Case("DDIM", prompt="", negative_prompt=""),
    Case("Euler a", prompt="a cat, sitting on a mat, oil painting, 4k, highly detailed, trending on artstation"),
], ids=lambda c: c.id)
def test_prompts(parity, case):
    """Empty prompts are [BOS, EOS x 76]; punctuation is tokenized as CLIP does (no emphasis syntax here)."""
    parity.check(case)


# --- the table without pytest ---------------------------------------------------------------------------------

def main(argv=None) -> None:
    import argparse
    import shutil
    import tempfile

    from tests.conftest import CALM_UNET_SCALE, install_model
    from webui.models.tiny import write_single_file
    from webui.services import build_services
    from webui.settings.flags import parse_flags

    parser = argparse.ArgumentParser(description="max |delta| per sampler x schedule, engine vs A1111 reference")
    parser.add_argument("--full", action="store_true", help="the whole grid (default: the test's matrix)")
    parser.add_argument("--table", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="a1111-parity-"))
    try:
        model = write_single_file(root / "tiny-calm-sd1.safetensors", "sd1", unet_weight_scale=CALM_UNET_SCALE)
        install_model(root / "data", model)
        with one_thread():
            services = build_services(parse_flags(["--data-dir", str(root / "data")]))
            harness = Parity(services)
            for case in matrix_cases(args.full):
                with contextlib.suppress(Exception, pytest.skip.Exception):
                    harness.compare(case)
            services.stop()
        text = harness.table()
        print(text)
        if args.table:
            Path(args.table).write_text(text + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
