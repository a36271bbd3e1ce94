"""The claims ledger: every claim of the seed articles with the rule that decides it.

Each :class:`.study.ledger.Claim` below names the section whose measurements decide it,
states its rule in words, and applies it to the numbers the chapters glued (read back
from the executed pages by :class:`.study.ledger.Numbers`).  The page runs last in the
build, so a rebuild whose numbers change can change a verdict; nothing here is a number.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from ..study.ledger import VERDICTS, Claim, Numbers, decide, parse_number
from . import Chapter

CHAPTER = Chapter("claims", (), {"quick": {}, "default": {}, "full": {}})

SECTIONS = ("Causes", "Detection", "Remedies", "Architectures and numerics")
#: What each verdict means, as the page states it.
MEANINGS = {
    "supported": "the measurements agree with the claim as stated",
    "nuanced": "true under conditions the claim leaves out, or false in part",
    "refuted": "the measurements contradict it",
    "untestable here": "our synthetic tasks and small networks cannot decide it",
}
SEEDS = {"K": "Kickstarters", "G": "GM-RKB", "R": "Rodrigues", "L": "Logic Nest"}

CLAIMS: list[Claim] = []


def _claim(section: str, claim: str, made_by: str, page: str, anchor: str, rule: str):
    """Register the decorated function as the rule of a claim."""
    def register(fn):
        CLAIMS.append(Claim(section, claim, made_by, page, anchor, rule, fn))
        return fn
    return register


def k_n(text) -> tuple[int, int]:
    """``"3/4"`` or ``"3 of 4"`` as (3, 4)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:/|of)\s*(\d+)\s*", str(text))
    if not match:
        raise ValueError(f"not a count k/n: {text!r}")
    return int(match.group(1)), int(match.group(2))


def near(value: float, target: float, tolerance: float) -> bool:
    """``value`` within a relative ``tolerance`` of ``target``."""
    return math.isfinite(value) and abs(value / target - 1) <= tolerance


def link(page: str, text: str, label: str = "") -> str:
    """A link to a chapter, or to the section with the MyST ``label`` on it."""
    return f"{{ref}}`{text} <{label}>`" if label else f"[{text}]({page}.ipynb)"


# --------------------------------------------------------------------------------- causes

@_claim("Causes", "Backpropagation multiplies one factor per layer, so deep networks are "
        "prone to gradients that grow exponentially.", "all four", "depth", "",
        "supported if the measured per-layer factor exceeds 1.05 at every initialization "
        "measured; nuanced if it is within 5 % of 1 at the critical one (depth then does "
        "nothing) and above 1.05 off it; refuted if it never exceeds 1.05.")
def _depth(n: Numbers):
    crit, top = n.number("depth", "depth_relu_critical_growth"), n.number(
        "depth", "depth_relu_top_growth")
    verdict = ("refuted" if top <= 1.05 else "supported" if crit > 1.05
               else "nuanced" if near(crit, 1, 0.05) else "supported")
    return verdict, (
        f"Depth multiplies a per-layer factor, which can be below, at or above 1: at the "
        f"critical initialization (ReLU, He) it measured {n['depth', 'depth_relu_critical_growth']}"
        f", so depth does nothing; at $\\sigma_w$ = {n['depth', 'depth_relu_top_sigma']} it was "
        f"{n['depth', 'depth_relu_top_growth']} per layer (mean-field theory: "
        f"{n['depth', 'depth_relu_top_pred']}) ({link('depth', 'Depth')}).")


@_claim("Causes", "Recurrent networks are especially exposed, and long-range dependencies "
        "make it worse.", "Kickstarters, Logic Nest", "recurrence", "",
        "nuanced if the tanh RNN's gradient vanishes across time for spectral radii above 1 "
        "(the measured threshold above 1.05); supported if it explodes from radius 1 on.")
def _recurrent(n: Numbers):
    rho = parse_number(str(n["recurrence", "rec_critical_rho"]).replace("about", ""))
    verdict = "nuanced" if rho > 1.05 else "supported"
    return verdict, (
        f"With inputs of unit scale a tanh RNN's gradient *vanishes* across time for every "
        f"spectral radius below {n['recurrence', 'rec_critical_rho']}; the threshold moves "
        f"with the input scale (critical $\\sigma_w$ "
        f"{n['recurrence', 'rec_in_zero_crit']} without input, "
        f"{n['recurrence', 'rec_in_hi_mf']} at input scale {n['recurrence', 'rec_in_hi']}), "
        f"and a largest singular value above 1 is necessary, not sufficient, for explosion "
        f"({link('recurrence', 'Recurrence')}).")


