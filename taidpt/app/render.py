"""What the tagging page shows, as text: result cards with a bar per class, the logits table, the decision
rule and the model card. Pure functions of :class:`taidpt.app.tagging.Tagged` and the model's metadata, so
they are tested without a browser; every user-given string is HTML-escaped here.
"""

from __future__ import annotations

from html import escape
from typing import Any

from taidpt.app.tagging import Tagged
from taidpt.serve.decision import STORED, Decision
from taidpt.serve.metadata import ModelMetadata

SHOWN_CLASSES = 12  # class names listed in the model card before "and N more"
CSS = """
#results .tag-card {border: 1px solid #ccc; border-radius: 6px; padding: 8px 12px; margin: 0 0 10px 0;}
#results .tag-name {font-weight: 600;}
#results .tag-error {color: #b00020;}
#results .tag-label {display: inline-block; background: #1f6feb; color: #fff; border-radius: 10px;
                     padding: 1px 8px; margin: 2px 4px 2px 0;}
#results table.tag-bars {border-collapse: collapse; width: 100%;}
#results table.tag-bars td {padding: 1px 6px; font-size: 0.9em; white-space: nowrap;}
#results .tag-bar {background: #e6e6e6; width: 100%; height: 10px; border-radius: 3px;}
#results .tag-fill {background: #8aa; height: 10px; border-radius: 3px;}
#results .tag-fill.on {background: #1f6feb;}
"""


def _bar(confidence: float | None, on: bool) -> str:
    if confidence is None:
        return '<td class="tag-conf">top-k</td><td></td>'
    width = max(0.0, min(100.0, 100.0 * confidence))
    return (f'<td class="tag-conf">{confidence:.3f}</td><td style="width:60%"><div class="tag-bar">'
            f'<div class="tag-fill{" on" if on else ""}" style="width:{width:.1f}%"></div></div></td>')


def results_html(tagged: Tagged) -> str:
    """One card per image: its name, its labels, then a bar per class (highest logit first) with the
    confidence ``sigmoid(logit - threshold)``; "top-k" where no threshold decides the class."""
    cards = []
    for row in tagged.rows:
        name = f'<div class="tag-name">{escape(row.path)}</div>'
        if row.scores is None:
            cards.append(f'<div class="tag-card">{name}<div class="tag-error">not scored: {escape(row.error)}'
                         f'</div></div>')
            continue
        fields = tagged.decision.row_fields(row.scores, row.labels)
        chips = "".join(f'<span class="tag-label">{escape(c)}</span>' for c in row.labels) or "<em>no label</em>"
        order = sorted(fields["scores"], key=lambda c: -fields["scores"][c])
        bars = "".join(f'<tr><td>{escape(c)}</td><td class="tag-logit">{fields["scores"][c]:.3f}</td>'
                       f'{_bar(fields["confidence"][c], c in row.labels)}</tr>' for c in order)
        cards.append(f'<div class="tag-card">{name}<div class="tag-labels">labels: {chips}</div>'
                     f'<table class="tag-bars"><tr><th>class</th><th>logit</th><th>confidence</th><th></th></tr>'
                     f'{bars}</table></div>')
    took = f'<div class="tag-time">{len(tagged.rows)} image(s) in {tagged.seconds:.2f} s</div>'
    return took + "".join(cards)


def logits_table(tagged: Tagged) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the logits table: one row per scored image, its merged logit per class."""
    rows = [[row.path, *(round(float(v), 4) for v in row.scores)] for row in tagged.rows if row.scores is not None]
    return ["image", *tagged.classnames], rows


def decision_markdown(decision: Decision, meta: ModelMetadata) -> str:
    """The rule in use, in a sentence, and where its thresholds come from."""
    lines = [f"**Decision rule:** {escape(decision.text())}"]
    if decision.rule != STORED and meta.calibration:
        lines.append(f"The model's own thresholds (not in use): {escape(meta.calibration)}")
    lines.append("Confidence is sigmoid(logit - threshold): 0.5 at the decision point, not a probability.")
    return "\n\n".join(lines)


def model_card(meta: ModelMetadata, *, sha256: str, provider: str, open_vocabulary: bool) -> str:
    """A Markdown model card from the metadata: method, backbone, classes, calibration, precision, export."""
    names = list(meta.classnames)
    shown = ", ".join(escape(n) for n in names[:SHOWN_CLASSES])
    if len(names) > SHOWN_CLASSES:
        shown += f" and {len(names) - SHOWN_CLASSES} more"
    calibrated = len(meta.thresholds)
    images = meta.calibration_images
    counted = images and f"{images} " not in meta.calibration  # the count, unless the description says it
    calibration = (f"{calibrated} of {len(names)} classes have thresholds ({escape(meta.calibration) or 'source not recorded'}"
                   f"{f', {images} images' if counted else ''})"
                   if calibrated else "none: labels by top-k (calibrate with <code>python -m export.calibrate</code>)")
    text = escape  # every value below that comes from the file is escaped
    rows = [
        ("method", text(meta.trainer or "not recorded")),
        ("backbone", text(f"{meta.backbone} ({meta.weights or 'weights not recorded'}"
                          f"{', ' + meta.pretrained if meta.pretrained else ''})")),
        ("classes", f"{len(names)}: {shown}"),
        ("open vocabulary", f"yes, prompt <code>{text(meta.prompt_template)}</code>" if open_vocabulary else
                            "no: only the trained classes (export with <code>--open-vocabulary</code> to type others)"),
        ("calibration", calibration),
        ("precision", text(meta.precision)),
        ("input", text(f"{meta.image_size[0]} x {meta.image_size[1]} px, {meta.interpolation}")),
        ("score", f"merged = {meta.merge_rate:g} x global + {1 - meta.merge_rate:g} x local"),
        ("trained on", text(meta.dataset or "not recorded")),
        ("checkpoint", text(meta.checkpoint or "not recorded")),
        ("exported", text(meta.exported or "not recorded (an older export)")),
        ("model sha256", f"<code>{sha256[:16]}...</code>"),
        ("runs on", text(provider)),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return "### Model card\n\n| | |\n|---|---|\n" + body

