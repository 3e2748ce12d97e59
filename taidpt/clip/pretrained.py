"""Resolve an open_clip pretrained tag (``MODEL.BACKBONE.PRETRAINED`` such as ``"openai"``) to weights.

The tag's file is taken from the Hugging Face hub cache when it is there (no network access at
all), else downloaded. Without network (or with ``HF_HUB_OFFLINE`` set) and no cached copy, one
quick check fails with one :class:`~taidpt.clip.errors.ClipLoadError` line that says to pass a
local file instead, rather than a minute of retries. The tag's activation (QuickGELU for
OpenAI's weights) is applied. :func:`~taidpt.clip.loader.load_clip` calls this for tags.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping

from open_clip.model import CLIP

from taidpt.clip.errors import ClipLoadError
from taidpt.utils.safe_pickle import first_line

_LOCAL_FILE_HINT = ("download the weights where there is network access and set MODEL.BACKBONE.PRETRAINED to the "
                    "local file path (OpenAI's RN50.pt, or a .safetensors / .pt state dict)")
_HUB_CHECK_TIMEOUT_S = 5.0


def load_pretrained_tag(canonical: str, tag: str) -> CLIP:
    """Build ``canonical`` with open_clip's weights for ``tag`` and the tag's activation (QuickGELU for OpenAI's)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(canonical, tag)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(canonical)) or "none"
        raise ClipLoadError(f"unknown pretrained tag {tag!r} for {canonical}: expected one of {tags}, or a weights "
                            f"file path as MODEL.BACKBONE.PRETRAINED")
    weights = _tag_weights_file(canonical, tag, cfg)
    try:
        return open_clip.create_model(canonical, pretrained=weights, force_quick_gelu=bool(cfg.get("quick_gelu")))
    except Exception as exc:  # noqa: BLE001 - open_clip's loader raises many types; report one line
        raise ClipLoadError(f"cannot load the {tag!r} weights for {canonical} from {weights}: {type(exc).__name__}: "
                            f"{first_line(exc)}") from exc


def _tag_weights_file(canonical: str, tag: str, cfg: Mapping[str, Any]) -> str:
    """Local file for a pretrained tag: the hub cache's copy, else a download once the hub answers."""
    from open_clip.pretrained import download_pretrained

    hub = _hub_files(cfg)
    if hub is not None:
        cached = _cached_hub_file(*hub)
        if cached is not None:
            return cached
        _check_hub_reachable(canonical, tag, *hub)
    with _quiet_hub_retries():
        try:
            return download_pretrained(dict(cfg))
        except Exception as exc:  # noqa: BLE001 - network/hub errors vary; report one line
            raise ClipLoadError(f"could not download the {tag!r} weights for {canonical} ({first_line(exc)}); "
                                f"{_LOCAL_FILE_HINT}") from exc


def _hub_files(cfg: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(repo id, file names in the order open_clip tries them) for a tag hosted on the Hugging Face hub."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
    from open_clip.pretrained import has_hf_hub

    if not cfg.get("hf_hub") or not has_hf_hub():
        return None
    repo_id, filename = os.path.split(cfg["hf_hub"])
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def _cached_hub_file(repo_id: str, filenames: list[str]) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def _check_hub_reachable(canonical: str, tag: str, repo_id: str, filenames: list[str]) -> None:
    """One request without retries, so that a machine without network fails in seconds, not a minute."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    missing = (f"the {tag!r} weights for {canonical} ({repo_id} on the Hugging Face hub) are not in the local "
               f"cache {constants.HF_HUB_CACHE}")
    if constants.is_offline_mode():
        raise ClipLoadError(f"{missing} and HF_HUB_OFFLINE is set: {_LOCAL_FILE_HINT}")
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filenames[-1]), timeout=_HUB_CHECK_TIMEOUT_S)
    except HfHubHTTPError:
        return  # the hub answered; the download reports what it said
    except Exception as exc:  # noqa: BLE001 - connection, proxy and timeout errors of the HTTP client
        raise ClipLoadError(f"{missing} and the hub cannot be reached ({first_line(exc)}): {_LOCAL_FILE_HINT}") from exc


@contextlib.contextmanager
def _quiet_hub_retries() -> Iterator[None]:
    """Silence huggingface_hub's per-retry warnings; a failed download still ends in one error line."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)