@_claim("Causes", "Weights initialized too large make gradients explode.",
        "Rodrigues, Logic Nest", "initialization", "",
        "supported if the measured order/chaos boundary of ReLU is within 5 % of √2 and "
        "more runs diverged from weights above it than from He initialization; nuanced if "
        "only one of the two holds; refuted if neither.")
def _weights_large(n: Numbers):
    boundary = n.number("initialization", "init_boundary_relu_measured")
    large, he = (k_n(n["initialization", f"init_train_{k}_div"]) for k in ("normal", "he"))
    held = [near(boundary, math.sqrt(2), 0.05), large[0] / large[1] > he[0] / he[1]]
    verdict = {2: "supported", 1: "nuanced", 0: "refuted"}[sum(held)]
    return verdict, (
        f"Above the critical scale ($\\chi_1 > 1$; measured for ReLU at $\\sigma_w$ = "
        f"{n['initialization', 'init_boundary_relu_measured']}, theory √2) gradients grow "
        f"exponentially with depth; at $\\sigma_w$ = "
        f"{n['initialization', 'init_train_sigma_w']} "
        f"{n['initialization', 'init_train_normal_div']} runs diverged, from He "
        f"{n['initialization', 'init_train_he_div']}. For a bias-free ReLU network this is "
        f"a change of scale of every layer's gradient at once "
        f"({link('initialization', 'Initialization')}).")


@_claim("Causes", "A learning rate that is too high causes the explosion.",
        "Rodrigues, Logic Nest", "learning_rate", "",
        "nuanced if runs diverge above a learning rate that moves with the curvature but "
        "less than in proportion (log-log slope of the divergence rate on 2/λ_max below "
        "0.9); supported if in proportion (slope 0.9 to 1.1).")
def _lr(n: Numbers):
    slope = n.number("learning_rate", "lr_slope_net")
    verdict = "supported" if 0.9 <= slope <= 1.1 else "nuanced"
    return verdict, (
        f"A too-large step diverges through the curvature, not through per-layer growth. The "
        f"boundary moves with $2/\\lambda_{{\\max}}$ across networks whose sharpness differs "
        f"{n['learning_rate', 'lr_lam_span']}-fold, with log-log slope "
        f"{n['learning_rate', 'lr_slope_net']}, at "
        f"{n['learning_rate', 'lr_rdiv_net_min']} to {n['learning_rate', 'lr_rdiv_net_max']} "
        f"times it depending on the network; runs diverged below it in "
        f"{n['learning_rate', 'lr_n_below']} ({link('learning_rate', 'Learning rate')}).")


@_claim("Causes", "ReLU can cause explosion because its outputs are unbounded.",
        "Rodrigues, Logic Nest", "activation", "",
        "nuanced if ReLU at He initialization keeps the gradient within 10 % of a factor 1 "
        "per layer (it explodes only with weights too large); supported otherwise.")
def _relu(n: Numbers):
    factor = n.number("activation", "act_relu_factor")
    verdict = "nuanced" if near(factor, 1, 0.10) else "supported"
    return verdict, (
        f"With He initialization a ReLU network is critical (its gradient changes by "
        f"{n['activation', 'act_relu_factor']} per layer); ReLU explodes only when the "
        f"weights are too large, and then unboundedness matters: the forward signal grows "
        f"and the loss gradient with it ({link('activation', 'Activation functions')}).")


@_claim("Causes", "Saturating activations (sigmoid, tanh), combined with depth, raise the "
        "risk of explosion.", "Logic Nest", "activation", "",
        "nuanced if sigmoid at the shared scale shrinks the gradient (factor below 1) while "
        "tanh with its signal held at unit variance grows it (factor above 1); supported if "
        "both grow; refuted if neither does.")
def _saturating(n: Numbers):
    sigmoid, tanh = (n.number("activation", k) for k in ("act_sigmoid_factor", "act_keep_tanh"))
    verdict = ("supported" if sigmoid > 1 and tanh > 1 else
               "refuted" if tanh <= 1 else "nuanced")
    return verdict, (
        f"Saturation *lowers* the mean squared slope: sigmoid shrinks the gradient by "
        f"{n['activation', 'act_sigmoid_factor']} per layer at the shared scale. But keeping "
        f"the forward signal alive through a zero-centred saturating unit forces "
        f"$\\chi_1 > 1$: tanh with its signal held at unit variance grows it by "
        f"{n['activation', 'act_keep_tanh']} per layer, SELU at its self-normalizing scale "
        f"by {n['activation', 'act_keep_selu']} ({link('activation', 'Activation functions')}).")


