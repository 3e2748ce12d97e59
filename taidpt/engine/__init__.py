"""The engine: runners (core, images, distributed), configuration, CLI, checkpoints, optimisers, run folders, logs."""
