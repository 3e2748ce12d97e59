"""Template sentences added to every caption corpus (the reference's recipe).

Per class the reference adds 89 sentences labelled with that class only: 9 extra
copies of ``"a photo of a {c}."`` and the 80 CLIP ImageNet templates (one of
which is that same sentence, so it appears 10 times in all). They guarantee that
every class has training sentences, even one that captions rarely mention.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taidpt.captions.classes import ClassList

__all__ = ["DEFAULT_TEMPLATE", "DEFAULT_TEMPLATE_EXTRA_COPIES", "IMAGENET_TEMPLATES", "template_sentences"]

DEFAULT_TEMPLATE = "a photo of a {}."
# The reference adds the default template 10 times in all: 9 copies + 1 inside IMAGENET_TEMPLATES.
DEFAULT_TEMPLATE_EXTRA_COPIES = 9

# The 80 CLIP ImageNet prompt templates, in the order of the reference TaI-DPT code.
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def template_sentences(class_list: "ClassList") -> list[tuple[str, int]]:
    """The template sentences of every class as ``(sentence, class_index)`` pairs.

    89 per class, class by class in class-list order: first the 9 extra copies of
    ``DEFAULT_TEMPLATE``, then the 80 ``IMAGENET_TEMPLATES``. The class name is
    used as written except that ``_`` becomes a space (``"traffic_light"`` ->
    ``"traffic light"``), as in the prompts.
    """
    out: list[tuple[str, int]] = []
    for idx, name in enumerate(class_list.names):
        word = name.replace("_", " ")
        out.extend((DEFAULT_TEMPLATE.format(word), idx) for _ in range(DEFAULT_TEMPLATE_EXTRA_COPIES))
        out.extend((t.format(word), idx) for t in IMAGENET_TEMPLATES)
    return out