@_claim("Causes", "Layers without normalization are a cause of explosion.", "Logic Nest",
        "normalization", "",
        "nuanced if a network *with* batch norm grows its gradient per layer at "
        "initialization (factor above 1.1) while the critically initialized one without it "
        "stays within 5 % of 1; supported if only the unnormalized network grows; refuted "
        "if neither.")
def _unnormalized(n: Numbers):
    none, batch = (n.number("normalization", k) for k in ("norm_none_mid", "norm_bn_mid"))
    verdict = ("nuanced" if batch > 1.1 and near(none, 1, 0.05) else
               "supported" if none > 1.1 else "refuted")
    return verdict, (
        f"Without normalization a He-initialized network keeps its squared gradient at "
        f"{n['normalization', 'norm_none_mid']} per layer; *with* batch norm it grows by "
        f"{n['normalization', 'norm_bn_mid']} per layer at initialization whatever the "
        f"weight scale, and layer norm leaves a tanh network "
        f"{n['normalization', 'norm_ln_tanh']} per layer "
        f"({link('normalization', 'Unnormalized layers')}).")


@_claim("Causes", "Unnormalized inputs (features on very different scales) inflate the "
        "gradients.", "Logic Nest", "normalization", "",
        "supported if spreading the feature scales inflates the first layer's gradient "
        "more than 2-fold and shrinks the largest stable learning rate on both tasks; "
        "nuanced if only one holds.")
def _inputs(n: Numbers):
    g1 = n.number("normalization", "norm_in_g1_ratio")
    falls = [n.number("normalization", f"norm_in_{t}_lr_fall") for t in ("regression",
                                                                         "classification")]
    held = [g1 > 2, all(f > 1 for f in falls)]
    verdict = {2: "supported", 1: "nuanced", 0: "refuted"}[sum(held)]
    return verdict, (
        f"Features spread over a factor {n['normalization', 'norm_in_smax']} inflate the "
        f"first layer's gradient {n['normalization', 'norm_in_g1_ratio']}-fold and, through "
        f"the curvature, shrink the largest stable learning rate "
        f"{n['normalization', 'norm_in_regression_lr_fall']}-fold on a regression task and "
        f"{n['normalization', 'norm_in_classification_lr_fall']}-fold on a classification "
        f"task ({link('normalization', 'Unnormalized layers')}).")


@_claim("Causes", "The weights of an exploding network can grow so large that they "
        "overflow, which shows up as NaN values.", "GM-RKB", "precision", "",
        "nuanced if overflowing float16 gradients read NaN but float32 would only overflow "
        "far deeper (beyond twice the float16 depth); supported if float32 overflows as "
        "early.")
def _overflow(n: Numbers):
    fp16 = n.number("precision", "prec_meas_overflow")
    fp32 = n.number("precision", "prec_pred_overflow_fp32")
    verdict = "supported" if fp32 <= 2 * fp16 else "nuanced"
    return verdict, (
        f"Overflow does end in NaN: of the float16 runs whose first gradient overflowed, "
        f"{n['precision', 'prec_gradient_nan']} already read NaN. But what overflowed was a "
        f"half-precision gradient or activation, never a float32 weight, and the format "
        f"decides when: float16 from depth {n['precision', 'prec_meas_overflow']} of a ReLU "
        f"network with $\\sigma_w$ = {n['precision', 'prec_up_sigma']}, float32 only beyond "
        f"depth {n['precision', 'prec_pred_overflow_fp32']} "
        f"({link('precision', 'Numerical precision')}).")


@_claim("Causes", "Fast-growing gradients lead to numerical instability.",
        "Rodrigues, Logic Nest", "precision", "",
        "nuanced if the instability depends on the number format: float32 would overflow "
        "only beyond twice the depth at which float16 did; supported if float32 overflows "
        "as early.")
def _instability(n: Numbers):
    meas = n.number("precision", "prec_meas_overflow")
    fp32 = n.number("precision", "prec_pred_overflow_fp32")
    verdict = "nuanced" if fp32 > 2 * meas else "supported"
    return verdict, (
        f"In float16 an exploding gradient leaves the format's range at depth "
        f"{n['precision', 'prec_meas_overflow']} (mean-field theory: "
        f"{n['precision', 'prec_pred_overflow']}); float32 would only overflow beyond depth "
        f"{n['precision', 'prec_pred_overflow_fp32']}. bfloat16 or dynamic loss scaling "
        f"removes the numerical failure, not the explosion "
        f"({link('precision', 'Numerical precision')}).")


