"""Query a TaI-DPT model served by Triton: ``python -m export.triton_client``, a client example.

It reads the model's preprocessing, class names and stored thresholds from the ``taidpt.*`` parameters of
the served config (Triton's ONNX backend cannot apply thresholds), preprocesses as evaluation does, and
prints the rows of ``python -m export.infer``'s .jsonl output; ``--classes`` goes through the ``<model>_text`` and
``<model>_open`` models of an open-vocabulary repository. ``tritonclient`` is imported only when the
client runs, so nothing else needs it. See docs/deployment.md, section 6.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from taidpt.utils.pathtext import escape_path

from taidpt.serve.decision import Decision, DecisionError, for_model
from taidpt.serve.graph_check import check_graph
from taidpt.serve.inference_flags import add_batch_size_flag, add_class_flags, add_images_flag, add_rule_flags
from taidpt.serve.inputs import InputError, image_source
from taidpt.serve.predictor import load_image
from taidpt.serve.metadata import EMBEDDING_NAMES, INPUT_NAME, TOKEN_IDS_NAME, MetadataError, ModelMetadata
from taidpt.serve.open_vocab import OpenVocabError, parse_class_names, prompts_for
from taidpt.serve.result_log import json_row
from taidpt.utils.commands import DeprecatedFlag, prog_name

INSTALL_HINT = "pip install 'tritonclient[http]' (or [grpc])"


class TritonClientError(RuntimeError):
    """tritonclient is missing or the server cannot be used; the message is one line."""


def client_module(protocol: str) -> Any:
    """``tritonclient.http`` or ``tritonclient.grpc``, imported now (not when taidpt is imported)."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise TritonClientError(f"tritonclient is not installed ({exc}): {INSTALL_HINT}") from None
    return module


def served_metadata(client: Any, model: str, protocol: str) -> ModelMetadata:
    """The taidpt metadata of a served model, from its configuration's ``parameters``."""
    config = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
    config = config.get("config", config)
    params = {k: v.get("string_value", v.get("stringValue", "")) for k, v in (config.get("parameters") or {}).items()}
    meta = ModelMetadata.from_props(params, f"{model} (Triton)")
    check_graph(meta, served_shapes(config), f"{model} (Triton)")
    return meta


def served_shapes(config: dict[str, Any]) -> dict[str, list[int]]:
    """``{tensor name: full shape}`` of a served model's configuration (the batch axis Triton adds as -1)."""
    batch = [-1] if int(config.get("max_batch_size") or 0) > 0 else []
    return {t["name"]: batch + [int(d) for d in t.get("dims", [])]
            for t in [*(config.get("input") or []), *(config.get("output") or [])]}


def _tensor(module: Any, name: str, array: np.ndarray, datatype: str) -> Any:
    request = module.InferInput(name, list(array.shape), datatype)
    request.set_data_from_numpy(array)
    return request


def embed_classes(client: Any, module: Any, model: str, protocol: str, classnames: Sequence[str],
                  vocab: str) -> tuple[np.ndarray, np.ndarray]:
    """The (global, local) embeddings ``[C, D]`` of ``classnames`` from the served ``<model>_text``."""
    from taidpt.serve.tokenizer import ClipTokenizer, TokenizerError

    text_model = model + "_text"
    if not client.is_model_ready(text_model):
        raise TritonClientError(f"model {text_model!r} is not ready: --classes needs a repository written with "
                                f"python -m export.triton --open-vocabulary")
    meta = served_metadata(client, text_model, protocol)
    try:
        ids = ClipTokenizer(vocab)(prompts_for(meta.prompt_template, classnames), meta.context_length)
    except TokenizerError as exc:
        raise TritonClientError(str(exc)) from None
    reply = client.infer(text_model, inputs=[_tensor(module, TOKEN_IDS_NAME, ids.astype(np.int64), "INT64")],
                         outputs=[module.InferRequestedOutput(n) for n in EMBEDDING_NAMES])
    return tuple(np.asarray(reply.as_numpy(n), dtype=np.float32) for n in EMBEDDING_NAMES)  # type: ignore[return-value]


