"""Plain-language findings of a card: signal, conditioning, coupling, greedy order, cost, probes."""

from __future__ import annotations

from layercard.decide import cost_model, greedy_order
from layercard.formatting import fmt, fmt_bytes, fmt_layers
from layercard.schema import Card


def _signal_finding(card: Card) -> str:
    gains = [entry.predicted_gain for entry in card.layers]
    total = sum(gains)
    if total <= 0:
        return "No layer shows correctable signal (all resnorms are zero)."
    top = sorted(range(card.n_layers), key=lambda i: (-gains[i], i))[:3]
    thirds = [range(card.n_layers)[k * card.n_layers // 3 : (k + 1) * card.n_layers // 3]
              for k in range(3)]
    shares = [100 * sum(gains[i] for i in part) / total for part in thirds]
    by_type = {
        m: sum(s.rel_resnorm for s in card.sites if s.module == m)
        / sum(1 for s in card.sites if s.module == m)
        for m in card.module_types()
    }
    best = max(by_type, key=lambda m: by_type[m])
    worst = min(by_type, key=lambda m: by_type[m])
    return (
        f"Correctable signal concentrates in layers {fmt_layers(top)} "
        f"({100 * sum(gains[i] for i in top) / total:.0f}% of the summed single-layer predicted "
        f"gain); early / middle / late thirds hold {shares[0]:.0f}% / {shares[1]:.0f}% / "
        f"{shares[2]:.0f}%. By module type, {best} can fix the largest share of its residual "
        f"(mean relative resnorm {fmt(by_type[best])}), {worst} the smallest "
        f"({fmt(by_type[worst])})."
    )


def _conditioning_finding(card: Card) -> str:
    amp = [entry.max_noise_amplification for entry in card.layers]
    median = sorted(amp)[len(amp) // 2]
    bad = [i for i in range(card.n_layers) if amp[i] >= 2 * median]
    worst = max(range(card.n_layers), key=lambda i: amp[i])
    cond = card.layers[worst].max_condition_number
    text = (
        f"Conditioning: the worst module input is in layer {worst} (noise amplification "
        f"{fmt(amp[worst])}, condition number {fmt(cond)}; median over layers {fmt(median)}). "
    )
    if bad:
        which = f"Layers {fmt_layers(bad)} are" if len(bad) > 1 else f"Layer {bad[0]} is"
        return text + (
            f"{which} ill-conditioned (≥ 2× the median): corrections estimated there are noisy "
            "and harder to optimize than their resnorm suggests."
        )
    return text + "No layer stands out as ill-conditioned (none reaches 2× the median)."


def _coupling_finding(card: Card) -> str:
    rho = card.coupling.matrix
    n = card.n_layers
    if n < 2:
        return "Coupling: a single block, nothing to couple."
    adjacent = [abs(rho[i][i + 1]) for i in range(n - 1)]
    far = [abs(rho[i][j]) for i in range(n) for j in range(i + 2, n)]
    strongest = max(range(n - 1), key=lambda i: adjacent[i])
    mean_adj = sum(adjacent) / len(adjacent)
    text = (
        f"Coupling (over {card.coupling.n_examples} examples): neighbouring layers have mean "
        f"|ρ| {fmt(mean_adj)} "
        f"(strongest {fmt(adjacent[strongest])} between layers {strongest} and {strongest + 1})"
    )
    if far:
        text += f", layers further apart {fmt(sum(far) / len(far))}"
    if mean_adj < 0.3:
        return text + "; weak, so single-layer gains add up approximately."
    return text + "; adapting neighbours together is partly redundant (gains do not add up)."


def _greedy_finding(card: Card) -> str:
    order = greedy_order(card)
    full = order[-1][1]
    if full <= 0:
        return "Greedy selection: no predicted gain to select for."
    parts = []
    for target in (0.5, 0.8, 0.9):
        k = next(i for i, (_, gain) in enumerate(order, 1) if gain >= target * full)
        parts.append(f"{k} for {target:.0%}")
    first = [layer for layer, _ in order[:5]]
    text = (
        f"Greedy coupling-aware selection on the predicted gain picks layers "
        f"{fmt_layers(first)} first; layers needed to reach a share of the all-layer predicted "
        f"gain ({fmt(full)}): {', '.join(parts)}."
    )
    singles = sum(entry.predicted_gain for entry in card.layers)
    if full > 1.5 * singles:
        text += (
            f" Caution: the all-layer prediction is {full / singles:.0f}× the sum of single-layer "
            "gains, because the coupling matrix is nearly singular; predictions for sets of "
            "layers are unreliable on this card (single-layer gains are not affected)."
        )
    return text


def _cost_finding(card: Card) -> str:
    model = cost_model(card)
    if card.cost is None or model is None:
        return "Cost was not measured (--no-cost)."
    n = card.n_layers
    top_s, top_b = model.predict([n - 1])
    low_s, low_b = model.predict([0])
    all_s, all_b = model.predict(range(n))
    errors = card.cost.memory.check_errors + model.timing.check_errors
    check = (
        f" The fit is off by at most {100 * max(abs(e) for e in errors):.0f}% on "
        f"{len(card.cost.check_sets)} multi-layer check sets." if errors else ""
    )
    params = sum(card.cost.params_per_layer.values()) / n
    return (
        f"Cost of going deep: one adapted layer at the top costs about {fmt(top_s)} s per step "
        f"and {fmt_bytes(top_b)} of training memory, at the bottom {fmt(low_s)} s and "
        f"{fmt_bytes(low_b)} (×{low_s / top_s:.1f} time, ×{low_b / max(top_b, 1):.1f} memory); all "
        f"layers {fmt(all_s)} s and {fmt_bytes(all_b)}.{check} Each layer adds {params:,.0f} LoRA "
        f"parameters and, unmerged, {1e3 * model.timing.serving_seconds_per_layer:.2f} ms per "
        f"generated token at serving (merged adapters add none). Times are "
        f"{'wall-clock' if model.timing.device.startswith('cuda') else 'process CPU time'} on "
        f"{card.provenance.machine.device} with {model.timing.threads} threads."
    )


def _probe_finding(card: Card) -> str:
    if card.probe is None:
        return (
            "No probes were run (--probe-steps 0), so how well predicted gains rank layers on "
            "this task is untested. On the built-in tasks they rank layers unlike measured LoRA "
            "gains (the probe benchmark); for placement, build with --probe-steps 30."
        )
    rho = card.probe.spearman
    verdict = (
        "good: the cheap prediction ranks layers usefully" if rho >= 0.6
        else "moderate: use the prediction as a rough guide" if rho >= 0.3
        else "poor: do not rank layers by the prediction alone on this task"
    )
    best = max(range(card.n_layers), key=lambda i: card.probe.gains[i])
    return (
        f"Predicted vs probed gains ({card.probe.steps}-step single-layer LoRA, dev loss drop): "
        f"Spearman ρ = {fmt(rho)}, {verdict}. The largest probed drop is at layer {best} "
        f"({fmt(card.probe.gains[best])})."
    )


def findings(card: Card) -> list[str]:
    """Plain-language findings: signal, conditioning, coupling, greedy order, cost, probes."""
    return [
        _signal_finding(card),
        _conditioning_finding(card),
        _coupling_finding(card),
        _greedy_finding(card),
        _cost_finding(card),
        _probe_finding(card),
    ]
