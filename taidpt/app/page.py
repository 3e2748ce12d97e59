"""The gradio page of the tagging app: components with stable elem_ids, wired to a :class:`Tagger`.

Elem ids (for tests and for people who script the page): ``images`` (upload), ``classes`` (class box),
``rule``, ``top_k``, ``shift`` (decision rule), ``run``, ``message``, ``results``, ``logits``,
``downloads``, ``decision``, ``model_card``. A handler never raises into gradio: a refusal or an
unexpected error becomes a line in ``#message`` (the traceback of an unexpected one goes to the
server's log only). Scoring runs one request at a time (gradio's queue); each browser session gets its
own results. See docs/app.md.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

from taidpt.app.render import decision_markdown, logits_table, model_card, results_html
from taidpt.app.tagging import MODEL_RULE, RULES, PageInputError, RuleChoice, Tagger
from taidpt.serve.decision import DEFAULT_TOP_K
from taidpt.serve.result_log import ResultLogError

log = logging.getLogger(__name__)
SHIFT_RANGE = 10.0  # the threshold shift slider spans +-10 logit units
QUEUE_SIZE = 32  # requests waiting beyond the one being scored
KEEP_SECONDS = 3600  # download files and gradio's copies of uploads and outputs live this long


def sweep(folder: Path, older_than: float = KEEP_SECONDS) -> None:
    """Remove the per-click download folders in ``folder`` not touched for ``older_than`` seconds (gradio
    has long since copied their files into its own cache, which ``delete_cache`` empties)."""
    limit = time.time() - older_than
    for old in folder.glob("run-*"):
        try:
            if old.stat().st_mtime < limit:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def _number(value: Any) -> float:
    """A slider's value as a float (0 for an empty or non-finite one)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def _choice(rule: Any, k: Any, shift: Any) -> RuleChoice:
    return RuleChoice(str(rule or MODEL_RULE), int(_number(k) or DEFAULT_TOP_K), _number(shift))


def _message(text: str) -> str:
    return f"**Not scored:** {text}" if text else ""


def _marked(html: str) -> str:
    """``html`` after an empty element unique to this click (``data-run``), so a script can tell that the
    outcome of its click has arrived even when it reads as the previous one."""
    return f'<div class="tag-run" data-run="{uuid.uuid4().hex}"></div>{html}'


class PageHandlers:
    """The page's callbacks, bound to one tagger and one folder for download files."""

    def __init__(self, tagger: Tagger, download_root: str | os.PathLike) -> None:
        self.tagger = tagger
        self.download_root = Path(download_root)

    def describe(self, class_text: str, rule: str, k: float, shift: float) -> tuple[str, str]:
        """(decision text, message) for the current controls, before anything is scored."""
        try:
            _, decision = self.tagger.decision(self.tagger.classes(class_text), _choice(rule, k, shift))
        except PageInputError as exc:
            return "", _message(str(exc))
        return decision_markdown(decision, self.tagger.predictor.metadata), ""

    def run(self, files: Sequence[str] | None, class_text: str, rule: str, k: float,
            shift: float) -> tuple[str, Any, list[str], str, str]:
        """(results HTML, logits table, download files, message, decision text) of one click."""
        import gradio as gr

        empty_table = gr.update(value=None)
        try:
            tagged = self.tagger.tag(files, class_text, _choice(rule, k, shift))
        except PageInputError as exc:
            return _marked(""), empty_table, [], _message(str(exc)), gr.update()
        except Exception as exc:  # noqa: BLE001 - the page says what failed; the log keeps the traceback
            log.exception("scoring failed")
            return (_marked(""), empty_table, [], _message(f"internal error ({type(exc).__name__}: {exc})"),
                    gr.update())
        headers, rows = logits_table(tagged)
        message = ""
        sweep(self.download_root)
        folder = Path(tempfile.mkdtemp(prefix="run-", dir=self.download_root))
        try:
            downloads = [str(p) for p in self.tagger.downloads(tagged, folder)]
        except (ResultLogError, OSError) as exc:
            downloads = [str(p) for p in folder.iterdir()]
            message = f"**Download incomplete:** {exc}"
        table = gr.update(value={"headers": headers, "data": rows}, headers=headers)
        return (_marked(results_html(tagged)), table, downloads, message,
                decision_markdown(tagged.decision, self.tagger.predictor.metadata))


def build_page(tagger: Tagger, *, download_root: str | os.PathLike, examples: Sequence[str] = ()) -> Any:
    """The gradio ``Blocks`` of the page (not launched)."""
    import gradio as gr

    handlers = PageHandlers(tagger, download_root)
    predictor = tagger.predictor
    meta = predictor.metadata
    n = len(tagger.trained_classes)
    box_info = ("comma-separated; type any names to replace the trained classes (open-vocabulary export)"
                if predictor.open_vocabulary else
                "the trained classes; this export cannot score others (export with --open-vocabulary)")
    with gr.Blocks(title="taidpt tagger", analytics_enabled=False,
                   delete_cache=(KEEP_SECONDS, KEEP_SECONDS)) as page:
        gr.Markdown(f"## Multi-label tagging with {meta.trainer or 'a TaI-DPT'} model ({meta.backbone})")
        with gr.Row():
            with gr.Column(scale=1):
                images = gr.File(label="Images", file_count="multiple", type="filepath", elem_id="images")
                classes = gr.Textbox(label=f"Classes ({n} trained)", value=tagger.class_box_text(), lines=3,
                                     info=box_info, elem_id="classes")
                rule = gr.Radio(list(RULES), value=MODEL_RULE, label="Decision rule", elem_id="rule")
                top_k = gr.Slider(1, max(1, min(n, 20)), value=min(DEFAULT_TOP_K, n), step=1,
                                  label="k (top-k rule)", elem_id="top_k")
                shift = gr.Slider(-SHIFT_RANGE, SHIFT_RANGE, value=0.0, step=0.05,
                                  label="Threshold shift (model's rule; logit units, + labels fewer classes)",
                                  elem_id="shift")
                run = gr.Button("Tag images", variant="primary", elem_id="run")
                if examples:
                    gr.Examples(examples=[[list(examples)]], inputs=[images], label="Example images")
            with gr.Column(scale=2):
                message = gr.Markdown(elem_id="message")
                results = gr.HTML(elem_id="results")
                logits = gr.Dataframe(label="Merged logits", interactive=False, elem_id="logits")
                downloads = gr.File(label="Results as export.infer writes them (JSON, CSV)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
        decision_md, _ = handlers.describe(tagger.class_box_text(), MODEL_RULE, DEFAULT_TOP_K, 0.0)
        decision = gr.Markdown(decision_md, elem_id="decision")
        gr.Markdown(model_card(meta, sha256=tagger.model_sha256, provider=predictor.provider,
                               open_vocabulary=predictor.open_vocabulary), elem_id="model_card")

        controls = [classes, rule, top_k, shift]
        for control in (rule, top_k, shift):
            control.change(handlers.describe, controls, [decision, message], queue=False)
        run.click(handlers.run, [images, *controls], [results, logits, downloads, message, decision],
                  concurrency_limit=1)
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return page