def score_paths(client: Any, module: Any, model: str, meta: ModelMetadata, paths: Iterable[str], *,
                batch_size: int = 8, decision: Decision | None = None,
                embeddings: tuple[np.ndarray, np.ndarray] | None = None) -> Iterable[dict]:
    """One result dict per path, in order (paths and errors escaped); batches of readable images go to the server
    (to ``<model>_open`` with ``embeddings``, the class embeddings of :func:`embed_classes`)."""
    cfg = meta.preprocess_config()
    decision = decision or for_model(meta)
    target = model if embeddings is None else model + "_open"
    extra = [] if embeddings is None else [_tensor(module, n, e, "FP32") for n, e in zip(EMBEDDING_NAMES, embeddings)]
    it = iter(paths)
    while chunk := list(itertools.islice(it, batch_size)):
        loaded = [load_image(p, cfg) for p in chunk]
        good = [i for i, x in enumerate(loaded) if not isinstance(x, str)]
        results = [{"path": escape_path(p), "error": escape_path(x)} if isinstance(x, str) else {}
                   for p, x in zip(chunk, loaded)]
        if good:
            batch = np.stack([loaded[i] for i in good]).astype(np.float32)
            reply = client.infer(target, inputs=[_tensor(module, INPUT_NAME, batch, "FP32"), *extra],
                                 outputs=[module.InferRequestedOutput("scores")])
            scores = reply.as_numpy("scores")
            labels = decision.labels(scores)
            for j, i in enumerate(good):
                results[i] = {**json_row(chunk[i], decision, scores[j], labels[j]), "decision": decision.tag()}
        yield from results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("python -m export.triton_client"),
                                description="Score images with a TaI-DPT model served by Triton Inference Server.")
    p.add_argument("--url", default="localhost:8000", help="server address (8000: HTTP, 8001: gRPC)")
    p.add_argument("--protocol", choices=["http", "grpc"], default="http")
    p.add_argument("--model-name", default="taidpt", help="model name in the repository")
    p.add_argument("--model", dest="model_name", action=DeprecatedFlag, use="--model-name")
    add_images_flag(p)
    add_batch_size_flag(p, default=8, what="request")
    add_class_flags(p, where="a repository written with --open-vocabulary")
    p.add_argument("--vocab", default=None, help="the export's BPE vocabulary (M.bpe.txt.gz, also in <model>_text/ in "
                                                 "the repository); needed with --classes / --class-list")
    add_rule_flags(p, stored="the thresholds stored in the repository's parameters")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        module = client_module(args.protocol)
        client = module.InferenceServerClient(url=args.url)
        if not client.is_model_ready(args.model_name):
            raise TritonClientError(f"model {args.model_name!r} is not ready on {args.url}")
        meta = served_metadata(client, args.model_name, args.protocol)
        names = parse_class_names(args.classes, args.class_list)
        embeddings = None
        if names is not None:
            if not args.vocab:
                raise TritonClientError("--classes and --class-list need --vocab M.bpe.txt.gz (the export's BPE "
                                        "vocabulary, also written into the repository's <model>_text/ folder)")
            embeddings = embed_classes(client, module, args.model_name, args.protocol, names, args.vocab)
        decision = for_model(meta, classnames=names, threshold=args.threshold, top_k=args.top_k)
        paths, _ = image_source(args.images)
        print(f"{args.model_name} on {args.url}: labels: {decision.text()}", file=sys.stderr)
        for row in score_paths(client, module, args.model_name, meta, paths, batch_size=args.batch_size,
                               decision=decision, embeddings=embeddings):
            print(json.dumps(row))
    except (TritonClientError, MetadataError, InputError, DecisionError, OpenVocabError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - tritonclient's InferenceServerException and connection errors
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
