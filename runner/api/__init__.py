"""The Starlette front end. It never imports torch or vllm and never blocks on model work."""
