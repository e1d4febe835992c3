"""Fine-tune GPT-2 on question/answer pairs with the Hugging Face Trainer.

Stage 1 of the kvserve pipeline: the output is an HF checkpoint dir (config.json,
model.safetensors, tokenizer.json, kvserve_prompt.json, kvserve_train.json) that
`kvserve-export` turns into an ONNX artifact. Entry points: `training.cli:main`
(`kvserve-train`, `python -m training`) and `training.train.train(TrainConfig(...))`.
"""
