"""Golden outputs for easel's schedulers (tests/schedulers.rs).

Runs diffusers' own schedulers -- DDIMScheduler, EulerAncestralDiscreteScheduler and
DPMSolverMultistepScheduler (dpmsolver++, order 2, midpoint) -- on fixed random inputs
and records what the engine must reproduce from the same scheduler_config.json:
timesteps, the scale_model_input factor, init_noise_sigma, and every step's
prev_sample and pred_original_sample.

Inputs are shared by all cases and stored once: a start sample `x` [N], one model
output per step `model_out` [S, N] and one noise draw per step `noise` [S, N] (fed to
Euler ancestral by patching its `randn_tensor`, to DDIM with eta > 0 as
`variance_noise`). Configs: Stable Diffusion 1.x's and the default model's (read from
weights/easel-emoji/scheduler/ when exported, else tools/train_unet.py's SCHEDULER).

Karras cases (`"karras": true`, easel's `--karras`): DPM++ 2M is diffusers'
DPMSolverMultistepScheduler with `use_karras_sigmas=True`. diffusers' Euler ancestral
class has no Karras option, so its sigmas and timesteps are those of
EulerDiscreteScheduler with `use_karras_sigmas=True` under "linspace" spacing (the
whole training sigma range, as k-diffusion's `get_sigmas_karras` and A1111 use),
set into EulerAncestralDiscreteScheduler, whose own `step` then runs.

    tools/.venv/bin/python tools/make_scheduler_golden.py   # writes tests/golden/schedulers.json
"""

import ast
import json
import os

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_module

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
OUT = os.path.join(ROOT, "tests", "golden", "schedulers.json")

N = 16  # values per sample: the math is elementwise, a few values cover it
MAX_STEPS = 25

# Stable Diffusion 1.x (v1-5's scheduler_config.json; timestep_spacing is PNDMScheduler's
# default there, written out so every class reads the same spacing).
SD1 = {
    "_class_name": "PNDMScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
    "timestep_spacing": "leading",
}


