"""The remedy x cause matrix: every remedy tried on every cause's failing configuration.

Rows (:data:`CAUSES`) are the failing configurations of the cause chapters; columns
(:data:`REMEDIES`) are remedies, each applied with **one** fixed setting
(:class:`Settings`), never tuned per cell.  A remedy that makes no sense for a cause
(an LSTM for a feed-forward network, He initialization for a network that already has
it) is recorded as not applicable, with the reason.

Outcome of one run, the same definitions for every cell:

* **diverged**: its loss or gradient became NaN/Inf (``diverged_step >= 0``).  A run
  ended by early stopping is *stopped*, not diverged; its restored weights are scored.
* **final loss**: on data the run did not train on: the 1024-sample test set for the
  MLPs, and for the recurrent network the mean loss of the fresh batches of its last 10%
  of steps (each batch is new, and its loss is computed before the update on it).
* **trivial loss**: the loss of the best constant prediction, which needs no learning:
  the entropy of the test labels (classification), half their variance (regression,
  whose loss is 0.5 MSE), 1/6 for the adding problem (always predict 1).
* **blew up**: diverged, or its final loss ended above ``blowup_factor`` (10) times its
  initial loss: a loss that climbed by orders of magnitude without reaching NaN is a
  divergence too (:func:`.outcomes.run_outcomes`'s ``blew_up``).
* **stalled**: did not blow up, but its final loss is above ``stall_threshold`` (0.9)
  times the trivial loss: it learned less than 10% of what separates a constant guess
  from a perfect fit.

The outcome is also read at the earlier checkpoints of every run (a quarter, half and
three quarters of its steps, :data:`CHECKPOINTS`), as if the run had ended there: the
verdict of a cell against the step budget (:func:`at_budget`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data import ADDING_BASELINE_MSE
from ..engine.params import ConfigError
from ..engine.registry import get
from ..engine.runner import check_seeds
from ..engine.runner import run as run_experiment
from ..experiments.feedforward import APPLIES_TO, DATA_PARAMS, make_data
from .outcomes import run_outcomes, skipping_hid
from .readable import number
from .timing import time_ratios


@dataclass(frozen=True)
class Cause:
    """A failing configuration (a row) and the change that removes the cause."""

    name: str
    label: str
    chapter: str  # notebook (without .ipynb) that explains the cause
    experiment: str  # "training" or "rnn_training"
    failing: dict  # overrides on top of the common settings
    healthy: dict  # overrides on top of ``failing`` that remove the cause

    @property
    def recurrent(self) -> bool:
        return self.experiment == "rnn_training"


#: The failing configurations of notebooks/causes.ipynb (depth and width come from
#: :func:`cause_config`'s arguments where the cause needs a deep network).
CAUSES: dict[str, Cause] = {c.name: c for c in (
    Cause("weights_large", "weights too large (ReLU, σ_w = 2)", "initialization", "training",
          dict(activation="relu", init="normal", sigma_w=2.0), dict(init="he")),
    Cause("weights_small", "weights too small (ReLU, Xavier)", "initialization", "training",
          dict(activation="relu", init="xavier"), dict(init="he")),
    Cause("tanh_chaotic", "tanh, chaotic phase (σ_w = 2.5)", "activation", "training",
          dict(activation="tanh", init="normal", sigma_w=2.5), dict(sigma_w=1.0)),
    Cause("batch_norm", "batch norm without skips", "normalization", "training",
          dict(activation="relu", init="he", normalization="batch"),
          dict(normalization="none")),
    Cause("lr_large", "learning rate too large (0.2)", "learning_rate", "training",
          dict(activation="relu", init="he", depth=4, optimizer="sgd", task="regression",
               lr=0.2), dict(lr=0.01)),
    Cause("inputs", "unnormalized inputs (scales 1-100)", "normalization", "training",
          dict(activation="relu", init="he", depth=3, optimizer="sgd", lr=0.1,
               input_scale_spread=100.0), dict(input_scale_spread=1.0)),
    Cause("long_rnn", "long sequences (tanh RNN, ρ = 3, T = 40)", "recurrence",
          "rnn_training", dict(cell="rnn", spectral_radius=3.0, hidden_size=32, seq_len=40,
                               optimizer="adam", lr=0.01), dict(seq_len=5)),
    # The failure modes of the later chapters: low precision, spikes, convnets, transformers.
    Cause("fp16_overflow", "float16 overflow (ReLU, σ_w = 2, 22 layers, Adam)", "precision",
          "training", dict(activation="relu", init="normal", sigma_w=2.0, depth=22,
                           task="regression", optimizer="adam", lr=3e-3, precision="fp16"),
          dict(precision="fp32")),
    Cause("fp16_underflow", "float16 underflow (ReLU, σ_w = 0.8, 22 layers, Adam)",
          "precision", "training",
          dict(activation="relu", init="normal", sigma_w=0.8, depth=22, task="regression",
               optimizer="adam", lr=3e-3, precision="fp16"), dict(precision="fp32")),
    Cause("outliers", "outlier minibatches (inputs × 100 at 5% of steps)", "spikes",
          "training", dict(activation="relu", init="he", depth=4, outlier_prob=0.05,
                           outlier_scale=100.0), dict(outlier_prob=0.0)),
    Cause("cnn_weights_large", "convnet, weights too large (ReLU, σ_w = 2.5)", "convnets",
          "training", dict(architecture="cnn", depth=8, channels=16, image_size=6,
                           activation="relu", init="normal", sigma_w=2.5), dict(init="he")),
    Cause("post_ln", "post-LN transformer (Adam at 0.01, no warmup)", "transformers",
          "training", dict(architecture="transformer", depth=4, width=32, heads=4,
                           norm_position="post", optimizer="adam", lr=0.01),
          dict(lr=0.003)),
)}

#: The rows of the first matrix (the cause chapters) and of the second (the failure modes
#: of the later chapters: precision, spikes, convnets, transformers).
CLASSIC = ("weights_large", "weights_small", "tanh_chaotic", "batch_norm", "lr_large",
           "inputs", "long_rnn")
MODERN = tuple(c for c in CAUSES if c not in CLASSIC)


#: The experiment that measures a network's gradients at initialization, for each kind of
#: training run (a cause's ``experiment``).
AT_INIT = {"training": "signal_propagation", "rnn_training": "rnn_gradients"}


def init_config(cause: Cause, config: dict) -> dict:
    """The part of a training ``config`` that the cause's :data:`AT_INIT` experiment
    takes: the same network, without the training settings."""
    keys = {p.name for p in get(AT_INIT[cause.experiment]).params}
    return {k: v for k, v in config.items() if k in keys}


def log10_amplification(at_init: pd.DataFrame, config: dict) -> float:
    """Median over seeds of log10(gradient at the input end / gradient at the loss end):
    the first over the last hidden layer of an MLP, the first over the last time step of
    a recurrent network (lags ``seq_len - 1`` and 0)."""
    if "lag" in at_init:
        def ratio(g):
            return (g.grad_norm[g.lag == config["seq_len"] - 1].iloc[0]
                    / g.grad_norm[g.lag == 0].iloc[0])
    else:
        def ratio(g):
            g = g.sort_values("layer")
            return g.delta_norm.iloc[0] / g.delta_norm.iloc[-1]
    return float(np.log10(at_init.groupby("seed").apply(ratio, include_groups=False)).median())


@dataclass(frozen=True)
class Settings:
    """The one setting of every remedy (the same in every cell) and the stall threshold."""

    clip_norm: float = 1.0  # largest global gradient norm
    clip_value: float = 0.1  # largest |g| of any single gradient entry
    agc_lambda: float = 0.01  # AGC clip factor (Brock et al. 2021)
    warmup_fraction: float = 0.1  # linear warmup over this fraction of the steps
    l2: float = 1e-3  # L2 penalty lambda/2 * sum w^2 added to the loss
    stop_factor: float = 10.0  # early stopping: loss above this x the first loss
    adam_lr: float = 1e-3  # Adam's own default learning rate (Kingma & Ba 2015)
    stall_threshold: float = 0.9  # stalled: final loss > this x the trivial loss
    dropout: float = 0.1  # dropout probability after every hidden activation
    blowup_factor: float = 10.0  # blew up: final loss > this x the initial loss
    # the spike remedies, each at its authors' default (as in the spikes chapter)
    percentile: float = 90.0  # AutoClip: clip at this percentile of past norms
    zclip_z: float = 2.5  # ZClip: z-score threshold of the norm
    adagc_lambda: float = 1.05  # AdaGC: lambda_rel of each tensor's own norm EMA
    skip_sigma: float = 6.0  # skip a step whose loss or norm is this many sd out


@dataclass(frozen=True)
class Remedy:
    """A column: what it changes, per cause; ``not_for`` maps causes to why it does not apply.

    ``changes(cause, settings, config)`` returns the overrides for one cause, given the
    cause's failing ``config`` (some remedies scale with its depth or steps).
    """

    name: str
    label: str
    chapter: str | None  # notebook (without .ipynb) that studies the remedy
    changes: object  # callable (Cause, Settings, config) -> dict
    not_for: dict = field(default_factory=dict)
    reference: bool = False  # the "cause removed" column: a yardstick, not a remedy


_NO_RNN = "no such layer in the recurrent network"
_FEEDFORWARD = "no recurrence in a feed-forward network"
_ALREADY_HE = "already He-initialized"

_INIT = {"weights_large": dict(init="he"), "weights_small": dict(init="he"),
         "tanh_chaotic": dict(init="xavier"), "long_rnn": dict(spectral_radius=1.0),
         "fp16_overflow": dict(init="he"), "fp16_underflow": dict(init="he"),
         "cnn_weights_large": dict(init="he")}


def _only(causes: Iterable[str], why: str) -> dict:
    """``not_for`` of a remedy that applies to ``causes`` only: every other row, ``why``."""
    return {c: why for c in CAUSES if c not in causes}


_PRECISION = ("fp16_overflow", "fp16_underflow")
_NOT_PRECISION = "not a float16 network"
_SPIKE = "a spike remedy, tried on the row with spikes"
_TRANSFORMER = "not a transformer"
#: Why the existing columns are not tried on a modern row (the rest apply).
_IN_PASS = "a range failure in the forward and backward pass, not a step too large"
_MODERN_NOT = {
    "clip_norm": {c: _IN_PASS for c in _PRECISION},
    "clip_value": {c: "left out of the second matrix" for c in MODERN},
    "agc": {c: _IN_PASS for c in _PRECISION},
    "init": {"outliers": _ALREADY_HE, "post_ln": "the transformer's own initialization; "
             "its failure is the placement of the layer norms"},
    "batch_norm": {c: "tried on the convnet only" for c in MODERN if c != "cnn_weights_large"},
    "layer_norm": {c: "left out of the second matrix" for c in MODERN},
    "residual": {c: "left out of the second matrix" for c in MODERN},
    "adam": {c: "the float16 rows already use Adam" for c in _PRECISION},
    "warmup": {c: _IN_PASS for c in _PRECISION},
    "l2": {c: "left out of the second matrix" for c in MODERN},
    "early_stopping": {c: "left out of the second matrix" for c in MODERN},
    "dropout": {c: "left out of the second matrix" for c in MODERN},
    "lstm": {c: _FEEDFORWARD for c in MODERN},
}

REMEDIES: dict[str, Remedy] = {r.name: r for r in (
    Remedy("none", "none", None, lambda c, s, k: {}),
    Remedy("clip_norm", "clip by norm", "clipping",
           lambda c, s, k: dict(clip="norm", clip_threshold=s.clip_norm)),
    Remedy("clip_value", "clip by value", "clipping",
           lambda c, s, k: dict(clip="value", clip_threshold=s.clip_value)),
    Remedy("agc", "adaptive clipping (AGC)", "clipping",
           lambda c, s, k: dict(clip="agc", clip_threshold=s.agc_lambda)),
    Remedy("init", "standard init (He / Glorot / ρ = 1)", "architecture",
           lambda c, s, k: _INIT[c.name],
           not_for={"batch_norm": _ALREADY_HE + " (batch norm divides the scale out)",
                    "lr_large": _ALREADY_HE, "inputs": _ALREADY_HE}),
    Remedy("batch_norm", "batch norm", "architecture",
           lambda c, s, k: dict(normalization="batch"),
           not_for={"batch_norm": "batch norm is the cause", "long_rnn": _NO_RNN}),
    Remedy("layer_norm", "layer norm", "architecture",
           lambda c, s, k: dict(normalization="layer"), not_for={"long_rnn": _NO_RNN}),
    Remedy("residual", "residual (branch × 1/√depth)", "architecture",
           lambda c, s, k: dict(residual=True, residual_scale=1 / math.sqrt(k["depth"])),
           not_for={"long_rnn": _NO_RNN}),
    Remedy("adam", "Adam (lr 1e-3)", "optimization",
           lambda c, s, k: dict(optimizer="adam", lr=s.adam_lr),
           not_for={"long_rnn": "the recurrent baseline already uses Adam"}),
    Remedy("warmup", "linear warmup", "optimization",
           lambda c, s, k: dict(warmup_steps=max(1, math.ceil(s.warmup_fraction * k["steps"])))),
    Remedy("l2", "L2 penalty", "optimization",
           lambda c, s, k: dict(penalty="l2", penalty_strength=s.l2)),
    Remedy("early_stopping", "early stopping", "optimization",
           lambda c, s, k: dict(stop_factor=s.stop_factor)),
    Remedy("dropout", "dropout", "optimization", lambda c, s, k: dict(dropout=s.dropout),
           not_for={"long_rnn": "the recurrent cell has no dropout"}),
    Remedy("lstm", "LSTM cell", "architecture", lambda c, s, k: dict(cell="lstm"),
           not_for={c: _FEEDFORWARD for c in ("weights_large", "weights_small",
                                              "tanh_chaotic", "batch_norm", "lr_large",
                                              "inputs")}),
    Remedy("loss_scaling", "dynamic loss scaling", "precision",
           lambda c, s, k: dict(loss_scaling="dynamic"), not_for=_only(_PRECISION,
                                                                       _NOT_PRECISION)),
    Remedy("bf16", "bfloat16 instead of float16", "precision",
           lambda c, s, k: dict(precision="bf16"), not_for=_only(_PRECISION, _NOT_PRECISION)),
    Remedy("pre_ln", "pre-LN (norm before each block)", "transformers",
           lambda c, s, k: dict(norm_position="pre"), not_for=_only(["post_ln"], _TRANSFORMER)),
    Remedy("qk_norm", "QK-layernorm", "transformers", lambda c, s, k: dict(qk_norm=True),
           not_for=_only(["post_ln"], _TRANSFORMER)),
    Remedy("percentile", "percentile clipping (AutoClip)", "spikes",
           lambda c, s, k: dict(clip="percentile", clip_threshold=s.percentile),
           not_for=_only(["outliers"], _SPIKE)),
    Remedy("zclip", "ZClip", "spikes", lambda c, s, k: dict(clip="zclip",
                                                            clip_threshold=s.zclip_z),
           not_for=_only(["outliers"], _SPIKE)),
    Remedy("adagc", "AdaGC", "spikes", lambda c, s, k: dict(clip="adagc",
                                                            clip_threshold=s.adagc_lambda),
           not_for=_only(["outliers"], _SPIKE)),
    Remedy("skip_zscore", "skip outlier steps (z-score)", "spikes",
           lambda c, s, k: dict(skip="zscore", skip_threshold=s.skip_sigma),
           not_for=_only(["outliers"], _SPIKE)),
    Remedy("skip_nonfinite", "skip NaN/Inf steps", "spikes",
           lambda c, s, k: dict(skip="nonfinite"),
           not_for=_only(["outliers", "fp16_overflow"], _SPIKE)),
    Remedy("healthy", "cause removed (reference)", "causes",
           lambda c, s, k: c.healthy, reference=True),
)}
for _name, _why in _MODERN_NOT.items():  # the classic columns on the modern rows
    REMEDIES[_name].not_for.update(_why)
#: The columns of the first matrix, and the ones added for the second.
CLASSIC_REMEDIES = ("none", "clip_norm", "clip_value", "agc", "init", "batch_norm",
                    "layer_norm", "residual", "adam", "warmup", "l2", "early_stopping",
                    "dropout", "lstm", "healthy")


def cause_config(cause: str, *, steps: int, depth: int = 30, width: int = 64,
                 n_train: int = 512, batch_size: int = 64, engine: str | None = None) -> dict:
    """The failing configuration of ``cause`` with the common training settings.

    MLPs: SGD with momentum 0.9 at lr 0.01, ReLU, width ``width``, ``depth`` hidden layers,
    unless the cause says otherwise.  Test loss (and the per-layer statistics) are sampled
    every ``steps // 4`` steps and at the last step: the samples early stopping chooses
    from.  (Sampling is a large part of a short run's cost, hence so few.)  ``engine``
    (MLPs only; None: the experiment's default, ``"batched"``): ``"batched"`` trains the
    seeds of a cell as one ensemble where the configuration allows it, ``"loop"`` one
    seed after another (same results up to float rounding).
    """
    c = CAUSES[cause]
    log_every = max(1, steps // 4)
    if c.recurrent:
        return dict(c.failing, steps=steps, log_every=log_every)
    base = dict(depth=depth, width=width, optimizer="momentum", lr=0.01, n_train=n_train,
                batch_size=batch_size, steps=steps, log_every=log_every)
    if engine is not None:
        base["engine"] = engine
    # only the settings the row's architecture reads (a convnet has no width)
    arch = c.failing.get("architecture", "mlp")
    base = {k: v for k, v in base.items() if arch in APPLIES_TO.get(k, (arch,))}
    return {**base, **c.failing}


def cell_config(cause: str, remedy: str, settings: Settings | None = None, **common
                ) -> dict | str:
    """The configuration of one cell, or the reason the remedy does not apply (a str).

    ``common`` goes to :func:`cause_config` (``steps``, ``depth``, ...).
    """
    settings = settings or Settings()
    c, r = CAUSES[cause], REMEDIES[remedy]
    if cause in r.not_for:
        return r.not_for[cause]
    config = cause_config(cause, **common)
    return {**config, **r.changes(c, settings, config)}


def trivial_loss(experiment: str, config: dict) -> float:
    """Loss of the best constant prediction on the data the final loss is measured on."""
    if experiment == "rnn_training":
        return ADDING_BASELINE_MSE
    resolved = get("training").resolve(config)
    return _trivial_training_loss(tuple((name, resolved[name]) for name in _DATA_KEYS))


#: What :func:`.feedforward.make_data` reads: the data parameters, and the architecture
#: with the two model parameters that shape a convnet's images and a transformer's
#: sequences.
_DATA_KEYS = tuple(p.name for p in DATA_PARAMS) + ("architecture", "image_size", "seq_len")


@functools.lru_cache(maxsize=64)
def _trivial_training_loss(data_params: tuple) -> float:
    """:func:`trivial_loss` of one data set (its :data:`DATA_PARAMS`), computed once: the
    cells of a row share their data."""
    data = make_data(dict(data_params))
    y = data.y_test
    if data.task != "regression":  # classes (of images, of every position of a sequence)
        y = y.reshape(-1)
        p = np.bincount(y.numpy(), minlength=data.d_out) / len(y)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())
    return float(0.5 * y.double().var(unbiased=False).item())


def constant_accuracy(config: dict) -> float:
    """Test accuracy of always predicting the most frequent class (classification)."""
    data = make_data(get("training").resolve(config))
    if data.task != "classification":
        return math.nan
    return float(np.bincount(data.y_test.numpy()).max() / len(data.y_test))


#: The fractions of a run's steps at which its outcome is also read (:func:`at_budget`).
CHECKPOINTS = (0.25, 0.5, 0.75)


def hidden_divergence(runs: pd.DataFrame, until: int | None = None) -> pd.Series:
    """Per seed (index): whether skipping hid a divergence by step ``until`` (None: the
    end): at least half of its last updates were skipped (:func:`.outcomes.skipping_hid`;
    a run that skips most of its late steps has stopped training)."""
    steps = runs.drop_duplicates(["seed", "step"])
    if until is not None:
        steps = steps[steps["step"] <= until]
    out = {}
    for seed, g in steps.sort_values("step").groupby("seed"):
        skipped = g["skipped"] if "skipped" in g else np.zeros(len(g))
        out[seed] = skipping_hid(np.asarray(skipped)[:-1])  # the last row makes no update
    return pd.Series(out, dtype=bool)


def _hidden(runs: pd.DataFrame, seeds: pd.Series, until: int | None = None) -> np.ndarray:
    """:func:`hidden_divergence` for ``seeds``, in their order."""
    hidden = hidden_divergence(runs, until)
    return np.array([bool(hidden.get(s, False)) for s in seeds], dtype=bool)


def outcome(runs: pd.DataFrame, experiment: str, trivial: float,
            stall_threshold: float = Settings.stall_threshold,
            blowup_factor: float = Settings.blowup_factor) -> pd.DataFrame:
    """Per seed of one cell: diverged, blew up, stopped, stalled, and the losses they
    rest on.

    ``blew_up`` counts a divergence hidden by skipping (``hidden``,
    :func:`hidden_divergence`) too.

    Columns: seed, diverged, blew_up, hidden, stopped, stalled, initial_loss, final_loss,
    trivial_loss, loss_ratio (final / initial), baseline_ratio (final / trivial; inf when
    it blew up), test_accuracy (NaN unless classification), diverged_step, stopped_step,
    and per checkpoint fraction q of :data:`CHECKPOINTS` (``q25``, ``q50``, ``q75``): the
    step, ``blew_up_qNN`` and ``baseline_ratio_qNN`` as if the run had ended there.
    """
    recurrent = experiment == "rnn_training"
    tail = 0.1 if recurrent else None
    per_run = run_outcomes(runs, tail=tail, blow_up=blowup_factor).sort_values("seed")
    if recurrent:  # the loss of fresh batches; no test set, no accuracy
        initial, final = per_run["first_loss"], per_run["final_loss"]
        accuracy = pd.Series(math.nan, index=per_run.index)
    else:
        initial, final = per_run["first_test_loss"], per_run["final_test_loss"]
        accuracy = per_run["final_accuracy"]
    diverged = per_run["diverged"]
    hidden = _hidden(runs, per_run["seed"]) & ~diverged.to_numpy(dtype=bool)
    blew_up = per_run["blew_up"] | hidden  # a divergence hidden by skipping is one
    ratio = (final / trivial).where(~blew_up, math.inf)
    out = pd.DataFrame({
        "seed": per_run["seed"], "diverged": diverged, "blew_up": blew_up,
        "hidden": hidden, "stopped": per_run["stopped"],
        "stalled": ~blew_up & ~(ratio <= stall_threshold),  # NaN counts as stalled
        "initial_loss": initial, "final_loss": final, "trivial_loss": trivial,
        "loss_ratio": (final / initial).where(~diverged, math.inf), "baseline_ratio": ratio,
        "test_accuracy": accuracy, "diverged_step": per_run["diverged_step"],
        "stopped_step": per_run["stopped_step"]}).reset_index(drop=True)
    steps = int(per_run["last_step"].max())
    whole = runs if "layer" not in runs else runs[runs["layer"] == 0]
    for q in CHECKPOINTS:
        at = int(round(q * steps))
        early = whole[whole["step"] <= at].copy()
        for column in ("diverged_step", "stopped_step"):  # events after ``at``: not yet
            if column in early:
                early.loc[early[column] > at, column] = -1
        per = run_outcomes(early, tail=tail, blow_up=blowup_factor).set_index("seed")
        per = per.loc[out["seed"]]
        final = (per["final_loss"] if recurrent else per["final_test_loss"]).to_numpy()
        blown = per["blew_up"].to_numpy(dtype=bool) | _hidden(early, out["seed"], at)
        tag = f"q{round(100 * q)}"
        out[tag] = at
        out[f"blew_up_{tag}"] = blown
        out[f"baseline_ratio_{tag}"] = np.where(blown, math.inf, final / trivial)
    return out


def at_budget(df: pd.DataFrame, q: float, stall_threshold: float = Settings.stall_threshold
              ) -> pd.DataFrame:
    """The rows of :func:`run_matrix` as if every run had ended at checkpoint ``q`` (a
    fraction of :data:`CHECKPOINTS`, or 1 for the end): blew_up, baseline_ratio and
    stalled replaced by their values there; a run early stopping ended later counts as
    not stopped.  Not-applicable rows pass through."""
    if q == 1:
        return df
    tag = f"q{round(100 * q)}"
    out = df.copy()
    ok = out["applicable"].astype(bool)
    blown = out.loc[ok, f"blew_up_{tag}"].astype(bool)
    ratio = out.loc[ok, f"baseline_ratio_{tag}"].astype(float)
    out.loc[ok, "blew_up"] = blown
    out.loc[ok, "diverged"] = out.loc[ok, "diverged"].astype(bool) & (
        out.loc[ok, "diverged_step"] <= out.loc[ok, tag])
    out.loc[ok, "stopped"] = out.loc[ok, "stopped"].astype(bool) & (
        out.loc[ok, "stopped_step"] <= out.loc[ok, tag])
    out.loc[ok, "baseline_ratio"] = ratio
    out.loc[ok, "stalled"] = ~blown & ~(ratio <= stall_threshold)
    out.loc[ok, "loss_ratio"] = math.nan
    return out


def run_matrix(seeds: int, steps: int, *, depth: int = 30, width: int = 64,
               n_train: int = 512, batch_size: int = 64, settings: Settings | None = None,
               causes: Iterable[str] | None = None, remedies: Iterable[str] | None = None,
               engine: str | None = None) -> pd.DataFrame:
    """Train every applicable (cause, remedy) cell for seeds ``0 .. seeds-1``.

    One row per cause x remedy x seed, in the order of :data:`CAUSES` and
    :data:`REMEDIES`: ``applicable`` and, when not, ``note`` (why); otherwise the
    columns of :func:`outcome`.  Runs go through :func:`.experiments.run`, so they are
    cached; identical cells (He init as a remedy and as the cause removed) run once.
    ``engine`` goes to :func:`cause_config`: ``"batched"`` (the default) trains the seeds
    of each feed-forward cell as one ensemble where the configuration allows it.
    """
    settings = settings or Settings()
    check_seeds(seeds)
    causes = list(CAUSES) if causes is None else list(causes)
    remedies = list(REMEDIES) if remedies is None else list(remedies)
    for name, known in [(causes, CAUSES), (remedies, REMEDIES)]:
        unknown = [n for n in name if n not in known]
        if unknown:
            raise ConfigError(f"unknown names {unknown}; known: {', '.join(known)}")
    common = dict(steps=steps, depth=depth, width=width, n_train=n_train,
                  batch_size=batch_size, engine=engine)
    tables = []
    for cause in causes:
        experiment = CAUSES[cause].experiment
        for remedy in remedies:
            config = cell_config(cause, remedy, settings, **common)
            label = {"cause": cause, "remedy": remedy}
            if isinstance(config, str):
                tables.append(pd.DataFrame({**label, "seed": range(seeds),
                                            "applicable": False, "note": config}))
                continue
            runs = run_experiment(experiment, config, seeds=seeds)
            cell = outcome(runs, experiment, trivial_loss(experiment, config),
                           settings.stall_threshold, settings.blowup_factor)
            tables.append(cell.assign(**label, applicable=True, note=""))
    out = pd.concat(tables, ignore_index=True)
    front = ["cause", "remedy", "seed", "applicable", "note"]
    return out[front + [c for c in out.columns if c not in front]]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (cause, remedy) cell: counts and fractions of diverged/blown-up/stalled/stopped
    runs, ``learned`` (neither blown up nor stalled), the median and range over seeds of
    final/trivial loss (blown-up runs count as +inf) and of final/initial loss, and
    ``fixed``: applicable, every run learned (none blew up, none stalled)."""
    rows = []
    for (cause, remedy), cell in df.groupby(["cause", "remedy"], sort=False):
        row = {"cause": cause, "remedy": remedy, "applicable": bool(cell["applicable"].all()),
               "note": cell["note"].iloc[0], "seeds": len(cell)}
        if row["applicable"]:
            ratio = cell["baseline_ratio"].to_numpy(dtype=float)
            n = len(cell)
            row.update({
                "diverged": int(cell["diverged"].sum()), "stalled": int(cell["stalled"].sum()),
                "blew_up": int(cell["blew_up"].sum()),
                "learned": int((~cell["blew_up"].astype(bool)
                                & ~cell["stalled"].astype(bool)).sum()),
                "stopped": int(cell["stopped"].sum()),
                "hidden": int(cell["hidden"].sum()) if "hidden" in cell else 0,
                "frac_diverged": cell["diverged"].mean(), "frac_stalled": cell["stalled"].mean(),
                "median_ratio": float(np.median(ratio)), "min_ratio": float(ratio.min()),
                "max_ratio": float(ratio.max()),
                "median_loss_ratio": float(np.median(cell["loss_ratio"].to_numpy(float))),
                "median_accuracy": float(cell["test_accuracy"].median()),
            })
            row["fixed"] = row["learned"] == n and n > 0
        else:
            row["fixed"] = False
        rows.append(row)
    return pd.DataFrame(rows)


def outcome_text(row: pd.Series) -> str:
    """One summarized cell in words, e.g. "fixed (median 0.72)", "3/3 blew up (2 to
    NaN/Inf)",
    "2/3 stalled, median 0.95", "not applicable"."""
    if not row["applicable"]:
        return "not applicable"
    n = int(row["seeds"])
    median = row["median_ratio"]
    where = "" if math.isinf(median) else f"median {median:.2g}"
    if row["fixed"]:
        return f"fixed ({where})"
    parts = []
    if row["blew_up"]:
        how = [f"{int(row['diverged'])} to NaN/Inf"] if row["diverged"] else []
        if row.get("hidden", 0):
            how.append(f"{int(row['hidden'])} hidden by skipping")
        parts.append(f"{int(row['blew_up'])}/{n} blew up"
                     + (f" ({', '.join(how)})" if how else ""))
    if row["stalled"]:
        parts.append(f"{int(row['stalled'])}/{n} stalled")
    return ", ".join(parts + ([where] if where else []))


def fixes_per_remedy(summary: pd.DataFrame) -> pd.DataFrame:
    """Per remedy (reference column excluded): causes it applies to, causes it fixes, and
    causes whose baseline already passes (so a "fix" there proves nothing).

    Columns: remedy, applicable, fixed, fixed_failing (fixed among the causes whose
    no-remedy baseline failed), failing (how many baselines failed), fixed_causes (list).
    """
    base = summary[summary["remedy"] == "none"].set_index("cause")
    failing = {c for c in base.index if not base.loc[c, "fixed"]}
    rows = []
    for remedy, group in summary.groupby("remedy", sort=False):
        if REMEDIES[remedy].reference or remedy == "none":
            continue
        applicable = group[group["applicable"]]
        fixed = applicable[applicable["fixed"]]
        rows.append({"remedy": remedy, "applicable": len(applicable), "fixed": len(fixed),
                     "fixed_failing": int(fixed["cause"].isin(failing).sum()),
                     "failing": int(applicable["cause"].isin(failing).sum()),
                     "fixed_causes": list(fixed["cause"])})
    return pd.DataFrame(rows)


def step_cost(cause: str, remedies: Iterable[str], steps: int, repeat: int = 3,
              settings: Settings | None = None, base: dict | None = None,
              **common) -> pd.DataFrame:
    """CPU time per step of each applicable remedy on ``cause``'s network, vs no remedy.

    ``base`` overrides the cause's configuration first (e.g. ``CAUSES[c].healthy``, so
    that the timed runs do not diverge and stop early); the remedy's changes go on top,
    measurements sampled only at the first and last step.  Timed by the book's one
    timer, :func:`.timing.time_ratios` (time per step as the slope between runs of a
    quarter and all of ``steps``, ``repeat`` rounds).  Columns: remedy,
    seconds_per_step (median), ratio, ratio_min, ratio_max (over rounds).
    """
    settings = settings or Settings()
    name = CAUSES[cause].experiment
    configs = {}
    for remedy in ["none", *[r for r in remedies if r != "none"]]:
        config = cell_config(cause, remedy, settings, steps=steps, **common)
        if isinstance(config, str):
            continue
        changes = REMEDIES[remedy].changes(CAUSES[cause], settings, config)
        configs[remedy] = {**config, **(base or {}), **changes, "log_every": steps}
    none = configs.pop("none")
    rounds = time_ratios(name, none, configs, steps=(max(1, steps // 4), steps),
                         rounds=repeat)
    base = rounds["step_seconds"] / rounds["ratio"]  # each round's time per step of "none"
    rows = [{"remedy": "none", "seconds_per_step": float(base.median()), "ratio": 1.0,
             "ratio_min": 1.0, "ratio_max": 1.0}]
    for remedy, g in rounds.groupby("variant", sort=False):
        rows.append({"remedy": remedy, "seconds_per_step": float(g["step_seconds"].median()),
                     "ratio": float(g["ratio"].median()), "ratio_min": float(g["ratio"].min()),
                     "ratio_max": float(g["ratio"].max())})
    return pd.DataFrame(rows)


def describe(settings: Settings | None = None, **common) -> pd.DataFrame:
    """What each cell changes, as text: one row per cause, one column per remedy."""
    settings = settings or Settings()
    common = {"steps": 100, **common}
    rows = {}
    for cause in CAUSES:
        base = cause_config(cause, **common)
        rows[CAUSES[cause].label] = {}
        for name, remedy in REMEDIES.items():
            config = cell_config(cause, name, settings, **common)
            if isinstance(config, str):
                text = f"n/a: {config}"
            else:
                diff = {k: v for k, v in config.items() if base.get(k) != v}
                text = ", ".join(f"{k}={_fmt(v)}" for k, v in diff.items()) or "-"
            rows[CAUSES[cause].label][remedy.label] = text
    return pd.DataFrame(rows).T


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- the figure

def cell_text(row: pd.Series) -> str:
    """What a heatmap cell says: median final/trivial loss (✓ when the cell is fixed),
    then how many runs blew up (✕) and stalled."""
    if not row["applicable"]:
        return "n/a"
    n = int(row["seeds"])
    median = row["median_ratio"]
    lines = ["✕" if math.isinf(median) else number(median, 2) + (" ✓" if row["fixed"] else "")]
    counts = []
    if row["blew_up"]:
        counts.append(f"{int(row['blew_up'])}/{n} ✕")
    if row["stalled"]:
        counts.append(f"{int(row['stalled'])}/{n} st")
    return "\n".join(lines + counts)


def plot_matrix(ax, summary: pd.DataFrame, low: float = 1.0, high: float = 2.0,
                cmap: str = "RdBu_r", fontsize: float = 10.0, labels: dict | None = None):
    """Heatmap of the median final/trivial loss (log10, centred at 1) with counts as text:
    one row per remedy, one column per cause (labels: ``labels`` or the causes' own).

    The colour saturates at 10^-``low`` (blue) and 10^``high`` (red); blown-up medians
    take the top colour; fixed cells get a black frame and a ✓; not-applicable cells are
    hatched grey; the reference row ("cause removed") is set apart by a gap.  Returns
    the colour mapping (for a colour bar).
    """
    import matplotlib as mpl

    causes = list(dict.fromkeys(summary["cause"]))
    remedies = list(dict.fromkeys(summary["remedy"]))
    cells = summary.set_index(["cause", "remedy"])
    y_of = {r: i + (0.3 if REMEDIES[r].reference else 0.0) for i, r in enumerate(remedies)}
    norm = mpl.colors.TwoSlopeNorm(vmin=-low, vcenter=0.0, vmax=high)
    colormap = mpl.colormaps[cmap]
    for x, cause in enumerate(causes):
        for remedy in remedies:
            row = cells.loc[(cause, remedy)]
            y = y_of[remedy]
            if not row["applicable"]:
                ax.add_patch(mpl.patches.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.9",
                                                   edgecolor="0.6", hatch="///", linewidth=0))
                ax.text(x, y, "n/a", ha="center", va="center", fontsize=fontsize,
                        color="0.35")
                continue
            ratio = row["median_ratio"]
            value = np.clip(np.log10(ratio), -low, high) if ratio > 0 else -low
            color = colormap(norm(value))
            ax.add_patch(mpl.patches.Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor=color,
                                               edgecolor="white", linewidth=1))
            if row["fixed"]:
                ax.add_patch(mpl.patches.Rectangle((x - 0.46, y - 0.44), 0.92, 0.88,
                                                   facecolor="none", edgecolor="black",
                                                   linewidth=1.6, zorder=2))
            dark = sum(color[:3]) / 3 < 0.5
            ax.text(x, y, cell_text(row), ha="center", va="center", fontsize=fontsize,
                    color="white" if dark else "black", linespacing=1.0, zorder=3)
    ax.set_ylim(max(y_of.values()) + 0.5, -0.5)
    ax.set_xlim(-0.5, len(causes) - 0.5)
    labels = labels or {c: CAUSES[c].label for c in causes}
    ax.set_xticks(range(len(causes)), [labels[c] for c in causes])
    ax.xaxis.tick_top()
    ax.set_yticks([y_of[r] for r in remedies], [REMEDIES[r].label for r in remedies])
    ax.tick_params(length=0)
    ax.grid(False)
    for side in ax.spines.values():
        side.set_visible(False)
    return mpl.cm.ScalarMappable(norm=norm, cmap=colormap)


def plot_seeds(ax, df: pd.DataFrame, colors: list[str], markers: list[str],
               top: float = 100.0, bottom: float = 0.1, labels: dict | None = None) -> None:
    """Every run's final/trivial loss: one row per remedy, causes side by side in it.

    Blown-up runs are drawn as crosses on a band right of ``top``; values are clipped to
    [``bottom``, ``top``] (a clipped point is drawn hollow).  Log scale; a line at 1 (the
    best constant prediction) and one at the stall threshold are added by the caller.
    """
    causes = list(dict.fromkeys(df["cause"]))
    remedies = list(dict.fromkeys(df["remedy"]))
    labels = labels or {c: CAUSES[c].label for c in causes}
    height = 0.8 / len(causes)
    blown_x = top * 2.5
    for i, cause in enumerate(causes):
        sub = df[(df["cause"] == cause) & df["applicable"].astype(bool)]
        y = np.array([remedies.index(r) for r in sub["remedy"]], dtype=float)
        y += (i - (len(causes) - 1) / 2) * height
        x = sub["baseline_ratio"].to_numpy(dtype=float)
        blown = sub["blew_up"].astype(bool).to_numpy()
        clipped = ~blown & ((x > top) | (x < bottom))
        ok = ~blown & ~clipped
        ax.scatter(x[ok], y[ok], color=colors[i], marker=markers[i], s=22, zorder=3,
                   label=labels[cause])
        ax.scatter(np.clip(x[clipped], bottom, top), y[clipped], facecolor="none",
                   edgecolor=colors[i], marker=markers[i], s=22, zorder=3)
        ax.scatter(np.full(blown.sum(), blown_x), y[blown], color=colors[i], marker="x",
                   s=26, zorder=3)
    ax.set_xscale("log")
    ax.set_xlim(bottom / 1.5, blown_x * 2)
    ax.axvspan(top * 1.4, blown_x * 2, color="0.93", zorder=0)
    ax.text(blown_x, -0.9, "blew up", ha="center", va="bottom", color="0.3")
    ax.set_ylim(len(remedies) - 0.4, -1.0)
    ax.set_yticks(range(len(remedies)), [REMEDIES[r].label for r in remedies])
    for k in range(len(remedies) - 1):
        ax.axhline(k + 0.5, color="0.85", linewidth=0.6, zorder=0)
    ax.grid(axis="y", visible=False)