@_claim("Causes", "Exploding gradients hurt generalization and cause overfitting.",
        "Kickstarters, Logic Nest", "matrix", "matrix-generalization",
        "supported if the exploding network ends with a larger test-minus-training gap "
        "than its healthy twin in every pair; nuanced if in some; refuted if in none.")
def _generalization(n: Numbers):
    from .matrix import generalization_verdict  # the chapter's own rule: one home for it

    worse, pairs = (int(n.number("matrix", k)) for k in ("matrix_gen_n_worse", "matrix_gen_n"))
    return generalization_verdict(worse, pairs), (
        f"On a task small enough to overfit ({n['matrix', 'matrix_gen_n_train']} samples) the "
        f"exploding network ended with a larger test-minus-training gap than its healthy "
        f"twin in {worse} of {pairs} pairs ({n['matrix', 'matrix_gen_worse']}); where it "
        f"did, the cause is the chaotic forward map, not unstable updates "
        f"({link('matrix', 'the remedy matrix', 'matrix-generalization')}).")


# ------------------------------------------------------------------------------ detection

@_claim("Detection", "Sudden spikes in the gradient norm or the loss signal an explosion; "
        "monitoring them detects it.", "Rodrigues", "monitoring", "mon-lead",
        "supported if the spike detector warned before the loss broke in every diverging "
        "run and flagged no run that spiked and recovered; nuanced if it warned in some "
        "diverging runs or also flagged recovering ones; refuted if it warned in none.")
def _monitoring(n: Numbers):
    warned, diverged = k_n(n["monitoring", "mon_warned"])
    flagged, spiking = k_n(n["monitoring", "mon_spiking_flagged"])
    if diverged == 0:
        verdict = "untestable here"
    elif warned == 0:
        verdict = "refuted"
    else:
        verdict = "supported" if warned == diverged and flagged == 0 else "nuanced"
    return verdict, (
        f"A spike detector on the total gradient norm warned in "
        f"{n['monitoring', 'mon_warned']} diverging runs before their loss turned NaN, a "
        f"median of {n['monitoring', 'mon_lead_episode']} steps ahead, and it flagged "
        f"{n['monitoring', 'mon_spiking_flagged']} runs that spiked and recovered. Outlier "
        f"spikes pass by themselves ({link('monitoring', 'Monitoring', 'mon-lead')}, "
        f"{link('spikes', 'Spikes', 'spk-outliers')}).")


# ------------------------------------------------------------------------------- remedies

@_claim("Remedies", "Clipping the gradient's norm to a threshold prevents excessively large "
        "updates and stabilizes training.", "all four", "clipping", "clipping-verdict",
        "supported if norm clipping stopped every divergence of the too-large learning "
        "rate and made the chaotic recurrent network learn; nuanced if it stopped the "
        "divergences only; refuted if it stopped none.")
def _clip_norm(n: Numbers):
    none_div = k_n(n["clipping", "clipping_mlp_none_div"])[0]
    ndiv, nruns = (int(n.number("clipping", k)) for k in ("clipping_mlp_norm_ndiv",
                                                          "clipping_mlp_norm_nruns"))
    rnn_good = n["clipping", "clipping_rnn_norm_good"] != "none"
    stopped = none_div > 0 and ndiv == 0
    verdict = ("supported" if stopped and rnn_good else "nuanced" if ndiv < nruns
               else "refuted")
    return verdict, (
        f"Without clipping the too-large learning rate diverged in "
        f"{n['clipping', 'clipping_mlp_none_div']} runs; with norm clipping {ndiv} of "
        f"{nruns} runs diverged, over thresholds {n['clipping', 'clipping_norm_list']}. The "
        f"chaotic recurrent network learned at thresholds: "
        f"{n['clipping', 'clipping_rnn_norm_good']}. Clipping rescales the whole gradient: it "
        f"does not correct the imbalance between layers or revive a vanishing gradient "
        f"({link('clipping', 'Clipping', 'clipping-verdict')}).")


@_claim("Remedies", "Clipping by value and clipping by norm are two ways to the same end.",
        "Rodrigues", "clipping", "clipping-direction",
        "nuanced if both stop the divergences but clipping by value turns the gradient "
        "(cosine with the raw gradient below 0.9); supported if it keeps the direction.")
def _value_norm(n: Numbers):
    cos = n.number("clipping", "clipping_value_cos_min_0")
    verdict = "nuanced" if cos < 0.9 else "supported"
    return verdict, (
        f"Both stopped the divergences we measured, but only norm clipping keeps the "
        f"gradient's direction (cosine error {n['clipping', 'clipping_norm_cos_err']}); "
        f"clipping by value turned it to a cosine of {n['clipping', 'clipping_value_cos_min_0']} "
        f"at small thresholds ({link('clipping', 'Clipping', 'clipping-direction')}).")


