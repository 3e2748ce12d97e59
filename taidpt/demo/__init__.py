"""A procedural multi-label "miniature world" for the offline demo and regression tests.

:mod:`taidpt.demo.scenes` generates shape scenes (images with multi-hot labels) and captions of them, built
on ``world``, ``rendering`` and ``grammar``; ``voc_writer`` writes images in the VOC2007 layout. These use
numpy and PIL only; ``pretrain``, ``experiment``, ``report`` and ``image_prompting`` run the demo.
See docs/demo.md.
"""
