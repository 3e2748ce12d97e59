"""The tagging app: a browser page on an exported model (``python -m taidpt.app --model M.onnx``).

Torch-free, like the rest of the serving side: :mod:`taidpt.app.tagging` (what a click does),
:mod:`taidpt.app.render` (what the page shows), :mod:`taidpt.app.page` (the gradio page),
:mod:`taidpt.app.cli` (the command), :mod:`taidpt.app.demo_model` (the offline demo's model for
``bash run.sh app``). gradio is the extra ``[app]``. See docs/app.md.
"""
