"""kvserve's gRPC server: continuous batching with a KV cache on ONNX Runtime.

Data flows one way: service -> engine (queue) -> scheduler -> runner -> sampler -> stream.
Nothing here imports torch, transformers or optimum.
"""
