"""OpenVINO GenAI's ContinuousBatchingPipeline on the peer workload, under runs/venv-openvino
(see worker_io for the protocol).

The model is the checkpoint exported by `optimum-cli export openvino` (fp32 or int8 weights).
Every request is added as token ids before the first step, then `step()` runs until none is
left; after each step every request's new tokens are read and timed (what `generate` does
inside, minus the timing). Options: precision (f32: compute and KV cache in f32, as the
peers' fp32 means; anything else: the CPU plugin's defaults), cache_gb (KV cache space).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino_genai as genai
from worker_io import Arrivals, WorkerResult, Workload, worker_main


def load(work: Workload) -> genai.ContinuousBatchingPipeline:
    scheduler = genai.SchedulerConfig()
    scheduler.max_num_seqs = work.max_batch
    scheduler.cache_size = int(work.options["cache_gb"])
    properties: dict[str, object] = {"INFERENCE_NUM_THREADS": work.threads}
    if work.options["precision"] == "f32":
        properties |= {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    return genai.ContinuousBatchingPipeline(work.model, scheduler, "CPU", properties)


def generate(pipe: genai.ContinuousBatchingPipeline, work: Workload) -> WorkerResult:
    clock = Arrivals(len(work.prompts))
    handles = []
    clock.hand_over()
    for i, (prompt, n) in enumerate(zip(work.prompts, work.new_tokens, strict=True)):
        config = genai.GenerationConfig()
        config.max_new_tokens = config.min_new_tokens = n
        config.ignore_eos = True
        config.do_sample = False
        ids = ov.Tensor(np.asarray([prompt], dtype=np.int64))
        handles.append(pipe.add_request(i, ids, config))
    while pipe.has_non_finished_requests():
        pipe.step()
        for i, handle in enumerate(handles):
            if handle.can_read():
                clock.add(i, sum(len(out.generated_ids) for out in handle.read().values()))
    return clock.result(f"openvino-genai {genai.__version__.split('-')[0]}")


if __name__ == "__main__":
    raise SystemExit(worker_main(load, generate))
