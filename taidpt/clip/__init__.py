"""CLIP: loading weights (safely), the text and image towers with dense features, the tokenizer."""