@_claim("Remedies", "Adaptive gradient clipping adjusts the threshold on the fly from the "
        "gradients observed; it is due to \"Faugeras et al. (2021)\".", "Logic Nest",
        "clipping", "clipping-percentile",
        "refuted: the citation names no such paper (checked against the literature, not "
        "measured). The rule it describes is decided by the next claim.")
def _agc_citation(n: Numbers):
    return "refuted", (
        "Adaptive gradient clipping (AGC) was introduced by {cite:t}`brock2021high`, and its "
        "limit follows the weights, not the history of the gradient; we found no such paper "
        "by Faugeras et al. The rule described, a threshold from the history of gradient "
        "norms, is AutoClip {cite:p}`seetharaman2020autoclip` "
        f"({link('clipping', 'Clipping', 'clipping-percentile')}).")


@_claim("Remedies", "Adaptive clipping, whose threshold is set on the fly from the "
        "gradients observed, keeps training safe from gradient spikes.", "Logic Nest",
        "spikes", "spk-verdict",
        "supported if every history-based clipping rule (AutoClip, ZClip, AdaGC) finished "
        "every run above the stability edge; nuanced if some did; refuted if none did.")
def _adaptive_spikes(n: Numbers):
    robust = str(n["spikes", "spk_robust"])
    held = sum(name in robust for name in ("AutoClip", "ZClip", "AdaGC"))
    verdict = "supported" if held == 3 else "nuanced" if held else "refuted"
    return verdict, (
        f"Against outlier minibatches under Adam the final loss was "
        f"{n['spikes', 'spk_out_none_ratio']} times the clean run's without a remedy, and "
        f"clipping brought it back; above the stability edge only "
        f"{robust} finished every run, and skipping the step hid the divergence in "
        f"{n['spikes', 'spk_hidden']} runs ({link('spikes', 'Spikes', 'spk-verdict')}).")


@_claim("Remedies", "LSTM and GRU cells were designed against vanishing and exploding "
        "gradients and learn long-range dependencies better.", "Kickstarters, Logic Nest",
        "architecture", "arch-gated",
        "nuanced if the gated cells solve more seeds of the adding problem than the tanh RNN "
        "and the RNN's gradient vanishes across the sequence (at initialization, the first "
        "step's gradient below the last one's): the gates then fix vanishing, not "
        "explosion; supported if it explodes; refuted if the gates solve no more seeds.")
def _gated(n: Numbers):
    solved = {c: k_n(n["architecture", f"arch_rnn_{c}_solved"]) for c in ("rnn", "lstm", "gru")}
    better = any(solved[c][0] / solved[c][1] > solved["rnn"][0] / solved["rnn"][1]
                 for c in ("lstm", "gru"))
    vanishes = n.number("recurrence", "rec_ratio_long") < 1
    verdict = "refuted" if not better else "nuanced" if vanishes else "supported"
    return verdict, (
        f"On the adding problem (T = {n['architecture', 'arch_rnn_T']}) LSTM solved "
        f"{n['architecture', 'arch_rnn_lstm_solved']} seeds, GRU "
        f"{n['architecture', 'arch_rnn_gru_solved']}, the tanh RNN "
        f"{n['architecture', 'arch_rnn_rnn_solved']}, and clipping did not help it "
        f"({n['architecture', 'arch_rnn_rnn_clip_solved']}). The RNN's gradient at the first "
        f"of {n['recurrence', 'rec_ratio_longT']} steps was "
        f"{n['recurrence', 'rec_ratio_long']} times the last step's at initialization: gates "
        f"address a gradient that *vanishes* across time "
        f"({link('architecture', 'Architecture', 'arch-gated')}, "
        f"{link('recurrence', 'Recurrence')}).")


@_claim("Remedies", "Xavier or He initialization prevents exploding gradients.",
        "all but GM-RKB", "architecture", "arch-init",
        "nuanced if He keeps a ReLU network within 10 % of a factor 1 per layer while "
        "Xavier makes it vanish (below 0.9); supported if both keep it near 1.")
