"""Sandbox models: a locally trained tokenizer, a tiny Llama-layout model and its TRL SFT seed model."""