def default_model_config():
    """The default model's scheduler config: exported file if present, else the training dict."""
    exported = os.path.join(ROOT, "weights", "easel-emoji", "scheduler", "scheduler_config.json")
    if os.path.exists(exported):
        with open(exported) as f:
            return json.load(f), "weights/easel-emoji/scheduler/scheduler_config.json"
    # Read the SCHEDULER literal without importing the training script.
    tree = ast.parse(open(os.path.join(HERE, "train_unet.py")).read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "SCHEDULER":
            call = node.value
            cfg = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            return {"_class_name": "DDIMScheduler", **cfg}, "tools/train_unet.py SCHEDULER"
    raise SystemExit("no SCHEDULER in tools/train_unet.py")


def f32_list(t):
    """f32 values written in their shortest decimal form (str of np.float32 round-trips)."""
    return [float(str(v)) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


class FixedNoise:
    """Stands in for diffusers' randn_tensor: returns the recorded noise, step by step."""

    def __init__(self, noise):
        self.noise, self.i = noise, 0

    def __call__(self, shape, **kwargs):
        out = self.noise[self.i].reshape(shape)
        self.i += 1
        return out


def make_scheduler(sampler, config, prediction_type, karras=False):
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    cfg["prediction_type"] = prediction_type
    if sampler == "ddim":
        return DDIMScheduler.from_config(cfg)
    if sampler == "euler_a":
        if karras:
            return KarrasEulerAncestral({**cfg, "timestep_spacing": "linspace"})
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    return DPMSolverMultistepScheduler.from_config(
        cfg,
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        use_karras_sigmas=karras,
    )


class KarrasEulerAncestral:
    """EulerAncestralDiscreteScheduler stepping over EulerDiscreteScheduler's Karras sigmas."""

    def __init__(self, cfg):
        self.karras = EulerDiscreteScheduler.from_config(cfg, use_karras_sigmas=True)
        self.inner = EulerAncestralDiscreteScheduler.from_config(cfg)

    def set_timesteps(self, steps):
        self.karras.set_timesteps(steps)
        self.inner.set_timesteps(steps)
        self.inner.sigmas = self.karras.sigmas.clone()
        self.inner.timesteps = self.karras.timesteps.clone()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_case(sampler, config, prediction_type, steps, inputs, eta=0.0, karras=False):
    sched = make_scheduler(sampler, config, prediction_type, karras)
    sched.set_timesteps(steps)
    x = torch.tensor(inputs["x"]).reshape(1, 1, 1, N) * float(sched.init_noise_sigma)
    model_out = torch.tensor(inputs["model_out"]).reshape(MAX_STEPS, 1, 1, 1, N)
    noise = torch.tensor(inputs["noise"]).reshape(MAX_STEPS, 1, 1, 1, N)
    euler_module.randn_tensor = FixedNoise(noise)

    case = {
        "karras": karras,
        "sampler": sampler,
        "prediction_type": prediction_type,
        "steps": steps,
        "eta": eta,
        "timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "in_scale": [],
        "prev_sample": [],
        "pred_original_sample": [],
    }
    # The start sample, as the pipeline makes it: x_T = randn * init_noise_sigma.
    case["x"] = f32_list(x)
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(torch.ones(1), t)
        case["in_scale"].append(float(scaled[0]))
        kwargs = {"eta": eta, "variance_noise": noise[i]} if sampler == "ddim" and eta > 0 else {}
        out = sched.step(model_out[i], t, x, **kwargs)
        x = out.prev_sample
        case["prev_sample"].append(f32_list(x))
        if sampler == "dpm":
            # DPMSolverMultistep keeps x0 (its converted model output) in model_outputs.
            case["pred_original_sample"].append(f32_list(sched.model_outputs[-1]))
        else:
            case["pred_original_sample"].append(f32_list(out.pred_original_sample))
    return case


def timestep_table(config):
    """Timesteps for each spacing at 50 and 7 steps (7: a step ratio that is not whole)."""
    rows = []
    for spacing in ("leading", "trailing", "linspace"):
        for sampler in ("ddim", "euler_a", "dpm"):
            for steps in (50, 7):
                sched = make_scheduler(sampler, {**config, "timestep_spacing": spacing}, "epsilon")
                sched.set_timesteps(steps)
                rows.append(
                    {
                        "karras": False,
                        "sampler": sampler,
                        "spacing": spacing,
                        "steps": steps,
                        "timesteps": [float(t) for t in sched.timesteps],
                        "init_noise_sigma": float(sched.init_noise_sigma),
                    }
                )
    # Karras: spacing does not apply; 50, 7 and 100 steps.
    for sampler in ("euler_a", "dpm"):
        for steps in (50, 7, 100):
            sched = make_scheduler(sampler, config, "epsilon", karras=True)
            sched.set_timesteps(steps)
            rows.append(
                {
                    "karras": True,
                    "sampler": sampler,
                    "spacing": config["timestep_spacing"],
                    "steps": steps,
                    "timesteps": [float(t) for t in sched.timesteps],
                    "init_noise_sigma": float(sched.init_noise_sigma),
                }
            )
    return rows


def main():
    rng = np.random.default_rng(20261125)
    inputs = {
        "x": f32_list(rng.standard_normal(N)),
        "model_out": f32_list(rng.standard_normal((MAX_STEPS, N))),
        "noise": f32_list(rng.standard_normal((MAX_STEPS, N))),
    }
    emoji, emoji_source = default_model_config()
    configs = {"sd1": SD1, "emoji": emoji}

    cases = []
    for name, config in configs.items():
        for sampler in ("ddim", "euler_a", "dpm"):
            for prediction_type in ("epsilon", "v_prediction"):
                for steps in (10, 25):
                    case = run_case(sampler, config, prediction_type, steps, inputs)
                    cases.append({"config": name, **case})
        # Less common paths: DDIM with eta > 0, and sample prediction (Euler a has none).
        cases.append({"config": name, **run_case("ddim", config, "epsilon", 10, inputs, eta=0.5)})
        for sampler in ("ddim", "dpm"):
            cases.append({"config": name, **run_case(sampler, config, "sample", 10, inputs)})
        # Karras sigmas for the two samplers that have a sigma schedule. Not DPM++ 2M on
        # the default model's cosine schedule: its whole timesteps repeat (998, 998, ...
        # from sigma_max = 20291), where diffusers' step lookup runs past its table.
        for sampler in ("euler_a", "dpm") if name == "sd1" else ("euler_a",):
            for prediction_type in ("epsilon", "v_prediction"):
                for steps in (10, 25) if name == "sd1" else (10,):
                    case = run_case(sampler, config, prediction_type, steps, inputs, karras=True)
                    cases.append({"config": name, **case})

    golden = {
        "about": "diffusers schedulers on fixed inputs; tools/make_scheduler_golden.py",
        "diffusers_version": __import__("diffusers").__version__,
        "emoji_config_source": emoji_source,
        "configs": configs,
        "n": N,
        "inputs": inputs,
        "cases": cases,
        "timesteps": timestep_table({**SD1}),
    }
    with open(OUT, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
