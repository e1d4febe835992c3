"""Fine-tune GPT-2 on question/answer pairs with the Hugging Face Trainer, and score it.

Stage 1 of the kvserve pipeline: the output is an HF checkpoint dir (config.json,
model.safetensors, tokenizer.json, kvserve_prompt.json, confidence.json,
kvserve_train.json) that `kvserve-export` turns into an ONNX artifact. Entry points:
`training.cli:main` (`kvserve-train [train]` / `kvserve-train eval`, `python -m training`),
`training.train.train(TrainConfig(...))` and `training.scorecard.evaluate_model(...)`.

Modules, one job each: data/tabular/squad/hub (rows in), augment, formatting (prompt and
labels), tokenizer/model (what is trained), presets, callbacks/distributed/plot (around
the Trainer), train (one run), evaluate/metrics/scorecard (answer quality), validation
and confidence (the part set aside and the answer confidence fitted on it), config (what
a run or an eval is asked, with the defaults), cli/eval_cli (the command lines).
"""
