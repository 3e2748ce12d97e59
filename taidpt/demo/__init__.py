"""A procedural multi-label "miniature world" for the offline demo and regression tests.

``taidpt.demo.scenes`` generates scenes of simple shapes (images with multi-hot labels) and
natural-language captions of such scenes, so that a small CLIP can be pretrained on
(image, caption) pairs and TaI-DPT can be trained on captions only and evaluated on held-out
images. It builds on ``world`` (classes, themes, scene sampling), ``rendering`` (scenes to images)
and ``grammar`` (captions, synonyms). ``taidpt.demo.voc_writer`` writes generated test images in
the real VOC2007 layout. Only numpy and PIL are used by these modules; ``pretrain``,
``experiment``, ``report`` and ``image_prompting`` run the demo itself.
"""