def _init(n: Numbers):
    he, xavier = (n.number("architecture", f"arch_init_relu_{k}") for k in ("he", "xavier"))
    verdict = ("nuanced" if near(he, 1, 0.25) and xavier < 0.9 else
               "supported" if near(he, 1, 0.25) else "refuted")
    return verdict, (
        f"He initialization gives a ReLU network a per-layer factor of "
        f"{n['architecture', 'arch_init_relu_he']} (too-large weights: "
        f"{n['architecture', 'arch_init_relu_normal']}); Xavier makes the same network's "
        f"gradient vanish ({n['architecture', 'arch_init_relu_xavier']} per layer) while it "
        f"is the right choice for tanh ({n['architecture', 'arch_init_tanh_xavier']}). The "
        f"scheme must match the activation ({link('architecture', 'Architecture', 'arch-init')}).")


@_claim("Remedies", "Batch normalization mitigates exploding gradients.",
        "Kickstarters, Logic Nest", "architecture", "arch-norm",
        "nuanced if batch norm stops runs from diverging (with large weights) but grows the "
        "gradient per layer at initialization itself (factor above 1.05); supported if it "
        "does the first without the second.")
def _batch_norm(n: Numbers):
    growth = n.number("architecture", "arch_norm_batch_growth")
    verdict = "nuanced" if growth > 1.05 else "supported"
    return verdict, (
        f"Batch norm stopped the divergence caused by large weights "
        f"({n['architecture', 'arch_norm_batch_div']} diverged against "
        f"{n['architecture', 'arch_norm_none_div']} without it), but it grows gradients by "
        f"{n['architecture', 'arch_norm_batch_growth']} per layer at initialization by itself "
        f"({link('architecture', 'Architecture', 'arch-norm')}, "
        f"{link('normalization', 'Unnormalized layers')}).")


@_claim("Remedies", "Skip connections (as in ResNets) alleviate explosion by giving the "
        "gradient another path.", "Logic Nest", "architecture", "arch-residual",
        "nuanced if plain skips x + relu(Wx) make the gradient grow faster than without "
        "them while skips with the branch scaled by 1/√L grow it less; supported if plain "
        "skips already help.")
def _residual(n: Numbers):
    plain, s1 = (n.number("architecture", f"arch_res_amp_{k}") for k in ("plain", "s1"))
    verdict = "nuanced" if s1 > plain else "supported"
    return verdict, (
        f"Skip connections with blocks x + relu(Wx) amplified the gradient "
        f"{n['architecture', 'arch_res_amp_s1']}-fold across the network against "
        f"{n['architecture', 'arch_res_amp_plain']} without skips; with the branch scaled by "
        f"$1/\\sqrt{{L}}$ it was {n['architecture', 'arch_res_amp_sqrt']}, and those residual "
        f"networks trained best ({link('architecture', 'Residual connections', 'arch-residual')}).")


@_claim("Remedies", "L1/L2 weight regularization prevents exploding gradients.",
        "Kickstarters, GM-RKB", "optimization", "optimization-penalties",
        "refuted if no penalty strength kept the deep network with large weights from "
        "diverging and the regression runs it kept finite ended within 5 % of the "
        "constant-output loss (saved by collapsing, not by learning); nuanced otherwise. "
        "The long-run weight drift the penalty is meant for is not part of the rule.")
def _penalty(n: Numbers):
    saved_deep = int(n.number("optimization", "opt_pen_deep_nsaved"))
    saved_loss = n.number("optimization", "opt_pen_regression_saved_loss")
    collapsed = math.isnan(saved_loss) or near(
        saved_loss, n.number("optimization", "opt_pen_reg_zero"), 0.05)
    verdict = "refuted" if saved_deep == 0 and collapsed else "nuanced"
    return verdict, (
        f"Against explosions present at initialization, "
        f"{n['optimization', 'opt_pen_deep_ndiv_pen']} penalized runs of the deep network "
        f"with large weights diverged; the regression runs a penalty kept finite ended at a "
        f"loss of {n['optimization', 'opt_pen_regression_saved_loss']}, where a network "
        f"that outputs a constant scores {n['optimization', 'opt_pen_reg_zero']}. A "
        f"penalty is meant to keep weights from drifting into explosion over a long run, "
        f"which no run here tests "
        f"({link('optimization', 'Optimization', 'optimization-penalties')}).")


@_claim("Remedies", "Adaptive optimizers such as Adam and RMSprop keep gradients under "
        "control.", "Rodrigues, Logic Nest", "optimization", "optimization-adaptive",
        "nuanced if Adam diverged less often than SGD but RMSprop still diverged somewhere "
        "or Adam did not learn the deep network; supported if neither diverged and Adam "
        "learned.")
