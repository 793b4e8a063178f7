"""The engine process: pending lines -> backend -> output and error JSONL."""