def _adaptive(n: Numbers):
    sgd, adam, rms = (k_n(n["optimization", f"opt_deep_{k}_div"])[0]
                      for k in ("sgd", "adam", "rmsprop"))
    verdict = ("refuted" if adam >= sgd and sgd else
               "supported" if adam == 0 and rms == 0 else "nuanced")
    return verdict, (
        f"Adam's per-coordinate normalization bounds each step: on the deep network with "
        f"large weights {n['optimization', 'opt_deep_adam_div']} Adam runs diverged against "
        f"{n['optimization', 'opt_deep_sgd_div']} with SGD, and RMSprop "
        f"{n['optimization', 'opt_deep_rmsprop_div']}; but a bounded step is not a useful "
        f"one: the network {n['optimization', 'opt_budget_learned']} with Adam "
        f"({link('optimization', 'Optimization', 'optimization-adaptive')}).")


@_claim("Remedies", "Learning-rate schedules stabilize training.", "Logic Nest",
        "optimization", "optimization-warmup",
        "nuanced if warmup kept more runs finite above the stability limit than no warmup "
        "but did nothing for divergence caused by the initialization; supported if it also "
        "stopped that one.")
def _schedules(n: Numbers):
    matrix_fixes = k_n(n["matrix", "matrix_fix_warmup"])[0]
    verdict = "supported" if matrix_fixes >= 3 else "nuanced"
    return verdict, (
        f"Warmup let the regression network survive learning rates far above the stability "
        f"limit at initialization ({n['optimization', 'opt_warm_w0_sentence']}; "
        f"{n['optimization', 'opt_warm_wmax_sentence']}); in the remedy matrix it fixed "
        f"{n['matrix', 'matrix_fix_warmup']} failing rows "
        f"({link('optimization', 'Optimization', 'optimization-warmup')}).")


@_claim("Remedies", "Early stopping, with monitoring, helps identify and address an "
        "explosion before it escalates.", "Rodrigues", "optimization",
        "optimization-early-stopping",
        "nuanced (detection, not a cure) if the stop came before the first NaN but the "
        "remedy matrix counts no failing row fixed by it; supported if it also fixed rows; "
        "untestable here if no run diverged.")
def _early_stopping(n: Numbers):
    stop = n.number("optimization", "opt_stop_rnn_stop_step")
    nan = n.number("optimization", "opt_stop_rnn_nan_step")
    fixed = k_n(n["matrix", "matrix_fix_early_stopping"])[0]
    if math.isnan(nan):  # no run diverged: nothing to detect in this build
        verdict = "untestable here"
    else:
        verdict = "refuted" if not stop < nan else "supported" if fixed else "nuanced"
    return verdict, (
        f"A loss threshold fired at step {n['optimization', 'opt_stop_rnn_stop_step']}, where "
        f"the first NaN came at step {n['optimization', 'opt_stop_rnn_nan_step']}: it detects. "
        f"But the weights it restores after an early explosion are the initial ones, and it "
        f"fixed {n['matrix', 'matrix_fix_early_stopping']} failing rows of the remedy matrix "
        f"({link('optimization', 'Optimization', 'optimization-early-stopping')}).")


@_claim("Remedies", "Dropout mitigates explosion.", "Logic Nest", "matrix", "matrix-verdict",
        "refuted if dropout fixed no failing row of the remedy matrix (theory: it multiplies "
        "each layer's gradient factor by 1/(1-p)); nuanced if it fixed some.")
def _dropout(n: Numbers):
    fixed = k_n(n["matrix", "matrix_fix_dropout"])[0]
    verdict = "nuanced" if fixed else "refuted"
    return verdict, (
        f"Dropout scales every kept unit by $1/(1-p)$, which multiplies each layer's gradient "
        f"factor by $1/(1-p)$ {{cite:p}}`schoenholz2017deep`: it adds growth "
        f"({n['matrix', 'matrix_dropout_factor']} per layer at p = "
        f"{n['matrix', 'matrix_dropout']}). In the remedy matrix it fixed "
        f"{n['matrix', 'matrix_fix_dropout']} failing rows "
        f"({link('matrix', 'the remedy matrix', 'matrix-verdict')}).")


# -------------------------------------------------------------- architectures and numerics

@_claim("Architectures and numerics", "A convolutional network whose weights were "
        "initialized too large had exploding gradients and diverging parameters; switching "
        "to He or Xavier initialization fixed it.", "Logic Nest", "convnets",
        "cnn-case-study",
        "supported if the convnet with large weights diverged in more seeds than from He "
        "and Xavier; nuanced if its gradient grew (above 2× He's at step 0) without "
        "diverging; refuted otherwise.")
def _cnn(n: Numbers):
    large, he, xavier = (k_n(n["convnets", f"cnn_{k}_div"]) for k in ("large", "he", "xavier"))
    grew = n.number("convnets", "cnn_large_grad_ratio") > 2
    if large[0] / large[1] > max(he[0] / he[1], xavier[0] / xavier[1]):
        verdict = "supported"
    else:
        verdict = "nuanced" if grew else "refuted"
    return verdict, (
        f"A ReLU convnet at $\\sigma_w$ = {n['convnets', 'cnn_large_sigma']} started with a "
        f"gradient {n['convnets', 'cnn_large_grad_ratio']} times He's and diverged in "
        f"{n['convnets', 'cnn_large_div']} seeds; from He initialization "
        f"{n['convnets', 'cnn_he_div']} diverged, from Xavier "
        f"{n['convnets', 'cnn_xavier_div']} "
        f"({link('convnets', 'Convolutional networks', 'cnn-case-study')}).")


@_claim("Architectures and numerics", "Fine-tuning a transformer produced unusually large "
        "gradients, and learning-rate schedules and robust optimizers tamed them.",
        "Logic Nest", "transformers", "tf-verdict",
        "the transformers chapter's rule (transformers.seed_verdict): untestable here "
        "without a rate at which post-LN fails without warmup while pre-LN with warmup "
        "learns; refuted if warmup does not lower the failures there; supported if it "
        "removes them, also in longer runs, and the failures were explosions (a run "
        "diverged or its gradient grew 10-fold); nuanced otherwise. Every run uses Adam, "
        "so the optimizer half is not tested.")
def _transformer(n: Numbers):
    from .transformers import seed_verdict  # the chapter's own rule: one home for it

    page = {k: n["transformers", k] for k in (
        "tf_fail_lr", "tf_post_cold_nfailed", "tf_post_warm_nfailed", "tf_pre_warm_nfailed",
        "tf_long_post_warm_nfailed", "tf_failed_diverged", "tf_failed_growth_max")}
    page.update({k: int(parse_number(v)) for k, v in page.items()
                 if k.endswith(("nfailed", "diverged"))})
    grew = parse_number(page["tf_failed_growth_max"])
    how = ("the failures were explosions" if page["tf_failed_diverged"] or grew >= 10 else
           "the failures were not explosions: the gradient vanished towards the input")
    return seed_verdict(page), (
        f"A post-LN transformer trained with Adam failed without warmup at learning rate "
        f"{n['transformers', 'tf_fail_lr']} in {n['transformers', 'tf_post_cold_failed']} "
        f"runs, and in {n['transformers', 'tf_post_warm_failed']} with warmup; pre-LN "
        f"without warmup in {n['transformers', 'tf_pre_cold_failed']}. The failed runs' "
        f"gradient grew at most {n['transformers', 'tf_failed_growth_max']}-fold and "
        f"{n['transformers', 'tf_failed_diverged']} diverged: {how} "
        f"({link('transformers', 'Transformers', 'tf-warmup')}).")


def ledger(numbers: Numbers | None = None) -> pd.DataFrame:
    """Every claim of :data:`CLAIMS` decided from ``numbers`` (default: the executed pages
    of this build), one row each, in the order of :data:`SECTIONS`."""
    rows = pd.DataFrame(decide(CLAIMS, numbers or Numbers()))
    rows["section"] = pd.Categorical(rows["section"], SECTIONS, ordered=True)
    return rows.sort_values("section", kind="stable").reset_index(drop=True)


def counts(rows: pd.DataFrame) -> dict[str, object]:
    """Glued numbers: how many claims, and how many got each verdict."""
    numbers = {"claims_n": len(rows)}
    for verdict in VERDICTS:
        numbers[f"claims_n_{verdict.split()[0]}"] = int((rows["verdict"] == verdict).sum())
    return numbers


def cards(rows: pd.DataFrame, section: str) -> str:
    """The claims of ``section`` as MyST, one box per claim (readable at phone width,
    where a four-column table is not): the claim as its title, then the verdict and who
    makes it, the evidence, and the rule.  The page renders it as MyST, so links,
    citations and math in the evidence work."""
    blocks = []
    for row in rows[rows["section"] == section].itertuples():
        css = "claim claim-" + row.verdict.split()[0]
        blocks.append("\n".join([
            f"````{{admonition}} {row.claim}", f":class: {css}", "",
            f"**{row.verdict.capitalize()}** · made by {row.made_by}", "", row.evidence, "",
            f"*Rule:* {row.rule}", "````"]))
    return "\n\n".join(blocks)
